"""Training under torchrun: 2 CPU processes (gloo), tiny config, 2 steps.

Each rank reads a different share of the data, so identical weights after
training mean the gradients really were averaged across ranks; rank 0 alone
writes the checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recap_core.checkpoint import load_checkpoint
from recap_core.data import make_synthetic_dataset
from recap_core.train.ddp import DistributedContext, StepBatchSampler


def test_ranks_read_disjoint_shares_and_resume_mid_epoch():
    # 10 frames over 2 ranks: one batch of 5 is a rank's whole share of the first epoch
    first_epoch = [
        next(iter(StepBatchSampler(10, 5, DistributedContext(rank=r, world_size=2), seed=1))) for r in (0, 1)
    ]
    assert not set(first_epoch[0]) & set(first_epoch[1])
    assert set(first_epoch[0]) | set(first_epoch[1]) == set(range(10))
    whole = iter(StepBatchSampler(10, 3, DistributedContext(), seed=4))
    stream = [next(whole) for _ in range(7)]
    resumed = iter(StepBatchSampler(10, 3, DistributedContext(), seed=4, start_batch=4))
    assert [next(resumed) for _ in range(3)] == stream[4:]


@pytest.mark.timeout(300)
def test_torchrun_two_processes_train_identical_weights(tmp_path):
    data = make_synthetic_dataset(tmp_path / "reach", num_episodes=4, seed=0, max_episode_length=40)
    out = tmp_path / "policy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "recap_core.cli",
        "train-policy",
        str(data),
        "--mode",
        "sft",
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["rank_parameter_checksums"]) == 2 and summary["ranks_identical"], summary
    assert load_checkpoint(out).training_config["steps_done"] == 2
    assert result.stdout.count("policy checkpoint (sft)") == 1, "only rank 0 reports and writes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy", "reach"]
