"""SmolVLA family: parity with LeRobot 0.3.3 on a committed tiny checkpoint, strict loading, the full-size build.

The reference (``reference/smolvla/``, made by ``make_reference.py`` in the LeRobot venv) holds a checkpoint in
the exact layout LeRobot's ``save_pretrained`` writes and LeRobot's outputs for a fixed observation and noise.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest
import safetensors.torch
import torch
from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

from recap_core.checkpoint import CheckpointError
from recap_core.models.configuration import ConfigError
from recap_core.models.families.common import strict_load
from recap_core.models.families.smolvla import (
    SMOLVLM2_500M,
    SmolVLAConfig,
    SmolVLAModel,
    is_non_parameter_key,
    remap_keys,
)

REF = pathlib.Path(__file__).resolve().parent / "reference" / "smolvla"
CHECKPOINT = REF / "checkpoint_v033"
TOLERANCE = 1e-4
NORMALISER_KEYS = {
    "normalize_inputs.buffer_observation_state.mean",
    "normalize_inputs.buffer_observation_state.std",
    "normalize_targets.buffer_action.mean",
    "normalize_targets.buffer_action.std",
    "unnormalize_outputs.buffer_action.mean",
    "unnormalize_outputs.buffer_action.std",
}


def _tiny_config() -> SmolVLAConfig:
    lerobot = json.loads((CHECKPOINT / "config.json").read_text())
    return SmolVLAConfig.from_lerobot_config(lerobot, json.loads((REF / "vlm_config.json").read_text()))


def _file_tensors() -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(CHECKPOINT / "model.safetensors"))


def _weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if not is_non_parameter_key(k)}


def _load(tensors: dict[str, torch.Tensor], config: SmolVLAConfig | None = None) -> SmolVLAModel:
    model = SmolVLAModel(config or _tiny_config()).eval()
    weights = _weights(tensors)
    strict_load(model, weights, "model.safetensors", remap_keys(weights))
    return model


@pytest.fixture(scope="module")
def model() -> SmolVLAModel:
    return _load(_file_tensors())


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(REF / "reference.safetensors"))


def _observation(ref):
    return (
        [ref["image_0"], ref["image_1"]],
        [ref["image_mask_0"], ref["image_mask_1"]],
        ref["tokens"],
        ref["token_masks"],
    )


# ---------------------------------------------------------------------------- config


def test_config_from_lerobot_files_and_round_trip():
    config = _tiny_config()
    assert (config.chunk_size, config.max_state_dim, config.max_action_dim, config.num_steps) == (5, 7, 6, 10)
    assert (config.image_size, config.patch_size, config.scale_factor, config.tokens_per_image) == (32, 8, 2, 4)
    assert (config.text_hidden_size, config.num_vlm_layers, config.expert_hidden_size) == (64, 4, 48)
    assert config.expert_intermediate_size == 256 and config.expert_layers == 4
    assert [config.is_cross_layer(i) for i in range(4)] == [False, True, False, True]
    assert SmolVLAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_refusals_name_the_problem():
    with pytest.raises(ConfigError, match=r"no field\(s\) \['hidden'\]"):
        SmolVLAConfig.from_dict({**SmolVLAConfig().to_dict(), "hidden": 3})
    lerobot = json.loads((CHECKPOINT / "config.json").read_text())
    with pytest.raises(ConfigError, match="no built-in sizes"):
        SmolVLAConfig.from_lerobot_config({**lerobot, "vlm_model_name": "someone/other-vlm"})
    with pytest.raises(ConfigError, match="resize_imgs_with_padding"):
        SmolVLAConfig.from_lerobot_config({**lerobot, "resize_imgs_with_padding": [64, 64]}, _vlm_config())
    with pytest.raises(ConfigError, match="adapt_to_pi_aloha"):
        SmolVLAConfig.from_lerobot_config({**lerobot, "adapt_to_pi_aloha": True}, _vlm_config())
    with pytest.raises(ConfigError, match="not a multiple of num_expert_layers"):
        SmolVLAConfig(num_expert_layers=5)


def _vlm_config() -> dict:
    return json.loads((REF / "vlm_config.json").read_text())


# ---------------------------------------------------------------------------- keys and strict loading


def test_key_coverage_and_shapes_equal_the_file(model):
    tensors = _file_tensors()
    assert {k for k in tensors if is_non_parameter_key(k)} == NORMALISER_KEYS
    file_shapes = {remap_keys([k])[k]: tuple(v.shape) for k, v in _weights(tensors).items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == file_shapes
    assert len(ours) == len(tensors) - len(NORMALISER_KEYS) == 124
    reference_count = json.loads((REF / "reference.json").read_text())["num_parameters"]
    assert sum(p.numel() for p in model.parameters()) == reference_count


def test_transformers_smolvlm_names_match_ours(model):
    """LeRobot 0.4.x / main build the VLM with transformers' SmolVLMForConditionalGeneration; its names (5.25 here)
    under ``vlm_with_expert.vlm.`` are ours once the text layers are cut to ``num_vlm_layers``."""
    hf = SmolVLMForConditionalGeneration(SmolVLMConfig.from_dict(_vlm_config()))
    hf.model.text_model.layers = hf.model.text_model.layers[: model.config.num_vlm_layers]
    theirs = {f"vlm_with_expert.vlm.{k}": tuple(v.shape) for k, v in hf.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("vlm_with_expert.vlm.")}
    assert theirs == ours


def test_remap_keys_covers_both_lerobot_layouts():
    names = list(_file_tensors())
    v03 = remap_keys(names)
    assert set(v03) == set(names) - NORMALISER_KEYS
    assert v03["model.vlm_with_expert.lm_expert.norm.weight"] == "vlm_with_expert.lm_expert.norm.weight"
    v04 = [k for k in names if k not in NORMALISER_KEYS]  # 0.4 keeps the normaliser in policy_preprocessor files
    assert remap_keys(v04) == v03
    compiled = [k.replace("model.", "model._orig_mod.", 1) for k in v04]
    assert sorted(remap_keys(compiled).values()) == sorted(v03.values())


def test_loads_the_0_4_layout_and_a_compiled_save(ref):
    tensors = _weights(_file_tensors())
    compiled = {k.replace("model.", "model._orig_mod.", 1): v for k, v in tensors.items()}
    images, masks, tokens, token_masks = _observation(ref)
    for variant in (tensors, compiled):
        loaded = _load(variant)
        with torch.no_grad():
            out = loaded.sample_actions(images, masks, tokens, token_masks, ref["state"], ref["noise"])
        assert (out - ref["sampled_actions"]).abs().max() < TOLERANCE


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing", r"no tensor for 'vlm_with_expert\.lm_expert\.layers\.1\.self_attn\.k_proj\.weight'"),
        ("extra", r"tensor 'model\.vlm_with_expert\.extra\.weight' has no place"),
        (
            "shape",
            r"tensor 'model\.state_proj\.weight' has shape \[64, 8\], the model's 'state_proj\.weight' is \[64, 7\]",
        ),
    ],
)
def test_strict_loading_refuses_and_names_the_key(edit, message):
    tensors = _weights(_file_tensors())
    if edit == "missing":
        del tensors["model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"]
    elif edit == "extra":
        tensors["model.vlm_with_expert.extra.weight"] = torch.zeros(2)
    else:
        tensors["model.state_proj.weight"] = torch.zeros(64, 8)
    with pytest.raises(CheckpointError, match=message):
        _load(tensors)


def test_cross_layer_projection_shapes_are_checked():
    """An expert built all self-attention has 48 -> 32 K/V maps where the file's cross layers hold 32 -> 32."""
    config = dataclasses.replace(_tiny_config(), attention_mode="self_attn")
    with pytest.raises(CheckpointError, match=r"lm_expert\.layers\.1\.self_attn\.k_proj\.weight' has shape \[32, 32\]"):
        _load(_file_tensors(), config)


