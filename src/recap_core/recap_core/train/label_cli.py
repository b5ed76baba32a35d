"""``recap label DATASET... --value CKPT``: arguments and output of the advantage labelling.

The labelling itself is :func:`recap_core.train.labelling.label_datasets`.
"""

from __future__ import annotations

import argparse
import pathlib

from recap_core import rl
from recap_core.data.schema import ROLLOUT_POSITIVES
from recap_core.outputs import dumps
from recap_core.train.common import apply_threads, reports_user_errors
from recap_core.train.labelling import label_datasets, parse_task_fractions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="RECAP dataset directories to label")
    parser.add_argument("--value", required=True, type=pathlib.Path, help="value checkpoint directory")
    parser.add_argument("--lookahead", type=int, default=rl.DEFAULT_LOOKAHEAD, help="N of the N-step advantage")
    parser.add_argument(
        "--positive-fraction",
        type=float,
        default=0.4,
        help="fraction of each task's frames labelled positive (paper: 0.3 pretraining, 0.4 fine-tuning)",
    )
    parser.add_argument(
        "--task-positive-fraction",
        action="append",
        default=[],
        metavar="TASK=FRACTION",
        help="override the fraction for one task (repeatable), e.g. 'fold the towel=0.1'",
    )
    parser.add_argument(
        "--rollout-positives",
        choices=ROLLOUT_POSITIVES,
        default="advantage",
        help="advantage: every frame by its advantage, corrections forced positive (paper); "
        "unforced: every frame by its advantage, corrections included; "
        "interventions: in rollouts only the human's corrections are positive",
    )
    parser.add_argument(
        "--takeover-negative",
        type=int,
        default=0,
        metavar="STEPS",
        help="the policy's own frames in the STEPS steps before each human take-over are "
        "negative whatever their advantage (default 0: off, the paper's rule)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="frames per value forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    fractions = parse_task_fractions(args.task_positive_fraction)
    summary = label_datasets(
        args.datasets,
        args.value,
        lookahead=args.lookahead,
        positive_fraction=args.positive_fraction,
        task_fractions=fractions,
        rollout_positives=args.rollout_positives,
        takeover_negative=args.takeover_negative,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    if summary["value_folds"]:
        print(
            f"values cross-fitted: each episode valued by the one of {summary['value_folds']} fold models "
            f"that did not train on it"
        )
    for task, entry in summary["tasks"].items():
        print(
            f"{task!r}: threshold {entry['threshold']:+.4f}, {entry['positive_fraction']:.1%} positive "
            f"({entry['frames']} frames, {entry['interventions']} interventions"
            + (" forced positive" if args.rollout_positives != "unforced" else " labelled by advantage")
            + (
                f", {entry['before_takeover']} frames before a take-over forced negative)"
                if args.takeover_negative
                else ")"
            )
        )
    print(dumps({k: v for k, v in summary.items() if k != "tasks"}, indent=None))
    return 0
