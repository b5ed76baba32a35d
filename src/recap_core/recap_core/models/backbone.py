"""The vision-language backbone shared by the policy and the value model.

A Gemma 3 family model built from transformers parts (SigLIP vision tower, multimodal projector, text model
with prefix-LM attention); see :class:`VisionLanguageBackbone` and docs/learning.md §2.
"""

from __future__ import annotations

import dataclasses
import json

import torch
from torch import nn
from transformers import DynamicCache, Gemma3Config, Gemma3TextConfig, SiglipVisionConfig, SiglipVisionModel
from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector, Gemma3TextModel

from recap_core.models.configuration import BackboneConfig, ConfigError


def hf_gemma3_config(config: BackboneConfig) -> Gemma3Config:
    """The transformers ``Gemma3Config`` of a backbone, with prefix-LM (bidirectional) attention."""
    if config.hf_config is not None:
        hf = Gemma3Config.from_dict(config.hf_config)
        text = hf.text_config.to_dict()
        text["use_bidirectional_attention"] = True
        hf.text_config = Gemma3TextConfig(
            **{k: v for k, v in text.items() if k not in ("model_type", "transformers_version")}
        )
    else:
        text = Gemma3TextConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads,
            head_dim=config.head_dim,
            query_pre_attn_scalar=config.head_dim,
            max_position_embeddings=2048,
            sliding_window=2048,
            layer_types=["full_attention"] * config.num_layers,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": config.rope_theta}},
            use_bidirectional_attention=True,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        vision = SiglipVisionConfig(
            hidden_size=config.vision_hidden_size,
            intermediate_size=config.vision_intermediate_size,
            num_hidden_layers=config.vision_num_layers,
            num_attention_heads=config.vision_num_heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
            vision_use_head=False,
        )
        hf = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=config.tokens_per_image)
    hf.vision_config.vision_use_head = False  # SigLIP's pooling head is unused: patch tokens feed the projector
    hf.text_config._attn_implementation = "sdpa"
    hf.vision_config._attn_implementation = "sdpa"
    return hf


def backbone_config_from_hf(hf_config: dict, pretrained_dir: str | None) -> BackboneConfig:
    """A :class:`BackboneConfig` mirroring a transformers ``Gemma3Config`` dict (from a local model's config.json)."""
    if hf_config.get("model_type") != "gemma3":
        raise ConfigError(
            f"pretrained backbone must be a Gemma 3 image-text model (model_type 'gemma3'), "
            f"got model_type {hf_config.get('model_type')!r}; point --pretrained at a local "
            f"Gemma3ForConditionalGeneration directory"
        )
    hf = Gemma3Config.from_dict(hf_config)
    text, vision = hf.text_config, hf.vision_config
    return BackboneConfig(
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        vision_hidden_size=vision.hidden_size,
        vision_intermediate_size=vision.intermediate_size,
        vision_num_layers=vision.num_hidden_layers,
        vision_num_heads=vision.num_attention_heads,
        tokens_per_image=hf.mm_tokens_per_image,
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim,
        pretrained_dir=pretrained_dir,
        hf_config=json.loads(json.dumps(hf.to_dict())),
    )  # JSON-clean, so config.json round-trips it


@dataclasses.dataclass
class PrefixEncoding:
    """What one backbone pass over the prefix leaves for the action expert.

    ``keys[i]``/``values[i]``: ``[B, KV, P, head_dim]`` of backbone layer ``i``
    (after its norms and rotary embedding); ``key_mask`` ``[B, P]`` True for
    real tokens; ``hidden`` ``[B, P, D]`` the final hidden states;
    ``next_position`` ``[B]`` the rotary position of the first token after the
    prefix (pad tokens take no position).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor
    hidden: torch.Tensor
    next_position: torch.Tensor

    def detached(self) -> "PrefixEncoding":
        """The same encoding with no gradient path back into the backbone (knowledge insulation)."""
        return PrefixEncoding(
            [k.detach() for k in self.keys],
            [v.detach() for v in self.values],
            self.key_mask,
            self.hidden.detach(),
            self.next_position,
        )


class ConvStem(nn.Sequential):
    """Stride-2 3x3 convolutions from pixels to the patch grid: ``[B, 3, S, S] -> [B, hidden, S/p, S/p]``.

    Stands in for SigLIP's single ``patch x patch`` convolution (``BackboneConfig.vision_stem == "conv"``):
    ``log2(patch)`` layers, channels doubling from 32 up to 64, GroupNorm + GELU between them, a plain
    convolution to the tower's width last. The tower adds its position embeddings on the same grid.
    """

    def __init__(self, patch_size: int, hidden_size: int):
        layers, channels = [], 3
        for i in range(patch_size.bit_length() - 2):
            width = min(32 * 2**i, 64)
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.GELU()]
            channels = width
        layers.append(nn.Conv2d(channels, hidden_size, 3, stride=2, padding=1))
        super().__init__(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The first convolution's weight (SigLIP reads ``patch_embedding.weight.dtype`` to cast pixels)."""
        return self[0].weight


