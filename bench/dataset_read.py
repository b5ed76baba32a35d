"""Dataset read benchmark: training-read speed of RECAP datasets per image storage format.

Writes the same episodes (3 cameras at 224x224) with each image format through
DatasetWriter, then reads items through RecapDataset in shuffled order, one
process, one thread, as a DataLoader worker would. An item is one frame: 3
decoded (and resized) images, the state and a 50-step action chunk.

    python bench/dataset_read.py [--quick] [--image-size 96] [--frames-npz FILE] [--noise 4]

``--frames-npz`` takes real frames (arrays [N, 224, 224, 3] uint8, e.g. sim
renders) instead of the procedural sim-like frames; ``--noise`` adds Gaussian
pixel noise (sigma in grey levels) to mimic a real camera sensor.
Every read is a full pass over the frames, repeated ``--repeats`` times (default 3;
2 quick) with the formats taken in turn each repeat; a read rate is reported as
the median and the worst (lowest) pass: {"median": x, "worst": y}. Writing is
timed once per format. The last line printed is one JSON object;
``baseline_raw_frames_per_s`` is the same read from raw uint8 storage in the
same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recap_core.data import reader, schema
from recap_core.data.writer import DatasetWriter

from _spread import LOW, add_repeats_argument, repeat_count, spread

CAMERAS = ("base", "left_wrist", "right_wrist")
SHAPE = (224, 224)


def procedural_frames(count: int, rng: np.random.Generator) -> np.ndarray:
    """Sim-like frames [count, 224, 224, 3]: shaded floor, a few lit boxes that move, no sensor noise."""
    height, width = SHAPE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    floor = np.stack([60 + 0.3 * yy, 60 + 0.25 * yy, 70 + 0.2 * xx], axis=-1)
    boxes = [
        (rng.uniform(20, 180, 2), rng.uniform(15, 50, 2), rng.uniform(80, 240, 3), rng.uniform(-1, 1, 2))
        for _ in range(5)
    ]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        frame = floor.copy()
        for (y0, x0), (h, w), colour, (vy, vx) in boxes:
            y, x = int(y0 + vy * t) % (height - int(h)), int(x0 + vx * t) % (width - int(w))
            shade = np.linspace(1.0, 0.6, int(w), dtype=np.float32)[None, :, None]
            frame[y : y + int(h), x : x + int(w)] = colour * shade
        frames[t] = np.clip(frame, 0, 255)
    return frames


def load_frames(args, count: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if args.frames_npz:
        stored = np.load(args.frames_npz)
        pool = np.concatenate([stored[name] for name in stored.files])
        if pool.shape[1:] != (*SHAPE, 3):
            sys.exit(f"--frames-npz arrays must be [N, {SHAPE[0]}, {SHAPE[1]}, 3], got {pool.shape}")
        frames, content = pool[np.arange(count) % len(pool)], f"npz:{Path(args.frames_npz).name}"
    else:
        frames, content = procedural_frames(count, rng), "procedural"
    if args.noise > 0:
        noisy = frames.astype(np.float32) + rng.normal(0.0, args.noise, size=frames.shape)
        frames, content = np.clip(noisy, 0, 255).astype(np.uint8), content + f"+noise{args.noise:g}"
    return frames, content


def write_dataset(root: Path, image_format: str, frames: np.ndarray, episodes: int, length: int) -> dict:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with DatasetWriter(root, cameras=CAMERAS, image_shape=SHAPE, image_format=image_format) as writer:
        for episode in range(episodes):
            window = frames[episode * length : (episode + 1) * length]
            writer.add_episode(
                states=rng.normal(size=(length, 14)),
                actions=rng.normal(size=(length, 14)),
                images={cam: np.roll(window, shift, axis=2) for shift, cam in enumerate(CAMERAS)},
                is_intervention=np.zeros(length, bool),
                success=True,
                task="transfer the cube",
            )
    elapsed = time.perf_counter() - started
    camera_frames = episodes * length * len(CAMERAS)
    data_bytes = sum(p.stat().st_size for p in (root / "data").rglob("*.parquet"))
    return {
        "write_frames_per_s": round(camera_frames / elapsed, 1),
        "bytes_per_frame": round(data_bytes / camera_frames),
    }


def read_items_per_s(dataset: reader.RecapDataset, order: np.ndarray) -> float:
    """Items per second over one pass in ``order``."""
    started = time.perf_counter()
    for item in order:
        dataset[int(item)]
    return len(order) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds: 2 episodes of 20 frames")
    parser.add_argument("--image-size", type=int, default=96, help="model input size to resize to (default 96)")
    parser.add_argument("--frames-npz", default=None, help="real [N, 224, 224, 3] frames to store instead")
    parser.add_argument("--noise", type=float, default=0.0, help="pixel noise sigma to add (camera-like)")
    add_repeats_argument(parser, "each read pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes, length = (2, 20) if args.quick else (6, 150)
    repeats = repeat_count(args)
    rng = np.random.default_rng(0)
    frames, content = load_frames(args, episodes * length, rng)
    order = np.random.default_rng(1).permutation(episodes * length)
    per_format: dict[str, dict] = {}
    readers: dict[str, reader.RecapDataset] = {}
    key = f"read_frames_per_s_{args.image_size}px"
    with tempfile.TemporaryDirectory(prefix="recap-bench-") as scratch:
        for image_format in ("raw", "png", "jpeg"):
            root = Path(scratch) / image_format
            per_format[image_format] = write_dataset(root, image_format, frames, episodes, length)
            readers[f"{image_format}/{key}"] = reader.RecapDataset(root, image_size=args.image_size)
            readers[f"{image_format}/read_frames_per_s_224px"] = reader.RecapDataset(root)
            if image_format == schema.DEFAULT_IMAGE_FORMAT:
                cached = reader.RecapDataset(root, image_size=args.image_size, cache_images=True)
                cached.preload_images()
                readers["cached"] = cached
        rates: dict[str, list[float]] = {name: [] for name in readers}
        for repeat in range(repeats):  # every reader in turn, so that load from other processes hits all alike
            for name, dataset in readers.items():
                rates[name].append(read_items_per_s(dataset, order))
            last = {name: round(values[-1], 1) for name, values in rates.items()}
            print(f"repeat {repeat + 1}/{repeats}: {last}", flush=True)
    for name, values in rates.items():
        if "/" in name:
            image_format, figure = name.split("/")
            per_format[image_format][figure] = spread(values, LOW, 1)
    result = {
        "name": "dataset_read",
        "frames_per_s": per_format[schema.DEFAULT_IMAGE_FORMAT][key],
        "baseline_raw_frames_per_s": per_format["raw"][key],
        "image_format": schema.DEFAULT_IMAGE_FORMAT,
        "image_size": args.image_size,
        "stored_shape": list(SHAPE),
        "cameras_per_frame": len(CAMERAS),
        "cached_frames_per_s": spread(rates["cached"], LOW, 1),
        "frames_read": int(len(order)),
        "repeats": repeats,
        "content": content,
        "quick": args.quick,
        "per_format": per_format,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
