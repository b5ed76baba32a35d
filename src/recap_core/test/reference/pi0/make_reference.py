"""Build the tiny pi0 parity reference with LeRobot 0.3.3's own classes (run in the reference venv).

    HF_HUB_OFFLINE=1 /work/ref/lerobot033/bin/python src/recap_core/test/reference/pi0/make_reference.py

Writes, next to this file:
  lerobot033/           exactly what ``PI0Policy.save_pretrained`` writes (config.json + model.safetensors with the
                        normalisation buffers; transformers 4.51 PaliGemma key layout)
  openpi/               the same weights in openpi's PyTorch-conversion layout (model.safetensors with transformers
                        4.52+ names and no ``model.`` prefix, config.json, assets/tiny_robot/norm_stats.json)
  tiny_arch.json        the shrunk architecture (our Pi0Config field overrides; neither on-disk config can hold it)
  inputs.safetensors    the observation fed to the inner flow-matching module, the noise, actions and time
  outputs.safetensors   sampled actions (10 Euler steps) and the per-element training loss
  outputs.json          shapes, the seed and summary numbers of the above

Patches, none of which touches LeRobot's math:
  * the PaliGemma tokenizer that ``PI0Policy.__init__`` downloads is replaced by a stub (token ids are given directly);
  * ``PaliGemmaWithExpertConfig`` is replaced by the same config with shrunk PaliGemma / Gemma-expert sub-configs;
  * the two LeRobot modules see ``torch.bfloat16`` as ``torch.float32`` so the reference runs in fp32 end to end
    (LeRobot hard-codes bfloat16 casts inside the layer loop);
  * LeRobot 0.3.3 pins transformers<4.52 (the venv has 4.51.3, whose PaliGemma keeps the Gemma decoder at
    ``paligemma.language_model.model``), but ``PaliGemmaWithExpertModel.forward`` / ``embed_language_tokens`` address
    it as ``paligemma.language_model`` (the 4.52+ object).  Those two accessors are re-pointed to
    ``paligemma.language_model.model`` by a textual patch of that module's source; the module tree, and therefore the
    saved key layout, stays the one LeRobot 0.3.3 writes under its pinned transformers.
"""

import inspect
import json
import math
import os
import shutil
import types
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers.models.auto import CONFIG_MAPPING  # noqa: E402

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.policies.pi0 import modeling_pi0, paligemma_with_expert  # noqa: E402
from lerobot.policies.pi0.configuration_pi0 import PI0Config  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1234
VOCAB = 64
TEXT = dict(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16)
EXPERT = dict(width=32, mlp_dim=64)
VISION = dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=4, image_size=16)
CHUNK, STATE_DIM, ACTION_DIM, MAX_DIM, TOKENS = 5, 5, 4, 8, 6

TINY_ARCH = {
    "chunk_size": CHUNK,
    "max_state_dim": MAX_DIM,
    "max_action_dim": MAX_DIM,
    "image_size": VISION["image_size"],
    "tokenizer_max_length": TOKENS,
    "vision_width": VISION["width"],
    "vision_depth": VISION["depth"],
    "vision_mlp_dim": VISION["mlp_dim"],
    "vision_num_heads": VISION["num_heads"],
    "vision_patch_size": VISION["patch_size"],
    "vocab_size": VOCAB,
    "width": TEXT["width"],
    "depth": TEXT["depth"],
    "mlp_dim": TEXT["mlp_dim"],
    "num_heads": TEXT["num_heads"],
    "num_kv_heads": TEXT["num_kv_heads"],
    "head_dim": TEXT["head_dim"],
    "expert_width": EXPERT["width"],
    "expert_mlp_dim": EXPERT["mlp_dim"],
}


class _Fp32Torch(types.ModuleType):
    """``torch`` as LeRobot's pi0 modules see it: identical, except ``bfloat16`` is ``float32``."""

    bfloat16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


class _NoTokenizer:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        return None


