"""Write ``dataset/``: a tiny native LeRobot v3.0 dataset, made by LeRobot's own writer.

Runs in a separate venv with ``lerobot-dataset==0.4.4`` (LeRobot 0.4.4's dataset code, import name
``ledataset``), never in the project's venv; see README.md beside this file. Everything on disk is written by
``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` with their defaults (AV1 video through
libsvtav1, PNG images embedded in the parquet files, episodes concatenated in one mp4 per camera).

What it holds (test_lerobot_import.py pins the same values):

* 5 episodes of ``LENGTHS`` frames at 10 fps, tasks alternating ``TASKS[0]``, ``TASKS[1]``.
* ``observation.images.overhead``: video, 48x48; ``observation.images.gripper_view``: image, 32x32. Every
  frame is a flat background, colour ``background(episode, frame)``, with a white 8x8 square (video) or a black
  one (image) in the top-left corner, so a decoded frame says which episode and frame it is.
* ``observation.state``: 4 joints named ``STATE_NAMES``; ``action``: the same joints in another order
  (``ACTION_NAMES``); values from ``joint_value``.
* ``observation.temperature``: an extra float feature the importer ignores.
* ``next.success``: bool, true on the last frame of the episodes in ``SUCCESSFUL`` only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

FPS = 10
LENGTHS = (12, 15, 10, 14, 11)
TASKS = ("pick up the red cube", "push the blue cube to the left")
SUCCESSFUL = (0, 1, 3)
STATE_NAMES = ("shoulder.pos", "elbow.pos", "wrist.pos", "gripper.pos")
ACTION_NAMES = ("gripper.pos", "wrist.pos", "elbow.pos", "shoulder.pos")
VIDEO_KEY = "observation.images.overhead"
IMAGE_KEY = "observation.images.gripper_view"
VIDEO_SIZE = 48
IMAGE_SIZE = 32


def background(episode: int, frame: int) -> tuple[int, int, int]:
    """The flat colour of a frame: red steps with the frame, green with the episode."""
    return (40 + 12 * frame, 30 + 40 * episode, 200 - 10 * frame)


def joint_value(episode: int, frame: int, joint: str) -> float:
    """Joint ``joint``'s position at a frame: its index among STATE_NAMES in the tens, episode and frame below."""
    return 10.0 * STATE_NAMES.index(joint) + episode + 0.01 * frame


def frame_image(episode: int, frame: int, size: int, square: int) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background(episode, frame)
    image[:8, :8] = square
    return image


def _torchvision_stand_in() -> None:
    """``ledataset`` imports torchvision at module level, for its reader's ``ToTensor`` only: the writer never
    calls it. No CPU torchvision build matches torch 2.13 on PyPI (the CUDA one's ops do not load), so a module
    with a faithful ``ToTensor`` stands in when the real one is absent."""
    try:
        import torchvision  # noqa: F401

        return
    except (ImportError, RuntimeError, OSError):
        sys.modules.pop("torchvision", None)
    import datasets  # noqa: F401  (before the stand-in, so Hugging Face datasets sees no torchvision)
    import torch

    class ToTensor:
        def __call__(self, picture):
            array = np.asarray(picture)
            array = array[:, :, None] if array.ndim == 2 else array
            return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255)

    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor = ToTensor
    module = types.ModuleType("torchvision")
    module.transforms = transforms
    sys.modules["torchvision"] = module
    sys.modules["torchvision.transforms"] = transforms


def write(out: Path) -> None:
    _torchvision_stand_in()
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    features = {
        VIDEO_KEY: {"dtype": "video", "shape": (VIDEO_SIZE, VIDEO_SIZE, 3), "names": ["height", "width", "channels"]},
        IMAGE_KEY: {"dtype": "image", "shape": (IMAGE_SIZE, IMAGE_SIZE, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": list(STATE_NAMES)},
        "action": {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": list(ACTION_NAMES)},
        "observation.temperature": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "dataset"
        dataset = LeRobotDataset.create(
            repo_id="recap/lerobot_v3_sample", fps=FPS, features=features, root=root, robot_type="so100_follower"
        )
        for episode, length in enumerate(LENGTHS):
            for frame in range(length):
                dataset.add_frame(
                    {
                        VIDEO_KEY: frame_image(episode, frame, VIDEO_SIZE, 255),
                        IMAGE_KEY: frame_image(episode, frame, IMAGE_SIZE, 0),
                        "observation.state": np.array(
                            [joint_value(episode, frame, j) for j in STATE_NAMES], np.float32
                        ),
                        "action": np.array([joint_value(episode, frame + 1, j) for j in ACTION_NAMES], np.float32),
                        "observation.temperature": np.array([20.0 + frame], np.float32),
                        "next.success": np.array([episode in SUCCESSFUL and frame == length - 1]),
                        "task": TASKS[episode % 2],
                    }
                )
            dataset.save_episode()
        dataset.finalize()  # closes the parquet writers: without it the files have no footer
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(root, out, ignore=shutil.ignore_patterns("images"))  # images/: the writer's scratch PNGs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "dataset")
    args = parser.parse_args()
    write(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {len(LENGTHS)} episodes, {sum(LENGTHS)} frames, {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