# ---------------------------------------------------------------------------- parity with LeRobot 0.3.3


def test_embed_prefix_matches_lerobot(model, ref):
    images, masks, tokens, token_masks = _observation(ref)
    with torch.no_grad():
        embs, pads, att = model.embed_prefix(images, masks, tokens, token_masks, ref["state"])
    assert torch.equal(pads, ref["prefix_pad_masks"]) and torch.equal(att, ref["prefix_att_masks"])
    assert (embs - ref["prefix_embs"]).abs().max() < TOLERANCE


def test_sampled_actions_match_lerobot(model, ref):
    images, masks, tokens, token_masks = _observation(ref)
    noise = ref["noise"].clone()
    with torch.no_grad():
        out = model.sample_actions(images, masks, tokens, token_masks, ref["state"], noise)
    assert torch.equal(noise, ref["noise"])
    assert out.shape == (2, 5, 6)
    assert (out - ref["sampled_actions"]).abs().max() < TOLERANCE
    assert (out - ref["noise"]).abs().max() > 0.5


def test_training_loss_matches_lerobot(model, ref):
    images, masks, tokens, token_masks = _observation(ref)
    with torch.no_grad():
        losses = model(images, masks, tokens, token_masks, ref["state"], ref["actions"], ref["noise"], ref["time"])
    assert losses.shape == (2, 5, 6)
    assert (losses - ref["losses"]).abs().max() < TOLERANCE


def test_training_loss_backpropagates_to_expert_and_vlm(ref):
    trained = _load(_file_tensors()).train()
    images, masks, tokens, token_masks = _observation(ref)
    losses = trained(images, masks, tokens, token_masks, ref["state"], ref["actions"], ref["noise"], ref["time"])
    losses.mean().backward()
    grads = {name: p.grad for name, p in trained.named_parameters()}
    for name in (
        "action_in_proj.weight",
        "state_proj.weight",
        "vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight",
        "vlm_with_expert.vlm.model.vision_model.embeddings.patch_embedding.weight",
        "vlm_with_expert.vlm.model.text_model.layers.3.self_attn.k_proj.weight",
    ):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["vlm_with_expert.vlm.lm_head.weight"] is None  # kept only so that every file tensor has a place


