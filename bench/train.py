"""Benchmark: training and labelling throughput on CPU (2 threads), tiny configs, synthetic data.

* ``policy_samples_per_s``: ``recap train-policy`` (sft, tiny, batch 32) on a
  synthetic 3-camera dataset, data loading included (the run's own count,
  excluding start-up).
* ``value_samples_per_s``: ``recap train-value`` (tiny, batch 32), same data.
* ``value_labelling_frames_per_s``: ``recap label`` end to end (value of every
  frame, N-step advantages, thresholds, rewriting the dataset's files).
* baseline (same run): the tiny policy's forward+backward+step on a fake
  batch already in memory: the model's own ceiling without data handling.

Each repeat (``--repeats``, default 3; 2 quick) runs all four in turn, the baseline included; every figure is
the median and the worst (lowest) of the repeats. Last line: {"name": "train", "policy_samples_per_s":
{"median", "worst"}, "value_samples_per_s": {...}, "value_labelling_frames_per_s": {...}, "baseline":
{"policy_model_only_samples_per_s": {...}}, ...}
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

from _spread import LOW, add_repeats_argument, repeat_count, summarise

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
    add_repeats_argument(parser, "the four measurements")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = repeat_count(args)
    steps, episodes = (6, 6) if args.quick else (60, 40)
    result = {
        "name": "train",
        "threads": args.threads,
        "batch_size": BATCH,
        "config": "tiny",
        "steps": steps,
        "repeats": repeats,
    }
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        data = make_synthetic_dataset(root / "reach", num_episodes=episodes, seed=0)
        frames = int(json.loads((data / "meta" / "info.json").read_text())["total_frames"])
        common = ["--steps", str(steps), "--batch-size", str(BATCH), "--no-progress", "--threads", str(args.threads)]
        for repeat in range(repeats):
            out = root / f"repeat{repeat}"
            cli.main(["train-policy", str(data), "--mode", "sft", "--out", str(out / "policy"), *common])
            cli.main(["train-value", str(data), "--out", str(out / "value"), *common])
            start = time.perf_counter()
            cli.main(["label", str(data), "--value", str(out / "value"), "--no-progress"])
            labelling_s = time.perf_counter() - start
            runs.append(
                {
                    "policy_samples_per_s": train_summary(out / "policy")["samples_per_s"],
                    "value_samples_per_s": train_summary(out / "value")["samples_per_s"],
                    "value_labelling_frames_per_s": frames / labelling_s,
                    "model_only_samples_per_s": model_only_samples_per_s(max(3, steps // 2)),
                }
            )
            print(f"repeat {repeat + 1}/{repeats}: {runs[-1]}", file=sys.stderr)
    figures = summarise(runs, dict.fromkeys(runs[0], LOW), digits=1)
    result["baseline"] = {"policy_model_only_samples_per_s": figures.pop("model_only_samples_per_s")}
    result |= figures
    result["labelled_frames"] = frames
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
