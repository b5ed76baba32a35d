"""``recap iterate --data D... --value-pretrained V --policy-pretrained P --out DIR --iteration k``: arguments
and output of one RECAP iteration, which is :func:`recap_core.train.iteration.run_iteration`.
"""

from __future__ import annotations

import argparse
import pathlib

from recap_core import rl
from recap_core.data.schema import ROLLOUT_POSITIVES
from recap_core.errors import UserError
from recap_core.train import policy_cli, value_cli
from recap_core.train.common import apply_threads, reports_user_errors
from recap_core.train.iteration import run_iteration
from recap_core.train.policy_training import LABELLED_MODES, MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="DATASET", help="all episodes D so far")
    parser.add_argument("--value-pretrained", required=True, type=pathlib.Path, help="V_pre checkpoint")
    parser.add_argument("--policy-pretrained", required=True, type=pathlib.Path, help="pi_pre checkpoint")
    parser.add_argument(
        "--out",
        required=True,
        type=pathlib.Path,
        help="iteration directory to write (value/, policy/, iteration.json): new or empty",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete what --out holds (an earlier iteration, files) and write this one there",
    )
    parser.add_argument("--iteration", required=True, type=int, help="k (0: first fine-tune, plain SFT policy)")
    parser.add_argument("--value-steps", type=int, default=1000)
    parser.add_argument(
        "--value-folds",
        type=int,
        default=0,
        metavar="K",
        help="cross-fit V_k over K folds of the episodes and label each episode with the fold "
        "model that never saw it (see `recap train-value --folds`; V_pre must have been "
        "trained with the same K; default 0: off)",
    )
    parser.add_argument("--policy-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of both fine-tunes")
    parser.add_argument("--policy-mode", choices=MODES, default=None, help="default: sft at iteration 0, recap after")
    parser.add_argument("--lookahead", type=int, default=rl.DEFAULT_LOOKAHEAD)
    parser.add_argument("--positive-fraction", type=float, default=0.4)
    parser.add_argument("--task-positive-fraction", action="append", default=[], metavar="TASK=FRACTION")
    parser.add_argument(
        "--rollout-positives", choices=ROLLOUT_POSITIVES, default="advantage", help="see `recap label --help`"
    )
    parser.add_argument(
        "--takeover-negative", type=int, default=0, metavar="STEPS", help="see `recap label --help` (default 0: off)"
    )
    parser.add_argument(
        "--policy-mix",
        action="append",
        default=[],
        metavar="KIND=SHARE",
        help="the policy's samples by frame kind (see `recap train-policy --mix`)",
    )
    parser.add_argument("--knowledge-insulation", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    if args.iteration < 0:
        raise UserError(f"--iteration must be >= 0, got {args.iteration}")
    apply_threads(args)
    mode = args.policy_mode or ("sft" if args.iteration == 0 else "recap")
    data = [str(d) for d in args.data]
    common = [
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--iteration",
        str(args.iteration),
    ]
    common += ["--device", args.device] if args.device else []
    common += ["--no-progress"] if args.no_progress else []
    value_dir, policy_dir = args.out / "value", args.out / "policy"
    value_folds = args.value_folds if mode in LABELLED_MODES else 0  # fold models only serve the labels
    value_args = _parse(
        value_cli,
        [
            *data,
            "--out",
            str(value_dir),
            "--init",
            str(args.value_pretrained),
            "--steps",
            str(args.value_steps),
            "--folds",
            str(value_folds),
            *common,
        ],
    )
    policy_args = _parse(
        policy_cli,
        [
            *data,
            "--out",
            str(policy_dir),
            "--init",
            str(args.policy_pretrained),
            "--steps",
            str(args.policy_steps),
            "--mode",
            mode,
            *common,
        ]
        + (["--knowledge-insulation"] if args.knowledge_insulation else [])
        + [f"--mix={mix}" for mix in args.policy_mix],
    )
    record = run_iteration(args, mode, value_args, policy_args)
    if record is not None:
        print(
            f"iteration {args.iteration}: value {value_dir} ({record['value_checkpoint']}), "
            f"policy {policy_dir} ({record['policy_checkpoint']}, {mode})"
        )
    return 0
