"""SmolVLA (LeRobot): the first layers of a SmolVLM2 vision-language model plus a narrower action expert.

Architecture, as LeRobot's ``VLAFlowMatching`` / ``SmolVLMWithExpertModel`` (0.3.x and 0.4.x compute the same):

* Prefix: each camera image ``[B, 3, S, S]`` in [-1, 1] goes through the SigLIP-style vision tower and the
  pixel-shuffle connector (``scale_factor**2`` neighbouring patches concatenated, then one linear map to the text
  width), giving ``(S / patch / scale_factor)**2`` tokens per image, scaled by ``sqrt(text_hidden_size)``;
  optionally framed by ``<fake_token_around_image><global-img>`` ... ``<fake_token_around_image>`` embeddings
  (``add_image_special_tokens``, unscaled). The prompt tokens are embedded and scaled by ``sqrt(text_hidden_size)``.
  Then one state token, ``state_proj(state)``. Images and prompt attend to each other bidirectionally (padding
  excluded); the state token is a new attention block: it sees images and prompt, they do not see it.
* Suffix: ``chunk_size`` action tokens ``action_time_mlp_out(silu(action_time_mlp_in([action_in_proj(x_t),
  sincos(t)])))`` with the sine-cosine embedding of the flow time over periods ``min_period .. max_period``
  (sin half first). Every action token is its own attention block, so action tokens attend causally to earlier
  action tokens and to the whole prefix.
* Layers: only the first ``num_vlm_layers`` text layers of the VLM are kept. At VLM layer ``i`` the expert layer
  ``i // (num_vlm_layers // num_expert_layers)`` runs (none at the layers in between). With
  ``attention_mode="cross_attn"``, layers with ``i % self_attn_every_n_layers == 0`` are joint self-attention
  (expert queries, keys and values appended to the VLM's); the others are cross-attention: the expert's queries
  attend to the VLM's (rotated) keys and values of that layer mapped by the expert's own ``k_proj`` / ``v_proj``
  (``kv_heads * head_dim -> kv_heads * head_dim``), with query positions restarting at 0. Attention is LeRobot's
  eager attention: fp32 scores scaled by ``head_dim**-0.5``, masked with the float32 minimum (never NaN), GQA by
  repeating K/V. RoPE is the rotate-half form with wavelength 10000 (LeRobot's ``apply_rope``; the VLM config's
  ``rope_theta`` is not used). Positions are the cumulative count of valid tokens minus one.
* Output: the expert's final RMSNorm, ``action_out_proj`` of the last ``chunk_size`` tokens in fp32 is the
  velocity ``v_t``; flow convention ``x_t = t * noise + (1 - t) * actions``, target ``noise - actions``, Euler
  from t = 1 to 0 with ``dt = -1 / num_steps``.

The prefix cache holds the per-layer K/V of the images and the prompt only: they never attend to the state token,
so their K/V do not depend on the state. :meth:`SmolVLAModel.velocity` runs the state token through the VLM
layers together with the expert (one token, attending to the cache and itself), which equals LeRobot's cache of
the whole prefix. The training loss uses the same path, which equals LeRobot's single joint pass.

State-dict keys are LeRobot's without the policy's leading ``model.`` (``vlm_with_expert.vlm.model.vision_model``
..., ``vlm_with_expert.vlm.model.text_model.layers.N``, ``vlm_with_expert.vlm.lm_head``,
``vlm_with_expert.lm_expert.layers.N``, ``state_proj``, ``action_in_proj``, ``action_out_proj``,
``action_time_mlp_in``, ``action_time_mlp_out``); the VLM's unused final norm and ``lm_head`` are kept so that
every tensor of a checkpoint has its place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaConfig, SmolVLMConfig, SmolVLMVisionConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm
from transformers.models.smolvlm.modeling_smolvlm import SmolVLMConnector, SmolVLMVisionTransformer

from recap_core.models.configuration import ConfigError, _positive_int
from recap_core.models.families.common import (
    NON_PARAMETER_PREFIXES,
    JsonConfig,
    is_non_parameter_key,
    make_att_2d_masks,
    sincos_time_embedding,
    strip_policy_prefix,
)

SMOLVLM2_500M = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
#: LeRobot 0.3 keeps the normaliser buffers inside ``model.safetensors``; they carry no parameter of the model.
#: Wavelength of LeRobot's ``apply_rope`` (fixed; independent of the VLM's ``rope_theta``).
ROPE_MAX_WAVELENGTH = 10_000.0
ATTENTION_MODES = ("cross_attn", "self_attn")


def expert_intermediate_size(hidden_size: int, ffn_dim_multiplier: int = 4, multiple_of: int = 256) -> int:
    """LeRobot's ``get_intermediate_size``: ``4 * int(2 h / 3)`` rounded up to a multiple of 256."""
    size = int(2 * hidden_size / 3)
    size = int(ffn_dim_multiplier * size)
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


