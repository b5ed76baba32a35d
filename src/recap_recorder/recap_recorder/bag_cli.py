"""``recap bag info BAG...`` and ``recap bag repair BAG... [--out DIR]`` (``ros2 bag`` is not installed here).

Arguments and output only: reading is :mod:`recap_recorder.bag_info`, repairing :mod:`recap_recorder.bag_repair`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="{info,repair}", required=True)
    info = sub.add_parser(
        "info", help="topics, types, counts, rates, duration, label, metadata and integrity (CRCs checked) of a bag"
    )
    info.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 directory (or its .mcap file)")
    info.add_argument("--json", action="store_true", help="print one JSON object per bag")
    repair = sub.add_parser(
        "repair", help="rebuild a bag whose recorder was killed, or whose chunks fail their CRCs, into a valid bag"
    )
    repair.add_argument(
        "bags", nargs="+", type=Path, metavar="BAG", help="damaged rosbag2 directory (or its .mcap file)"
    )
    repair.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output bag directory (one BAG) or parent directory (several); default: BAG_repaired next to BAG",
    )


def run(args) -> int:
    return _info(args) if args.bag_command == "info" else _repair(args)


def _info(args) -> int:
    from recap_recorder.bag_files import BagError
    from recap_recorder.bag_info import format_info, read_info

    failures = 0
    for number, path in enumerate(args.bags):
        try:
            info = read_info(path)
        except BagError as exc:
            print(f"recap bag info: {exc}", file=sys.stderr)
            failures += 1
            continue
        if args.json:
            print(json.dumps(info.to_json()))
        else:
            print(("\n" if number else "") + format_info(info))
    return 1 if failures else 0


def _repair(args) -> int:
    from recap_recorder.bag_files import BagError, bag_directory
    from recap_recorder.bag_repair import intact_bag_info, repair_bag, repair_output

    failures = 0
    for path in args.bags:
        path = bag_directory(path)
        out = repair_output(path, args.out, several=len(args.bags) > 1)
        try:
            info = intact_bag_info(path)
            if info is not None:
                unverified = "" if info.integrity.checksummed else " (it carries no CRCs, so its data is unverified)"
                print(f"{path}: bag is complete and readable{unverified}; nothing to repair")
                continue
            report = repair_bag(path, out)
        except (BagError, OSError) as exc:
            print(f"recap bag repair: {exc}", file=sys.stderr)
            failures += 1
            continue
        lost = f", {report.lost_bytes} bytes after the last complete chunk dropped" if report.lost_bytes else ""
        why = f" (stopped reading at: {report.problem})" if report.problem else ""
        dropped = ""
        if report.dropped:
            counts = ", ".join(f"{topic} {n}" for topic, n in sorted(report.lost_per_topic.items())) or "unknown"
            dropped = f", {len(report.dropped)} corrupt chunk(s) dropped (messages lost: {counts})"
        orphans = (
            f", {report.orphans} messages of channels defined only in a dropped chunk left out"
            if report.orphans
            else ""
        )
        print(
            f"{path} -> {report.output}: {report.messages} messages kept{dropped}{orphans}{lost}{why}; "
            f"label {report.label}"
        )
        for damage in report.dropped:
            print(f"  dropped {damage.describe(report.start_ns)}")
        for topic, count in report.per_topic.items():
            print(f"  {topic}: {count}")
    return 1 if failures else 0
