"""RECAP on a pretrained family: train-policy --init a LeRobot / openpi pi0 or a LeRobot SmolVLA checkpoint, run it
with CFG, export it back and load the export with the same actions (the tiny checkpoints of test/reference/, written
by LeRobot 0.3.3's own code)."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch

from recap_core.checkpoint import CheckpointError, load_checkpoint
from recap_core.data.synthetic import make_synthetic_dataset
from recap_core.models.families import family_policy, load_pretrained
from recap_core.models.runner import PolicyRunner
from recap_core.testing import recap, refused, word_tokenizer, write_lerobot_checkpoint

REFERENCE = pathlib.Path(__file__).parent / "reference" / "pi0"
LEROBOT = REFERENCE / "lerobot033"
OPENPI = REFERENCE / "openpi"
SMOLVLA = pathlib.Path(__file__).parent / "reference" / "smolvla"
JOINTS = ("j0", "j1", "j2", "j3")
QUIET = ("--no-progress", "--log-every", "1", "--batch-size", "2", "--threads", "1")


@pytest.fixture(scope="module")
def pi0_dirs(tmp_path_factory):
    """The pi0 reference checkpoints (LeRobot 0.3, openpi) with their shrunk sizes beside them (architecture.json):
    neither format's config.json can say a size other than the published models'."""
    root = tmp_path_factory.mktemp("pi0")
    dirs = {}
    for name, source in (("lerobot", LEROBOT), ("openpi", OPENPI)):
        dirs[name] = shutil.copytree(source, root / name)
        shutil.copy(REFERENCE / "tiny_arch.json", dirs[name] / "architecture.json")
    return dirs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("family") / "reach"
    make_synthetic_dataset(
        root, num_episodes=3, cameras=("top",), joint_names=JOINTS, gripper_joints=(), max_episode_length=12
    )
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    word_tokenizer(["reach", "Advantage", ":", "positive", "negative", "Task", "State", "Action", ",", ";"], directory)
    return directory


@pytest.fixture(scope="module")
def trained(dataset, tokenizer_dir, pi0_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pi0-sft"
    code = recap(
        "train-policy", dataset, "--mode", "sft", "--init", pi0_dirs["lerobot"], "--tokenizer", tokenizer_dir,
        "--out", out, "--steps", "2", *QUIET,
    )  # fmt: skip
    assert code == 0
    return out


def _observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {"top": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)},
        "state": rng.normal(size=len(JOINTS)).astype(np.float32),
        "task": "reach",
    }


def test_a_pi0_checkpoint_trains_under_recap_and_keeps_its_family(trained):
    checkpoint = load_checkpoint(trained, kind="policy")
    config = checkpoint.model_config
    assert (config.family, config.source_layout, config.cameras) == ("pi0", "lerobot", ("top",))
    assert (config.state_dim, config.action_dim, config.action_horizon) == (4, 4, 5)
    # the statistics are the checkpoint's own (LeRobot 0.3 buffers), cut to the station's 4 joints
    reference = safetensors.torch.load_file(str(LEROBOT / "model.safetensors"))
    mean = reference["normalize_inputs.buffer_observation_state.mean"][:4].tolist()
    assert checkpoint.normalization["observation.state"]["mean"] == pytest.approx(mean)
    steps = {step["step"]: step for step in checkpoint.processor_steps}
    assert steps["images"]["resize"] == "pad" and steps["images"]["pad_side"] == "left_top"
    assert steps["tokenise_prompt"]["template"] == "pi0"
    assert steps["normalise_state"]["mode"] == "mean_std"
    provenance = json.loads((trained / "provenance.json").read_text())
    assert provenance["parent_checkpoint"]["path"].endswith("lerobot")
    # the weights moved from the reference's (the openpi copy holds them under the model's own names)
    initial = {f"model.{k}": v for k, v in safetensors.torch.load_file(str(OPENPI / "model.safetensors")).items()}
    assert set(initial) == set(checkpoint.model.state_dict())
    moved = {k for k, v in checkpoint.model.state_dict().items() if not torch.equal(v, initial[k])}
    assert moved, "two optimiser steps changed nothing"


def test_the_runner_samples_and_guides_a_family_policy(trained):
    runner = PolicyRunner.from_checkpoint(trained)
    plain = runner.infer(_observation(), seed=3)
    again = runner.infer(_observation(), seed=3)
    guided = runner.infer(_observation(), seed=3, beta=2.0)
    assert plain["actions"].shape == (5, 4) and np.all(np.isfinite(plain["actions"]))
    np.testing.assert_array_equal(plain["actions"], again["actions"])
    assert not np.allclose(plain["actions"], guided["actions"])
    runner.batch_guidance = False
    sequential = runner.infer(_observation(), seed=3, beta=2.0)
    np.testing.assert_allclose(sequential["actions"], guided["actions"], atol=1e-5)


def test_the_advantage_text_reaches_the_family_prompt(trained):
    runner = PolicyRunner.from_checkpoint(trained)
    tokenizer = runner.processor.prompt_tokenizer
    positive = tokenizer.tokenizer.convert_ids_to_tokens(tokenizer.ids("reach", "positive"))
    plain = tokenizer.tokenizer.convert_ids_to_tokens(tokenizer.ids("reach", None))
    assert positive == ["<bos>", "reach", "Advantage", ":", "positive"]
    assert plain == ["<bos>", "reach"]


@pytest.mark.parametrize("layout", ["lerobot", "openpi"])
def test_export_round_trips_to_the_same_actions(trained, tmp_path, layout):
    out = tmp_path / f"export-{layout}"
    assert recap("export", trained, out, "--layout", layout) == 0
    record = json.loads((out / "recap.json").read_text())
    assert record["advantage"] == "positive" and record["prompt_example"] == "<task>\nAdvantage: positive\n"
    if layout == "lerobot":
        # LeRobot 0.3's own names (transformers 4.51's PaliGemma) and its normalisation buffers, as loaded
        keys = set(safetensors.torch.load_file(str(out / "model.safetensors")))
        assert keys == set(safetensors.torch.load_file(str(LEROBOT / "model.safetensors")))
    else:
        norm = json.loads((out / "assets" / "recap" / "norm_stats.json").read_text())["norm_stats"]
        checkpoint = load_checkpoint(trained, kind="policy")
        assert norm["state"]["mean"] == pytest.approx(checkpoint.normalization["observation.state"]["mean"])
    checkpoint = load_checkpoint(trained, kind="policy")
    pretrained = load_pretrained(out)
    assert (pretrained.family, pretrained.layout) == ("pi0", layout)
    _, exported = family_policy(pretrained, cameras=("top",), state_dim=4, action_dim=4)
    for name, tensor in checkpoint.model.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], tensor, rtol=0, atol=0)
    for stat in ("mean", "std"):
        assert pretrained.stats["action"][stat][:4] == pytest.approx(checkpoint.normalization["action"][stat])
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 1, 3, 16, 16, generator=generator) * 2 - 1
    state = torch.randn(1, 4, generator=generator)
    prompt = (torch.tensor([[2, 4, 5, 6, 7]]), torch.ones(1, 5, dtype=torch.bool))
    noise = torch.randn(1, *checkpoint.model.noise_shape, generator=generator)
    expected = checkpoint.model.sample_actions(images, state, prompt, noise)
    torch.testing.assert_close(exported.eval().sample_actions(images, state, prompt, noise), expected)


def test_the_openpi_layout_initialises_training_too(dataset, tokenizer_dir, pi0_dirs, tmp_path):
    out = tmp_path / "from-openpi"
    code = recap(
        "train-policy", dataset, "--mode", "sft", "--init", pi0_dirs["openpi"], "--tokenizer", tokenizer_dir,
        "--out", out, "--steps", "1", *QUIET,
    )  # fmt: skip
    assert code == 0
    config = load_checkpoint(out, kind="policy").model_config
    assert (config.family, config.source_layout) == ("pi0", "openpi")


def test_foreign_init_errors_are_one_line(capsys, dataset, tokenizer_dir, pi0_dirs, tmp_path):
    lerobot = pi0_dirs["lerobot"]
    message = refused(capsys, "train-policy", dataset, "--init", lerobot, "--out", tmp_path / "a", "--steps", "1")
    assert "--tokenizer" in message
    damaged = tmp_path / "damaged"
    shutil.copytree(lerobot, damaged)
    tensors = safetensors.torch.load_file(str(damaged / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("action_out_proj.weight"))
    tensors[key] = tensors[key][:, :-1].contiguous()
    safetensors.torch.save_file(tensors, str(damaged / "model.safetensors"))
    message = refused(
        capsys, "train-policy", dataset, "--init", damaged, "--tokenizer", tokenizer_dir, "--out", tmp_path / "b"
    )
    assert key in message and "shape" in message
    with pytest.raises(CheckpointError, match="no tensor for"):
        del tensors[key]
        safetensors.torch.save_file(tensors, str(damaged / "model.safetensors"))
        load_pretrained(damaged)
    message = refused(capsys, "train-value", dataset, "--init", lerobot, "--out", tmp_path / "c", "--steps", "1")
    assert "value model starts from" in message


@pytest.fixture(scope="module")
def smolvla_dir(tmp_path_factory):
    """The SmolVLA reference checkpoint with its tiny VLM's config.json beside it (vlm_config.json)."""
    directory = tmp_path_factory.mktemp("smolvla") / "checkpoint"
    shutil.copytree(SMOLVLA / "checkpoint_v033", directory)
    shutil.copy(SMOLVLA / "vlm_config.json", directory / "vlm_config.json")
    return directory


