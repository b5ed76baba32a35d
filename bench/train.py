"""Benchmark: training and labelling throughput on CPU (2 threads), tiny configs, synthetic data.

* ``policy_samples_per_s``: ``recap train-policy`` (sft, tiny, batch 32) on a
  synthetic 3-camera dataset, data loading included (the run's own count,
  excluding start-up).
* ``value_samples_per_s``: ``recap train-value`` (tiny, batch 32), same data.
* ``value_labelling_frames_per_s``: ``recap label`` end to end (value of every
  frame, N-step advantages, thresholds, rewriting the dataset's files).
* baseline (same run): the tiny policy's forward+backward+step on a fake
  batch already in memory: the model's own ceiling without data handling.

Last line: {"name": "train", "policy_samples_per_s": ..., "value_labelling_frames_per_s": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import torch

from recap_core import cli
from recap_core.data import make_synthetic_dataset
from recap_core.models import RecapPolicy, get_config
from recap_core.models.policy import PolicyInputs

BATCH = 32


def train_summary(directory: pathlib.Path) -> dict:
    return json.loads((directory / "train_summary.json").read_text())


def model_only_samples_per_s(steps: int) -> float:
    torch.manual_seed(0)
    config = get_config("tiny")
    model = RecapPolicy(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = config.backbone.image_size
    inputs = PolicyInputs(
        torch.rand(BATCH, 3, 3, size, size) * 2 - 1,
        torch.randn(BATCH, 14),
        torch.ones(BATCH, 12, dtype=torch.long),
        torch.ones(BATCH, 12, dtype=torch.bool),
        torch.randn(BATCH, config.action_horizon, 14),
    )
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss = model(inputs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return BATCH * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps (smoke check)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, episodes = (6, 6) if args.quick else (60, 40)
    result = {"name": "train", "threads": args.threads, "batch_size": BATCH, "config": "tiny", "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        data = make_synthetic_dataset(root / "reach", num_episodes=episodes, seed=0)
        common = ["--steps", str(steps), "--batch-size", str(BATCH), "--no-progress", "--threads", str(args.threads)]
        cli.main(["train-policy", str(data), "--mode", "sft", "--out", str(root / "policy"), *common])
        cli.main(["train-value", str(data), "--out", str(root / "value"), *common])
        frames = int(json.loads((data / "meta" / "info.json").read_text())["total_frames"])
        start = time.perf_counter()
        cli.main(["label", str(data), "--value", str(root / "value"), "--no-progress"])
        labelling_s = time.perf_counter() - start
        result["policy_samples_per_s"] = round(train_summary(root / "policy")["samples_per_s"], 1)
        result["value_samples_per_s"] = round(train_summary(root / "value")["samples_per_s"], 1)
        result["value_labelling_frames_per_s"] = round(frames / labelling_s, 1)
        result["labelled_frames"] = frames
    result["baseline"] = {"policy_model_only_samples_per_s": round(model_only_samples_per_s(max(3, steps // 2)), 1)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