@dataclasses.dataclass(frozen=True)
class SmolVLAConfig(JsonConfig):
    """SmolVLA's architecture and sampling settings; defaults are ``lerobot/smolvla_base`` (SmolVLM2-500M, 16 layers).

    Vision fields describe the SigLIP-style tower (``image_size`` is the square side it expects), text fields the
    SmolVLM2 text model (a Llama), ``num_vlm_layers`` how many of its layers are kept. The expert's width is
    ``int(text_hidden_size * expert_width_multiplier)``, its MLP width :func:`expert_intermediate_size` of that,
    its heads and head size the text model's. ``num_expert_layers <= 0`` means one expert layer per VLM layer.
    ``prefix_length > 0`` pads the prefix with masked tokens to that length (no effect on any output).
    """

    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_steps: int = 10
    image_size: int = 512
    tokenizer_max_length: int = 48
    vlm_model_name: str = SMOLVLM2_500M
    # vision tower
    vision_hidden_size: int = 768
    vision_intermediate_size: int = 3072
    vision_num_layers: int = 12
    vision_num_heads: int = 12
    patch_size: int = 16
    vision_layer_norm_eps: float = 1e-6
    vision_hidden_act: str = "gelu_pytorch_tanh"
    scale_factor: int = 4
    # text model
    vocab_size: int = 49280
    text_hidden_size: int = 960
    text_intermediate_size: int = 2560
    num_attention_heads: int = 15
    num_key_value_heads: int = 5
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    pad_token_id: int | None = 2
    num_vlm_layers: int = 16
    # action expert
    expert_width_multiplier: float = 0.75
    num_expert_layers: int = -1
    attention_mode: str = "cross_attn"
    self_attn_every_n_layers: int = 2
    # prefix / suffix
    add_image_special_tokens: bool = False
    fake_image_token_id: int = 49189
    global_image_token_id: int = 49152
    prefix_length: int = -1
    min_period: float = 4e-3
    max_period: float = 4.0

    def __post_init__(self):
        owner = type(self).__name__
        positive = (
            "chunk_size max_state_dim max_action_dim num_steps image_size tokenizer_max_length vision_hidden_size "
            "vision_intermediate_size vision_num_layers vision_num_heads patch_size scale_factor vocab_size "
            "text_hidden_size text_intermediate_size num_attention_heads num_key_value_heads head_dim num_vlm_layers"
        ).split()
        for name in positive:
            _positive_int(owner, name, getattr(self, name))
        if self.attention_mode not in ATTENTION_MODES:
            raise ConfigError(f"{owner}.attention_mode must be one of {ATTENTION_MODES}, got {self.attention_mode!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{owner}: num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{owner}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if (self.image_size // self.patch_size) % self.scale_factor:
            raise ConfigError(
                f"{owner}: {self.image_size // self.patch_size} patches per side do not divide by scale_factor "
                f"{self.scale_factor}"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            raise ConfigError(f"{owner}: vision_hidden_size is not a multiple of vision_num_heads")
        if self.expert_hidden_size <= 0 or self.expert_hidden_size % 2:
            raise ConfigError(
                f"{owner}: the expert width int({self.text_hidden_size} * {self.expert_width_multiplier}) = "
                f"{self.expert_hidden_size} must be a positive even number (sine-cosine time embedding)"
            )
        if self.num_vlm_layers % self.expert_layers:
            raise ConfigError(
                f"{owner}: num_vlm_layers {self.num_vlm_layers} is not a multiple of num_expert_layers "
                f"{self.num_expert_layers}"
            )
        if not 0 < self.min_period < self.max_period:
            raise ConfigError(f"{owner}: need 0 < min_period < max_period, got {self.min_period}, {self.max_period}")

    # ------------------------------------------------------------------ derived sizes

    @property
    def expert_hidden_size(self) -> int:
        return int(self.text_hidden_size * self.expert_width_multiplier)

    @property
    def expert_intermediate_size(self) -> int:
        return expert_intermediate_size(self.expert_hidden_size)

    @property
    def expert_layers(self) -> int:
        return self.num_expert_layers if self.num_expert_layers > 0 else self.num_vlm_layers

    @property
    def tokens_per_image(self) -> int:
        """Image tokens after the pixel shuffle, plus the 3 framing tokens with ``add_image_special_tokens``."""
        side = self.image_size // self.patch_size // self.scale_factor
        return side * side + (3 if self.add_image_special_tokens else 0)

    def is_cross_layer(self, layer: int) -> bool:
        """Whether VLM layer ``layer`` (or, when building, expert layer ``layer``) is a cross-attention layer."""
        if self.attention_mode != "cross_attn":
            return False
        return not (self.self_attn_every_n_layers > 0 and layer % self.self_attn_every_n_layers == 0)

    def expert_layer_index(self, layer: int) -> int | None:
        """The expert layer run at VLM layer ``layer`` (None where the expert skips it), as LeRobot pairs them."""
        every = self.num_vlm_layers // self.expert_layers
        if every > 0 and layer > 0 and layer % every:
            return None
        return layer // every if every > 0 else layer

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_lerobot_config(
        cls, config: Mapping[str, Any], vlm_config: Mapping[str, Any] | None = None
    ) -> "SmolVLAConfig":
        """From LeRobot's ``config.json`` of a SmolVLA policy (0.3.x or 0.4.x).

        LeRobot's file names the VLM (``vlm_model_name``) but not its sizes; those come from ``vlm_config`` (the
        VLM's own ``config.json``: ``text_config``, ``vision_config``, ``scale_factor``), or, where it is None,
        from the built-in sizes of SmolVLM2-500M-Video-Instruct (the only VLM LeRobot's SmolVLA checkpoints use).
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"SmolVLA config.json must be a JSON object, got {type(config).__name__}")
        if config.get("type", "smolvla") != "smolvla":
            raise ConfigError(f"config.json is a {config.get('type')!r} policy, not smolvla")
        for flag in ("adapt_to_pi_aloha", "use_delta_joint_actions_aloha"):
            if config.get(flag):
                raise ConfigError(f"SmolVLA config.json: {flag}=true is not supported")
        name = config.get("vlm_model_name", SMOLVLM2_500M)
        if vlm_config is not None:
            sizes = sizes_from_vlm_config(vlm_config)
        elif name == SMOLVLM2_500M:
            sizes = {}
        else:
            raise ConfigError(
                f"SmolVLA config.json: vlm_model_name {name!r} has no built-in sizes (known: {SMOLVLM2_500M!r}); "
                "pass the VLM's config.json as vlm_config"
            )
        copied = (
            "chunk_size max_state_dim max_action_dim num_steps tokenizer_max_length add_image_special_tokens "
            "attention_mode prefix_length num_expert_layers num_vlm_layers self_attn_every_n_layers "
            "expert_width_multiplier min_period max_period"
        ).split()
        fields = {key: config[key] for key in copied if key in config}
        fields["vlm_model_name"] = name
        fields.update(sizes)
        resize = config.get("resize_imgs_with_padding")
        side = fields.get("image_size", cls.image_size)
        if resize is not None and tuple(resize) != (side, side):
            raise ConfigError(
                f"SmolVLA config.json: resize_imgs_with_padding {list(resize)} is not the vision tower's {side}x{side}"
            )
        return cls(**fields)


def sizes_from_vlm_config(vlm_config: Mapping[str, Any]) -> dict:
    """Our size fields from a SmolVLM ``config.json`` (transformers' ``SmolVLMConfig.to_dict()``)."""
    try:
        text, vision = vlm_config["text_config"], vlm_config["vision_config"]
        if vlm_config.get("tie_word_embeddings", False) or text.get("tie_word_embeddings", False):
            raise ConfigError("VLM config: tied word embeddings are not supported (SmolVLM2 keeps its own lm_head)")
        sizes = {
            "vision_hidden_size": vision["hidden_size"],
            "vision_intermediate_size": vision["intermediate_size"],
            "vision_num_layers": vision["num_hidden_layers"],
            "vision_num_heads": vision["num_attention_heads"],
            "patch_size": vision["patch_size"],
            "image_size": vision["image_size"],
            "vision_layer_norm_eps": vision.get("layer_norm_eps", 1e-6),
            "vision_hidden_act": vision.get("hidden_act", "gelu_pytorch_tanh"),
            "scale_factor": vlm_config["scale_factor"],
            "vocab_size": text.get("vocab_size", vlm_config.get("vocab_size")),
            "text_hidden_size": text["hidden_size"],
            "text_intermediate_size": text["intermediate_size"],
            "num_attention_heads": text["num_attention_heads"],
            "num_key_value_heads": text.get("num_key_value_heads", text["num_attention_heads"]),
            "head_dim": text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"],
            "rms_norm_eps": text.get("rms_norm_eps", 1e-5),
            "hidden_act": text.get("hidden_act", "silu"),
            "pad_token_id": text.get("pad_token_id"),
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"VLM config: missing or malformed field {exc}") from exc
    return sizes


# ---------------------------------------------------------------------------- checkpoint keys


def remap_keys(names: Iterable[str]) -> dict[str, str]:
    """``{file key: our key}`` for the weight tensors of a SmolVLA ``model.safetensors``.

    LeRobot 0.3.x and 0.4.x write the same names (``model.`` + :class:`SmolVLAModel`'s keys; SmolVLM's module
    layout did not change with transformers 4.52 as PaliGemma's did); a policy saved from ``torch.compile`` has
    ``model._orig_mod.``. Normaliser buffers (:func:`is_non_parameter_key`) are left out. Pure: no checks here,
    the strict loader names any key that finds no place.
    """
    return {name: strip_policy_prefix(name) for name in names if not is_non_parameter_key(name)}


# ---------------------------------------------------------------------------- math helpers


def apply_rope(x: Tensor, positions: Tensor, max_wavelength: float = ROPE_MAX_WAVELENGTH) -> Tensor:
    """Rotary embedding of ``x`` ``[B, L, H, D]`` at ``positions`` ``[B, L]``: halves ``(x1, x2)`` rotated by
    ``positions / max_wavelength**(2 i / D)``, computed in fp32."""
    half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    timescale = max_wavelength**exponents
    radians = positions[..., None].to(torch.float32) / timescale[None, None, :]
    radians = radians[..., None, :]
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x.split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


def _attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, num_heads: int, num_kv_heads: int) -> Tensor:
    """LeRobot's eager attention: ``[B, Lq, H, D]`` x ``[B, Lk, KV, D]`` -> ``[B, Lq, H * D]``.

    Scores in fp32 scaled by ``D**-0.5``, masked (``mask`` ``[B, Lq, Lk]``) with the float32 minimum so that a
    fully masked row stays finite, K/V repeated over the ``H / KV`` query heads of each group.
    """
    batch, _, _, head_dim = query.shape
    groups = num_heads // num_kv_heads
    key = key.repeat_interleave(groups, dim=2) if groups > 1 else key
    value = value.repeat_interleave(groups, dim=2) if groups > 1 else value
    q = query.to(torch.float32).transpose(1, 2)
    k = key.to(torch.float32).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(2, 3)) * head_dim**-0.5
    scores = torch.where(mask[:, None, :, :], scores, torch.finfo(torch.float32).min)
    probs = F.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    return out.reshape(batch, -1, num_heads * head_dim)


def _qkv(layer: LlamaDecoderLayer, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pre-norm and the q/k/v projections of a text layer, each ``[B, L, heads, head_dim]``."""
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    return attn.q_proj(normed).view(shape), attn.k_proj(normed).view(shape), attn.v_proj(normed).view(shape)


def _qkv_query(layer: LlamaDecoderLayer, hidden: Tensor) -> Tensor:
    """Pre-norm and the query projection only (cross-attention layers take K/V from the VLM)."""
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    return attn.q_proj(normed).view(*normed.shape[:-1], -1, attn.head_dim)


def _finish(layer: LlamaDecoderLayer, hidden: Tensor, attended: Tensor) -> Tensor:
    """Output projection, residual, post-norm MLP, residual."""
    out = layer.self_attn.o_proj(attended.to(layer.self_attn.o_proj.weight.dtype)) + hidden
    return layer.mlp(layer.post_attention_layernorm(out)) + out


# ---------------------------------------------------------------------------- modules


class _TextModel(nn.Module):
    """The kept layers of SmolVLM's text model (transformers' Llama layers), named as LeRobot saves them."""

    def __init__(self, config: LlamaConfig, num_layers: int, embed: bool):
        super().__init__()
        if embed:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(num_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class _SmolVLMInner(nn.Module):
    def __init__(self, hf: SmolVLMConfig, text: LlamaConfig, num_layers: int):
        super().__init__()
        self.vision_model = SmolVLMVisionTransformer(hf.vision_config)
        self.connector = SmolVLMConnector(hf)
        self.text_model = _TextModel(text, num_layers, embed=True)


class _SmolVLM(nn.Module):
    def __init__(self, hf: SmolVLMConfig, text: LlamaConfig, num_layers: int):
        super().__init__()
        self.model = _SmolVLMInner(hf, text, num_layers)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)


class _VLMWithExpert(nn.Module):
    def __init__(self, config: SmolVLAConfig):
        super().__init__()
        text = llama_config(config, expert=False)
        expert = llama_config(config, expert=True)
        self.vlm = _SmolVLM(smolvlm_config(config), text, config.num_vlm_layers)
        self.lm_expert = _TextModel(expert, config.expert_layers, embed=False)
        kv_width = config.num_key_value_heads * config.head_dim
        for index, layer in enumerate(self.lm_expert.layers):
            if config.is_cross_layer(index):
                layer.self_attn.k_proj = nn.Linear(kv_width, kv_width, bias=False)
                layer.self_attn.v_proj = nn.Linear(kv_width, kv_width, bias=False)


def llama_config(config: SmolVLAConfig, *, expert: bool) -> LlamaConfig:
    """transformers ``LlamaConfig`` of the VLM's text layers, or of the expert (narrower, same heads)."""
    hidden = config.expert_hidden_size if expert else config.text_hidden_size
    llama = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=hidden,
        intermediate_size=config.expert_intermediate_size if expert else config.text_intermediate_size,
        num_hidden_layers=config.expert_layers if expert else config.num_vlm_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        rms_norm_eps=config.rms_norm_eps,
        pad_token_id=config.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
    )
    llama._attn_implementation = "eager"
    return llama


