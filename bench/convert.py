"""Benchmark: ``recap convert`` on one episode bag (3 cameras 224x224 rgb8 + joints at 50 Hz).

A bag is written with the recorder (no ROS needed: the recorder is fed the same
CDR bytes a raw subscription delivers), with its default settings: images stored
JPEG-compressed (``<topic>/compressed``). Then, in the same run:

* raw: rosbags reads and deserialises every message of the bag (the floor any
  converter pays to get the data out) -> ``raw_read_frames_per_s``;
* convert: bag -> dataset with the dataset's default JPEG image cells ->
  ``frames_per_s``, ``ratio`` = frames_per_s / raw_read_frames_per_s;
  ``converter_only_frames_per_s`` is the converter's own part (resampling +
  reading every frame it streams, no dataset writer);
* convert with raw (unencoded) image cells -> ``raw_cells_frames_per_s``.

The same three figures for a bag recorded with ``image_compression: none``
(images as received, so the converter JPEG-encodes every frame) are under
``uncompressed_bag``.

Each figure is the best of 3 interleaved runs (the machine is shared).
Last line: {"name": "convert", "frames_per_s": ..., "raw_read_frames_per_s": ..., "ratio": ..., ...,
"uncompressed_bag": {...}}.
Target: ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CAMERAS = ("base", "left_wrist", "right_wrist")
PERIOD_NS = 20_000_000


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


def raw_read(bag: Path) -> tuple[float, int]:
    """Seconds to read + deserialise every message with rosbags; number of joint_command messages."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    start = time.perf_counter()
    commands = 0
    with Reader(bag) as reader:
        for connection, _, raw in reader.messages():
            ts.deserialize_cdr(raw, connection.msgtype)
            commands += connection.topic == "/joint_command"
    return time.perf_counter() - start, commands


def convert(bag: Path, out: Path, image_format: str) -> tuple[float, int]:
    from recap_recorder.bag_to_dataset import convert_bags

    start = time.perf_counter()
    [outcome] = convert_bags([bag], out, image_format=image_format, progress=False)
    seconds = time.perf_counter() - start
    if outcome.status != "converted":
        raise RuntimeError(f"conversion failed: {outcome}")
    return seconds, outcome.frames


def converter_only(bag: Path) -> float:
    """Seconds for the converter's own work: timeline + every frame of every camera, no dataset writer."""
    from recap_recorder.bag_to_dataset import load_episode

    start = time.perf_counter()
    episode = load_episode(bag)
    for camera in episode.cameras:
        for _ in episode.frames(camera):
            pass
    return time.perf_counter() - start


def measure(bag: Path, work: Path) -> dict:
    """Best-of-3 figures of one bag, the contenders interleaved."""
    raw_read(bag)  # warm the page cache and imports for every contender
    best = {"raw_read": 1e9, "jpeg": 1e9, "raw_cells": 1e9, "converter_only": 1e9}
    for run in range(3):
        seconds, commands = raw_read(bag)
        best["raw_read"] = min(best["raw_read"], seconds)
        seconds, frames = convert(bag, work / f"ds_jpeg{run}", "jpeg")
        best["jpeg"] = min(best["jpeg"], seconds)
        best["converter_only"] = min(best["converter_only"], converter_only(bag))
        shutil.rmtree(work / f"ds_jpeg{run}")
    best["raw_cells"], _ = convert(bag, work / "ds_raw", "raw")
    shutil.rmtree(work / "ds_raw")
    return {
        "frames_per_s": round(frames / best["jpeg"], 1),
        "raw_read_frames_per_s": round(commands / best["raw_read"], 1),
        "ratio": round(best["raw_read"] / best["jpeg"] * frames / commands, 3),
        "converter_only_frames_per_s": round(frames / best["converter_only"], 1),
        "raw_cells_frames_per_s": round(frames / best["raw_cells"], 1),
        "frames": frames,
        "bag_mb": round(sum(p.stat().st_size for p in bag.iterdir()) / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~15 s smoke run (a 4 s episode)")
    parser.add_argument("--steps", type=int, default=None, help="episode length in 50 Hz steps")
    args = parser.parse_args()
    steps = args.steps or (200 if args.quick else 1000)
    work = Path(tempfile.mkdtemp(prefix="recap_bench_convert_"))
    try:
        compressed = measure(write_bag(work / "bags", steps), work)
        uncompressed = measure(write_bag(work / "bags_raw", steps, "none"), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "name": "convert",
        **compressed,
        "image_format": "jpeg",
        "bag_images": "jpeg (recorder default)",
        "uncompressed_bag": uncompressed,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
