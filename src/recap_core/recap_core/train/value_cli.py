"""``recap train-value DATASET... --out DIR``: arguments and output of the value training, which is
:func:`recap_core.train.value_training.train_value`.
"""

from __future__ import annotations

import argparse

from recap_core.train.common import add_training_arguments, apply_threads, check_out, claim_out, reports_user_errors
from recap_core.train.ddp import barrier, init_distributed, shutdown
from recap_core.train.value_training import train_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, default_steps=2000, default_batch_size=32, default_lr=3e-4)
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="cross-fitting: also train K models, each without one K-th of the episodes, for "
        "`recap label` (default 0: off; 2 doubles the training time, 3 triples it...)",
    )


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    check_out(args, "value")
    context = init_distributed(args.device)
    try:
        if context.is_main:
            claim_out(args)
        barrier(context)
        summary = train_value(args, context)
    finally:
        shutdown(context)
    if context.is_main:
        print(
            f"value checkpoint: {args.out}  (final loss {summary['final_loss']:.4f}, "
            f"{summary['samples_per_s']:.1f} samples/s)"
        )
    return 0
