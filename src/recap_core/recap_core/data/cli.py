"""``recap dataset``: inspect or synthesise RECAP datasets.

recap dataset info ROOT                       episodes, frames, tasks, success, interventions, labels
recap dataset synth ROOT --kind reach|bimodal --episodes N [--seed S] [--image-size PX]
recap dataset import-lerobot SRC OUT --cameras a=base,... --success-column C | --success-file F | --success all|none
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="summarise a dataset: episodes, frames, tasks, success rate, labels")
    info.add_argument("root", type=Path, help="dataset directory (contains meta/info.json)")
    synth = sub.add_parser("synth", help="write a small synthetic dataset (appends if ROOT exists)")
    synth.add_argument("root", type=Path, help="dataset directory to create or append to")
    synth.add_argument(
        "--kind",
        choices=("reach", "bimodal"),
        default="reach",
        help="reach: 2-D point to a goal with failures and interventions; "
        "bimodal: two action modes, one leads to success (default: reach)",
    )
    synth.add_argument("--episodes", type=int, default=20, help="number of episodes to write (default: 20)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--image-size", type=int, default=32, help="square image side in pixels (default: 32)")
    synth.add_argument(
        "--cameras",
        default=None,
        help="comma-separated camera names (default: the simulated station's base,left_wrist,right_wrist)",
    )
    synth.add_argument(
        "--max-episode-length",
        type=int,
        default=None,
        help="step limit of an episode (default: 80 for reach, 60 for bimodal)",
    )
    lerobot = sub.add_parser(
        "import-lerobot",
        help="import a native LeRobot v3.0 dataset as demonstrations (appends if OUT exists)",
        description="Write a LeRobot v3.0 dataset's episodes into a RECAP dataset as demonstrations: video (mp4) "
        "and image cameras mapped onto the station's cameras, joints onto its joints, each episode's task, and a "
        "success label from a column, a file or a flag.",
    )
    lerobot.add_argument("src", type=Path, help="the LeRobot dataset (contains meta/info.json, codebase v3.0)")
    lerobot.add_argument("out", type=Path, help="RECAP dataset directory to create or append to")
    lerobot.add_argument(
        "--cameras",
        default=None,
        help="LeRobot camera -> station camera, e.g. top=base,wrist=left_wrist ('-' drops one; "
        "default with --station: the same names)",
    )
    lerobot.add_argument(
        "--joints",
        default=None,
        help="observation.state joint (name, or index) -> station joint, e.g. shoulder.pos=left_shoulder "
        "('-' drops one; default: the LeRobot names, in their order)",
    )
    lerobot.add_argument(
        "--station",
        type=Path,
        default=None,
        help="station parameter file: the dataset takes its joint order, gripper joints and cameras",
    )
    lerobot.add_argument(
        "--grippers", default=None, help="comma-separated gripper joints (default: the station's, or none)"
    )
    labels = lerobot.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--success-column",
        default=None,
        help="a bool or 0/1 column: a frame feature (an episode succeeded if any frame is true, e.g. "
        "next.success) or an episodes-metadata column",
    )
    labels.add_argument(
        "--success-file", type=Path, default=None, help='JSON {"<episode_index>": true|false} for every episode'
    )
    labels.add_argument("--success", choices=("all", "none"), default=None, help="one label for every episode")
    lerobot.add_argument("--episodes", default=None, help="comma-separated LeRobot episode indices (default: all)")
    lerobot.add_argument(
        "--image-size", default=None, help="resize every camera to PX or HxW (default: the cameras' common size)"
    )
    lerobot.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="stored image format")
    lerobot.add_argument("--robot", default=None, help="robot type recorded (default: the LeRobot robot_type)")
    lerobot.add_argument(
        "--max-episode-length",
        type=int,
        default=None,
        help="step limit of an episode, for the returns (default: OUT's, 400 for a new dataset); at least the "
        "longest episode, or its earliest returns clip",
    )


def run(args: argparse.Namespace) -> int:
    if args.dataset_command == "synth":
        return _synth(args)
    if args.dataset_command == "import-lerobot":
        return _import_lerobot(args)
    return _info(args.root)


def _import_lerobot(args: argparse.Namespace) -> int:
    from recap_core.data.lerobot_import import LeRobotImportError, import_lerobot
    from recap_core.errors import one_line

    try:
        episodes = None if args.episodes is None else [int(e) for e in args.episodes.split(",") if e.strip()]
    except ValueError:
        print(f"recap dataset import-lerobot: --episodes {args.episodes!r} is not a list of indices", file=sys.stderr)
        return 2
    grippers = None if args.grippers is None else [g.strip() for g in args.grippers.split(",") if g.strip()]
    try:
        summary = import_lerobot(
            args.src,
            args.out,
            cameras=args.cameras,
            joints=args.joints,
            station=args.station,
            gripper_joints=grippers,
            success=args.success,
            success_column=args.success_column,
            success_file=args.success_file,
            episodes=episodes,
            image_size=args.image_size,
            image_format=args.image_format,
            robot=args.robot,
            max_episode_length=args.max_episode_length,
        )
    except LeRobotImportError as exc:
        print(f"recap dataset import-lerobot: {one_line(exc)}", file=sys.stderr)
        return 2
    for line in summary.limit_warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(
        f"imported {summary.episodes} LeRobot episodes ({summary.frames} frames, {summary.successes} successful) "
        f"from {args.src} to {args.out}"
    )
    return _info(args.out)


def _synth(args: argparse.Namespace) -> int:
    from recap_core.data import synthetic

    if args.episodes < 1 or args.image_size < 4:
        print(
            f"recap dataset synth: --episodes must be >= 1 and --image-size >= 4, "
            f"got {args.episodes} and {args.image_size}",
            file=sys.stderr,
        )
        return 2
    make = synthetic.make_synthetic_dataset if args.kind == "reach" else synthetic.make_bimodal_dataset
    extra = {} if args.max_episode_length is None else {"max_episode_length": args.max_episode_length}
    if args.cameras is not None:
        cameras = [c.strip() for c in args.cameras.split(",")]
        if not all(c.isidentifier() for c in cameras) or len(set(cameras)) != len(cameras):
            print(
                f"recap dataset synth: --cameras {args.cameras!r} must be distinct names like base,wrist",
                file=sys.stderr,
            )
            return 2
        extra["cameras"] = tuple(cameras)
    try:
        make(args.root, num_episodes=args.episodes, image_size=args.image_size, seed=args.seed, **extra)
    except ValueError as exc:
        print(f"recap dataset synth: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.episodes} {args.kind} episodes to {args.root}")
    return _info(args.root)


def _info(root: Path) -> int:
    from recap_core.data import reader, schema

    try:
        info = reader.check_dataset(root)
        episodes = reader.load_episodes(root, info)
        table = reader.load_frames_table(root)
        tasks = reader.load_tasks(root, info)
        recap = schema.RecapConfig.from_json(info["recap"])
    except (FileNotFoundError, ValueError) as exc:  # DatasetError is a ValueError
        print(f"recap dataset info: {exc}", file=sys.stderr)
        return 2
    print(f"dataset   {root}")
    print(
        f"format    LeRobot {info['codebase_version']}, robot {info['robot_type']}, {info['fps']} fps, "
        f"images {info['recap']['image_format']} {list(schema.info_image_shape(info))} "
        f"from {', '.join(schema.info_cameras(info))}"
    )
    layout = schema.info_layout(info)
    print(
        f"joints    {layout.num_joints}: {', '.join(layout.joint_names)}; grippers "
        f"{', '.join(layout.gripper_joints) or 'none'}"
    )
    print(f"episodes  {len(episodes)}  frames {table.num_rows}  tasks {len(tasks)}  c_fail {recap.c_fail:g}")
    if episodes:
        successes = sum(e["success"] for e in episodes)
        print(f"success   {successes}/{len(episodes)} ({successes / len(episodes):.0%})")
        sources = Counter(e["source"] for e in episodes)
        print("sources   " + ", ".join(f"{name} {count}" for name, count in sorted(sources.items())))
        flags = table[schema.IS_INTERVENTION].to_numpy(zero_copy_only=False)
        corrected = sum(e["intervention_count"] > 0 for e in episodes)
        print(f"interventions  {corrected} episodes corrected, {int(flags.sum())} frames ({flags.mean():.1%} of all)")
    for index, task in enumerate(tasks):
        mine = [e for e in episodes if e["task_index"] == index]
        if not mine:
            continue
        lengths = np.array([e["length"] for e in mine])
        success = np.mean([e["success"] for e in mine])
        print(
            f"task {index}  {task!r}: {len(mine)} episodes, success {success:.0%}, length "
            f"{lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}), "
            f"max_episode_length {recap.max_length_for(task)}"
        )
    labels = info["recap"].get("labels")
    if labels is not None:
        value = table[schema.VALUE].to_numpy()
        advantage = table[schema.ADVANTAGE].to_numpy()
        indicator = table[schema.INDICATOR].to_numpy(zero_copy_only=False)
        print(f"labels    from {labels['value_checkpoint']} at {labels['labelled_at']}")
        print(
            f"          value mean {value.mean():.3f} [{value.min():.3f}, {value.max():.3f}]  advantage mean "
            f"{advantage.mean():.4f} [{advantage.min():.3f}, {advantage.max():.3f}]  "
            f"indicator positive {indicator.mean():.1%}"
        )
        for task, epsilon in sorted(labels["thresholds"].items()):
            print(f"          threshold {task!r}: {epsilon:.4f}")
    elif "stale_labels" in info["recap"]:
        print("labels    stale: episodes were added after labelling; run `recap label` again")
    else:
        print("labels    none (run `recap label`)")
    return 0
