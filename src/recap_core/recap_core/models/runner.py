"""Inference objects: a checkpoint + its processor behind ``infer(obs) -> dict`` and ``reset()``.

The observation a ROS node builds from its messages and the runtime knobs are in docs/learning.md §1 and
:func:`observation_to_frames`.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Mapping

import numpy as np
import torch

from recap_core.checkpoint import Checkpoint, load_checkpoint
from recap_core.models.processor import Processor, prompt_template
from recap_core.models.rtc import DEFAULT_MAX_GUIDANCE_WEIGHT, RTCGuide, soft_mask
from recap_core.models.tokenizer import ADVANTAGE_VALUES, PromptTokenizer, advantage_codes

_UNSET = object()
#: Inference precisions: float32 everywhere, or bfloat16 weights and compute (GPU serving).
PRECISIONS = ("fp32", "bf16")


def observation_to_frames(obs: Mapping[str, Any], cameras, state_dim: int) -> dict:
    """One observation -> a frame batch of size 1 for :class:`Processor` (validated).

    ``obs`` is what a ROS node builds from its messages::

        {"images": {cam: uint8 [h, w, 3] numpy (any size)}, "state": [14] joint positions, "task": str}

    optionally with the runtime knobs ``beta``, ``advantage`` and ``seed`` (the keyword arguments of
    :meth:`PolicyRunner.infer` take precedence).
    """
    if not isinstance(obs, Mapping):
        raise TypeError(f"observation must be a dict with images, state and task; got {type(obs).__name__}")
    missing = [k for k in ("images", "state", "task") if k not in obs]
    if missing:
        raise ValueError(f"observation lacks {missing}; expected keys images, state, task")
    state = np.asarray(obs["state"], dtype=np.float32).reshape(-1)
    if state.shape != (state_dim,) or not np.all(np.isfinite(state)):
        raise ValueError(
            f"observation state must be {state_dim} finite joint positions, got shape {np.shape(obs['state'])}"
        )
    images = {}
    for camera in cameras:
        if camera not in obs["images"]:
            raise ValueError(
                f"observation lacks camera {camera!r}; the model needs {list(cameras)}, got {sorted(obs['images'])}"
            )
        image = np.asarray(obs["images"][camera])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"camera {camera!r}: expected uint8 [h, w, 3], got {image.dtype} {image.shape}")
        images[camera] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    if not isinstance(obs["task"], str) or not obs["task"]:
        raise ValueError(f"observation task must be a non-empty string, got {obs['task']!r}")
    return {"images": images, "state": torch.from_numpy(state)[None], "task": [obs["task"]]}


class _CheckpointRunner:
    """What both runners hold: the checkpoint of their kind, its model in eval mode and its processor."""

    KIND = ""
    NOUN = ""

    def __init__(self, checkpoint: Checkpoint, *, precision: str = "fp32"):
        if checkpoint.kind != self.KIND:
            raise ValueError(f"{checkpoint.path} is a {checkpoint.kind} checkpoint, not {self.NOUN}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        # bf16: weights and compute in bfloat16 (GPU serving); inputs are cast at the model boundary and the
        # chunk comes back in float32 before it is un-normalised
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.model.to(self.dtype)
        self.config = checkpoint.model_config
        self.processor = Processor(
            checkpoint.processor_steps,
            checkpoint.normalization,
            PromptTokenizer(
                checkpoint.tokenizer, self.config.max_prompt_tokens, prompt_template(checkpoint.processor_steps)
            ),
        )

    @property
    def checkpoint_id(self) -> str:
        return self.checkpoint.checkpoint_id

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.config.cameras)


class PolicyRunner(_CheckpointRunner):
    """Sample action chunks ``[H, 14]`` (absolute joint targets) from a policy checkpoint."""

    KIND, NOUN = "policy", "a policy"

    def __init__(self, checkpoint: Checkpoint, *, seed: int = 0, precision: str = "fp32"):
        super().__init__(checkpoint, precision=precision)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        # CFG runs the conditional and unconditional prompts as one batch of 2; False: two sequential passes
        # (same result, slower; kept as the benchmark baseline).
        self.batch_guidance = True
        # real-time chunking's clip of the guidance weight (a guide's "max_guidance_weight" overrides it)
        self.rtc_max_guidance_weight = DEFAULT_MAX_GUIDANCE_WEIGHT

    @classmethod
    def from_checkpoint(
        cls,
        directory: str | pathlib.Path,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> "PolicyRunner":
        return cls(load_checkpoint(directory, kind="policy", device=device), seed=seed, precision=precision)

    def reset(self) -> None:
        """Start the noise sequence again from the runner's seed (new episode)."""
        self._generator = torch.Generator().manual_seed(self.seed)

    def infer(
        self,
        obs: Mapping[str, Any],
        *,
        beta: Any = _UNSET,
        advantage: Any = _UNSET,
        seed: Any = _UNSET,
        guide: Mapping[str, Any] | None = None,
    ) -> dict:
        """``{"actions": float32 [H, 14], "latency_ms", "beta", "advantage"}`` for one observation.

        ``advantage``: "positive", "negative" or None (no advantage text: the
        unconditional policy); by default the condition the checkpoint was
        fine-tuned under (``Checkpoint.trained_advantage``: None for AWR,
        "positive" otherwise). ``beta`` (default 1): 1 samples the
        conditional policy alone; > 1 applies classifier-free guidance towards
        ``advantage``. ``seed``: fixes the initial noise (same seed and
        observation -> the same chunk); without it the runner's own noise
        sequence continues (restarted by :meth:`reset`).

        ``guide``: real-time chunking (``rtc.py``), ``{"prefix_actions": float [P, 14] absolute joint targets the
        robot executes from this chunk's first tick on (the rest of its current plan), "inference_delay": d ticks,
        "execution_horizon": s ticks}`` (numpy arrays and ints; optional ``"max_guidance_weight"``, default
        :attr:`rtc_max_guidance_weight`). The chunk is sampled to continue that plan: its first ``d`` actions
        reproduce it, the next ones blend into it. None (or no prefix): the plain sampler, the same chunk as
        without the argument.
        """
        start = time.perf_counter()
        beta = float(_knob(obs, "beta", beta, 1.0))
        advantage = _knob(obs, "advantage", advantage, self.checkpoint.trained_advantage)
        seed = _knob(obs, "seed", seed, None)
        if advantage not in (*ADVANTAGE_VALUES, None):
            raise ValueError(f"advantage must be 'positive', 'negative' or None, got {advantage!r}")
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if beta != 1.0 and advantage is None:
            raise ValueError(
                f"beta={beta} guides towards an advantage condition; give advantage='positive' "
                f"(or use beta=1 for the unconditional policy)"
            )
        device = next(self.model.parameters()).device
        frames = observation_to_frames(obs, self.config.cameras, self.config.state_dim)
        frames["advantage"] = [advantage]
        rtc = None if guide is None else self._rtc_guide(guide)
        if rtc is not None:  # the processor makes the prefix relative to this state and normalises it
            frames["actions"] = torch.from_numpy(rtc[0])[None]
        frames = {
            k: (
                {c: v.to(device) for c, v in val.items()}
                if k == "images"
                else val.to(device)
                if torch.is_tensor(val)
                else val
            )
            for k, val in frames.items()
        }
        batch = self.processor.preprocess(frames)
        generator = self._generator if seed is None else torch.Generator().manual_seed(int(seed))
        shape = (1, *getattr(self.model, "noise_shape", (self.config.action_horizon, self.config.action_dim)))
        noise = torch.randn(shape, generator=generator).to(device)
        unconditional = None
        if beta != 1.0:
            unconditional = (
                *self.processor.prompt_tokenizer(
                    batch["task"], [None], device=device, states=batch["state_normalised"]
                ),
                advantage_codes([None], device=device),
            )
        extra = {}
        if rtc is not None:
            prefix, weights, max_weight = rtc
            target = torch.zeros(1, self.config.action_horizon, self.config.action_dim, device=device)
            target[:, : len(prefix)] = batch["actions"].to(target.dtype)
            extra["guide"] = RTCGuide(
                target.to(self.dtype),
                weights[None, :, None].expand_as(target).to(device, self.dtype),
                max_guidance_weight=max_weight,
            )
        chunk = self.model.sample_actions(
            batch["pixels"].to(self.dtype),
            batch["state_normalised"].to(self.dtype),
            (batch["prompt_ids"], batch["prompt_mask"], batch["advantage_code"]),
            noise.to(self.dtype),
            unconditional=unconditional,
            beta=beta,
            batch_guidance=self.batch_guidance,
            **extra,
        )
        actions = self.processor.postprocess(chunk.float(), batch)[0].float().cpu().numpy().astype(np.float32)
        return {
            "actions": actions,
            "latency_ms": (time.perf_counter() - start) * 1e3,
            "beta": beta,
            "advantage": advantage,
        }

    def _rtc_guide(self, guide: Mapping[str, Any]) -> tuple[np.ndarray, torch.Tensor, float] | None:
        """A validated RTC guide -> ``(prefix [P, 14] cut to the horizon, soft mask [H], max weight)``; None
        when the prefix is empty (nothing to continue)."""
        if not isinstance(guide, Mapping):
            raise TypeError(f"guide must be a dict (prefix_actions, inference_delay, execution_horizon), got {guide!r}")
        missing = [k for k in ("prefix_actions", "inference_delay", "execution_horizon") if k not in guide]
        if missing:
            raise ValueError(f"guide lacks {missing}; expected prefix_actions, inference_delay, execution_horizon")
        prefix = np.asarray(guide["prefix_actions"], dtype=np.float32)
        if prefix.size == 0:
            return None
        dims = self.config.action_dim
        if prefix.ndim != 2 or prefix.shape[1] != dims or not np.all(np.isfinite(prefix)):
            raise ValueError(f"guide prefix_actions must be finite [P, {dims}], got shape {prefix.shape}")
        ticks = {}
        for key in ("inference_delay", "execution_horizon"):
            value = guide[key]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"guide {key} must be an integer >= 0 (control ticks), got {value!r}")
            ticks[key] = int(value)
        max_weight = float(guide.get("max_guidance_weight", self.rtc_max_guidance_weight))
        if not np.isfinite(max_weight) or max_weight < 0:
            raise ValueError(f"guide max_guidance_weight must be a finite number >= 0, got {max_weight!r}")
        horizon = self.config.action_horizon
        prefix = np.ascontiguousarray(prefix[:horizon])
        weights = soft_mask(horizon, ticks["inference_delay"], ticks["execution_horizon"], len(prefix))
        return prefix, weights, max_weight


