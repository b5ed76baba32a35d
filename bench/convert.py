"""Benchmark: ``recap convert`` against a plain rosbags read of the same bags (3 cameras 224x224 rgb8 + joints,
50 Hz).

Bags are written with the recorder (no ROS needed: the recorder is fed the same CDR bytes a raw subscription
delivers), with its default settings: images stored JPEG-compressed (``<topic>/compressed``). Every figure is
measured ``--repeats`` times (default 3, 2 with ``--quick``: ``bench/_spread.py``), the contenders interleaved
within each repeat after one untimed warm-up run of each (each round starting with the next contender), and
reported as ``{"median": ..., "worst": ...}`` over the repeats; a ratio is taken within each repeat (same run,
same machine state), so its worst is the worst repeat's.

* ``episode_1000``, ``episode_10000`` (not in ``--quick``): one episode bag of that many frames.
  ``raw_read_frames_per_s``: rosbags reads and deserialises every message of the bag (the floor any converter
  pays to get the data out); ``frames_per_s``: bag -> new dataset with the dataset's default JPEG image cells;
  ``ratio`` = frames_per_s / raw_read_frames_per_s (target >= 1.0 on the worst repeat);
  ``reference_frames_per_s``: the converter's reference path (``convert_bags(fast=False)``: CRC check first,
  then rosbags deserialising every joint message, as before the fast path); ``converter_only_frames_per_s``:
  the converter's own part (timeline + every frame read and checked, no dataset writer);
  ``write_floor_frames_per_s`` / ``write_floor_ratio``: writing the converted dataset's byte count
  (``dataset_mb``) as one new file with plain 8 MB writes through the page cache (the dataset writer takes
  its data files past 64 MiB around it, ``recap_core.data.direct_io``), against the same rosbags read (the
  batch reports them too).
* ``batch``: ``--batch`` episodes (default 100; 10 in ``--quick``) of ``--batch-steps`` frames (default 400;
  200 in ``--quick``) converted into one dataset by one ``recap convert``: ``frames_per_s`` and ``ratio``
  with the default number of worker processes (``default_workers``: none on fewer than 4 cores),
  ``parallel_frames_per_s`` and ``parallel_ratio`` with ``workers`` (one per core but one, at least one),
  ``serial_frames_per_s`` with none (``--workers 0``), ``raw_read_frames_per_s`` rosbags over the same bags.
  The batch's bags are hard links of one recorded bag with their own ``metadata.yaml`` (own episode id), so
  they are read from the page cache as the other figures are.
* ``uncompressed_bag``: a bag recorded with ``image_compression: none`` (images as received, so the converter
  JPEG-encodes every frame): ``frames_per_s``, ``raw_read_frames_per_s``, ``ratio``.

Last line: {"name": "convert", "repeats": N, "episode_1000": {...}, "episode_10000": {...}, "batch": {...},
"uncompressed_bag": {...}, "frames_per_s": ..., "raw_read_frames_per_s": ..., "ratio": ..., "met": {...}} (the
three plain figures: the 1,000-frame episode's medians; ``met``: ratio >= 1.0 on the worst repeat, per figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _spread import LOW, add_repeats_argument, met, repeat_count
from _spread import spread as _spread

CAMERAS = ("base", "left_wrist", "right_wrist")
PERIOD_NS = 20_000_000
RATIO_TARGET = 1.0  # convert at least as fast as the plain rosbags read, on the worst repeat


def write_bag(root: Path, steps: int, image_compression: str = "jpeg") -> Path:
    from rosbags.typesys import Stores, get_typestore

    from recap_core.station import JOINT_NAMES
    from recap_recorder.episode_recorder import Recorder
    from recap_recorder.recorder_config import RecorderConfig, default_topics

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types

    def header(t_ns):
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id=""
        )

    def status(state, **extra):
        values = {
            "episode_id": "bench-0001",
            "task": "transfer the cube",
            "state": state,
            "label": "success" if state == "success" else "",
            "source": "demo",
            "steps": "0",
            **extra,
        }
        msg = T["diagnostic_msgs/msg/DiagnosticStatus"](
            level=0,
            name="episode_manager",
            message=state,
            hardware_id="",
            values=[T["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in values.items()],
        )
        return values, bytes(ts.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticStatus"))

    def joints(q, t_ns):
        msg = T["sensor_msgs/msg/JointState"](
            header=header(t_ns), name=list(JOINT_NAMES), position=q, velocity=np.zeros(0), effort=np.zeros(0)
        )
        return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    base = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)
    config = RecorderConfig(
        output_dir=root,
        topics=default_topics(CAMERAS),
        cameras=CAMERAS,
        min_free_disk_bytes=0,
        image_compression=image_compression,
    )
    recorder = Recorder(config, typestore=ts)
    t0 = 10**18
    recorder.on_episode_status(*status("running"), t0 - 5_000_000)
    for k in range(steps):
        t = t0 + k * PERIOD_NS
        for i, cam in enumerate(CAMERAS):
            frame = base + rng.integers(0, 8, base.shape, dtype=np.uint8) + np.uint8((k + 40 * i) % 256)
            msg = T["sensor_msgs/msg/Image"](
                header=header(t),
                height=224,
                width=224,
                encoding="rgb8",
                is_bigendian=0,
                step=672,
                data=frame.reshape(-1),
            )
            recorder.on_message(
                f"camera/{cam}/image_raw", bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image")), t - 2_000_000
            )
        q = rng.uniform(-1, 1, 14)
        recorder.on_message("joint_states", joints(q, t), t - 1_000_000)
        recorder.on_message("joint_command", joints(q, t), t)
    recorder.on_episode_status(*status("success", steps=str(steps)), t0 + steps * PERIOD_NS)
    recorder.close()
    return root / "bench-0001"


def copies(bag: Path, root: Path, count: int) -> list[Path]:
    """``count`` bags holding ``bag``'s MCAP (hard links) under their own episode ids."""
    bags = []
    meta = (bag / "metadata.yaml").read_text()
    for i in range(count):
        name = f"batch-{i:04d}"
        copy = root / name
        copy.mkdir(parents=True)
        for file in bag.glob("*.mcap"):
            os.link(file, copy / file.name.replace("bench-0001", name))  # as metadata.yaml names it
        (copy / "metadata.yaml").write_text(meta.replace("bench-0001", name))
        bags.append(copy)
    return bags


