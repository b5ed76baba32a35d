"""The RECAP policy: backbone prefix + flow-matching action expert (pi0 style, paper Sec. V-A/B).

Its inputs are :class:`PolicyInputs`, already pre-processed (``processor.py``); the architecture is in
docs/learning.md §2.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from recap_core.models.backbone import VisionLanguageBackbone
from recap_core.models.configuration import PolicyConfig
from recap_core.models.expert import ActionExpert, ExpertContext
from recap_core.models.flow import (
    euler_integrate,
    flow_matching_loss,
    guided_velocity,
    interpolate,
    sample_flow_time,
    target_velocity,
)
from recap_core.models.rtc import RTCGuide, guide_sampler


@dataclasses.dataclass
class PolicyInputs:
    """A pre-processed batch, the policy's inputs at the model boundary.

    * ``images`` ``[B, N, 3, S, S]`` float in [-1, 1], cameras in ``config.cameras`` order
    * ``state`` ``[B, state_dim]`` normalised joint state
    * ``prompt_ids`` / ``prompt_mask`` ``[B, L]`` tokenised ``"<task>\\nAdvantage: ..."`` (right padded)
    * ``actions`` ``[B, H, action_dim]`` normalised chunk, ``action_is_pad`` ``[B, H]`` (training)
    * ``sample_weight`` ``[B]`` (training, optional): per-sample loss weight (AWR)
    * ``state_keep`` ``[B]`` bool (training, optional): False zeroes that sample's state token (state dropout)
    * ``advantage_code`` ``long [B]`` (0 none, 1 positive, 2 negative): the same condition as the prompt's
      text, for an expert with ``advantage_embedding``
    """

    images: torch.Tensor
    state: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    actions: torch.Tensor | None = None
    action_is_pad: torch.Tensor | None = None
    sample_weight: torch.Tensor | None = None
    state_keep: torch.Tensor | None = None
    advantage_code: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "PolicyInputs":
        return PolicyInputs(
            **{
                f.name: (None if (v := getattr(self, f.name)) is None else v.to(device))
                for f in dataclasses.fields(self)
            }
        )


class RecapPolicy(nn.Module):
    """Prefix ``[image tokens (N * tokens_per_image) ; state token ; prompt tokens]`` through the backbone,
    then the action expert on the noisy chunk (:class:`PolicyInputs` for the shapes)."""

    def __init__(self, config: PolicyConfig, *, load_pretrained_weights: bool = False):
        super().__init__()
        self.config = config
        self.backbone = VisionLanguageBackbone(config.backbone, load_pretrained_weights=load_pretrained_weights)
        self.state_proj = nn.Linear(config.state_dim, self.backbone.hidden_size)
        self.expert = ActionExpert(
            config.expert, config.backbone, config.action_dim, config.action_horizon, num_cameras=len(config.cameras)
        )
        # The expert reads the backbone's per-layer keys/values only: the last layer's query/output/MLP and the
        # final norm never reach the loss. Freezing them keeps DistributedDataParallel from waiting for their
        # gradients (pi0 has the same dead end when no text loss is trained).
        last = self.backbone.language_model.layers[-1]
        for unreachable in (
            last.self_attn.q_proj,
            last.self_attn.o_proj,
            last.self_attn.q_norm,
            last.mlp,
            last.post_attention_layernorm,
            last.pre_feedforward_layernorm,
            last.post_feedforward_layernorm,
            self.backbone.language_model.norm,
        ):
            unreachable.requires_grad_(False)

    # ------------------------------------------------------------------ prefix
    def encode_prefix(
        self,
        image_tokens: torch.Tensor,
        state: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        state_keep: torch.Tensor | None = None,
        advantage_code: torch.Tensor | None = None,
    ) -> ExpertContext:
        """Backbone pass over the prefix -> the expert's per-layer K/V context (once per chunk).

        ``state_keep`` (training): samples where it is False get an all-zero state token, a value no
        projected state takes (it would need ``W s = -b``), so the model learns that "no state" means
        "read the arm and the target from the images".
        """
        batch = prompt_ids.shape[0]
        if image_tokens.shape[0] != batch:
            image_tokens = image_tokens.expand(batch, -1, -1)
        state_token = self.state_proj(state)[:, None, :]
        if state_keep is not None:
            state_token = state_token * state_keep.to(state_token.dtype)[:, None, None]
        if state_token.shape[0] != batch:
            state_token = state_token.expand(batch, -1, -1)
        embeddings = torch.cat([image_tokens, state_token, self.backbone.embed_text(prompt_ids)], dim=1)
        fixed = torch.ones(batch, image_tokens.shape[1] + 1, dtype=torch.bool, device=prompt_mask.device)
        prefix = self.backbone.encode(embeddings, torch.cat([fixed, prompt_mask.bool()], dim=1))
        if self.config.knowledge_insulation:
            prefix = prefix.detached()
        horizon = self.config.action_horizon
        positions = prefix.next_position[:, None] + torch.arange(horizon, device=prompt_ids.device)[None, :]
        rotary = self.backbone.rotary(positions, embeddings)
        image_features = None
        if self.config.expert.image_conditioning:
            image_features = image_tokens.detach() if self.config.knowledge_insulation else image_tokens
        if advantage_code is not None and advantage_code.shape != (batch,):
            raise ValueError(f"advantage_code must be long [{batch}], got {tuple(advantage_code.shape)}")
        return ExpertContext(prefix, rotary, self.backbone.layer_types, horizon, image_features, advantage_code)

    # ------------------------------------------------------------------ training
    def forward(self, inputs: PolicyInputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample training loss ``[B]`` (``forward`` so DistributedDataParallel syncs its gradients)."""
        return self.compute_loss(inputs, generator)

    def compute_loss(self, inputs: PolicyInputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample flow-matching loss ``[B]`` (masked MSE of the velocity, times ``sample_weight`` if set)."""
        if inputs.actions is None:
            raise ValueError("compute_loss needs inputs.actions [B, H, action_dim]")
        actions = inputs.actions
        expected = (self.config.action_horizon, self.config.action_dim)
        if tuple(actions.shape[1:]) != expected:
            raise ValueError(f"actions must be [B, {expected[0]}, {expected[1]}], got {tuple(actions.shape)}")
        noise = torch.randn(actions.shape, generator=generator, dtype=actions.dtype).to(actions.device)
        flow_time = sample_flow_time(actions.shape[0], generator, actions.device).to(actions.dtype)
        image_tokens = self.backbone.embed_images(inputs.images)
        context = self.encode_prefix(
            image_tokens, inputs.state, inputs.prompt_ids, inputs.prompt_mask, inputs.state_keep, inputs.advantage_code
        )
        velocity = self.expert(interpolate(actions, noise, flow_time), flow_time, context)
        loss = flow_matching_loss(velocity, target_velocity(actions, noise), inputs.action_is_pad)
        if inputs.sample_weight is not None:
            loss = loss * inputs.sample_weight
        return loss

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_actions(
        self,
        images: torch.Tensor,
        state: torch.Tensor,
        conditional: tuple[torch.Tensor, ...],
        noise: torch.Tensor,
        *,
        unconditional: tuple[torch.Tensor, ...] | None = None,
        beta: float = 1.0,
        batch_guidance: bool = True,
        num_steps: int | None = None,
        guide: RTCGuide | None = None,
    ) -> torch.Tensor:
        """Euler-integrate the velocity field from ``noise`` ``[B, H, A]`` to a chunk ``[B, H, A]`` (normalised).

        ``conditional`` / ``unconditional`` are ``(prompt_ids, prompt_mask)`` or
        ``(prompt_ids, prompt_mask, advantage_code)`` (an expert with ``advantage_embedding`` needs the code).
        ``beta == 1``: the conditional velocity only (the unconditional prompt
        is not run). ``beta != 1``: classifier-free guidance
        ``v_u + beta (v_c - v_u)``; with ``batch_guidance`` both prompts run
        as one batch of ``2B`` through backbone and expert, else as two
        sequential passes (the slower baseline). Images are encoded once.
        ``guide``: real-time chunking (``rtc.py``), every Euler step guided towards it (the CFG velocity when
        ``beta != 1``); None: the plain sampler.
        """
        num_steps = self.config.num_flow_steps if num_steps is None else num_steps
        image_tokens = self.backbone.embed_images(images)

        def integrate(velocity):
            return euler_integrate(guide_sampler(velocity, guide, convention="eta"), noise, num_steps)

        if beta == 1.0:
            context = self._prompt_prefix(image_tokens, state, conditional)
            return integrate(lambda x, eta: self._velocity(context, x, eta))
        if unconditional is None:
            raise ValueError(f"beta={beta} needs an unconditional prompt (classifier-free guidance)")
        batch = noise.shape[0]
        if not batch_guidance:
            cond = self._prompt_prefix(image_tokens, state, conditional)
            uncond = self._prompt_prefix(image_tokens, state, unconditional)

            def sequential(x, eta):
                return guided_velocity(self._velocity(cond, x, eta), self._velocity(uncond, x, eta), beta)

            return integrate(sequential)
        ids, mask, code = _stack_prompts(conditional, unconditional)
        context = self.encode_prefix(image_tokens.repeat(2, 1, 1), state.repeat(2, 1), ids, mask, None, code)

        def batched(x, eta):
            velocity = self._velocity(context, torch.cat([x, x], dim=0), eta)
            return guided_velocity(velocity[:batch], velocity[batch:], beta)

        return integrate(batched)

    def _prompt_prefix(
        self, image_tokens: torch.Tensor, state: torch.Tensor, prompt: tuple[torch.Tensor, ...]
    ) -> ExpertContext:
        """``encode_prefix`` of a ``(prompt_ids, prompt_mask[, advantage_code])`` prompt."""
        return self.encode_prefix(
            image_tokens, state, prompt[0], prompt[1], None, prompt[2] if len(prompt) > 2 else None
        )

    def _velocity(self, context: ExpertContext, x: torch.Tensor, eta: float) -> torch.Tensor:
        flow_time = torch.full((x.shape[0],), eta, dtype=x.dtype, device=x.device)
        return self.expert(x, flow_time, context)


def _stack_prompts(
    first: tuple[torch.Tensor, ...], second: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate two right-padded prompt batches along the batch, padding to the longer one.

    Their advantage codes (third entries) are concatenated too when both have one.
    """
    length = max(first[0].shape[1], second[0].shape[1])

    def pad(ids, mask):
        extra = length - ids.shape[1]
        if extra == 0:
            return ids, mask
        return (
            torch.nn.functional.pad(ids, (0, extra), value=0),
            torch.nn.functional.pad(mask, (0, extra), value=False),
        )

    (ids_a, mask_a), (ids_b, mask_b) = pad(*first[:2]), pad(*second[:2])
    codes = (
        torch.cat([first[2], second[2]], dim=0)
        if len(first) > 2 and len(second) > 2 and first[2] is not None and second[2] is not None
        else None
    )
    return torch.cat([ids_a, ids_b], dim=0), torch.cat([mask_a, mask_b], dim=0), codes
