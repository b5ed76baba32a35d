"""pi0 and pi0.5 (Physical Intelligence; openpi's PyTorch port and LeRobot's): PaliGemma plus a Gemma action expert.

Architecture (``Pi0Config()`` is ``pi0_base``; ``Pi0Config(pi05=True, tokenizer_max_length=200)`` is ``pi05_base``):

* Prefix: each camera image ``[B, 3, S, S]`` in [-1, 1] goes through the SigLIP So400m/14 tower (27 layers, width
  1152, no pooling head) and PaliGemma's linear projector to the Gemma width, giving ``(S / 14)**2`` tokens per image
  (not rescaled: transformers 4.51 divides the projector output by ``sqrt(width)`` and LeRobot 0.3 multiplies it back,
  openpi's patched PaliGemma does neither). An image whose mask is False is kept in the sequence but masked out as a
  key. The prompt tokens are embedded with PaliGemma's (tied) token embedding and scaled by ``sqrt(width)``. All
  prefix tokens attend to each other bidirectionally, padding excluded.
* Suffix (pi0): one state token ``state_proj(state)``, then ``chunk_size`` action tokens
  ``action_time_mlp_out(silu(action_time_mlp_in([action_in_proj(x_t), sincos(t)])))`` with the sine-cosine embedding
  of the flow time over periods ``min_period .. max_period`` (sin half first). The state token is a new attention
  block (it sees the prefix, the prefix does not see it); the action tokens form one more block (they see the prefix,
  the state and each other; nothing earlier sees them).
* Suffix (pi0.5): only the ``chunk_size`` action tokens ``action_in_proj(x_t)``; the time goes into every RMSNorm of
  the expert instead (adaRMS): ``cond = silu(time_mlp_out(silu(time_mlp_in(sincos(t)))))``, and each expert norm is
  ``dense(cond) -> (scale, shift, gate)``, ``y = rms(x) * (1 + scale) + shift``, with the residual branch it opens
  multiplied by ``gate`` (``x + gate * f(y)``); the final norm uses scale and shift only. The state is not a token:
  pi0.5 writes it, discretised to 256 bins, into the prompt (see ``recap_core.models.tokenizer``), and its
  normalisation is by quantiles.
* Layers: the Gemma-2B prefix model (18 layers, width 2048, 8 heads of 256, 1 KV head) and the Gemma-300M expert
  (18 layers, width 1024, same heads) run layer by layer together: at each layer both streams compute Q/K/V with
  their own weights, the attention runs over the concatenated sequence, and each stream applies its own output
  projection, norms and gated-GELU MLP. Attention is the eager form: fp32 scores scaled by ``head_dim**-0.5``, masked
  with a large finite negative (padding rows never give NaN), GQA by repeating K/V; RoPE in rotate-half form with
  theta 10000 over positions = cumulative count of valid tokens minus one.
* Output: the expert's final norm, ``action_out_proj`` of the last ``chunk_size`` tokens is the velocity ``v_t``.
  openpi's flow convention: ``x_t = t * noise + (1 - t) * actions``, target ``noise - actions``, per-element MSE;
  sampling integrates Euler from t = 1 to 0 with ``dt = -1 / num_steps`` (10 by default).

The prefix never attends to the suffix, so its per-layer K/V (:class:`Pi0Prefix`) are computed once per chunk and
serve every flow step (:meth:`Pi0Model.velocity`); the training loss runs the single joint pass as the references do.

State-dict keys are openpi's PyTorch names (LeRobot's without the policy's ``model.``; transformers 4.52+ PaliGemma
layout): ``paligemma_with_expert.paligemma.model.{vision_tower.vision_model, multi_modal_projector.linear,
language_model.layers.N, language_model.norm}``, ``paligemma_with_expert.paligemma.lm_head.weight`` (the token
embedding: the files keep the tied ``lm_head`` and drop ``embed_tokens``), ``paligemma_with_expert.gemma_expert.
model.{layers.N, norm}``, ``paligemma_with_expert.gemma_expert.lm_head.weight`` (unused by the math, present in every
file), ``action_in_proj``, ``action_out_proj``, and ``state_proj`` + ``action_time_mlp_{in,out}`` (pi0) or
``time_mlp_{in,out}`` + the expert norms' ``dense`` (pi0.5). :func:`remap_keys` maps LeRobot 0.3's transformers-4.51
names and the ``embed_tokens`` spelling of the embedding onto these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GemmaConfig, SiglipVisionConfig
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, GemmaRMSNorm, apply_rotary_pos_emb, repeat_kv
from transformers.models.siglip.modeling_siglip import SiglipEncoder, SiglipVisionEmbeddings

from recap_core.models.configuration import ConfigError, _positive_int
from recap_core.models.families.common import (
    JsonConfig,
    is_non_parameter_key,
    make_att_2d_masks,
    sincos_time_embedding,
    strip_policy_prefix,
)

#: openpi's Gemma variants (``openpi.models.gemma.get_config``; the ``_lora`` ones have the same sizes).
_GEMMA_2B = {"width": 2048, "depth": 18, "mlp_dim": 16384, "num_heads": 8, "num_kv_heads": 1, "head_dim": 256}
_GEMMA_300M = {"width": 1024, "depth": 18, "mlp_dim": 4096, "num_heads": 8, "num_kv_heads": 1, "head_dim": 256}
GEMMA_VARIANTS = {
    "gemma_2b": _GEMMA_2B,
    "gemma_2b_lora": _GEMMA_2B,
    "gemma_300m": _GEMMA_300M,
    "gemma_300m_lora": _GEMMA_300M,
    "dummy": {"width": 64, "depth": 4, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
}
#: LeRobot 0.3 keeps the normaliser buffers inside ``model.safetensors``; they carry no parameter of the model.
#: The finite "minus infinity" of openpi / LeRobot's eager attention (big_vision's value).
MASK_VALUE = -2.3819763e38

_PALIGEMMA = "paligemma_with_expert.paligemma."
EMBEDDING_KEY = _PALIGEMMA + "lm_head.weight"
#: transformers 4.51 (LeRobot 0.3 files) -> 4.52+ (openpi PyTorch, LeRobot 0.4, ours) PaliGemma prefixes.
_RENAMES = (
    (_PALIGEMMA + "language_model.lm_head.", _PALIGEMMA + "lm_head."),
    (_PALIGEMMA + "language_model.model.", _PALIGEMMA + "model.language_model."),
    (_PALIGEMMA + "vision_tower.", _PALIGEMMA + "model.vision_tower."),
    (_PALIGEMMA + "multi_modal_projector.", _PALIGEMMA + "model.multi_modal_projector."),
)
_EMBED_TOKENS = _PALIGEMMA + "model.language_model.embed_tokens.weight"


@dataclasses.dataclass(frozen=True)
class Pi0Config(JsonConfig):
    """pi0 / pi0.5 architecture and sampling settings; the defaults are ``pi0_base`` (about 3.5e9 parameters with
    the expert's unused ``lm_head``, 3.24e9 without).

    Vision fields describe the SigLIP tower (``image_size`` is the square side it expects, ``(image_size /
    vision_patch_size)**2`` tokens per image); ``width`` ... ``head_dim`` the Gemma prefix model; the expert has its
    own width and MLP width and shares depth, heads and head size with the prefix model (their attention is joint).
    """

    pi05: bool = False
    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_steps: int = 10
    image_size: int = 224
    tokenizer_max_length: int = 48
    min_period: float = 4e-3
    max_period: float = 4.0
    # vision tower (SigLIP So400m/14)
    vision_width: int = 1152
    vision_depth: int = 27
    vision_mlp_dim: int = 4304
    vision_num_heads: int = 16
    vision_patch_size: int = 14
    vision_layer_norm_eps: float = 1e-6
    # prefix model (Gemma 2B)
    vocab_size: int = 257152
    width: int = 2048
    depth: int = 18
    mlp_dim: int = 16384
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    # action expert (Gemma 300M)
    expert_width: int = 1024
    expert_mlp_dim: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        owner = type(self).__name__
        positive = (
            "chunk_size max_state_dim max_action_dim num_steps image_size tokenizer_max_length vision_width "
            "vision_depth vision_mlp_dim vision_num_heads vision_patch_size vocab_size width depth mlp_dim num_heads "
            "num_kv_heads head_dim expert_width expert_mlp_dim"
        ).split()
        for name in positive:
            _positive_int(owner, name, getattr(self, name))
        if not isinstance(self.pi05, bool):
            raise ConfigError(f"{owner}.pi05 must be true or false, got {self.pi05!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{owner}: num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.vision_width % self.vision_num_heads:
            raise ConfigError(f"{owner}: vision_width {self.vision_width} is not a multiple of vision_num_heads")
        if self.image_size % self.vision_patch_size:
            raise ConfigError(f"{owner}: image_size {self.image_size} is not a multiple of {self.vision_patch_size}")
        if self.expert_width % 2 or self.head_dim % 2:
            raise ConfigError(f"{owner}: expert_width and head_dim must be even (sine-cosine time, rotary embedding)")
        if not 0 < self.min_period < self.max_period:
            raise ConfigError(f"{owner}: need 0 < min_period < max_period, got {self.min_period}, {self.max_period}")

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.vision_patch_size) ** 2

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def _sizes(cls, paligemma: str | None, expert: str | None, overrides: Mapping[str, Any]) -> dict:
        """The Pi0Config size fields of openpi's named variants (an unknown name only where ``overrides`` give the
        sizes it would set)."""
        fields: dict[str, Any] = {}
        for name, variant, keys in (
            ("paligemma_variant", paligemma, ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")),
            ("action_expert_variant", expert, ("expert_width", "expert_mlp_dim")),
        ):
            if variant is None:
                continue
            sizes = GEMMA_VARIANTS.get(variant)
            if sizes is None:
                if all(k in overrides for k in keys):
                    continue
                raise ConfigError(f"{name} {variant!r} is not one of {sorted(GEMMA_VARIANTS)}")
            if name == "paligemma_variant":
                fields.update({k: sizes[k] for k in keys})
            else:
                fields.update(expert_width=sizes["width"], expert_mlp_dim=sizes["mlp_dim"])
                fields["_expert_shared"] = {k: sizes[k] for k in ("depth", "num_heads", "num_kv_heads", "head_dim")}
        return fields

    @classmethod
    def _build(cls, fields: dict, overrides: Mapping[str, Any]) -> "Pi0Config":
        shared = fields.pop("_expert_shared", None)
        fields.update(overrides)
        config = cls.from_dict(fields)
        if shared is not None and "expert_width" not in overrides:
            clash = sorted(k for k, v in shared.items() if getattr(config, k) != v)
            if clash:
                raise ConfigError(
                    f"the action expert variant's {clash} differ from the PaliGemma variant's; the expert attends "
                    "jointly with the prefix model and must share depth, heads and head size"
                )
        return config

    @classmethod
    def from_lerobot_config(cls, config: Mapping[str, Any], **overrides: Any) -> "Pi0Config":
        """From LeRobot's ``config.json`` of a pi0 (0.3.x or 0.4.x) or pi05 (0.4.x) policy.

        0.3.x files hold no sizes (LeRobot builds the full pi0 whatever the file says) but ``proj_width`` (the
        expert's width), ``resize_imgs_with_padding`` and ``num_steps``; 0.4.x files name openpi's Gemma variants
        and give ``image_resolution`` and ``num_inference_steps``. ``overrides`` set any field directly (a shrunk
        test checkpoint's sizes, which neither file format can hold).
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"pi0 config.json must be a JSON object, got {type(config).__name__}")
        kind = config.get("type", "pi0")
        if kind not in ("pi0", "pi05"):
            raise ConfigError(f"config.json is a {kind!r} policy, not pi0 or pi05")
        for flag in ("adapt_to_pi_aloha", "use_delta_joint_actions_aloha"):
            if config.get(flag):
                raise ConfigError(f"pi0 config.json: {flag}=true (an ALOHA-specific data transform) is not supported")
        fields: dict[str, Any] = {"pi05": kind == "pi05"}
        if kind == "pi05":
            fields["tokenizer_max_length"] = 200
        for key in (
            "chunk_size",
            "max_state_dim",
            "max_action_dim",
            "tokenizer_max_length",
            "min_period",
            "max_period",
        ):
            if key in config:
                fields[key] = config[key]
        steps = config.get("num_inference_steps", config.get("num_steps"))
        if steps is not None:
            fields["num_steps"] = steps
        fields.update(cls._sizes(config.get("paligemma_variant"), config.get("action_expert_variant"), overrides))
        if "proj_width" in config:
            fields["expert_width"] = config["proj_width"]
        is_v03 = "paligemma_variant" not in config
        if is_v03 and config.get("n_action_steps", fields.get("chunk_size")) != fields.get(
            "chunk_size", cls.chunk_size
        ):
            raise ConfigError(
                "pi0 config.json (LeRobot 0.3): n_action_steps must equal chunk_size (0.3 sizes the action tokens "
                f"by n_action_steps), got {config.get('n_action_steps')} and {fields.get('chunk_size')}"
            )
        resolution = config.get("image_resolution", config.get("resize_imgs_with_padding"))
        if resolution is not None:
            if len(resolution) != 2 or resolution[0] != resolution[1]:
                raise ConfigError(f"pi0 config.json: image size {list(resolution)} is not square")
            fields["image_size"] = resolution[0]
        return cls._build(fields, overrides)

    @classmethod
    def from_openpi_config(cls, config: Mapping[str, Any], pi05: bool | None = None, **overrides: Any) -> "Pi0Config":
        """From the ``config.json`` of openpi's PyTorch conversion (``action_dim``, ``action_horizon``,
        ``paligemma_variant``, ``action_expert_variant``, ``precision``; openpi's state and action share
        ``action_dim``). The file does not say pi0 or pi0.5: ``pi05`` (else the file's ``"pi05"``, else False).
        openpi's prompt length is 48 tokens for pi0, 200 for pi0.5."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"openpi config.json must be a JSON object, got {type(config).__name__}")
        for key in ("paligemma_variant", "action_expert_variant"):
            if key not in config:
                raise ConfigError(f"openpi config.json needs {key!r}")
        if pi05 is None:
            pi05 = bool(config.get("pi05", False))
        fields: dict[str, Any] = {"pi05": pi05, "tokenizer_max_length": 200 if pi05 else 48}
        if "action_dim" in config:
            fields["max_state_dim"] = fields["max_action_dim"] = config["action_dim"]
        if "action_horizon" in config:
            fields["chunk_size"] = config["action_horizon"]
        if config.get("max_token_len") is not None:
            fields["tokenizer_max_length"] = config["max_token_len"]
        fields.update(cls._sizes(config["paligemma_variant"], config["action_expert_variant"], overrides))
        return cls._build(fields, overrides)


# ---------------------------------------------------------------------------- checkpoint keys


def remap_keys(names: Iterable[str]) -> dict[str, str]:
    """``{file key: our key}`` for the weight tensors of a pi0 / pi0.5 ``model.safetensors``.

    Accepts LeRobot's names (with the policy's ``model.``, or ``model._orig_mod.`` from ``torch.compile``) and
    openpi's (without). LeRobot 0.3 files carry transformers 4.51's PaliGemma names
    (``paligemma.language_model.model.layers``, ``paligemma.language_model.lm_head``, ``paligemma.vision_tower``,
    ``paligemma.multi_modal_projector``), mapped to 4.52+'s. PaliGemma's token embedding is one tied tensor that the
    files store as ``lm_head.weight`` (safetensors drops the tied ``embed_tokens``); a file spelling it
    ``...language_model.embed_tokens.weight`` maps onto the same key. Normaliser buffers (:func:`is_non_parameter_key`)
    are left out. Pure: no checks here, the strict loader names any key that finds no place (or two keys for one).
    """
    out = {}
    for name in names:
        if is_non_parameter_key(name):
            continue
        key = strip_policy_prefix(name)
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key == _EMBED_TOKENS:
            key = EMBEDDING_KEY
        out[name] = key
    return out


# ---------------------------------------------------------------------------- math helpers


def _rope(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:
    """Eager attention. ``query [B, H, Tq, D]``, ``key``/``value [B, KV, Tk, D]``, ``mask`` bool ``[B, Tq, Tk]``
    -> ``[B, Tq, H * D]``."""
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * query.shape[-1] ** -0.5
    scores = torch.where(mask[:, None], scores, MASK_VALUE)
    probs = F.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).transpose(1, 2)
    return out.reshape(out.shape[0], out.shape[1], -1)


class AdaRMSNorm(nn.Module):
    """pi0.5's adaptive RMSNorm: ``dense(cond) -> (scale, shift, gate)``, ``rms(x) * (1 + scale) + shift``; the gate
    multiplies the residual branch the norm opens. ``dense`` starts at zero weight (openpi)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(var + self.eps)
        scale, shift, gate = torch.chunk(self.dense(cond)[:, None, :], 3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def _norm(module: nn.Module, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if isinstance(module, AdaRMSNorm):
        return module(x, cond)
    return module(x), None


def _gated(residual: Tensor, branch: Tensor, gate: Tensor | None) -> Tensor:
    return residual + branch if gate is None else residual + branch * gate


# ---------------------------------------------------------------------------- modules


class _VisionTransformer(nn.Module):
    """SigLIP's vision transformer without the pooling head (PaliGemma's ``vision_tower.vision_model``)."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: Tensor) -> Tensor:
        hidden = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            hidden = layer(hidden, None)
        return self.post_layernorm(hidden)


class _VisionTower(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.vision_model = _VisionTransformer(config)


class _Projector(nn.Module):
    """PaliGemma's multi-modal projector: one linear map from the vision width to the Gemma width."""

    def __init__(self, vision_width: int, width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, width)


class _GemmaStack(nn.Module):
    """A Gemma decoder's layers and final norm (the math runs in :class:`Pi0Model`, both stacks layer by layer)."""

    def __init__(self, config: GemmaConfig, adarms: bool):
        super().__init__()
        self.layers = nn.ModuleList([GemmaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        if adarms:
            for layer in self.layers:
                layer.input_layernorm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
                layer.post_attention_layernorm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
            self.norm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
        else:
            self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class _PaliGemmaInner(nn.Module):
    def __init__(self, config: Pi0Config):
        super().__init__()
        self.vision_tower = _VisionTower(siglip_config(config))
        self.multi_modal_projector = _Projector(config.vision_width, config.width)
        self.language_model = _GemmaStack(gemma_config(config, expert=False), adarms=False)


class _PaliGemma(nn.Module):
    def __init__(self, config: Pi0Config):
        super().__init__()
        self.model = _PaliGemmaInner(config)
        self.lm_head = nn.Linear(config.width, config.vocab_size, bias=False)


class _GemmaExpert(nn.Module):
    def __init__(self, config: Pi0Config):
        super().__init__()
        self.model = _GemmaStack(gemma_config(config, expert=True), adarms=config.pi05)
        self.lm_head = nn.Linear(config.expert_width, config.vocab_size, bias=False)


class _PaliGemmaWithExpert(nn.Module):
    def __init__(self, config: Pi0Config):
        super().__init__()
        self.paligemma = _PaliGemma(config)
        self.gemma_expert = _GemmaExpert(config)


def siglip_config(config: Pi0Config) -> SiglipVisionConfig:
    vision = SiglipVisionConfig(
        hidden_size=config.vision_width,
        intermediate_size=config.vision_mlp_dim,
        num_hidden_layers=config.vision_depth,
        num_attention_heads=config.vision_num_heads,
        patch_size=config.vision_patch_size,
        image_size=config.image_size,
        layer_norm_eps=config.vision_layer_norm_eps,
        hidden_act="gelu_pytorch_tanh",
        vision_use_head=False,
    )
    vision._attn_implementation = "eager"
    return vision


def gemma_config(config: Pi0Config, *, expert: bool) -> GemmaConfig:
    return GemmaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.expert_width if expert else config.width,
        intermediate_size=config.expert_mlp_dim if expert else config.mlp_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_act="gelu_pytorch_tanh",
        rms_norm_eps=config.rms_norm_eps,
        attention_bias=False,
    )


@dataclasses.dataclass
class Pi0Prefix:
    """The prefix of one chunk: per layer the rotated keys and the values of the images and prompt
    (``[B, num_kv_heads, P, head_dim]`` each) and its pad mask ``[B, P]``."""

    keys: list[Tensor]
    values: list[Tensor]
    pad_masks: Tensor


class Pi0Model(nn.Module):
    """pi0 / pi0.5's flow-matching model (openpi's ``PI0Pytorch``, LeRobot's ``PI0FlowMatching`` / ``PI05Pytorch``)."""

    def __init__(self, config: Pi0Config):
        super().__init__()
        self.config = config
        width = config.expert_width
        self.paligemma_with_expert = _PaliGemmaWithExpert(config)
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        if config.pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.state_proj = nn.Linear(config.max_state_dim, width)
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)

    # ------------------------------------------------------------------ pieces

    @property
    def _paligemma(self) -> _PaliGemma:
        return self.paligemma_with_expert.paligemma

    @property
    def _stacks(self) -> tuple[_GemmaStack, _GemmaStack]:
        return self._paligemma.model.language_model, self.paligemma_with_expert.gemma_expert.model

    def embed_image(self, image: Tensor) -> Tensor:
        """``[B, 3, S, S]`` in [-1, 1] -> ``[B, (S / patch)**2, width]``."""
        inner = self._paligemma.model
        dtype = inner.multi_modal_projector.linear.weight.dtype
        features = inner.vision_tower.vision_model(image.to(dtype))
        return inner.multi_modal_projector.linear(features)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Prompt ids ``[B, L]`` -> ``[B, L, width]``: the tied embedding scaled by ``sqrt(width)``."""
        return F.embedding(tokens, self._paligemma.lm_head.weight) * math.sqrt(self.config.width)

    def embed_prefix(
        self, images: list[Tensor], image_masks: list[Tensor], tokens: Tensor, token_masks: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(embs [B, P, width], pad_masks bool [B, P], att_masks bool [B, P])``: the image tokens of every camera,
        then the prompt tokens; one bidirectional block (``att_masks`` all False)."""
        if len(images) != len(image_masks):
            raise ValueError(f"{len(images)} images but {len(image_masks)} image masks")
        embs, pads = [], []
        for image, mask in zip(images, image_masks):
            emb = self.embed_image(image)
            embs.append(emb)
            pads.append(mask.bool()[:, None].expand(emb.shape[0], emb.shape[1]))
        lang = self.embed_tokens(tokens)
        embs.append(lang.to(embs[0].dtype) if embs else lang)
        pads.append(token_masks.bool())
        embs_t, pad_t = torch.cat(embs, dim=1), torch.cat(pads, dim=1)
        return embs_t, pad_t, torch.zeros_like(pad_t)

    def embed_suffix(
        self, state: Tensor | None, x_t: Tensor, time: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(embs, pad_masks, att_masks, adarms_cond)`` of the suffix: pi0's state token and action-time tokens, or
        pi0.5's action tokens and the time condition of its adaRMS norms."""
        dtype = self.action_in_proj.weight.dtype
        batch = x_t.shape[0]
        time_emb = sincos_time_embedding(time, self.config.expert_width, self.config.min_period, self.config.max_period)
        time_emb = time_emb.to(dtype)
        action_emb = self.action_in_proj(x_t.to(dtype))
        chunk = action_emb.shape[1]
        if self.config.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))
            embs, att, cond_out = action_emb, [True] + [False] * (chunk - 1), cond
        else:
            if state is None:
                raise ValueError("pi0 needs the state [B, max_state_dim]")
            state_emb = self.state_proj(state.to(dtype))[:, None, :]
            mixed = torch.cat([action_emb, time_emb[:, None, :].expand_as(action_emb)], dim=2)
            action_time = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(mixed)))
            embs = torch.cat([state_emb, action_time], dim=1)
            att, cond_out = [True, True] + [False] * (chunk - 1), None
        pad = torch.ones(batch, embs.shape[1], dtype=torch.bool, device=embs.device)
        att_t = torch.tensor(att, dtype=torch.bool, device=embs.device)[None, :].expand(batch, -1)
        return embs, pad, att_t, cond_out

    def _layer(
        self,
        index: int,
        streams: list[Tensor | None],
        conds: list[Tensor | None],
        positions: Tensor,
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[list[Tensor | None], tuple[Tensor, Tensor]]:
        """One joint layer over the present streams (prefix model, expert): each stream's own norm and Q/K/V, one
        attention over the concatenation (after ``past`` K/V, if given), each stream's own output, norm and MLP.
        Returns the new hidden states and the layer's rotated K / V of these streams."""
        layers = [stack.layers[index] for stack in self._stacks]
        queries, keys, values, gates = [], [], [], []
        for stream, hidden in enumerate(streams):
            if hidden is None:
                gates.append(None)
                continue
            layer = layers[stream]
            normed, gate = _norm(layer.input_layernorm, hidden, conds[stream])
            gates.append(gate)
            shape = (*hidden.shape[:-1], -1, self.config.head_dim)
            queries.append(layer.self_attn.q_proj(normed).view(shape).transpose(1, 2))
            keys.append(layer.self_attn.k_proj(normed).view(shape).transpose(1, 2))
            values.append(layer.self_attn.v_proj(normed).view(shape).transpose(1, 2))
        query, key, value = torch.cat(queries, dim=2), torch.cat(keys, dim=2), torch.cat(values, dim=2)
        cos, sin = _rope(positions, self.config.head_dim, self.config.rope_theta, query.dtype)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        new_kv = (key, value)
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        attended = _attention(query, key, value, mask)
        out: list[Tensor | None] = []
        start = 0
        for stream, hidden in enumerate(streams):
            if hidden is None:
                out.append(None)
                continue
            layer = layers[stream]
            end = start + hidden.shape[1]
            branch = layer.self_attn.o_proj(attended[:, start:end].to(layer.self_attn.o_proj.weight.dtype))
            hidden = _gated(hidden, branch, gates[stream])
            normed, gate = _norm(layer.post_attention_layernorm, hidden, conds[stream])
            out.append(_gated(hidden, layer.mlp(normed), gate))
            start = end
        return out, new_kv

    # ------------------------------------------------------------------ the contract

    def prefix_cache(
        self, images: list[Tensor], image_masks: list[Tensor], tokens: Tensor, token_masks: Tensor
    ) -> Pi0Prefix:
        """Run the prefix (images and prompt) through the prefix model once; keep every layer's K/V."""
        embs, pad, att = self.embed_prefix(images, image_masks, tokens, token_masks)
        mask = make_att_2d_masks(pad, att)
        positions = torch.cumsum(pad.long(), dim=1) - 1
        hidden, keys, values = embs, [], []
        for index in range(self.config.depth):
            (hidden, _), (key, value) = self._layer(index, [hidden, None], [None, None], positions, mask)
            keys.append(key)
            values.append(value)
        return Pi0Prefix(keys, values, pad)

    def velocity(self, prefix: Pi0Prefix, state: Tensor | None, x_t: Tensor, t: Tensor) -> Tensor:
        """One denoising step: ``v_t [B, chunk_size, max_action_dim]`` at noisy chunk ``x_t`` and flow time ``t [B]``
        (pi0.5 ignores ``state``: its state is in the prompt)."""
        embs, pad, att, cond = self.embed_suffix(state, x_t, t)
        batch, suffix_len = pad.shape
        prefix_len = prefix.pad_masks.shape[1]
        mask = torch.cat(
            [prefix.pad_masks[:, None, :].expand(batch, suffix_len, prefix_len), make_att_2d_masks(pad, att)], dim=2
        )
        positions = prefix.pad_masks.long().sum(dim=-1)[:, None] + torch.cumsum(pad.long(), dim=1) - 1
        hidden = embs
        for index in range(self.config.depth):
            past = (prefix.keys[index], prefix.values[index])
            (_, hidden), _ = self._layer(index, [None, hidden], [None, cond], positions, mask, past)
        return self._velocity_out(hidden, cond)

    def _velocity_out(self, hidden: Tensor, cond: Tensor | None) -> Tensor:
        hidden, _ = _norm(self._stacks[1].norm, hidden, cond)
        hidden = hidden[:, -self.config.chunk_size :]
        return self.action_out_proj(hidden.to(self.action_out_proj.weight.dtype))

    @torch.no_grad()
    def sample_actions(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor | None,
        noise: Tensor,
        num_steps: int | None = None,
    ) -> Tensor:
        """Euler from t = 1 (``noise [B, chunk_size, max_action_dim]``) to t = 0 in ``num_steps`` steps (default
        ``config.num_steps``), the prefix encoded once; the time is stepped in fp32 as openpi / LeRobot do."""
        num_steps = self.config.num_steps if num_steps is None else int(num_steps)
        prefix = self.prefix_cache(images, image_masks, tokens, token_masks)
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
        time = torch.tensor(1.0, dtype=torch.float32, device=noise.device)
        x_t = noise
        while time >= -dt / 2:
            x_t = x_t + dt * self.velocity(prefix, state, x_t, time.expand(noise.shape[0]))
            time = time + dt
        return x_t

    def forward(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor | None,
        actions: Tensor,
        noise: Tensor,
        time: Tensor,
    ) -> Tensor:
        """Per-element training loss ``[B, chunk_size, max_action_dim]``: ``(v_t - (noise - actions))**2`` at
        ``x_t = time * noise + (1 - time) * actions``, prefix and suffix in one joint pass."""
        expanded = time[:, None, None].to(actions.dtype)
        x_t = expanded * noise + (1 - expanded) * actions
        target = noise - actions
        prefix_embs, prefix_pad, prefix_att = self.embed_prefix(images, image_masks, tokens, token_masks)
        suffix_embs, suffix_pad, suffix_att, cond = self.embed_suffix(state, x_t, time)
        pad = torch.cat([prefix_pad, suffix_pad], dim=1)
        mask = make_att_2d_masks(pad, torch.cat([prefix_att, suffix_att], dim=1))
        positions = torch.cumsum(pad.long(), dim=1) - 1
        streams: list[Tensor | None] = [prefix_embs, suffix_embs.to(prefix_embs.dtype)]
        for index in range(self.config.depth):
            streams, _ = self._layer(index, streams, [None, cond], positions, mask)
        v_t = self._velocity_out(streams[1], cond)
        return F.mse_loss(target, v_t.to(target.dtype), reduction="none")