def test_a_smolvla_checkpoint_trains_runs_and_exports(dataset, tokenizer_dir, smolvla_dir, tmp_path):
    out = tmp_path / "smolvla-sft"
    code = recap(
        "train-policy", dataset, "--mode", "sft", "--init", smolvla_dir, "--tokenizer", tokenizer_dir,
        "--out", out, "--steps", "1", *QUIET,
    )  # fmt: skip
    assert code == 0
    checkpoint = load_checkpoint(out, kind="policy")
    assert checkpoint.model_config.family == "smolvla"
    steps = {step["step"]: step for step in checkpoint.processor_steps}
    assert (steps["images"]["pad_side"], steps["tokenise_prompt"]["template"]) == ("left_top", "smolvla")
    runner = PolicyRunner.from_checkpoint(out)
    plain, guided = runner.infer(_observation(), seed=1), runner.infer(_observation(), seed=1, beta=1.5)
    assert plain["actions"].shape == (5, 4) and np.all(np.isfinite(guided["actions"]))
    assert not np.allclose(plain["actions"], guided["actions"])
    exported = tmp_path / "export"
    assert recap("export", out, exported) == 0
    assert (exported / "vlm_config.json").is_file()
    pretrained = load_pretrained(exported)
    _, policy = family_policy(pretrained, cameras=("top",), state_dim=4, action_dim=4)
    for name, tensor in checkpoint.model.state_dict().items():
        torch.testing.assert_close(policy.state_dict()[name], tensor, rtol=0, atol=0)
    assert refused_export(tmp_path, out) == "openpi has no SmolVLA; export a SmolVLA policy in LeRobot's layout"


