"""Checkpoint directories: round trip, refusing pickle, clear errors for every kind of damage."""

from __future__ import annotations

import builtins
import json
import pickle
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch

from recap_core import checkpoint as ckpt
from recap_core.checkpoint import CheckpointError, load_checkpoint
from recap_core.models import PolicyRunner, get_config
from recap_core.models.untrained import save_untrained_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    save_untrained_checkpoint(root / "policy", get_config("tiny"), seed=1)
    save_untrained_checkpoint(root / "value", get_config("tiny", "value"), seed=1)
    return root


@pytest.fixture
def policy_dir(saved, tmp_path):
    target = tmp_path / "policy"
    shutil.copytree(saved / "policy", target)
    return target


def test_round_trip_restores_weights_and_metadata(saved):
    loaded = load_checkpoint(saved / "policy")
    assert loaded.kind == "policy" and loaded.model_config == get_config("tiny")
    torch.manual_seed(1)
    from recap_core.models.policy import RecapPolicy

    fresh = RecapPolicy(get_config("tiny"))
    for (name, a), (_, b) in zip(sorted(loaded.model.state_dict().items()), sorted(fresh.state_dict().items())):
        torch.testing.assert_close(a, b, msg=name)
    provenance = loaded.provenance
    for key in (
        "checkpoint_id",
        "created",
        "git_commit",
        "dataset_hash",
        "iteration",
        "parent_checkpoint",
        "model_sha256",
    ):
        assert key in provenance
    assert provenance["checkpoint_id"].startswith("policy-")
    assert not loaded.model.training


def test_loading_never_unpickles(saved, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    real_open = builtins.open
    opened = []

    def tracking_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", tracking_open)
    runner = PolicyRunner.from_checkpoint(saved / "policy")
    assert runner.checkpoint_id
    assert not [f for f in opened if f.endswith((".pkl", ".bin", ".pt", ".pth"))]
    load_checkpoint(saved / "value")


@pytest.mark.parametrize("stray", ["pytorch_model.bin", "optimizer.pt", "extra.pkl"])
def test_a_directory_with_pickle_files_is_refused(policy_dir, stray):
    (policy_dir / stray).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match=f"pickle.*{stray}"):
        load_checkpoint(policy_dir)


@pytest.mark.parametrize(
    "missing",
    [
        "config.json",
        "model.safetensors",
        "normalization.json",
        "provenance.json",
        "processor.json",
        "tokenizer/tokenizer.json",
    ],
)
def test_missing_files_are_named(policy_dir, missing):
    (policy_dir / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace("/", ".")):
        load_checkpoint(policy_dir)


@pytest.mark.parametrize("name", ["config.json", "normalization.json", "provenance.json", "processor.json"])
def test_corrupt_json_is_named(policy_dir, name):
    (policy_dir / name).write_text('{"truncated": ')
    with pytest.raises(CheckpointError, match=f"{name}: not valid JSON"):
        load_checkpoint(policy_dir)


def test_weights_of_the_wrong_shape_are_refused(policy_dir, saved):
    # small-config weights under a tiny config: same names, different shapes
    other = saved.parent / "small_policy"
    if not other.exists():
        save_untrained_checkpoint(other, get_config("small"))
    shutil.copy(other / "model.safetensors", policy_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: weights do not fit"):
        load_checkpoint(policy_dir, verify_hash=False)


def test_nan_weights_are_refused(policy_dir):
    tensors = safetensors.torch.load_file(str(policy_dir / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    safetensors.torch.save_file(tensors, str(policy_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(policy_dir, verify_hash=False)


def test_replaced_weights_fail_the_hash_check(policy_dir, saved):
    value_weights = safetensors.torch.load_file(str(policy_dir / "model.safetensors"))
    first = sorted(value_weights)[0]
    value_weights[first] = value_weights[first] + 1.0
    safetensors.torch.save_file(value_weights, str(policy_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(policy_dir)
    load_checkpoint(policy_dir, verify_hash=False)  # the weights themselves are fine


def test_garbage_weights_file_is_named(policy_dir):
    (policy_dir / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        load_checkpoint(policy_dir, verify_hash=False)


def test_wrong_kind_and_bad_config_are_explained(policy_dir):
    with pytest.raises(CheckpointError, match="policy checkpoint, a value one is needed"):
        load_checkpoint(policy_dir, kind="value")
    config = json.loads((policy_dir / "config.json").read_text())
    config["model"]["backbone"]["image_size"] = 30
    (policy_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid model config.*multiple of patch_size"):
        load_checkpoint(policy_dir)
    (policy_dir / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(policy_dir)


def test_non_finite_statistics_are_refused(policy_dir):
    stats = json.loads((policy_dir / "normalization.json").read_text())
    stats["observation.state"]["std"] = ["nan"] * 14
    (policy_dir / "normalization.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="normalization.json: observation.state.std"):
        load_checkpoint(policy_dir)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nothing-here")


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, state_json = ckpt.optimizer_state_tensors(optimizer)
    safetensors.torch.save_file(tensors, str(tmp_path / ckpt.TRAINING_STATE_FILE))
    (tmp_path / ckpt.TRAINING_STATE_JSON).write_text(json.dumps({**state_json, "step": 1}))
    loaded_tensors, loaded_json = ckpt.load_training_state(tmp_path)
    restored = torch.optim.AdamW(model.parameters(), lr=5.0)
    ckpt.restore_optimizer(restored, loaded_tensors, loaded_json)
    assert restored.param_groups[0]["lr"] == pytest.approx(1e-2)
    for key, value in optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(restored.state_dict()["state"][0][key], value)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        ckpt.load_training_state(tmp_path / "elsewhere")


def test_pretrained_config_checkpoint_rebuilds_without_the_original_directory(tmp_path):
    from transformers import Gemma3ForConditionalGeneration

    from recap_core.models.backbone import hf_gemma3_config
    from recap_core.models.tokenizer import train_prompt_tokenizer

    hf_dir = tmp_path / "gemma"
    Gemma3ForConditionalGeneration(hf_gemma3_config(get_config("tiny").backbone)).save_pretrained(hf_dir)
    train_prompt_tokenizer(["x"], 384).save_pretrained(str(hf_dir))
    config = get_config("pretrained", pretrained_dir=hf_dir)
    save_untrained_checkpoint(tmp_path / "ckpt", config)
    shutil.rmtree(hf_dir)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.model_config == config
