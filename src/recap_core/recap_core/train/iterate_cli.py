"""``recap iterate --data D... --value-pretrained V --policy-pretrained P --out DIR --iteration k``.

One pass of Algorithm 1's loop body, with its bookkeeping:

1. ``V_k``: train the value function **from V_pre** on all data ``D``  -> ``DIR/value``
   (with ``--value-folds K`` also its K fold models, each from V_pre's model of the same fold)
2. label ``D`` with ``V_k`` (advantages, per-task thresholds, indicator; cross-fitted: each
   episode by the fold model that did not train on it)
3. ``pi_k``: train the policy **from pi_pre** with RECAP on ``D``       -> ``DIR/policy``

(Always from the pretrained checkpoints, never from iterate ``k-1``.) Both
checkpoints record the iteration and their parent; ``DIR/iteration.json``
ties them together. Iteration 0 is the paper's first fine-tune: the policy
is trained with the indicator fixed to positive (``--policy-mode sft``).
"""
from __future__ import annotations

import argparse
import json
import pathlib

from recap_core import outputs, rl
from recap_core.checkpoint import CheckpointError, check_directory, read_config
from recap_core.data.schema import ROLLOUT_POSITIVES
from recap_core.errors import UserError
from recap_core.train.common import apply_threads, reports_user_errors
from recap_core.train import label_cli, policy_cli, value_cli
from recap_core.train.ddp import barrier, init_distributed, shutdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="DATASET", help="all episodes D so far")
    parser.add_argument("--value-pretrained", required=True, type=pathlib.Path, help="V_pre checkpoint")
    parser.add_argument("--policy-pretrained", required=True, type=pathlib.Path, help="pi_pre checkpoint")
    parser.add_argument("--out", required=True, type=pathlib.Path,
                        help="iteration directory to write (value/, policy/, iteration.json): new or empty")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete what --out holds (an earlier iteration, files) and write this one there")
    parser.add_argument("--iteration", required=True, type=int, help="k (0: first fine-tune, plain SFT policy)")
    parser.add_argument("--value-steps", type=int, default=1000)
    parser.add_argument("--value-folds", type=int, default=0, metavar="K",
                        help="cross-fit V_k over K folds of the episodes and label each episode with the fold "
                             "model that never saw it (see `recap train-value --folds`; V_pre must have been "
                             "trained with the same K; default 0: off)")
    parser.add_argument("--policy-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of both fine-tunes")
    parser.add_argument("--policy-mode", choices=policy_cli.MODES, default=None,
                        help="default: sft at iteration 0, recap after")
    parser.add_argument("--lookahead", type=int, default=rl.DEFAULT_LOOKAHEAD)
    parser.add_argument("--positive-fraction", type=float, default=0.4)
    parser.add_argument("--task-positive-fraction", action="append", default=[], metavar="TASK=FRACTION")
    parser.add_argument("--rollout-positives", choices=ROLLOUT_POSITIVES, default="advantage",
                        help="see `recap label --help`")
    parser.add_argument("--takeover-negative", type=int, default=0, metavar="STEPS",
                        help="see `recap label --help` (default 0: off)")
    parser.add_argument("--policy-mix", action="append", default=[], metavar="KIND=SHARE",
                        help="the policy's samples by frame kind (see `recap train-policy --mix`)")
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
    common = ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
              "--iteration", str(args.iteration)]
    common += ["--device", args.device] if args.device else []
    common += ["--no-progress"] if args.no_progress else []
    value_dir, policy_dir = args.out / "value", args.out / "policy"
    labelled = mode in ("recap", "awr")
    value_folds = args.value_folds if labelled else 0  # fold models only serve the labels
    value_args = _parse(value_cli, [*data, "--out", str(value_dir), "--init", str(args.value_pretrained),
                                    "--steps", str(args.value_steps), "--folds", str(value_folds), *common])
    policy_args = _parse(policy_cli, [*data, "--out", str(policy_dir), "--init", str(args.policy_pretrained),
                                      "--steps", str(args.policy_steps), "--mode", mode, *common]
                         + (["--knowledge-insulation"] if args.knowledge_insulation else [])
                         + [f"--mix={mix}" for mix in args.policy_mix])
    for option, path, kind in (("--value-pretrained", args.value_pretrained, "value"),
                               ("--policy-pretrained", args.policy_pretrained, "policy")):
        found = read_config(check_directory(path))[0]  # CheckpointError naming the file when it is none
        if found != kind:
            raise CheckpointError(f"{option} {path} is a {found} checkpoint; give a {kind} checkpoint")
    if args.overwrite:
        outputs.refuse_clearing_inputs(args.out, {"--data": list(args.data),
                                                  "--value-pretrained": args.value_pretrained,
                                                  "--policy-pretrained": args.policy_pretrained})
    else:
        outputs.refuse_non_empty(args.out, hint="choose another --out, or give --overwrite to delete what is "
                                                "there and train this iteration in its place")
    context = init_distributed(args.device)
    try:
        if context.is_main and args.overwrite:
            outputs.clear_directory(args.out)
        barrier(context)
        value_summary = value_cli.train_value(value_args, context)
        labels = None
        if context.is_main and labelled:
            labels = label_cli.label_datasets(
                data, value_dir, lookahead=args.lookahead, positive_fraction=args.positive_fraction,
                task_fractions=label_cli.parse_task_fractions(args.task_positive_fraction),
                rollout_positives=args.rollout_positives, takeover_negative=args.takeover_negative,
                device=args.device, progress=not args.no_progress)
        barrier(context)
        policy_summary = policy_cli.train_policy(policy_args, context)
    finally:
        shutdown(context)
    if context.is_main:
        record = {"iteration": args.iteration, "policy_mode": mode, "datasets": data,
                  "value_pretrained": str(args.value_pretrained), "policy_pretrained": str(args.policy_pretrained),
                  "value_checkpoint": _checkpoint_id(value_dir), "policy_checkpoint": _checkpoint_id(policy_dir),
                  "value_final_loss": value_summary["final_loss"], "policy_final_loss": policy_summary["final_loss"],
                  "labels": labels}
        outputs.write_json(args.out / "iteration.json", record)
        print(f"iteration {args.iteration}: value {value_dir} ({record['value_checkpoint']}), "
              f"policy {policy_dir} ({record['policy_checkpoint']}, {mode})")
    return 0


def _checkpoint_id(directory: pathlib.Path) -> str:
    return json.loads((directory / "provenance.json").read_text()).get("checkpoint_id", "")
