"""Regenerate the SmolVLA parity reference with LeRobot 0.3.3's own classes (run in the reference venv, offline).

    HF_HUB_OFFLINE=1 /work/ref/lerobot033/bin/python src/recap_core/test/reference/smolvla/make_reference.py

Builds a tiny ``SmolVLAPolicy`` (LeRobot 0.3.3, transformers 4.51) from a shrunk ``SmolVLMConfig``: LeRobot
asks the hub for the VLM's config (``AutoConfig``) and processor (``AutoProcessor``, only for the tokenizer and
two special-token ids); both look-ups are replaced by the tiny config and a stub holding the two ids, nothing
else is patched. The weights are re-drawn with a fixed seed at unit scale (so that every layer matters), then
the policy's own ``save_pretrained`` writes ``checkpoint_v033/`` (``config.json`` + ``model.safetensors`` with
the normalisation buffers), and ``vlm_config.json`` holds the tiny VLM's config (LeRobot's file only names the
VLM). ``reference.safetensors`` holds a fixed observation (two cameras, the second missing for sample 1; padded
prompt), noise, actions and time, and LeRobot's outputs for them: ``VLAFlowMatching.sample_actions``, the
per-element loss of ``VLAFlowMatching.forward``, ``embed_prefix``, and sampled actions of a variant with
``add_image_special_tokens`` and ``prefix_length`` set on the same weights. ``reference.json`` lists the settings.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import safetensors.torch  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, SmolVLMConfig  # noqa: E402
from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig  # noqa: E402

import lerobot  # noqa: E402
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature  # noqa: E402
from lerobot.policies.smolvla import modeling_smolvla, smolvlm_with_expert  # noqa: E402
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SEED = 20251205
FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN = 5, 6
PREFIX_LENGTH = 24
STATE_DIM, ACTION_DIM = 5, 4


def tiny_vlm_config() -> SmolVLMConfig:
    text = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    vision = SmolVLMVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-6,
    )
    return SmolVLMConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        scale_factor=2,
        vocab_size=128,
        image_token_id=7,
        tie_word_embeddings=False,
    )


def install_offline_hub(vlm_config: SmolVLMConfig) -> None:
    """LeRobot's two hub look-ups -> the tiny config and a processor stub with the special-token ids."""
    tokenizer = types.SimpleNamespace(fake_image_token_id=FAKE_IMAGE_TOKEN, global_image_token_id=GLOBAL_IMAGE_TOKEN)
    processor = types.SimpleNamespace(tokenizer=tokenizer)
    fake_auto_config = types.SimpleNamespace(
        from_pretrained=lambda *a, **k: SmolVLMConfig.from_dict(vlm_config.to_dict())
    )
    fake_auto_processor = types.SimpleNamespace(from_pretrained=lambda *a, **k: processor)
    smolvlm_with_expert.AutoConfig = fake_auto_config
    smolvlm_with_expert.AutoProcessor = fake_auto_processor
    modeling_smolvla.AutoProcessor = fake_auto_processor


def policy_config() -> SmolVLAConfig:
    return SmolVLAConfig(
        chunk_size=5,
        n_action_steps=5,
        max_state_dim=7,
        max_action_dim=6,
        num_steps=10,
        resize_imgs_with_padding=(32, 32),
        tokenizer_max_length=8,
        num_vlm_layers=4,
        load_vlm_weights=False,
        device="cpu",
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            "observation.images.cam0": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)),
            "observation.images.cam1": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
        normalization_mapping={
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        },
    )


def redraw_weights(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Unit-scale random weights: matrices N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise * (param[0].numel() ** -0.5))
            elif "norm" in name:
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


def main() -> None:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    vlm_config = tiny_vlm_config()
    install_offline_hub(vlm_config)
    stats = {
        "observation.state": {"mean": torch.linspace(-0.5, 0.5, STATE_DIM), "std": torch.linspace(0.5, 1.5, STATE_DIM)},
        "action": {"mean": torch.linspace(0.2, -0.2, ACTION_DIM), "std": torch.linspace(1.0, 2.0, ACTION_DIM)},
    }
    policy = modeling_smolvla.SmolVLAPolicy(policy_config(), dataset_stats=stats).eval()
    model = policy.model
    redraw_weights(model, generator)

    checkpoint = HERE / "checkpoint_v033"
    policy.save_pretrained(checkpoint)
    (HERE / "vlm_config.json").write_text(json.dumps(vlm_config.to_dict(), indent=2, sort_keys=True) + "\n")

    batch, cfg = 2, policy.config
    images = [torch.rand(batch, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2)]
    image_masks = [torch.tensor([True, True]), torch.tensor([True, False])]
    tokens = torch.randint(8, 128, (batch, 6), generator=generator)
    token_masks = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    state = torch.randn(batch, cfg.max_state_dim, generator=generator)
    noise = torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=generator)
    actions = torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=generator)
    time = torch.tensor([0.3, 0.85])

    with torch.no_grad():
        sampled = model.sample_actions(images, image_masks, tokens, token_masks, state, noise=noise.clone())
        losses = model.forward(images, image_masks, tokens, token_masks, state, actions, noise.clone(), time.clone())
        prefix_embs, prefix_pad, prefix_att = model.embed_prefix(images, image_masks, tokens, token_masks, state=state)
        model.add_image_special_tokens = True
        model.prefix_length = PREFIX_LENGTH
        sampled_special = model.sample_actions(images, image_masks, tokens, token_masks, state, noise=noise.clone())

    tensors = {
        "image_0": images[0],
        "image_1": images[1],
        "image_mask_0": image_masks[0],
        "image_mask_1": image_masks[1],
        "tokens": tokens,
        "token_masks": token_masks,
        "state": state,
        "noise": noise,
        "actions": actions,
        "time": time,
        "sampled_actions": sampled,
        "losses": losses,
        "prefix_embs": prefix_embs,
        "prefix_pad_masks": prefix_pad,
        "prefix_att_masks": prefix_att,
        "sampled_actions_special_tokens": sampled_special,
    }
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "reference.safetensors"))
    info = {
        "lerobot": lerobot.__version__,
        "torch": torch.__version__,
        "transformers": sys.modules["transformers"].__version__,
        "seed": SEED,
        "variant_special_tokens": {
            "add_image_special_tokens": True,
            "fake_image_token_id": FAKE_IMAGE_TOKEN,
            "global_image_token_id": GLOBAL_IMAGE_TOKEN,
            "prefix_length": PREFIX_LENGTH,
        },
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "sampled_actions_abs_mean": float(sampled.abs().mean()),
        "losses_mean": float(losses.mean()),
    }
    (HERE / "reference.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