def test_image_special_tokens_and_prefix_length_match_lerobot(model, ref):
    info = json.loads((REF / "reference.json").read_text())["variant_special_tokens"]
    variant = _load(_file_tensors(), dataclasses.replace(model.config, **info))
    images, masks, tokens, token_masks = _observation(ref)
    with torch.no_grad():
        out = variant.sample_actions(images, masks, tokens, token_masks, ref["state"], ref["noise"])
        plain = model.sample_actions(images, masks, tokens, token_masks, ref["state"], ref["noise"])
    assert (out - ref["sampled_actions_special_tokens"]).abs().max() < TOLERANCE
    assert (out - plain).abs().max() > 1e-2


def test_state_and_masked_camera_matter(model, ref):
    images, masks, tokens, token_masks = _observation(ref)
    with torch.no_grad():
        prefix = model.prefix_cache(images, masks, tokens, token_masks)
        t = torch.full((2,), 0.5)
        base = model.velocity(prefix, ref["state"], ref["noise"], t)
        assert (model.velocity(prefix, ref["state"] + 1.0, ref["noise"], t) - base).abs().max() > 1e-3
        hidden = [images[0], torch.randn_like(images[1])]  # camera 1 is masked for sample 1 only
        other = model.velocity(model.prefix_cache(hidden, masks, tokens, token_masks), ref["state"], ref["noise"], t)
    assert (other[1] - base[1]).abs().max() < 1e-6
    assert (other[0] - base[0]).abs().max() > 1e-3


# ---------------------------------------------------------------------------- CFG batch, full size


def test_batched_cfg_equals_two_separate_runs(model, ref):
    images, masks, tokens, token_masks = _observation(ref)
    uncond = torch.tensor([[9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25]])
    uncond_masks = torch.tensor([[True, True, True, False, False, False], [True] * 6])
    state, noise = ref["state"], ref["noise"]
    with torch.no_grad():
        cond_out = model.sample_actions(images, masks, tokens, token_masks, state, noise)
        uncond_out = model.sample_actions(images, masks, uncond, uncond_masks, state, noise)
        both = model.sample_actions(
            [torch.cat([im, im]) for im in images],
            [torch.cat([m, m]) for m in masks],
            torch.cat([tokens, uncond]),
            torch.cat([token_masks, uncond_masks]),
            torch.cat([state, state]),
            torch.cat([noise, noise]),
        )
    assert (both[:2] - cond_out).abs().max() < 1e-5
    assert (both[2:] - uncond_out).abs().max() < 1e-5
    assert (cond_out - uncond_out).abs().max() > 1e-2


def _expected_full_size_parameters(c: SmolVLAConfig) -> int:
    vision_layer = 4 * (c.vision_hidden_size**2 + c.vision_hidden_size)  # q, k, v, out
    vision_layer += 2 * c.vision_hidden_size * c.vision_intermediate_size + c.vision_intermediate_size  # fc1, fc2
    vision_layer += c.vision_hidden_size + 2 * 2 * c.vision_hidden_size  # fc2 bias, two LayerNorms
    patches = (c.image_size // c.patch_size) ** 2
    vision = c.vision_hidden_size * (3 * c.patch_size**2 + 1 + patches) + c.vision_num_layers * vision_layer
    vision += 2 * c.vision_hidden_size
    connector = c.vision_hidden_size * c.scale_factor**2 * c.text_hidden_size
    width, q, kv = c.text_hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    text_layer = 2 * width * q + 2 * width * kv + 3 * width * c.text_intermediate_size + 2 * width
    text = 2 * c.vocab_size * width + c.num_vlm_layers * text_layer + width
    e = c.expert_hidden_size
    expert = c.expert_layers * (2 * e * q + 3 * e * c.expert_intermediate_size + 2 * e) + e
    expert += sum(2 * kv * (kv if c.is_cross_layer(i) else e) for i in range(c.expert_layers))
    heads = (c.max_state_dim + 1) * width + (c.max_action_dim + 1) * e + (e + 1) * c.max_action_dim
    heads += (2 * e + 1) * e + (e + 1) * e
    return vision + connector + text + expert + heads


def test_full_size_builds_on_meta_with_smolvla_base_sizes():
    config = SmolVLAConfig()
    base = {"type": "smolvla", "vlm_model_name": SMOLVLM2_500M, "chunk_size": 50, "num_vlm_layers": 16}
    assert SmolVLAConfig.from_lerobot_config({**base, "resize_imgs_with_padding": [512, 512]}) == config
    assert (config.expert_hidden_size, config.expert_intermediate_size, config.tokens_per_image) == (720, 2048, 64)
    with torch.device("meta"):
        model = SmolVLAModel(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == _expected_full_size_parameters(config) == 450_046_176
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["vlm_with_expert.lm_expert.layers.0.self_attn.k_proj.weight"] == (320, 720)
    assert shapes["vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"] == (320, 320)
    assert shapes["vlm_with_expert.vlm.model.connector.modality_projection.proj.weight"] == (960, 12288)
    assert len([k for k in shapes if ".text_model.layers." in k and k.endswith("q_proj.weight")]) == 16
