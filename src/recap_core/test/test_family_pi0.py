"""pi0 / pi0.5 (recap_core.models.families.pi0) against LeRobot 0.3.3's own model.

The reference (test/reference/pi0/, made by make_reference.py in the LeRobot 0.3.3 venv) is a tiny random pi0 saved
by ``PI0Policy.save_pretrained`` (transformers 4.51 key layout, normaliser buffers inside) and the same weights in
openpi's PyTorch-conversion layout, with LeRobot's sampled actions and per-element loss for a fixed observation,
noise and time. pi0.5 has no runnable reference here: its key layout (LeRobot 0.4 / openpi) is pinned instead.
"""

import dataclasses
import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file

from recap_core.checkpoint import CheckpointError
from recap_core.models.configuration import ConfigError
from recap_core.models.families import pi0
from recap_core.models.families.common import lerobot_v03_stats, strict_load

REFERENCE = pathlib.Path(__file__).parent / "reference" / "pi0"
TINY = json.loads((REFERENCE / "tiny_arch.json").read_text())
LAYOUTS = ("lerobot033", "openpi")
TOLERANCE = 1e-4


def _config(layout: str, **extra) -> pi0.Pi0Config:
    source = json.loads((REFERENCE / layout / "config.json").read_text())
    if layout == "lerobot033":
        return pi0.Pi0Config.from_lerobot_config(source, **TINY, **extra)
    return pi0.Pi0Config.from_openpi_config(source, **TINY, **extra)


def _weights(layout: str) -> dict[str, torch.Tensor]:
    tensors = load_file(str(REFERENCE / layout / "model.safetensors"))
    if layout == "lerobot033":
        stats, tensors = lerobot_v03_stats(tensors, layout)
        assert set(stats) == {"observation.state", "action"}
    return tensors


def _load(layout: str, tensors: dict | None = None) -> pi0.Pi0Model:
    tensors = _weights(layout) if tensors is None else tensors
    model = pi0.Pi0Model(_config(layout))
    strict_load(model, tensors, layout, pi0.remap_keys(list(tensors)))
    return model.eval()


def _inputs():
    data = load_file(str(REFERENCE / "inputs.safetensors"))
    images = [data["image0"], data["image1"]]
    masks = [data["image_mask0"], data["image_mask1"]]
    return data, images, masks


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def loaded():
    return {layout: _load(layout) for layout in LAYOUTS}


# ---------------------------------------------------------------------------- parity with LeRobot 0.3.3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sampled_actions_and_loss_match_lerobot(loaded, layout):
    model = loaded[layout]
    data, images, masks = _inputs()
    expected = load_file(str(REFERENCE / "outputs.safetensors"))
    args = (images, masks, data["tokens"], data["token_masks"], data["state"])
    with torch.no_grad():
        actions = model.sample_actions(*args, data["noise"].clone())
        loss = model(*args, data["actions"], data["noise"], data["time"])
    assert actions.shape == expected["sampled_actions"].shape == (2, TINY["chunk_size"], TINY["max_action_dim"])
    assert loss.shape == expected["loss"].shape
    assert (actions - expected["sampled_actions"]).abs().max().item() < TOLERANCE
    assert (loss - expected["loss"]).abs().max().item() < TOLERANCE
    # the reference is not degenerate: a different number of flow steps or a changed weight moves the result
    with torch.no_grad():
        assert (model.sample_actions(*args, data["noise"], num_steps=3) - actions).abs().max() > 1e-2
        layer = model.paligemma_with_expert.paligemma.model.language_model.layers[0]
        saved = layer.mlp.up_proj.weight.clone()
        layer.mlp.up_proj.weight.mul_(1.5)
        moved = (model(*args, data["actions"], data["noise"], data["time"]) - loss).abs().max()
        layer.mlp.up_proj.weight.copy_(saved)
    assert moved > 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_key_coverage_and_shapes_equal_the_file(layout):
    tensors = _weights(layout)
    model = pi0.Pi0Model(_config(layout))
    rename = pi0.remap_keys(list(tensors))
    assert len(set(rename.values())) == len(rename), "two file keys map onto one parameter"
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {rename[k]: tuple(v.shape) for k, v in tensors.items()}
    assert ours == theirs


