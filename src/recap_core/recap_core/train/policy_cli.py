"""``recap train-policy DATASET... --mode {sft,recap,awr,bc} --out DIR``: arguments and output of the policy
training, which is :func:`recap_core.train.policy_training.train_policy`.
"""

from __future__ import annotations

import argparse

from recap_core import rl
from recap_core.train.common import add_training_arguments, apply_threads, check_out, claim_out, reports_user_errors
from recap_core.train.ddp import barrier, init_distributed, shutdown
from recap_core.train.policy_training import MODES, train_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, default_steps=3000, default_batch_size=32, default_lr=3e-4)
    parser.add_argument("--mode", choices=MODES, default="recap", help="training objective (default recap)")
    parser.add_argument(
        "--indicator-dropout",
        type=float,
        default=rl.DEFAULT_INDICATOR_DROPOUT,
        help="recap: fraction of samples without advantage text (default 0.3)",
    )
    parser.add_argument(
        "--state-dropout",
        type=float,
        default=0.0,
        help="fraction of samples trained without the joint-state token, so the policy must "
        "locate the arm and the object in the images (default 0: off)",
    )
    parser.add_argument(
        "--knowledge-insulation",
        action="store_true",
        help="stop gradients from the action expert into the backbone's keys/values",
    )
    parser.add_argument(
        "--awr-temperature", type=float, default=0.05, help="awr: T in exp(A/T), A in normalised-return units"
    )
    parser.add_argument("--awr-max-weight", type=float, default=20.0, help="awr: weight clip")
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="KIND=SHARE",
        help="share of the samples drawn from one kind of frame: demo, correction (the human "
        "drove a rollout) or autonomous (the policy did); kinds not named share the rest "
        "by size (default: every frame equally likely). Repeat or comma-separate",
    )
    parser.add_argument(
        "--absolute-still-joints",
        type=float,
        default=0.0,
        metavar="STD",
        help="a new policy learns absolute targets, not deltas from the state, for the arm joints "
        "whose spread in the training data is below STD rad: a joint the demonstrations hold "
        "still then has a target to return to instead of drifting (default 0: every arm "
        "joint relative). A fine-tune or resume keeps its checkpoint's choice",
    )


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    check_out(args, "policy")
    context = init_distributed(args.device)
    try:
        if context.is_main:
            claim_out(args)
        barrier(context)
        summary = train_policy(args, context)
    finally:
        shutdown(context)
    if context.is_main:
        print(
            f"policy checkpoint ({args.mode}): {args.out}  (final loss {summary['final_loss']:.4f}, "
            f"{summary['samples_per_s']:.1f} samples/s)"
        )
    return 0