def _tiny_pwe_config(**kwargs):
    cfg = paligemma_with_expert.PaliGemmaWithExpertConfig(**kwargs)
    cfg.paligemma_config = CONFIG_MAPPING["paligemma"](
        _vocab_size=VOCAB,
        bos_token_id=2,
        eos_token_id=1,
        hidden_size=TEXT["width"],
        image_token_index=VOCAB,
        pad_token_id=0,
        projection_dim=TEXT["width"],
        text_config={
            "model_type": "gemma",
            "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": TEXT["width"],
            "intermediate_size": TEXT["mlp_dim"],
            "num_attention_heads": TEXT["num_heads"],
            "num_key_value_heads": TEXT["num_kv_heads"],
            "head_dim": TEXT["head_dim"],
            "num_hidden_layers": TEXT["depth"],
            "vocab_size": VOCAB,
            "torch_dtype": "float32",
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": VISION["width"],
            "intermediate_size": VISION["mlp_dim"],
            "num_attention_heads": VISION["num_heads"],
            "num_hidden_layers": VISION["depth"],
            "patch_size": VISION["patch_size"],
            "image_size": VISION["image_size"],
            "projection_dim": TEXT["width"],
            "projector_hidden_act": "gelu_fast",
            "vision_use_head": False,
            "torch_dtype": "float32",
        },
    )
    cfg.gemma_expert_config = CONFIG_MAPPING["gemma"](
        attention_bias=False,
        attention_dropout=0.0,
        head_dim=TEXT["head_dim"],
        hidden_act="gelu_pytorch_tanh",
        hidden_activation="gelu_pytorch_tanh",
        hidden_size=EXPERT["width"],
        intermediate_size=EXPERT["mlp_dim"],
        num_attention_heads=TEXT["num_heads"],
        num_hidden_layers=TEXT["depth"],
        num_key_value_heads=TEXT["num_kv_heads"],
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        torch_dtype="float32",
        vocab_size=VOCAB,
    )
    return cfg


def _patched_pwe_module(proxy):
    source = inspect.getsource(paligemma_with_expert)
    for old, new in [
        ("models = [self.paligemma.language_model, ", "models = [self.paligemma.language_model.model, "),
        ("self.paligemma.language_model.embed_tokens(", "self.paligemma.language_model.model.embed_tokens("),
    ]:
        if source.count(old) != 1:
            raise RuntimeError(f"LeRobot source changed: {old!r}")
        source = source.replace(old, new)
    module = types.ModuleType("lerobot_pi0_paligemma_with_expert_patched")
    module.__file__ = paligemma_with_expert.__file__
    exec(compile(source, paligemma_with_expert.__file__, "exec"), module.__dict__)
    module.torch = proxy
    return module


def _patch_lerobot():
    proxy = _Fp32Torch("torch")
    pwe = _patched_pwe_module(proxy)
    modeling_pi0.PaliGemmaWithExpertModel = pwe.PaliGemmaWithExpertModel
    modeling_pi0.torch = proxy
    modeling_pi0.AutoTokenizer = _NoTokenizer
    modeling_pi0.PaliGemmaWithExpertConfig = _tiny_pwe_config


def _randomise(module: torch.nn.Module, gen: torch.Generator):
    """Give every tensor a scale at which it visibly moves the output (HF's 0.02 init hides most of the VLM)."""
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


# transformers 4.51 (LeRobot 0.3.x) -> 4.52+ (openpi PyTorch, LeRobot 0.4.x) PaliGemma names
_OPENPI_RENAMES = [
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "paligemma_with_expert.paligemma.lm_head."),
    ("paligemma_with_expert.paligemma.language_model.model.", "paligemma_with_expert.paligemma.model.language_model."),
    ("paligemma_with_expert.paligemma.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."),
    (
        "paligemma_with_expert.paligemma.multi_modal_projector.",
        "paligemma_with_expert.paligemma.model.multi_modal_projector.",
    ),
]