def test_remap_names_each_known_layout():
    v03 = "model.paligemma_with_expert.paligemma.language_model.model.layers.3.mlp.up_proj.weight"
    v04 = "model.paligemma_with_expert.paligemma.model.language_model.layers.3.mlp.up_proj.weight"
    openpi = "paligemma_with_expert.paligemma.model.language_model.layers.3.mlp.up_proj.weight"
    compiled = "model._orig_mod.paligemma_with_expert.paligemma.model.language_model.layers.3.mlp.up_proj.weight"
    names = {
        v03: openpi,
        v04: openpi,
        compiled: openpi,
        openpi: openpi,
        "model.paligemma_with_expert.paligemma.language_model.lm_head.weight": pi0.EMBEDDING_KEY,
        "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight": pi0.EMBEDDING_KEY,
        "model.paligemma_with_expert.paligemma.vision_tower.vision_model.post_layernorm.bias": (
            "paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.bias"
        ),
        "model.paligemma_with_expert.paligemma.multi_modal_projector.linear.weight": (
            "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"
        ),
        "model.paligemma_with_expert.gemma_expert.lm_head.weight": "paligemma_with_expert.gemma_expert.lm_head.weight",
        "model.state_proj.weight": "state_proj.weight",
    }
    buffers = ["normalize_inputs.buffer_observation_state.mean", "unnormalize_outputs.buffer_action.std"]
    for name in buffers:
        assert pi0.is_non_parameter_key(name)
    for name in names:
        assert not pi0.is_non_parameter_key(name)
    assert pi0.remap_keys([*names, *buffers]) == names


def test_lerobot04_and_embed_tokens_spellings_load_the_same_weights(loaded):
    openpi = _weights("openpi")
    reference = loaded["openpi"].state_dict()
    v04 = {f"model.{k}": v for k, v in openpi.items()}
    spelled = {
        (k.replace("paligemma.lm_head.", "paligemma.model.language_model.embed_tokens.")): v for k, v in openpi.items()
    }
    for tensors in (v04, spelled):
        model = _load("openpi", tensors)
        state = model.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in state)


# ---------------------------------------------------------------------------- strict loading


def _refusal(tensors: dict) -> str:
    model = pi0.Pi0Model(_config("openpi"))
    with pytest.raises(CheckpointError) as info:
        strict_load(model, tensors, "model.safetensors", pi0.remap_keys(list(tensors)))
    return str(info.value)


def test_missing_extra_and_misshapen_keys_are_refused_by_name():
    tensors = _weights("openpi")
    key = "paligemma_with_expert.gemma_expert.model.layers.1.self_attn.k_proj.weight"
    assert key in _refusal({k: v for k, v in tensors.items() if k != key})
    extra = "paligemma_with_expert.gemma_expert.model.layers.9.mlp.up_proj.weight"
    assert extra in _refusal({**tensors, extra: torch.zeros(1)})
    shaped = _refusal({**tensors, key: torch.zeros(3, 3)})
    assert key in shaped and "[3, 3]" in shaped
    both = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    assert both in _refusal({**tensors, both: tensors[pi0.EMBEDDING_KEY]})
    # a pi0.5 file (time MLP, adaRMS norms) does not load into a pi0 model
    pi05 = pi0.Pi0Model(_config("openpi", pi05=True)).state_dict()
    assert "has no place in the model" in _refusal(pi05)


# ---------------------------------------------------------------------------- configs


def test_config_dict_round_trip_and_unknown_fields():
    config = _config("lerobot033")
    assert pi0.Pi0Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="no field.*'bogus'"):
        pi0.Pi0Config.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="num_kv_heads"):
        pi0.Pi0Config(num_heads=8, num_kv_heads=3)