def refused_export(tmp_path, checkpoint) -> str:
    from recap_core.errors import UserError
    from recap_core.models.families.export import export_policy

    with pytest.raises(UserError) as caught:
        export_policy(checkpoint, tmp_path / "refused", layout="openpi")
    return str(caught.value)


def test_a_value_model_starts_from_a_local_vision_language_model(dataset, tmp_path):
    """``train-value --init DIR`` of a SigLIP + Gemma 3 directory: the pretrained backbone plus the 201-bin head."""
    from transformers import Gemma3ForConditionalGeneration

    from recap_core.models import get_config
    from recap_core.models.backbone import hf_gemma3_config
    from recap_core.models.tokenizer import train_prompt_tokenizer

    vlm = tmp_path / "siglip-gemma3"
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(hf_gemma3_config(get_config("tiny").backbone)).save_pretrained(vlm)
    train_prompt_tokenizer(["reach"], 384).save_pretrained(str(vlm))
    out = tmp_path / "value"
    assert recap("train-value", dataset, "--init", vlm, "--out", out, "--steps", "1", *QUIET) == 0
    checkpoint = load_checkpoint(out, kind="value")
    assert checkpoint.model_config.name == "pretrained" and checkpoint.model_config.num_bins == 201
    assert checkpoint.model_config.backbone.pretrained_dir == str(vlm.resolve())