def raw_read(bags: list[Path]) -> tuple[float, int]:
    """Seconds to read + deserialise every message with rosbags; number of joint_command messages."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    start = time.perf_counter()
    commands = 0
    for bag in bags:
        with Reader(bag) as reader:
            for connection, _, raw in reader.messages():
                ts.deserialize_cdr(raw, connection.msgtype)
                commands += connection.topic == "/joint_command"
    return time.perf_counter() - start, commands


def convert(bags: list[Path], out: Path, **options) -> tuple[float, int]:
    from recap_recorder.bag_to_dataset import convert_bags

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    outcomes = convert_bags(bags, out, progress=False, **options)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    failed = [o for o in outcomes if o.status != "converted"]
    if failed:
        raise RuntimeError(f"conversion failed: {failed[0]}")
    return seconds, sum(o.frames for o in outcomes)


def converter_only(bag: Path) -> float:
    """Seconds for the converter's own work: timeline + every frame of every camera, no dataset writer."""
    from recap_recorder.bag_to_dataset import load_episode

    start = time.perf_counter()
    with load_episode(bag) as episode:
        for camera in episode.cameras:
            for _ in episode.frames(camera):
                pass
    return time.perf_counter() - start


def dataset_bytes(bags: list[Path], out: Path) -> int:
    """Bytes of the dataset ``bags`` convert into (every file under it)."""
    from recap_recorder.bag_to_dataset import convert_bags

    shutil.rmtree(out, ignore_errors=True)
    convert_bags(bags, out, progress=False)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return size


def write_floor(size: int, out: Path, frames: int) -> tuple[float, int]:
    """Seconds to write ``size`` bytes as one new file with plain writes of 8 MB through the page cache (no
    fsync, as the dataset writer): what producing that dataset costs in the page cache on this machine."""
    block = b"\x5a" * (8 << 20)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out, "wb", buffering=0) as f:
        left = size
        while left > 0:
            left -= f.write(block[: min(left, len(block))])
    seconds = time.perf_counter() - start
    out.unlink()
    return seconds, frames


def spread(values: list[float], digits: int = 1) -> dict:
    """Median and worst (lowest: these are rates and ratios with a lower bound) of one figure's repeats."""
    return _spread(values, LOW, digits)


def measure(contenders: dict, repeats: int) -> dict[str, list]:
    """Each contender (name -> callable returning (seconds, frames)) warmed up once, then ``repeats`` rounds,
    interleaved, each round starting one contender later (whoever runs right after a conversion finds the
    memory it freed, and runs faster); frames/s per round."""
    for run in contenders.values():
        run()
    names = list(contenders)
    rates: dict[str, list] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, frames = contenders[name]()
            rates[name].append(frames / seconds)
    return rates


