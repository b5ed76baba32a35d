"""The distributional value model (paper Sec. IV-A, V-C): :class:`RecapValue` and its loss.

Same backbone family as the policy (a smaller one), the task prompt without advantage text, and ``num_bins``
logits over normalised returns in [-1, 0] (docs/learning.md §2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recap_core import rl
from recap_core.models.backbone import VisionLanguageBackbone
from recap_core.models.configuration import ValueConfig


class RecapValue(nn.Module):
    """Prefix ``[image tokens ; state token ; readout token ; prompt tokens]``; the readout token's final hidden
    state goes through an MLP to ``num_bins`` logits (bin centres from :func:`recap_core.rl.bin_centers`).

    Boundary shapes: ``images`` ``[B, N, 3, S, S]``, ``state`` ``[B, state_dim]``, ``prompt_ids`` /
    ``prompt_mask`` ``[B, L]`` -> logits ``[B, num_bins]``.
    """

    def __init__(self, config: ValueConfig, *, load_pretrained_weights: bool = False):
        super().__init__()
        self.config = config
        self.backbone = VisionLanguageBackbone(config.backbone, load_pretrained_weights=load_pretrained_weights)
        hidden = self.backbone.hidden_size
        self.state_proj = nn.Linear(config.state_dim, hidden)
        self.readout = nn.Parameter(torch.randn(hidden) * hidden**-0.5)
        self.head = nn.Sequential(
            nn.Linear(hidden, config.head_hidden_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.head_hidden_size, config.num_bins),
        )
        self.register_buffer(
            "bin_values", torch.tensor(rl.bin_centers(config.num_bins), dtype=torch.float32), persistent=False
        )

    def forward(
        self, images: torch.Tensor, state: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> torch.Tensor:
        """Value logits ``[B, num_bins]``."""
        batch = prompt_ids.shape[0]
        image_tokens = self.backbone.embed_images(images)
        extra = torch.stack([self.state_proj(state), self.readout.expand(batch, -1)], dim=1)
        embeddings = torch.cat([image_tokens, extra, self.backbone.embed_text(prompt_ids)], dim=1)
        fixed = torch.ones(batch, image_tokens.shape[1] + 2, dtype=torch.bool, device=prompt_mask.device)
        prefix = self.backbone.encode(embeddings, torch.cat([fixed, prompt_mask.bool()], dim=1))
        return self.head(prefix.hidden[:, image_tokens.shape[1] + 1])

    def expected_value(self, logits: torch.Tensor) -> torch.Tensor:
        """``sum_b softmax(logits)_b * v_b``: ``[B, num_bins] -> [B]`` in [-1, 0]."""
        return F.softmax(logits.float(), dim=-1) @ self.bin_values.float()


def value_loss(logits: torch.Tensor, target_distribution: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``[B]`` between ``softmax(logits)`` and a target distribution ``[B, num_bins]``.

    Targets are the two-hot encoding of the normalised Monte-Carlo return
    (:func:`recap_core.rl.two_hot`), so the expected value is unbiased.
    """
    if logits.shape != target_distribution.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(target_distribution.shape)} must both be [B, num_bins]"
        )
    return -(target_distribution * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
