"""``recap export CHECKPOINT OUT``: a RECAP-trained pi0 / pi0.5 / SmolVLA policy in LeRobot's or openpi's layout.

The writing is :func:`recap_core.models.families.export.export_policy`; the layouts are in docs/models.md.
"""

from __future__ import annotations

import argparse
import pathlib

from recap_core.train.common import reports_user_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=pathlib.Path, help="RECAP policy checkpoint of a pi0/pi0.5/SmolVLA policy")
    parser.add_argument("out", type=pathlib.Path, help="directory to write (new or empty)")
    parser.add_argument(
        "--layout",
        choices=("lerobot", "openpi"),
        default=None,
        help="on-disk layout (default: the one the policy was initialised from)",
    )
    parser.add_argument(
        "--advantage",
        choices=("positive", "none"),
        default="positive",
        help="the advantage text recap.json records for the prompt (default positive: RECAP's improved policy)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what OUT holds")


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    from recap_core.models.families.export import export_policy

    out = export_policy(
        args.checkpoint,
        args.out,
        layout=args.layout,
        advantage=None if args.advantage == "none" else args.advantage,
        overwrite=args.overwrite,
    )
    print(f"recap export: wrote {out}")
    return 0