def test_configs_from_the_source_files():
    source = json.loads((REFERENCE / "lerobot033" / "config.json").read_text())
    with pytest.raises(ConfigError, match="image_size 16 is not a multiple of 14"):
        pi0.Pi0Config.from_lerobot_config(source)  # 0.3 files hold no sizes: the tiny one needs its overrides
    v03 = pi0.Pi0Config.from_lerobot_config({**source, "resize_imgs_with_padding": [224, 224], "num_steps": 7})
    assert (v03.pi05, v03.chunk_size, v03.max_state_dim, v03.image_size, v03.expert_width) == (False, 5, 8, 224, 32)
    assert (v03.width, v03.depth, v03.vision_depth, v03.tokenizer_max_length, v03.num_steps) == (2048, 18, 27, 6, 7)
    v04 = pi0.Pi0Config.from_lerobot_config(
        {
            "type": "pi05",
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
            "chunk_size": 50,
            "n_action_steps": 10,
            "num_inference_steps": 5,
            "image_resolution": [224, 224],
        }
    )
    assert v04 == pi0.Pi0Config(pi05=True, tokenizer_max_length=200, num_steps=5)
    openpi = pi0.Pi0Config.from_openpi_config(
        {
            "action_dim": 32,
            "action_horizon": 10,
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
        },
        pi05=True,
    )
    assert openpi == pi0.Pi0Config(pi05=True, chunk_size=10, tokenizer_max_length=200)
    with pytest.raises(ConfigError, match="paligemma_variant 'tiny'"):
        pi0.Pi0Config.from_openpi_config(json.loads((REFERENCE / "openpi" / "config.json").read_text()))
    with pytest.raises(ConfigError, match="adapt_to_pi_aloha"):
        pi0.Pi0Config.from_lerobot_config({"type": "pi0", "adapt_to_pi_aloha": True})
    with pytest.raises(ConfigError, match="n_action_steps"):
        pi0.Pi0Config.from_lerobot_config({"type": "pi0", "chunk_size": 50, "n_action_steps": 10})


def test_full_size_pi0_builds_on_meta_with_3_3b_parameters():
    with torch.device("meta"):
        model = pi0.Pi0Model(pi0.Pi0Config())
    total = sum(p.numel() for p in model.parameters())
    unused_lm_head = model.paligemma_with_expert.gemma_expert.lm_head.weight.numel()
    assert unused_lm_head == 257152 * 1024
    assert total == 3_501_372_176
    assert total - unused_lm_head == 3_238_048_528  # PaliGemma 3B (SigLIP 400M + Gemma 2B) + Gemma 300M expert
    state = model.state_dict()
    assert state["paligemma_with_expert.paligemma.lm_head.weight"].shape == (257152, 2048)
    assert state[
        "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"
    ].shape == (
        1152,
        3,
        14,
        14,
    )
    assert len([k for k in state if k.endswith("self_attn.out_proj.weight")]) == 27
    assert state["paligemma_with_expert.gemma_expert.model.layers.17.self_attn.q_proj.weight"].shape == (2048, 1024)
    assert state["action_time_mlp_in.weight"].shape == (1024, 2048)


# ---------------------------------------------------------------------------- pi0.5


def test_pi05_keys_follow_lerobot04_and_openpi_layout():
    """pi0.5 = pi0 without state_proj / action_time_mlp, with time_mlp_{in,out} and adaRMS ``dense`` (3 x width:
    scale, shift, gate) replacing the expert's norm weights (openpi's conversion script, LeRobot 0.4's PI05Pytorch)."""
    pi0_keys = set(pi0.Pi0Model(_config("openpi")).state_dict())
    state = pi0.Pi0Model(_config("openpi", pi05=True)).state_dict()
    width = TINY["expert_width"]
    expert = "paligemma_with_expert.gemma_expert.model."
    removed = {"state_proj.weight", "state_proj.bias"}
    removed |= {f"action_time_mlp_{io}.{p}" for io in ("in", "out") for p in ("weight", "bias")}
    removed |= {k for k in pi0_keys if k.startswith(expert) and k.endswith("layernorm.weight")}
    removed |= {expert + "norm.weight"}
    added = {f"time_mlp_{io}.{p}" for io in ("in", "out") for p in ("weight", "bias")}
    added |= {
        k.replace("layernorm.weight", f"layernorm.dense.{p}")
        for k in removed
        if "layernorm" in k
        for p in ("weight", "bias")
    }
    added |= {expert + "norm.dense.weight", expert + "norm.dense.bias"}
    assert set(state) == (pi0_keys - removed) | added
    assert state[expert + "layers.0.input_layernorm.dense.weight"].shape == (3 * width, width)
    assert state[expert + "layers.1.post_attention_layernorm.dense.bias"].shape == (3 * width,)
    assert state[expert + "norm.dense.weight"].shape == (3 * width, width)
    assert state["time_mlp_in.weight"].shape == state["time_mlp_out.weight"].shape == (width, width)
    assert "paligemma_with_expert.paligemma.model.language_model.layers.0.input_layernorm.weight" in state
    # LeRobot 0.4 writes the same names under the policy's "model."
    rename = pi0.remap_keys(f"model.{k}" for k in state)
    assert set(rename.values()) == set(state)