def episode_figures(bag: Path, work: Path, repeats: int, image_compression: str = "jpeg") -> dict:
    contenders = {
        "raw_read": lambda: raw_read([bag]),
        "convert": lambda: convert([bag], work / "ds", image_format="jpeg"),
    }
    if image_compression == "jpeg":
        contenders["reference"] = lambda: convert([bag], work / "ds", image_format="jpeg", fast=False)
        contenders["converter_only"] = lambda: (converter_only(bag), frames)
        contenders["write_floor"] = lambda: write_floor(size, work / "floor.bin", frames)
    frames = convert([bag], work / "ds", image_format="jpeg")[1]
    size = dataset_bytes([bag], work / "ds")
    rates = measure(contenders, repeats)
    result = {
        "frames": frames,
        "bag_mb": round(sum(p.stat().st_size for p in bag.iterdir()) / 2**20, 1),
        "frames_per_s": spread(rates["convert"]),
        "raw_read_frames_per_s": spread(rates["raw_read"]),
        "ratio": spread([c / r for c, r in zip(rates["convert"], rates["raw_read"])], 3),
    }
    if "reference" in rates:
        result["reference_frames_per_s"] = spread(rates["reference"])
        result["converter_only_frames_per_s"] = spread(rates["converter_only"])
        result["dataset_mb"] = round(size / 2**20, 1)
        result["write_floor_frames_per_s"] = spread(rates["write_floor"])
        result["write_floor_ratio"] = spread([w / r for w, r in zip(rates["write_floor"], rates["raw_read"])], 3)
    return result


def batch_figures(bags: list[Path], work: Path, repeats: int) -> dict:
    from recap_recorder.convert_workers import default_workers

    default = default_workers(len(bags))
    workers = max(1, (os.cpu_count() or 1) - 1)
    size = dataset_bytes(bags, work / "ds")
    frames = raw_read(bags)[1]
    rates = measure(
        {
            "raw_read": lambda: raw_read(bags),
            "parallel": lambda: convert(bags, work / "ds", workers=workers),
            "serial": lambda: convert(bags, work / "ds", workers=0),
            "write_floor": lambda: write_floor(size, work / "floor.bin", frames),
        },
        repeats,
    )
    chosen = rates["parallel"] if default else rates["serial"]
    return {
        "episodes": len(bags),
        "default_workers": default,
        "frames_per_s": spread(chosen),
        "raw_read_frames_per_s": spread(rates["raw_read"]),
        "ratio": spread([c / r for c, r in zip(chosen, rates["raw_read"])], 3),
        "workers": workers,
        "parallel_frames_per_s": spread(rates["parallel"]),
        "parallel_ratio": spread([c / r for c, r in zip(rates["parallel"], rates["raw_read"])], 3),
        "serial_frames_per_s": spread(rates["serial"]),
        "dataset_mb": round(size / 2**20, 1),
        "write_floor_frames_per_s": spread(rates["write_floor"]),
        "write_floor_ratio": spread([w / r for w, r in zip(rates["write_floor"], rates["raw_read"])], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 min): no 10,000-frame bag, small batch")
    add_repeats_argument(parser, "each figure")
    parser.add_argument("--batch", type=int, default=None, help="episodes in the batch (default 100, quick 10)")
    parser.add_argument("--batch-steps", type=int, default=None, help="frames per batch episode (default 400)")
    args = parser.parse_args()
    repeats = repeat_count(args)
    logging_off()
    batch = args.batch or (10 if args.quick else 100)
    batch_steps = args.batch_steps or (200 if args.quick else 400)
    work = Path(tempfile.mkdtemp(prefix="recap_bench_convert_"))
    result: dict = {"name": "convert", "repeats": repeats}
    try:
        for steps in (1000,) if args.quick else (1000, 10_000):
            bag = write_bag(work / f"bags{steps}", steps)
            result[f"episode_{steps}"] = episode_figures(bag, work, repeats)
            shutil.rmtree(work / f"bags{steps}")
            note(f"episode_{steps}", result[f"episode_{steps}"])
        source = write_bag(work / "batch_source", batch_steps)
        result["batch"] = batch_figures(copies(source, work / "batch", batch), work, repeats)
        result["batch"]["frames_per_episode"] = batch_steps
        shutil.rmtree(work / "batch")
        note("batch", result["batch"])
        raw_bag = write_bag(work / "bags_raw", 200 if args.quick else 1000, "none")
        result["uncompressed_bag"] = episode_figures(raw_bag, work, repeats, "none")
        note("uncompressed_bag", result["uncompressed_bag"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = result["episode_1000"]
    result.update(
        frames_per_s=first["frames_per_s"]["median"],
        raw_read_frames_per_s=first["raw_read_frames_per_s"]["median"],
        ratio=first["ratio"]["median"],
        met={
            name: met(result[name]["ratio"], RATIO_TARGET, LOW)
            for name in ("episode_1000", "episode_10000", "batch")
            if name in result
        },
    )
    print(json.dumps(result))
    return 0


def note(name: str, figures: dict) -> None:
    ratio = figures["ratio"]
    print(f"{name}: ratio median {ratio['median']}, worst {ratio['worst']}: {json.dumps(figures)}", file=sys.stderr)


def logging_off() -> None:
    """The writer warns about every bench episode longer than the task's limit (400 steps); not news here."""
    import logging

    logging.getLogger("recap_core").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