def smolvlm_config(config: SmolVLAConfig) -> SmolVLMConfig:
    """transformers ``SmolVLMConfig`` for the vision tower and the connector."""
    vision = SmolVLMVisionConfig(
        hidden_size=config.vision_hidden_size,
        intermediate_size=config.vision_intermediate_size,
        num_hidden_layers=config.vision_num_layers,
        num_attention_heads=config.vision_num_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        layer_norm_eps=config.vision_layer_norm_eps,
        hidden_act=config.vision_hidden_act,
    )
    vision._attn_implementation = "sdpa"
    hf = SmolVLMConfig(
        vision_config=vision.to_dict(),
        text_config=llama_config(config, expert=False).to_dict(),
        scale_factor=config.scale_factor,
        tie_word_embeddings=False,
    )
    hf.vision_config._attn_implementation = "sdpa"
    return hf


@dataclasses.dataclass
class SmolVLAPrefix:
    """The encoded images and prompt: per VLM layer the rotated keys and the values ``[B, P, kv_heads, head_dim]``,
    and the pad mask ``[B, P]``. The state token is not in it (see :meth:`SmolVLAModel.velocity`)."""

    keys: list[Tensor]
    values: list[Tensor]
    pad_masks: Tensor

    @property
    def batch_size(self) -> int:
        return self.pad_masks.shape[0]