def test_pi05_velocity_depends_on_time_through_adarms_only():
    model = _randomise(pi0.Pi0Model(_config("openpi", pi05=True)))
    data, images, masks = _inputs()
    prefix = model.prefix_cache(images, masks, data["tokens"], data["token_masks"])
    x_t = data["noise"]
    with torch.no_grad():
        early = model.velocity(prefix, data["state"], x_t, torch.full((2,), 0.9))
        late = model.velocity(prefix, data["state"], x_t, torch.full((2,), 0.2))
        other_state = model.velocity(prefix, torch.randn_like(data["state"]), x_t, torch.full((2,), 0.9))
        assert early.shape == (2, TINY["chunk_size"], TINY["max_action_dim"])
        assert torch.isfinite(early).all()
        assert (early - late).abs().max() > 1e-2  # adaRMS moves the output with t
        assert torch.equal(early, other_state)  # the state is in the prompt, not a token
        for module in model.modules():
            if isinstance(module, pi0.AdaRMSNorm):
                module.dense.weight.zero_()
        early = model.velocity(prefix, data["state"], x_t, torch.full((2,), 0.9))
        late = model.velocity(prefix, data["state"], x_t, torch.full((2,), 0.2))
    assert torch.allclose(early, late, atol=1e-6)  # with the dense maps at zero, time has no way in
    with torch.no_grad():
        loss = model(images, masks, data["tokens"], data["token_masks"], None, data["actions"], x_t, data["time"])
    assert loss.shape == data["actions"].shape and torch.isfinite(loss).all()


# ---------------------------------------------------------------------------- batched guidance


@pytest.mark.parametrize("pi05", [False, True])
def test_cfg_batch_of_2b_equals_two_separate_runs(loaded, pi05):
    model = loaded["openpi"] if not pi05 else _randomise(pi0.Pi0Model(_config("openpi", pi05=True)))
    data, images, masks = _inputs()
    cond_tokens, cond_masks = data["tokens"], data["token_masks"]
    uncond_tokens = (cond_tokens + 7) % TINY["vocab_size"]
    uncond_masks = cond_masks.clone()
    uncond_masks[0, 3:] = False
    state, x_t, t = data["state"], data["noise"], torch.tensor([0.7, 0.4])
    with torch.no_grad():
        both = model.prefix_cache(
            [torch.cat([im, im]) for im in images],
            [torch.cat([m, m]) for m in masks],
            torch.cat([cond_tokens, uncond_tokens]),
            torch.cat([cond_masks, uncond_masks]),
        )
        batched = model.velocity(both, state.repeat(2, 1), torch.cat([x_t, x_t]), torch.cat([t, t]))
        cond = model.velocity(model.prefix_cache(images, masks, cond_tokens, cond_masks), state, x_t, t)
        uncond = model.velocity(model.prefix_cache(images, masks, uncond_tokens, uncond_masks), state, x_t, t)
    assert (cond - uncond).abs().max() > 1e-3
    assert torch.allclose(batched[:2], cond, atol=1e-5)
    assert torch.allclose(batched[2:], uncond, atol=1e-5)


def test_config_is_frozen():
    config = pi0.Pi0Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 1
