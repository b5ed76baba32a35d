"""Flow-matching math as stateless functions (paper Sec. V-B, Appendix C).

The paper's sign convention, not openpi's: flow time ``eta`` runs from 0 (noise ``w``) to 1 (the chunk ``a``),
``a_eta = eta * a + (1 - eta) * w``, target velocity ``u = a - w`` (docs/learning.md §3). Chunks are
``[B, H, A]`` (batch, horizon, action dims), times ``[B]``.
"""

from __future__ import annotations

from typing import Callable

import torch

# Beta(1.5, 1) on openpi's t (more weight on noisy times), mapped to eta = 1 - t, kept off the end points.
FLOW_TIME_ALPHA = 1.5
FLOW_TIME_MIN = 0.001


def sample_flow_time(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Training flow times ``eta`` ``[B]`` in ``(0, 1)``, denser near the noise end.

    openpi draws ``t ~ Beta(1.5, 1)``; its CDF is ``t**1.5`` so ``t = u**(1/1.5)``
    with ``u`` uniform. Inverting the CDF keeps the draw on ``generator``
    (``torch.distributions.Beta`` cannot take one).
    """
    # drawn where the generator lives (CPU), then moved: a CPU generator cannot fill a CUDA tensor
    uniform = torch.rand(batch_size, generator=generator).to(device)
    noise_time = uniform.pow(1.0 / FLOW_TIME_ALPHA) * (1.0 - FLOW_TIME_MIN) + FLOW_TIME_MIN
    return 1.0 - noise_time


def interpolate(actions: torch.Tensor, noise: torch.Tensor, flow_time: torch.Tensor) -> torch.Tensor:
    """``a_eta = eta * a + (1 - eta) * w``: ``[B, H, A], [B, H, A], [B] -> [B, H, A]``."""
    if actions.shape != noise.shape:
        raise ValueError(f"actions {tuple(actions.shape)} and noise {tuple(noise.shape)} must have the same shape")
    eta = flow_time.reshape(-1, *([1] * (actions.dim() - 1)))
    return eta * actions + (1.0 - eta) * noise


def target_velocity(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``u = a - w``, constant along the straight path: ``[B, H, A]``."""
    return actions - noise


def flow_matching_loss(
    predicted_velocity: torch.Tensor, velocity_target: torch.Tensor, action_is_pad: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample masked MSE ``[B]``: mean over the valid (not padded) steps and all action dims.

    ``action_is_pad`` ``[B, H]`` marks steps past the episode end (their targets
    are copies of the last action and must not train the model). A sample whose
    steps are all padding contributes 0.
    """
    if predicted_velocity.shape != velocity_target.shape:
        raise ValueError(
            f"prediction {tuple(predicted_velocity.shape)} and target "
            f"{tuple(velocity_target.shape)} must have the same shape [B, H, A]"
        )
    squared = (predicted_velocity - velocity_target).pow(2).mean(dim=-1)  # [B, H]
    if action_is_pad is None:
        return squared.mean(dim=-1)
    valid = (~action_is_pad.bool()).to(squared.dtype)
    return (squared * valid).sum(dim=-1) / valid.sum(dim=-1).clamp(min=1.0)


def euler_integrate(
    velocity: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, num_steps: int
) -> torch.Tensor:
    """Integrate ``dx/d eta = velocity(x, eta)`` from ``eta = 0`` (``x = noise``) to ``eta = 1``.

    ``num_steps`` equal steps of ``1 / num_steps``; the velocity is evaluated at
    ``eta_k = k / num_steps``. Exact for a constant velocity field.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    step = 1.0 / num_steps
    x = noise
    for k in range(int(num_steps)):
        x = x + step * velocity(x, k * step)
    return x


def guided_velocity(conditional: torch.Tensor, unconditional: torch.Tensor, beta: float) -> torch.Tensor:
    """Classifier-free guidance on the velocity: ``v_u + beta * (v_c - v_u)`` (paper Eq. 4/5).

    ``beta = 1`` returns ``v_c``; ``beta > 1`` sharpens towards the condition.
    """
    if beta == 1.0:
        return conditional
    return unconditional + beta * (conditional - unconditional)


def sinusoidal_time_embedding(
    flow_time: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> torch.Tensor:
    """Sine/cosine features of ``eta`` ``[B] -> [B, dim]``, periods spread geometrically.

    Periods from ``min_period`` to ``max_period`` resolve differences of a few
    thousandths across the whole ``[0, 1]`` range.
    """
    if dim % 2:
        raise ValueError(f"time embedding size must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=flow_time.device, dtype=torch.float64)
    period = min_period * (max_period / min_period) ** fraction
    angle = flow_time.to(torch.float64)[:, None] * (2.0 * torch.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(flow_time.dtype)
