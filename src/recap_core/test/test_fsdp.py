"""Sharded training (FSDP2 over torchrun, 2 CPU ranks on gloo): the same weights as DDP, with and without activation
checkpointing; resumable; bf16 mixed precision on a pretrained family; the same checkpoint format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from recap_core.checkpoint import load_checkpoint
from recap_core.data.synthetic import make_synthetic_dataset
from recap_core.testing import TINY_PI0, recap, refused, word_tokenizer, write_lerobot_checkpoint

COMMON = ("--mode", "sft", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--no-progress")


def torchrun(cwd, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "recap_core.cli", *[str(a) for a in argv]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("fsdp") / "reach", num_episodes=4, max_episode_length=40)


def _max_difference(a, b) -> float:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(first) == set(second)
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def test_fsdp_trains_the_weights_ddp_does_and_resumes_exactly(reach, tmp_path):
    ddp, fsdp, split = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "split"
    torchrun(tmp_path, "train-policy", reach, "--out", ddp, "--steps", "3", *COMMON)
    torchrun(tmp_path, "train-policy", reach, "--out", fsdp, "--steps", "3", "--fsdp", "--activation-checkpointing",
             *COMMON)  # fmt: skip
    assert _max_difference(ddp, fsdp) < 1e-5
    summary = json.loads((fsdp / "train_summary.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["activation_checkpointing"] and summary["world_size"] == 2
    assert len(summary["rank_parameter_checksums"]) == 1  # of the gathered weights, which only rank 0 holds
    # stopped at step 2 and resumed: the optimizer state (keyed by parameter name) comes back on every rank
    torchrun(tmp_path, "train-policy", reach, "--out", split, "--steps", "3", "--stop-at", "2", "--fsdp", *COMMON)
    state = json.loads((split / "training_state.json").read_text())
    assert state["keys"] == "names" and state["step"] == 2
    torchrun(tmp_path, "train-policy", reach, "--out", split, "--steps", "3", "--resume", "--fsdp", *COMMON)
    assert _max_difference(fsdp, split) < 1e-6
    assert load_checkpoint(split).training_config["steps_done"] == 3


def test_bf16_fsdp_fine_tunes_a_pretrained_pi0(reach, tmp_path):
    source = tmp_path / "pi0"
    write_lerobot_checkpoint(source, joints=14, sizes={**TINY_PI0, "chunk_size": 10})
    word_tokenizer(["reach", "Advantage", ":", "positive", "negative"], tmp_path / "tokenizer")
    out = tmp_path / "policy"
    torchrun(tmp_path, "train-policy", reach, "--init", source, "--tokenizer", tmp_path / "tokenizer", "--out", out,
             "--steps", "2", "--fsdp", "--precision", "bf16", "--activation-checkpointing", *COMMON)  # fmt: skip
    checkpoint = load_checkpoint(out, kind="policy")
    assert checkpoint.model_config.family == "pi0"
    assert checkpoint.training_config["precision"] == "bf16" and checkpoint.training_config["strategy"] == "fsdp"
    weights = load_file(str(out / "model.safetensors"))
    initial = load_file(str(source / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())  # fp32 master weights
    assert any(not torch.equal(weights[k], initial[k]) for k in initial)


def test_fsdp_needs_torchrun_and_its_own_training_state(reach, tmp_path, capsys):
    message = refused(capsys, "train-policy", reach, "--out", tmp_path / "a", "--steps", "1", "--fsdp", *COMMON)
    assert "torchrun" in message
    single = tmp_path / "single"
    assert recap("train-policy", reach, "--out", single, "--steps", "2", "--stop-at", "1", *COMMON) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "recap_core.cli", "train-policy", str(reach), "--out", str(single), "--steps", "2", "--resume",
               "--fsdp", *COMMON]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "saved by a run without --fsdp" in result.stderr