class SmolVLAModel(nn.Module):
    """SmolVLA's flow-matching model (LeRobot's ``VLAFlowMatching``) on transformers' SmolVLM and Llama parts."""

    def __init__(self, config: SmolVLAConfig):
        super().__init__()
        self.config = config
        self.vlm_with_expert = _VLMWithExpert(config)
        width, expert = config.text_hidden_size, config.expert_hidden_size
        self.state_proj = nn.Linear(config.max_state_dim, width)
        self.action_in_proj = nn.Linear(config.max_action_dim, expert)
        self.action_out_proj = nn.Linear(expert, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert, expert)
        self.action_time_mlp_out = nn.Linear(expert, expert)

    # ------------------------------------------------------------------ parts

    @property
    def _vlm(self) -> _SmolVLMInner:
        return self.vlm_with_expert.vlm.model

    def _expert_layer(self, layer: int) -> LlamaDecoderLayer | None:
        index = self.config.expert_layer_index(layer)
        return None if index is None else self.vlm_with_expert.lm_expert.layers[index]

    def embed_image(self, image: Tensor) -> Tensor:
        """``[B, 3, S, S]`` in [-1, 1] -> ``[B, tokens, text_hidden_size]``: vision tower, pixel shuffle, projection."""
        vision = self._vlm.vision_model
        hidden = vision(pixel_values=image.to(vision.post_layernorm.weight.dtype)).last_hidden_state
        return self._vlm.connector(hidden)

    def embed_language_tokens(self, tokens: Tensor) -> Tensor:
        return self._vlm.text_model.embed_tokens(tokens)

    def embed_prefix(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(embs [B, P, W], pad_masks bool [B, P], att_masks bool [B, P])`` as LeRobot's ``embed_prefix``.

        With ``state`` the state token closes the prefix (its ``att_mask`` is 1: a new block) and ``prefix_length``
        padding follows, exactly LeRobot's layout; without it, only images and prompt (all ``att_mask`` 0), which
        is what :meth:`prefix_cache` encodes.
        """
        if len(images) != len(image_masks):
            raise ValueError(f"{len(images)} images but {len(image_masks)} image masks")
        embs, pads = [], []
        batch = tokens.shape[0]
        for image, mask in zip(images, image_masks):
            if self.config.add_image_special_tokens:
                start = torch.tensor(
                    [self.config.fake_image_token_id, self.config.global_image_token_id], device=tokens.device
                )
                start_emb = self.embed_language_tokens(start)[None].expand(batch, -1, -1)
                embs.append(start_emb)
                pads.append(torch.ones(batch, start_emb.shape[1], dtype=torch.bool, device=tokens.device))
            image_emb = self.embed_image(image)
            image_emb = image_emb * torch.tensor(image_emb.shape[-1] ** 0.5, dtype=image_emb.dtype)
            embs.append(image_emb)
            pads.append(mask.to(torch.bool)[:, None].expand(batch, image_emb.shape[1]))
            if self.config.add_image_special_tokens:
                end = torch.tensor([self.config.fake_image_token_id], device=tokens.device)
                embs.append(self.embed_language_tokens(end)[None].expand(batch, -1, -1))
                pads.append(torch.ones(batch, 1, dtype=torch.bool, device=tokens.device))
        lang = self.embed_language_tokens(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(token_masks.to(torch.bool))
        embs_t, pads_t = torch.cat(embs, dim=1), torch.cat(pads, dim=1)
        att = torch.zeros_like(pads_t)
        if state is None:
            return embs_t, pads_t, att
        state_emb = self.state_proj(state)[:, None, :]
        embs_t = torch.cat([embs_t, state_emb.to(embs_t.dtype)], dim=1)
        ones = torch.ones(batch, 1, dtype=torch.bool, device=pads_t.device)
        pads_t, att = torch.cat([pads_t, ones], dim=1), torch.cat([att, ones], dim=1)
        missing = self.config.prefix_length - embs_t.shape[1]
        if missing > 0:
            embs_t = F.pad(embs_t, (0, 0, 0, missing))
            pads_t, att = F.pad(pads_t, (0, missing)), F.pad(att, (0, missing))
        return embs_t, pads_t, att

    def embed_suffix(self, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Action tokens ``[B, chunk, expert_width]``, their pad mask (all valid) and att mask (all 1: causal)."""
        action_emb = self.action_in_proj(x_t)
        time_emb = sincos_time_embedding(
            time, self.config.expert_hidden_size, self.config.min_period, self.config.max_period
        ).to(action_emb.dtype)
        fused = torch.cat([action_emb, time_emb[:, None, :].expand_as(action_emb)], dim=2)
        embs = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        ones = torch.ones(embs.shape[:2], dtype=torch.bool, device=embs.device)
        return embs, ones, ones

    # ------------------------------------------------------------------ flow

    def prefix_cache(
        self, images: list[Tensor], image_masks: list[Tensor], tokens: Tensor, token_masks: Tensor
    ) -> SmolVLAPrefix:
        """Run the kept VLM layers over images and prompt (bidirectional, padding masked) and keep every layer's
        rotated K and V; computed once per chunk, reused by every flow step."""
        hidden, pads, _ = self.embed_prefix(images, image_masks, tokens, token_masks)
        mask = pads[:, None, :] & pads[:, :, None]
        positions = torch.cumsum(pads.to(torch.long), dim=1) - 1
        layers = self._vlm.text_model.layers
        keys, values = [], []
        for index, layer in enumerate(layers):
            query, key, value = _qkv(layer, hidden)
            key = apply_rope(key, positions)
            keys.append(key)
            values.append(value)
            if index + 1 < len(layers):
                query = apply_rope(query, positions)
                attended = _attention(query, key, value, mask, self.config.num_attention_heads, key.shape[2])
                hidden = _finish(layer, hidden, attended)
        return SmolVLAPrefix(keys, values, pads)

    def velocity(self, prefix: SmolVLAPrefix, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """One flow step: ``v_t`` ``[B, chunk, max_action_dim]`` (fp32) for ``x_t`` at times ``t`` ``[B]``.

        The state token (VLM weights) and the action tokens (expert weights) go through the layers together: the
        state token attends to the cached prefix and itself at position ``#valid prefix tokens``; the action
        tokens attend to prefix, state and earlier action tokens (self-attention layers, positions continuing
        after the state) or to the expert-projected prefix and state K/V (cross-attention layers, positions
        from 0).
        """
        config = self.config
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        batch = prefix.batch_size
        if state.shape[0] != batch or x_t.shape[0] != batch:
            raise ValueError(f"prefix batch {batch}, state batch {state.shape[0]}, x_t batch {x_t.shape[0]}")
        suffix, _, _ = self.embed_suffix(x_t, t)
        length = suffix.shape[1]
        device = suffix.device
        vlm_layers = self._vlm.text_model.layers
        state_hidden = self.state_proj(state)[:, None, :].to(vlm_layers[0].self_attn.q_proj.weight.dtype)
        state_position = prefix.pad_masks.sum(dim=1, keepdim=True)
        suffix_positions = state_position + 1 + torch.arange(length, device=device)[None, :]
        cross_positions = torch.arange(length, device=device)[None, :].expand(batch, length)
        seen = torch.cat([prefix.pad_masks, torch.ones(batch, 1, dtype=torch.bool, device=device)], dim=1)
        state_mask = seen[:, None, :]
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        self_mask = torch.cat([seen[:, None, :].expand(batch, length, -1), causal[None].expand(batch, -1, -1)], dim=2)
        cross_mask = seen[:, None, :].expand(batch, length, -1)
        for index, layer in enumerate(vlm_layers):
            query, key, value = _qkv(layer, state_hidden)
            key = apply_rope(key, state_position)
            keys = torch.cat([prefix.keys[index], key], dim=1)
            values = torch.cat([prefix.values[index], value], dim=1)
            expert = self._expert_layer(index)
            if expert is not None:
                if config.is_cross_layer(index):
                    e_query = _qkv_query(expert, suffix)
                    e_query = apply_rope(e_query, cross_positions)
                    attn = expert.self_attn
                    flat_k = keys.reshape(*keys.shape[:2], -1).to(attn.k_proj.weight.dtype)
                    flat_v = values.reshape(*values.shape[:2], -1).to(attn.v_proj.weight.dtype)
                    e_keys = attn.k_proj(flat_k).view(*keys.shape[:2], -1, attn.head_dim)
                    e_values = attn.v_proj(flat_v).view(*values.shape[:2], -1, attn.head_dim)
                    e_attended = _attention(e_query, e_keys, e_values, cross_mask, heads, kv_heads)
                else:
                    e_query, e_key, e_value = _qkv(expert, suffix)
                    e_query, e_key = apply_rope(e_query, suffix_positions), apply_rope(e_key, suffix_positions)
                    e_keys = torch.cat([keys, e_key], dim=1)
                    e_values = torch.cat([values, e_value], dim=1)
                    e_attended = _attention(e_query, e_keys, e_values, self_mask, heads, kv_heads)
                suffix = _finish(expert, suffix, e_attended)
            if index + 1 < len(vlm_layers):
                query = apply_rope(query, state_position)
                attended = _attention(query, keys, values, state_mask, heads, kv_heads)
                state_hidden = _finish(layer, state_hidden, attended)
        out = self.vlm_with_expert.lm_expert.norm(suffix)[:, -config.chunk_size :]
        return self.action_out_proj(out.to(self.action_out_proj.weight.dtype))

    def sample_actions(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor,
        noise: Tensor,
        num_steps: int | None = None,
    ) -> Tensor:
        """Euler integration of ``dx/dt = v_t`` from ``noise`` at t = 1 to t = 0 (``[B, chunk, max_action_dim]``),
        time kept as LeRobot does (an fp32 scalar advanced by ``dt`` until ``t < -dt / 2``)."""
        steps = self.config.num_steps if num_steps is None else int(num_steps)
        prefix = self.prefix_cache(images, image_masks, tokens, token_masks)
        dt = torch.tensor(-1.0 / steps, dtype=torch.float32, device=noise.device)
        time = torch.tensor(1.0, dtype=torch.float32, device=noise.device)
        x_t = noise.clone()
        while time >= -dt / 2:
            x_t = x_t + dt * self.velocity(prefix, state, x_t, time.expand(x_t.shape[0]))
            time = time + dt
        return x_t

    def forward(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor,
        actions: Tensor,
        noise: Tensor,
        time: Tensor,
    ) -> Tensor:
        """Per-element flow-matching loss ``(v_t - (noise - actions))**2`` ``[B, chunk, max_action_dim]`` at
        ``x_t = time * noise + (1 - time) * actions`` (no reduction)."""
        expanded = time[:, None, None]
        x_t = expanded * noise + (1 - expanded) * actions
        target = noise - actions
        prefix = self.prefix_cache(images, image_masks, tokens, token_masks)
        v_t = self.velocity(prefix, state, x_t, time)
        return F.mse_loss(target, v_t, reduction="none")


__all__ = [
    "NON_PARAMETER_PREFIXES",
    "SMOLVLM2_500M",
    "SmolVLAConfig",
    "SmolVLAModel",
    "SmolVLAPrefix",
    "apply_rope",
    "expert_intermediate_size",
    "is_non_parameter_key",
    "make_att_2d_masks",
    "remap_keys",
    "sincos_time_embedding",
    "sizes_from_vlm_config",
]