def _openpi_name(key: str) -> str | None:
    if not key.startswith("model."):
        return None  # LeRobot normalisation buffers: openpi keeps the stats in assets/<robot>/norm_stats.json
    key = key[len("model.") :]
    for old, new in _OPENPI_RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def main():
    _patch_lerobot()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    stats_rng = np.random.default_rng(SEED)
    state_mean = stats_rng.normal(size=STATE_DIM).astype(np.float32)
    state_std = (0.5 + stats_rng.random(STATE_DIM)).astype(np.float32)
    action_mean = stats_rng.normal(size=ACTION_DIM).astype(np.float32)
    action_std = (0.5 + stats_rng.random(ACTION_DIM)).astype(np.float32)
    dataset_stats = {
        "observation.state": {"mean": torch.from_numpy(state_mean), "std": torch.from_numpy(state_std)},
        "action": {"mean": torch.from_numpy(action_mean), "std": torch.from_numpy(action_std)},
    }

    config = PI0Config(
        chunk_size=CHUNK,
        n_action_steps=CHUNK,
        max_state_dim=MAX_DIM,
        max_action_dim=MAX_DIM,
        proj_width=EXPERT["width"],
        tokenizer_max_length=TOKENS,
        resize_imgs_with_padding=(VISION["image_size"], VISION["image_size"]),
        num_steps=10,
        empty_cameras=1,
        device="cpu",
        input_features={
            "observation.images.top": PolicyFeature(
                type=FeatureType.VISUAL, shape=(3, VISION["image_size"], VISION["image_size"])
            ),
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
    )
    policy = modeling_pi0.PI0Policy(config, dataset_stats=dataset_stats)
    _randomise(policy.model, gen)
    policy.eval()
    inner = policy.model

    batch = 2
    size = VISION["image_size"]
    image = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    empty = -torch.ones(batch, 3, size, size)
    images = [image, empty]
    image_masks = [torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)]
    tokens = torch.randint(0, VOCAB, (batch, TOKENS), generator=gen)
    token_masks = torch.ones(batch, TOKENS, dtype=torch.bool)
    token_masks[1, 4:] = False
    tokens[1, 4:] = 0
    state = torch.zeros(batch, MAX_DIM)
    state[:, :STATE_DIM] = torch.randn(batch, STATE_DIM, generator=gen)
    noise = torch.randn(batch, CHUNK, MAX_DIM, generator=gen)
    actions = torch.zeros(batch, CHUNK, MAX_DIM)
    actions[..., :ACTION_DIM] = torch.randn(batch, CHUNK, ACTION_DIM, generator=gen)
    time = torch.tensor([0.3, 0.85])

    with torch.no_grad():
        sampled = inner.sample_actions(images, image_masks, tokens, token_masks, state, noise=noise.clone())
        loss = inner.forward(images, image_masks, tokens, token_masks, state, actions, noise.clone(), time.clone())

    lerobot_dir = HERE / "lerobot033"
    openpi_dir = HERE / "openpi"
    for d in (lerobot_dir, openpi_dir):
        if d.exists():
            shutil.rmtree(d)
    policy.save_pretrained(lerobot_dir)

    saved = load_file(str(lerobot_dir / "model.safetensors"))
    openpi_tensors = {}
    for key, value in saved.items():
        name = _openpi_name(key)
        if name is not None:
            openpi_tensors[name] = value.contiguous()
    openpi_dir.mkdir()
    save_file(openpi_tensors, str(openpi_dir / "model.safetensors"))
    (openpi_dir / "config.json").write_text(
        json.dumps(
            {
                "action_dim": MAX_DIM,
                "action_horizon": CHUNK,
                "paligemma_variant": "tiny",
                "action_expert_variant": "tiny",
                "precision": "float32",
            },
            indent=2,
        )
    )

    def stat(mean, std):
        return {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "q01": (mean - 2.3 * std).tolist(),
            "q99": (mean + 2.3 * std).tolist(),
        }

    norm_dir = openpi_dir / "assets" / "tiny_robot"
    norm_dir.mkdir(parents=True)
    norm_stats = {"norm_stats": {"state": stat(state_mean, state_std), "actions": stat(action_mean, action_std)}}
    (norm_dir / "norm_stats.json").write_text(json.dumps(norm_stats, indent=2))

    (HERE / "tiny_arch.json").write_text(json.dumps(TINY_ARCH, indent=2) + "\n")
    save_file(
        {
            "image0": image,
            "image1": empty,
            "image_mask0": image_masks[0],
            "image_mask1": image_masks[1],
            "tokens": tokens,
            "token_masks": token_masks,
            "state": state,
            "noise": noise,
            "actions": actions,
            "time": time,
        },
        str(HERE / "inputs.safetensors"),
    )
    save_file({"sampled_actions": sampled.contiguous(), "loss": loss.contiguous()}, str(HERE / "outputs.safetensors"))
    summary = {
        "seed": SEED,
        "lerobot_version": "0.3.3",
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "num_steps": 10,
        "sampled_actions_shape": list(sampled.shape),
        "loss_shape": list(loss.shape),
        "sampled_actions_abs_mean": float(sampled.abs().mean()),
        "loss_mean": float(loss.mean()),
        "lerobot_keys": len(saved),
        "openpi_keys": len(openpi_tensors),
    }
    (HERE / "outputs.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