def _write_lerobot04_pi05(directory: pathlib.Path) -> dict:
    """A tiny pi0.5 in LeRobot 0.4's layout (quantile statistics for 6 joints)."""
    sizes = {**json.loads((REFERENCE / "tiny_arch.json").read_text()), "tokenizer_max_length": 24}
    return write_lerobot_checkpoint(directory, pi05=True, joints=6, sizes=sizes)


def test_a_pi05_in_lerobot_04_layout_trains_with_state_tokens_and_quantiles(dataset, tokenizer_dir, tmp_path):
    source = tmp_path / "pi05"
    stats = _write_lerobot04_pi05(source)
    out = tmp_path / "pi05-sft"
    code = recap(
        "train-policy", dataset, "--mode", "sft", "--init", source, "--tokenizer", tokenizer_dir,
        "--out", out, "--steps", "1", *QUIET,
    )  # fmt: skip
    assert code == 0
    checkpoint = load_checkpoint(out, kind="policy")
    steps = {step["step"]: step for step in checkpoint.processor_steps}
    assert steps["normalise_state"]["mode"] == "quantiles" and steps["tokenise_prompt"]["template"] == "pi05"
    assert steps["images"]["pad_side"] == "center"  # LeRobot 0.4 pads as openpi does
    q01 = checkpoint.normalization["observation.state"]["q01"]
    assert q01 == pytest.approx(np.asarray(stats["observation.state"]["q01"][:4]).tolist())
    runner = PolicyRunner.from_checkpoint(out)
    obs = _observation()
    plain, guided = runner.infer(obs, seed=2), runner.infer(obs, seed=2, beta=2.0)
    assert not np.allclose(plain["actions"], guided["actions"])
    # the normalised state is in the prompt, as 256 bins of [-1, 1] (LeRobot's np.digitize rule)
    from recap_core.models.tokenizer import discretise_state, family_prompt

    bins = discretise_state([-1.0, -0.5, 0.0, 0.99])
    assert family_prompt("pi05", "reach", "positive", bins) == (
        "Task: reach, State: 0 64 128 254;\nAdvantage: positive;\nAction: "
    )
    tokens = runner.processor.prompt_tokenizer.tokenizer.convert_ids_to_tokens
    prompt_ids, _ = runner.processor.prompt_tokenizer(
        ["reach"], ["positive"], states=torch.tensor([[-1.0, -0.5, 0, 1]])
    )
    assert tokens(prompt_ids[0].tolist()) == [
        "<bos>", "Task", ":", "reach", ",", "State", ":", "<unk>", "<unk>", "<unk>", "<unk>", ";",
        "Advantage", ":", "positive", ";", "Action", ":",
    ]  # fmt: skip
    exported = tmp_path / "export"
    assert recap("export", out, exported) == 0
    written = safetensors.torch.load_file(str(exported / "policy_preprocessor_step_0_normalizer_processor.safetensors"))
    assert written["observation.state.q99"].tolist() == pytest.approx(
        checkpoint.normalization["observation.state"]["q99"]
    )
    config = json.loads((exported / "config.json").read_text())
    assert config["type"] == "pi05" and config["input_features"]["observation.state"]["shape"] == [4]
    pretrained = load_pretrained(exported)
    assert (pretrained.family, pretrained.norm_modes) == ("pi05", {"state": "QUANTILES", "action": "QUANTILES"})


def test_one_recap_iteration_fine_tunes_a_family_policy(dataset, trained, tmp_path):
    """``recap iterate`` from a pi0 pi_pre: value, labels with advantages, RECAP fine-tune of the same family."""
    v_pre = tmp_path / "v_pre"
    assert recap("train-value", dataset, "--out", v_pre, "--steps", "1", *QUIET) == 0
    out = tmp_path / "iteration_1"
    code = recap(
        "iterate", "--data", dataset, "--value-pretrained", v_pre, "--policy-pretrained", trained,
        "--out", out, "--iteration", "1", "--value-steps", "1", "--policy-steps", "1", "--batch-size", "2",
        "--no-progress",
    )  # fmt: skip
    assert code == 0
    policy = load_checkpoint(out / "policy", kind="policy")
    assert policy.model_config.family == "pi0" and policy.provenance["mode"] == "recap"
    assert policy.provenance["parent_checkpoint"]["checkpoint_id"] == load_checkpoint(trained).checkpoint_id
    assert policy.processor_steps == load_checkpoint(trained).processor_steps
