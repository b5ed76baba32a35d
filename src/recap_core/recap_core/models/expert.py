"""The flow-matching action expert (pi0 style): a narrow transformer over the noisy action chunk that
reads the backbone's prefix keys/values layer by layer (:class:`ActionExpert`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

from recap_core.models.backbone import PrefixEncoding
from recap_core.models.configuration import BackboneConfig, ExpertConfig
from recap_core.models.flow import sinusoidal_time_embedding


class RMSNorm(nn.Module):
    """Root-mean-square norm with a (1 + weight) gain, zero-initialised (Gemma convention)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight=1.0 + self.weight, eps=self.eps)


class ExpertLayer(nn.Module):
    """Pre-norm attention over [prefix ; chunk] + gated GELU MLP, both residual."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.attention_norm = RMSNorm(width)
        self.q_proj = nn.Linear(width, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, width, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.mlp_norm = RMSNorm(width)
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        prefix_keys: torch.Tensor,
        prefix_values: torch.Tensor,
        key_mask: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """``x`` ``[B, H, W]``; prefix K/V ``[B, KV, P, hd]``; ``key_mask`` ``[B, 1, 1, P + H]``."""
        batch, horizon, _ = x.shape
        h = self.attention_norm(x)
        q = self.q_norm(self.q_proj(h).view(batch, horizon, self.num_heads, self.head_dim).transpose(1, 2))
        k = self.k_norm(self.k_proj(h).view(batch, horizon, self.num_kv_heads, self.head_dim).transpose(1, 2))
        v = self.v_proj(h).view(batch, horizon, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys = torch.cat([prefix_keys, k], dim=2)
        values = torch.cat([prefix_values, v], dim=2)
        attended = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=key_mask, enable_gqa=self.num_heads != self.num_kv_heads
        )
        x = x + self.o_proj(attended.transpose(1, 2).reshape(batch, horizon, -1))
        h = self.mlp_norm(x)
        return x + self.down_proj(F.gelu(self.gate_proj(h), approximate="tanh") * self.up_proj(h))


class ExpertContext:
    """Everything the expert needs from one prefix, computed once per chunk.

    Holds the per-layer prefix K/V, the attention mask over ``[prefix ; chunk]``
    ``[B, 1, 1, P + H]``, the rotary ``cos``/``sin`` of the chunk positions and,
    for an expert with ``image_conditioning``, the image tokens ``[B, N*T, D]``; for one with
    ``advantage_embedding``, the advantage condition ``long [B]`` (0 none, 1 positive, 2 negative).
    """

    def __init__(
        self,
        prefix: PrefixEncoding,
        rotary: dict[str, tuple[torch.Tensor, torch.Tensor]],
        layer_types: list[str],
        horizon: int,
        image_features: torch.Tensor | None = None,
        advantage_code: torch.Tensor | None = None,
    ):
        self.prefix = prefix
        self.image_features = image_features
        self.advantage_code = advantage_code
        self.rotary = rotary
        self.layer_types = layer_types
        chunk_mask = torch.ones(prefix.key_mask.shape[0], horizon, dtype=torch.bool, device=prefix.key_mask.device)
        self.key_mask = torch.cat([prefix.key_mask, chunk_mask], dim=1)[:, None, None, :]

    @property
    def batch_size(self) -> int:
        return self.key_mask.shape[0]


class ActionExpert(nn.Module):
    """Noisy chunk ``[B, H, A]`` + flow time ``[B]`` + prefix context -> velocity ``[B, H, A]``.

    Layer ``i`` attends to ``[prefix K/V of backbone layer i ; its own K/V]`` (keys carry the backbone's rotary
    positions; the chunk takes the positions right after the prefix), and the chunk's tokens attend to each
    other bidirectionally. The prefix K/V do not depend on the noisy actions, so they are computed once per
    chunk (:class:`ExpertContext`) and reused by every Euler step.
    """

    def __init__(
        self, expert: ExpertConfig, backbone: BackboneConfig, action_dim: int, horizon: int, num_cameras: int = 1
    ):
        super().__init__()
        width = expert.width
        self.horizon = horizon
        # Optional global observation vector (ExpertConfig.image_conditioning). Zero-initialised, so adding it
        # to a trained expert starts from that expert's behaviour.
        self.image_condition = None
        if expert.image_conditioning:
            self.image_condition = nn.Linear(num_cameras * backbone.tokens_per_image * backbone.hidden_size, width)
            nn.init.zeros_(self.image_condition.weight)
            nn.init.zeros_(self.image_condition.bias)
        # Optional advantage condition (ExpertConfig.advantage_embedding): none / positive / negative.
        self.advantage_embedding = None
        if expert.advantage_embedding:
            # zeros without a random init first: building it draws nothing from the RNG
            self.advantage_embedding = nn.Embedding(3, width, _weight=torch.zeros(3, width))
        self.action_in = nn.Linear(action_dim, width)
        # pi0 mixes action and time with a small MLP per token (no adaptive norm).
        self.action_time_in = nn.Linear(2 * width, width)
        self.action_time_out = nn.Linear(width, width)
        self.layers = nn.ModuleList(
            ExpertLayer(width, expert.mlp_dim, expert.num_heads, backbone.num_kv_heads, backbone.head_dim)
            for _ in range(backbone.num_layers)
        )
        self.final_norm = RMSNorm(width)
        self.action_out = nn.Linear(width, action_dim)

    def forward(self, noisy_actions: torch.Tensor, flow_time: torch.Tensor, context: ExpertContext) -> torch.Tensor:
        if noisy_actions.shape[0] != context.batch_size:
            raise ValueError(f"noisy actions batch {noisy_actions.shape[0]} != prefix batch {context.batch_size}")
        tokens = self.action_in(noisy_actions)
        time_features = sinusoidal_time_embedding(flow_time, tokens.shape[-1]).to(tokens.dtype)
        time_features = time_features[:, None, :].expand_as(tokens)
        x = self.action_time_out(F.silu(self.action_time_in(torch.cat([tokens, time_features], dim=-1))))
        if self.image_condition is not None:
            if context.image_features is None:
                raise ValueError("this expert reads the image tokens (image_conditioning); the context has none")
            features = context.image_features
            features = F.rms_norm(features, (features.shape[-1],)).flatten(1)
            x = x + self.image_condition(features)[:, None, :]
        if self.advantage_embedding is not None:
            if context.advantage_code is None:
                raise ValueError(
                    "this expert embeds the advantage condition (advantage_embedding); the context "
                    "has no advantage_code"
                )
            x = x + self.advantage_embedding(context.advantage_code)[:, None, :]
        prefix = context.prefix
        for i, layer in enumerate(self.layers):
            cos, sin = context.rotary[context.layer_types[i]]
            x = layer(x, prefix.keys[i], prefix.values[i], context.key_mask, cos, sin)
        return self.action_out(self.final_norm(x))