class ValueRunner(_CheckpointRunner):
    """The value estimate (normalised, in [-1, 0]) and its 201-bin distribution for one observation."""

    KIND, NOUN = "value", "a value model"

    @classmethod
    def from_checkpoint(
        cls, directory: str | pathlib.Path, *, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> "ValueRunner":
        return cls(load_checkpoint(directory, kind="value", device=device), precision=precision)

    def reset(self) -> None:
        """Stateless between observations; kept for the common runner interface."""

    @torch.no_grad()
    def predict_frames(self, frames: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame batch (see processor.py) -> ``(values [B], probabilities [B, num_bins])``."""
        device = next(self.model.parameters()).device
        frames = {
            k: (
                {c: v.to(device) for c, v in val.items()}
                if k == "images"
                else val.to(device)
                if torch.is_tensor(val)
                else val
            )
            for k, val in frames.items()
        }
        batch = self.processor.preprocess({**frames, "advantage": None, "actions": None})
        logits = self.model(
            batch["pixels"].to(self.dtype),
            batch["state_normalised"].to(self.dtype),
            batch["prompt_ids"],
            batch["prompt_mask"],
        )
        probabilities = torch.softmax(logits.float(), dim=-1)
        return probabilities @ self.model.bin_values.float(), probabilities

    def infer(self, obs: Mapping[str, Any]) -> dict:
        """``{"value": float in [-1, 0], "distribution": float32 [num_bins], "latency_ms"}``."""
        start = time.perf_counter()
        frames = observation_to_frames(obs, self.config.cameras, self.config.state_dim)
        value, probabilities = self.predict_frames(frames)
        return {
            "value": float(value[0]),
            "distribution": probabilities[0].cpu().numpy().astype(np.float32),
            "latency_ms": (time.perf_counter() - start) * 1e3,
        }


def _knob(obs: Mapping[str, Any], name: str, given: Any, default: Any) -> Any:
    if given is not _UNSET:
        return given
    return obs.get(name, default)
