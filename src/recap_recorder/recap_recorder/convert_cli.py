"""``recap convert BAG... --out DATASET [--include-aborted] [--workers N]``: episode bags -> RECAP dataset.

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
    parser.add_argument(
        "--station",
        type=Path,
        default=None,
        metavar="FILE",
        help="the station the bags were recorded on: its parameter file (the /** section) or robot contract. "
        "Gives the joint order, the gripper joints, the cameras and the control rate (a new dataset's fps); "
        "default: what each bag records",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes reading bags ahead while this one writes them in order (same dataset as 0, none); "
        "default: one per core but one, for 4 or more bags on 4 or more cores, else 0",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from recap_recorder.bag_files import expand_bag_paths
    from recap_recorder.bag_to_dataset import convert_bags

    bags = expand_bag_paths(args.bags)
    try:
        station = station_from_file(args.station) if args.station is not None else None
        fps = {} if station is None else {"fps": _fps(station.control_rate_hz, args.station)}
        outcomes = convert_bags(
            bags,
            args.out,
            include_aborted=args.include_aborted,
            image_format=args.image_format,
            robot=args.robot,
            progress=not args.no_progress and sys.stderr.isatty(),
            station=None if station is None else station.layout,
            workers=args.workers,
            **fps,
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


def station_from_file(path: Path):
    """The StationConfig of a station parameter file (its ``/**`` section) or a robot contract; ValueError
    (one line) naming the file when it is neither."""
    import yaml

    from recap_core.station import StationConfig

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--station {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    if isinstance(doc, dict) and "robot_contract" in doc:
        from recap_core.errors import UserError
        from recap_core.robot_contract import load_contract

        try:
            return load_contract(path).station_config()
        except (UserError, ValueError) as exc:  # ContractError, or limits the station refuses
            raise ValueError(f"--station {path}: {exc}") from None
    if not isinstance(doc, dict) or "/**" not in doc:
        raise ValueError(f"--station {path}: neither a station parameter file (no '/**' section) nor a robot contract")
    try:
        return StationConfig.from_yaml(path)
    except ValueError as exc:
        raise ValueError(f"--station {path}: {exc}") from None


def _fps(control_rate_hz: float, path: Path) -> int:
    if control_rate_hz != int(control_rate_hz):
        raise ValueError(
            f"--station {path}: control_rate_hz {control_rate_hz} is not a whole number, which a dataset's fps must be"
        )
    return int(control_rate_hz)
