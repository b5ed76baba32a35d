"""Real-time chunking (Black, Galliker, Levine 2025, arXiv 2506.07339): inference-time inpainting of a chunk.

While a chunk is being computed the robot keeps executing the previous one, so the new chunk's first ``d`` actions
(the inference delay, in control ticks) are already committed, and its next ones should continue what the robot is
about to do. RTC samples the new chunk with the flow model as usual, but at every Euler step pulls the one-step
estimate of the clean chunk towards the previous plan on those ticks (pseudo-inverse guidance, PiGDM):

* soft mask ``W`` over the chunk's ticks (paper Eq. 5): 1 on the first ``d`` (frozen), an exponentially decaying
  ramp over the rest of the overlap, 0 on the last ``s`` (the execution horizon: ticks the previous plan does not
  reach) and wherever there is no previous action;
* with the paper's flow time ``tau`` (0 = noise, 1 = data), the one-step estimate ``A1 = A_tau + (1 - tau) v``,
  the weighted error ``e = W * (Y - A1)`` against the guide ``Y``, and its vector-Jacobian product through the
  velocity network ``g = e^T dA1/dA_tau`` (``torch.autograd``);
* the guided velocity ``v + c(tau) g`` with ``c(tau) = min(beta_max, (1 - tau) / (tau r^2))``,
  ``r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``: the guidance-weight clipping (``beta_max`` 5 in the paper).

It wraps any velocity callable, so it works for every model kind and with classifier-free guidance (the callable
then returns the CFG velocity). The two time conventions: RECAP's ``eta`` (0 = noise .. 1 = data, ``u = a - w``;
``tau = eta``) and openpi's ``t`` (``x_t = t noise + (1 - t) actions``, ``v = noise - actions``; ``tau = 1 - t``,
velocity and correction change sign).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal

import torch

#: The paper's clip of the guidance weight (beta in Algorithm 1).
DEFAULT_MAX_GUIDANCE_WEIGHT = 5.0
TimeConvention = Literal["eta", "openpi"]


def soft_mask(
    horizon: int, inference_delay: int, execution_horizon: int, prefix_length: int | None = None
) -> torch.Tensor:
    """The guidance weights over a chunk's ticks ``[horizon]`` (paper Eq. 5).

    1 on ticks ``[0, d)``; ``c_i (e^{c_i} - 1) / (e - 1)`` with ``c_i = (end - i) / (end - d + 1)`` on ``[d, end)``;
    0 from ``end = min(horizon - execution_horizon, prefix_length)`` on. ``d`` is clamped to ``[0, end]``.
    """
    horizon, delay, execution = int(horizon), int(inference_delay), int(execution_horizon)
    if horizon < 1 or delay < 0 or execution < 0:
        raise ValueError(
            f"soft mask: horizon must be >= 1 and the delay and execution horizon >= 0, got {horizon}, {delay}, "
            f"{execution}"
        )
    end = horizon - execution
    if prefix_length is not None:
        end = min(end, int(prefix_length))
    end = max(end, 0)
    delay = min(delay, end)
    weights = torch.zeros(horizon, dtype=torch.float64)
    weights[:delay] = 1.0
    if end > delay:
        c = (end - torch.arange(delay, end, dtype=torch.float64)) / (end - delay + 1)
        weights[delay:end] = c * torch.expm1(c) / (math.e - 1.0)
    return weights.float()


def guidance_weight(tau: float, max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT) -> float:
    """``min(beta_max, (1 - tau) / (tau r^2))`` at flow time ``tau`` (0 = noise, 1 = data); ``beta_max`` at tau 0."""
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"flow time must be in [0, 1], got {tau}")
    if tau >= 1.0:
        return 0.0  # the estimate is the sample itself: nothing left to guide
    if tau <= 0.0:
        return float(max_guidance_weight)
    r2 = (1.0 - tau) ** 2 / (tau**2 + (1.0 - tau) ** 2)
    return float(min(max_guidance_weight, (1.0 - tau) / (tau * r2)))


@dataclasses.dataclass(frozen=True)
class RTCGuide:
    """What a guided sampler pulls towards, in the model's normalised action space.

    ``target`` and ``weights`` ``[B or 1, H, A]`` (``H``, ``A``: the chunk the model outputs; a model whose noise
    is larger pads both with zeros, :meth:`padded`). ``weights`` is the soft mask times a per-dimension mask.
    """

    target: torch.Tensor
    weights: torch.Tensor
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT

    def __post_init__(self):
        if self.target.shape != self.weights.shape or self.target.dim() != 3:
            raise ValueError(
                f"RTC guide: target {tuple(self.target.shape)} and weights {tuple(self.weights.shape)} must be the "
                f"same [B, H, A]"
            )
        if not math.isfinite(self.max_guidance_weight) or self.max_guidance_weight < 0:
            raise ValueError(f"max guidance weight must be a finite number >= 0, got {self.max_guidance_weight}")

    @property
    def active(self) -> bool:
        return bool((self.weights != 0).any()) and self.max_guidance_weight > 0

    def padded(self, shape: tuple[int, ...]) -> "RTCGuide":
        """Target and weights zero-padded on the horizon and action axes to ``[*, shape[1], shape[2]]``."""
        horizon, dims = int(shape[-2]), int(shape[-1])
        extra_h, extra_a = horizon - self.target.shape[1], dims - self.target.shape[2]
        if extra_h < 0 or extra_a < 0:
            raise ValueError(f"RTC guide {tuple(self.target.shape)} is larger than the model's chunk {tuple(shape)}")
        if extra_h == 0 and extra_a == 0:
            return self
        pad = (0, extra_a, 0, extra_h)
        return dataclasses.replace(
            self,
            target=torch.nn.functional.pad(self.target, pad),
            weights=torch.nn.functional.pad(self.weights, pad),
        )


def guided_velocity(
    velocity: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tau: float,
    guide: RTCGuide,
    *,
    convention: TimeConvention = "eta",
) -> torch.Tensor:
    """The RTC-guided velocity at ``x`` (``[B, H, A]``) and flow time ``tau`` (0 = noise, 1 = data).

    ``velocity(x)`` is the model's (possibly classifier-free-guided) velocity in ``convention``. Gradients are
    enabled here, so it runs inside a ``torch.no_grad`` sampler; only ``x`` gets a gradient (the parameters'
    ``.grad`` stay untouched).
    """
    sign = 1.0 if convention == "eta" else -1.0
    if convention not in ("eta", "openpi"):
        raise ValueError(f"time convention must be 'eta' or 'openpi', got {convention!r}")
    weight = guidance_weight(tau, guide.max_guidance_weight)
    if weight == 0.0 or not guide.active:
        return velocity(x)
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "real-time chunking differentiates through the velocity network: call infer(guide=...) under "
            "torch.no_grad() (as PolicyRunner does), not torch.inference_mode()"
        )
    target = guide.target.to(device=x.device, dtype=x.dtype)
    weights = guide.weights.to(device=x.device, dtype=x.dtype)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        v = velocity(x_in)
        estimate = x_in + sign * (1.0 - tau) * v  # the one-step estimate of the clean chunk
        error = (target - estimate) * weights
        (correction,) = torch.autograd.grad(estimate, x_in, grad_outputs=error.detach())
    return v.detach() + sign * weight * correction


def guide_sampler(
    velocity: Callable[[torch.Tensor, object], torch.Tensor],
    guide: RTCGuide | None,
    *,
    convention: TimeConvention = "eta",
) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """Wrap a sampler's ``velocity(x, time)`` (``time``: RECAP's float ``eta``, or openpi's ``t`` ``[B]``) so every
    Euler step is RTC-guided; ``guide`` None returns ``velocity`` itself."""
    if guide is None:
        return velocity

    def guided(x, time):
        value = float(time.reshape(-1)[0]) if torch.is_tensor(time) else float(time)
        tau = value if convention == "eta" else 1.0 - value
        return guided_velocity(lambda y: velocity(y, time), x, min(max(tau, 0.0), 1.0), guide, convention=convention)

    return guided
