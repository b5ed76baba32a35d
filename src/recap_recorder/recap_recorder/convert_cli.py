"""``recap convert BAG... --out DATASET [--include-aborted]``: episode bags -> RECAP dataset.

Arguments and output only: the conversion is :func:`recap_recorder.bag_to_dataset.convert_bags`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bags",
        nargs="+",
        type=Path,
        metavar="BAG",
        help="episode bag directories (or their .mcap files), or directories holding them (e.g. "
        "the recorder's output_dir)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DATASET",
        help="RECAP dataset directory; created if new, else new episodes are appended",
    )
    parser.add_argument(
        "--include-aborted", action="store_true", help="also convert aborted episodes (as failures); skipped by default"
    )
    parser.add_argument(
        "--image-format",
        choices=("jpeg", "png", "raw"),
        default=None,
        help="image encoding of a new dataset (default: the dataset format's default, jpeg)",
    )
    parser.add_argument("--robot", default=None, help="robot_type of a new dataset (default aloha_sim)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from recap_recorder.bag_files import expand_bag_paths
    from recap_recorder.bag_to_dataset import convert_bags

    bags = expand_bag_paths(args.bags)
    try:
        outcomes = convert_bags(
            bags,
            args.out,
            include_aborted=args.include_aborted,
            image_format=args.image_format,
            robot=args.robot,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (ValueError, RuntimeError) as exc:  # --out no dataset directory or damaged, settings mismatch, locked
        print(f"recap convert: {exc}", file=sys.stderr)
        return 2
    converted = [o for o in outcomes if o.status == "converted"]
    for outcome in outcomes:
        if outcome.status == "converted":
            note = f"; {outcome.reason}" if outcome.reason else ""
            print(f"converted {outcome.bag} -> episode {outcome.episode_index} ({outcome.frames} frames{note})")
        else:
            print(f"{outcome.status} {outcome.bag}: {outcome.reason}", file=sys.stderr)
    failed = sum(o.status == "failed" for o in outcomes)
    corrupt = sum(o.status == "corrupt" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(
        f"{len(converted)} episode(s), {sum(o.frames for o in converted)} frames added to {args.out}; "
        f"{skipped} skipped, {corrupt} corrupt (not converted), {failed} unreadable"
    )
    return 1 if failed or corrupt else 0