class VisionLanguageBackbone(nn.Module):
    """SigLIP + Gemma 3 text model encoding ``[image tokens ; extra tokens ; prompt tokens]``.

    The SigLIP vision tower's patches go through Gemma 3's multimodal projector (average-pooled to
    ``tokens_per_image`` tokens per camera), then the Gemma 3 text model runs over the whole prefix with
    bidirectional attention (prefix-LM, like PaliGemma in pi0). Small configs are built with random weights
    offline; ``pretrained_dir`` loads real ``Gemma3ForConditionalGeneration`` weights from a local directory.
    Nothing is downloaded.
    """

    def __init__(self, config: BackboneConfig, *, load_pretrained_weights: bool = False):
        super().__init__()
        self.config = config
        hf = hf_gemma3_config(config)
        self.hf_config = hf
        if load_pretrained_weights:
            if not config.pretrained_dir:
                raise ConfigError("load_pretrained_weights needs BackboneConfig.pretrained_dir (a local directory)")
            from transformers import Gemma3ForConditionalGeneration

            full = Gemma3ForConditionalGeneration.from_pretrained(
                config.pretrained_dir, config=hf, local_files_only=True, dtype=torch.float32
            )
            self.vision_tower = full.model.vision_tower
            self.projector = full.model.multi_modal_projector
            self.language_model = full.model.language_model
        else:
            self.vision_tower = SiglipVisionModel(hf.vision_config)
            self.projector = Gemma3MultiModalProjector(hf)
            # transformers leaves this projection at zeros (images ignored until trained); start it live.
            nn.init.normal_(self.projector.mm_input_projection_weight, std=hf.vision_config.hidden_size**-0.5)
            self.language_model = Gemma3TextModel(hf.text_config)
        if config.vision_stem == "conv":
            self.vision_tower.embeddings.patch_embedding = ConvStem(config.patch_size, config.vision_hidden_size)
        self.layer_types = list(hf.text_config.layer_types)

    @property
    def hidden_size(self) -> int:
        return self.hf_config.text_config.hidden_size

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, N, 3, S, S]`` float in [-1, 1] -> image tokens ``[B, N * tokens_per_image, D]``."""
        if images.dim() != 5:
            raise ValueError(f"images must be [B, num_cameras, 3, S, S], got shape {tuple(images.shape)}")
        batch, cameras = images.shape[:2]
        patches = self.vision_tower(pixel_values=images.flatten(0, 1)).last_hidden_state
        tokens = self.projector(patches)  # [B * N, T, D]
        return tokens.reshape(batch, cameras * tokens.shape[1], tokens.shape[2])

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids -> ``[B, L, D]`` (Gemma's sqrt(D)-scaled embeddings)."""
        return self.language_model.embed_tokens(token_ids)

    def encode(self, embeddings: torch.Tensor, mask: torch.Tensor) -> PrefixEncoding:
        """Run the text model over a prefix ``[B, P, D]`` with padding mask ``[B, P]`` (True = token)."""
        mask = mask.bool()
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        # Every token sees every real token (prefix-LM), in Gemma 3's sliding-window layers too: a prefix
        # (3 x 256 image tokens + prompt for real weights) stays inside the 1024-token window those layers
        # were trained with. Passing the mask ready-made also skips transformers' generic mask builder
        # (vmap over mask functions: ~10x the cost of a tiny model's layers on CPU). Pad queries see the
        # real tokens too, so no attention row is empty; their outputs are never read.
        key_mask = mask[:, None, None, :]
        cache = DynamicCache()  # no config: a config would make sliding layers cut cached keys
        output = self.language_model(
            inputs_embeds=embeddings,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            attention_mask={"full_attention": key_mask, "sliding_attention": key_mask},
        )
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return PrefixEncoding(keys, values, mask, output.last_hidden_state, mask.long().sum(dim=1))

    def rotary(self, positions: torch.Tensor, like: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Rotary ``(cos, sin)`` ``[B, T, head_dim]`` per layer type at ``positions`` ``[B, T]``."""
        return {
            layer_type: self.language_model.rotary_emb(like, positions, layer_type)
            for layer_type in sorted(set(self.layer_types))
        }
