"""What the pretrained VLA families share: strict loading, the checkpoints' normalisation files, image padding,
and :class:`FamilyPolicy`, the adapter that runs a family's flow-matching model as a RECAP policy.

Loading is strict (docs/models.md): every tensor of the file is used, none is missing, a shape mismatch names the
key, and nothing but JSON and safetensors is read.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable, Mapping

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from recap_core.checkpoint import CheckpointError
from recap_core.models.flow import guided_velocity, sample_flow_time
from recap_core.models.rtc import RTCGuide, guide_sampler

STATE_KEY = "observation.state"
ACTION_KEY = "action"
#: LeRobot's normalisation modes and the statistics each needs.
NORM_MODES = {"MEAN_STD": ("mean", "std"), "QUANTILES": ("q01", "q99"), "IDENTITY": ()}


# ---------------------------------------------------------------------------- files


def read_json_file(path: pathlib.Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


def read_tensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (CheckpointError naming the file if it is not one)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def strict_load(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], source: str, rename: Mapping[str, str] | None = None
) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers, every one of both sides used.

    ``rename`` maps a file key to the module's key (keys not in it are taken as they are). Refused, with the key
    named: a file tensor no parameter takes, a parameter no tensor fills, a shape mismatch, two file keys for one
    parameter, a non-finite value. Tensors are cast to the parameter's dtype.
    """
    rename = dict(rename or {})
    targets = dict(module.state_dict(keep_vars=True))
    filled: dict[str, str] = {}
    for file_key, tensor in tensors.items():
        key = rename.get(file_key, file_key)
        if key not in targets:
            raise CheckpointError(
                f"{source}: tensor {file_key!r} has no place in the model (unexpected key; "
                f"{len(tensors)} tensors in the file, {len(targets)} in the model)"
            )
        if key in filled:
            raise CheckpointError(f"{source}: tensors {filled[key]!r} and {file_key!r} both fill {key!r}")
        target = targets[key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{source}: tensor {file_key!r} has shape {list(tensor.shape)}, the model's {key!r} is "
                f"{list(target.shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: tensor {file_key!r} holds NaN or infinite values")
        filled[key] = file_key
    missing = sorted(set(targets) - set(filled))
    if missing:
        raise CheckpointError(
            f"{source}: no tensor for {missing[0]!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + " (missing keys: the file is not this architecture, or incomplete)"
        )
    with torch.no_grad():
        for key, file_key in filled.items():
            targets[key].copy_(tensors[file_key].to(targets[key].dtype))


def _stats_entry(source: str, name: str, values: Mapping[str, Any]) -> dict[str, list[float]]:
    entry = {}
    for stat, value in values.items():
        if torch.is_tensor(value):
            value = value.double().reshape(-1).tolist()
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
            raise CheckpointError(f"{source}: statistic {name}.{stat} must be finite numbers")
        entry[stat] = [float(v) for v in value]
    return entry


def lerobot_v03_stats(tensors: dict[str, torch.Tensor], source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """LeRobot 0.3's normalisation buffers in ``model.safetensors`` -> ``(stats, the other tensors)``.

    0.3 keeps ``normalize_inputs.buffer_observation_state.mean`` (and ``normalize_targets`` /
    ``unnormalize_outputs`` for the action) inside the policy's weights. The two action copies must agree.
    """
    stats: dict[str, dict[str, list[float]]] = {}
    rest = {}
    for key, tensor in tensors.items():
        head, _, tail = key.partition(".")
        if head not in ("normalize_inputs", "normalize_targets", "unnormalize_outputs"):
            rest[key] = tensor
            continue
        buffer, _, stat = tail.rpartition(".")
        if not buffer.startswith("buffer_") or not stat:
            raise CheckpointError(f"{source}: normalisation tensor {key!r} is not buffer_<feature>.<stat>")
        feature = buffer[len("buffer_") :].replace("_", ".", 1) if buffer != "buffer_action" else ACTION_KEY
        if feature.startswith("observation.images"):
            feature = "observation.images." + buffer[len("buffer_observation_images_") :]
        values = _stats_entry(source, feature, {stat: tensor})[stat]
        previous = stats.setdefault(feature, {}).get(stat)
        if previous is not None and not torch.allclose(torch.tensor(previous), torch.tensor(values)):
            raise CheckpointError(f"{source}: the copies of {feature}.{stat} in {key!r} and before it differ")
        if all(math.isinf(v) for v in values):  # LeRobot 0.3 leaves inf where a policy was saved without stats
            raise CheckpointError(f"{source}: {key!r} is infinite: the policy was saved without dataset statistics")
        stats[feature][stat] = values
    return stats, rest


def lerobot_processor_stats(directory: pathlib.Path) -> tuple[dict, dict[str, str]] | None:
    """LeRobot 0.4's normaliser (``policy_preprocessor.json`` and its state file) -> ``(stats, norm_map)``.

    None where the directory has no ``policy_preprocessor.json`` (a 0.3 checkpoint). ``norm_map`` is the
    processor's ``{"STATE": "MEAN_STD", "ACTION": "QUANTILES", ...}``.
    """
    config_path = directory / "policy_preprocessor.json"
    if not config_path.is_file():
        return None
    config = read_json_file(config_path)
    steps = config.get("steps") if isinstance(config, dict) else None
    if not isinstance(steps, list):
        raise CheckpointError(f"{config_path}: needs a 'steps' list")
    for step in steps:
        if isinstance(step, dict) and step.get("registry_name") == "normalizer_processor":
            state_file = step.get("state_file")
            if not isinstance(state_file, str) or "/" in state_file or not state_file.endswith(".safetensors"):
                raise CheckpointError(f"{config_path}: the normaliser step's state_file must be a .safetensors name")
            flat = read_tensors(directory / state_file)
            stats: dict[str, dict] = {}
            for key, tensor in flat.items():
                feature, _, stat = key.rpartition(".")
                stats.setdefault(feature, {}).update(_stats_entry(str(directory / state_file), feature, {stat: tensor}))
            step_config = step.get("config") or {}
            norm_map = step_config.get("norm_map") or {}
            if not isinstance(norm_map, dict):
                raise CheckpointError(f"{config_path}: the normaliser's norm_map must be an object")
            return stats, {str(k): str(v) for k, v in norm_map.items()}
    raise CheckpointError(f"{config_path}: has no normalizer_processor step; its statistics are missing")


def openpi_norm_stats(directory: pathlib.Path) -> tuple[dict, str]:
    """openpi's ``assets/<asset_id>/norm_stats.json`` -> ``(stats keyed as LeRobot's, asset_id)``.

    The file is ``{"norm_stats": {"state": {mean, std, q01, q99}, "actions": {...}}}``; exactly one asset
    directory must hold one.
    """
    found = sorted((directory / "assets").glob("*/norm_stats.json"))
    if not found:
        raise CheckpointError(f"{directory / 'assets'}: no <robot>/norm_stats.json; openpi checkpoints carry one")
    if len(found) > 1:
        raise CheckpointError(
            f"{directory / 'assets'}: several norm_stats.json ({[p.parent.name for p in found]}); keep the robot's"
        )
    data = read_json_file(found[0])
    norm = data.get("norm_stats") if isinstance(data, dict) else None
    if not isinstance(norm, dict) or "state" not in norm or "actions" not in norm:
        raise CheckpointError(f"{found[0]}: needs norm_stats.state and norm_stats.actions")
    stats = {}
    for theirs, ours in (("state", STATE_KEY), ("actions", ACTION_KEY)):
        entry = {k: v for k, v in norm[theirs].items() if v is not None}
        stats[ours] = _stats_entry(str(found[0]), theirs, entry)
    return stats, found[0].parent.name


# ---------------------------------------------------------------------------- images


def resize_with_pad(images: torch.Tensor, size: int, *, pad_value: float, side: str) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, C, size, size]``: scaled to fit, aspect kept, the rest filled with ``pad_value``.

    ``side``: ``"center"`` (openpi, LeRobot 0.4) or ``"left_top"`` (LeRobot 0.3's pi0 and SmolVLA pad only
    left and top). Bilinear, as both do.
    """
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    ratio = max(width / size, height / size)
    new_h, new_w = int(height / ratio), int(width / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False)
    pad_h, pad_w = size - new_h, size - new_w
    if side == "left_top":
        padding = (pad_w, 0, pad_h, 0)
    elif side == "center":
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    else:
        raise ValueError(f"pad side must be 'center' or 'left_top', got {side!r}")
    return F.pad(resized, padding, value=pad_value)


# ---------------------------------------------------------------------------- the RECAP adapter


def pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last axis to ``size`` (the family's ``max_state_dim`` / ``max_action_dim``)."""
    if x.shape[-1] > size:
        raise ValueError(f"{x.shape[-1]} dims do not fit the model's {size}")
    return F.pad(x, (0, size - x.shape[-1]))


class FamilyPolicy(nn.Module):
    """A family's flow-matching model behind the interface of :class:`recap_core.models.policy.RecapPolicy`.

    ``self.model`` is the family's module, so this module's ``state_dict`` is LeRobot's layout (``model.`` +
    the family's keys). Inputs are :class:`~recap_core.models.policy.PolicyInputs`: images ``[B, N, 3, S, S]`` in
    [-1, 1] (one image per camera, all present), the normalised state ``[B, state_dim]`` and chunk
    ``[B, H, action_dim]`` (zero-padded here to the model's max dims), the prompt token ids. The advantage
    condition reaches the model through the prompt text only. Flow time follows the family's convention (openpi:
    ``x_t = t noise + (1 - t) actions``, sampling from t = 1 to 0), and classifier-free guidance combines the
    conditional and unconditional velocities, ``v_u + beta (v_c - v_u)``, which is the same in either convention.
    """

    def __init__(self, config, core: nn.Module):
        super().__init__()
        self.config = config
        self.model = core
        self.arch = core.config

    @property
    def noise_shape(self) -> tuple[int, int]:
        return (self.arch.chunk_size, self.arch.max_action_dim)

    def _images(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if images.dim() != 5:
            raise ValueError(f"images must be [B, num_cameras, 3, S, S], got shape {tuple(images.shape)}")
        masks = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        return [images[:, i] for i in range(images.shape[1])], [masks] * images.shape[1]

    def forward(self, inputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample training loss ``[B]``: the family's velocity MSE over the real action dims and steps."""
        return self.compute_loss(inputs, generator)

    def compute_loss(self, inputs, generator: torch.Generator | None = None) -> torch.Tensor:
        if inputs.actions is None:
            raise ValueError("compute_loss needs inputs.actions [B, H, action_dim]")
        expected = (self.config.action_horizon, self.config.action_dim)
        if tuple(inputs.actions.shape[1:]) != expected:
            raise ValueError(f"actions must be [B, {expected[0]}, {expected[1]}], got {tuple(inputs.actions.shape)}")
        actions = pad_last(inputs.actions, self.arch.max_action_dim)
        noise = torch.randn(actions.shape, generator=generator, dtype=actions.dtype).to(actions.device)
        time = 1.0 - sample_flow_time(actions.shape[0], generator, actions.device).to(actions.dtype)
        state = inputs.state
        if inputs.state_keep is not None:
            state = state * inputs.state_keep.to(state.dtype)[:, None]
        images, masks = self._images(inputs.images)
        losses = self.model(
            images,
            masks,
            inputs.prompt_ids,
            inputs.prompt_mask.bool(),
            pad_last(state, self.arch.max_state_dim),
            actions,
            noise,
            time,
        )
        squared = losses[:, :, : self.config.action_dim].mean(dim=-1)
        if inputs.action_is_pad is None:
            loss = squared.mean(dim=-1)
        else:
            valid = (~inputs.action_is_pad.bool()).to(squared.dtype)
            loss = (squared * valid).sum(dim=-1) / valid.sum(dim=-1).clamp(min=1.0)
        if inputs.sample_weight is not None:
            loss = loss * inputs.sample_weight
        return loss

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
        """A normalised chunk ``[B, H, action_dim]`` from ``noise`` ``[B, chunk_size, max_action_dim]``.

        The prefix (images and prompt) is encoded once; its K/V serve every flow step. ``beta != 1``: CFG, the two
        prompts as one batch of 2B (``batch_guidance``) or two passes. ``guide`` ``[B, H, action_dim]``: real-time
        chunking (``rtc.py``, in openpi's time convention), zero-padded to the noise's shape.
        """
        from recap_core.models.policy import _stack_prompts

        num_steps = self.config.num_flow_steps if num_steps is None else int(num_steps)
        state = pad_last(state, self.arch.max_state_dim)
        image_list, masks = self._images(images)
        batch = noise.shape[0]
        if guide is not None:
            guide = guide.padded(noise.shape)

        def prefix(prompt, repeat=1):
            imgs = [im.repeat(repeat, 1, 1, 1) for im in image_list]
            return self.model.prefix_cache(imgs, [m.repeat(repeat) for m in masks], prompt[0], prompt[1].bool())

        if beta == 1.0:
            cache = prefix(conditional)
            return self._integrate(lambda x, t: self.model.velocity(cache, state, x, t), noise, num_steps, guide)
        if unconditional is None:
            raise ValueError(f"beta={beta} needs an unconditional prompt (classifier-free guidance)")
        if not batch_guidance:
            cond, uncond = prefix(conditional), prefix(unconditional)

            def sequential(x, t):
                return guided_velocity(
                    self.model.velocity(cond, state, x, t), self.model.velocity(uncond, state, x, t), beta
                )

            return self._integrate(sequential, noise, num_steps, guide)
        ids, mask, _ = _stack_prompts(conditional, unconditional)
        cache = prefix((ids, mask), repeat=2)
        state2 = state.repeat(2, 1)

        def batched(x, t):
            velocity = self.model.velocity(cache, state2, torch.cat([x, x], dim=0), torch.cat([t, t], dim=0))
            return guided_velocity(velocity[:batch], velocity[batch:], beta)

        return self._integrate(batched, noise, num_steps, guide)

    def _integrate(
        self, velocity: Callable, noise: torch.Tensor, num_steps: int, guide: RTCGuide | None = None
    ) -> torch.Tensor:
        """Euler from t = 1 (noise) to t = 0 in ``num_steps`` steps of ``-1/num_steps`` (openpi's sampler),
        RTC-guided with ``guide``."""
        # the network may run in bfloat16; the integration stays in float32 (as openpi keeps x_t)
        dtype, network = next(self.model.parameters()).dtype, velocity
        velocity = guide_sampler(lambda x, t: network(x.to(dtype), t).float(), guide, convention="openpi")
        if noise.shape[1:] != self.noise_shape:
            raise ValueError(
                f"noise must be [B, {self.noise_shape[0]}, {self.noise_shape[1]}], got {tuple(noise.shape)}"
            )
        dt = -1.0 / num_steps
        x = noise.float()
        time = torch.ones(noise.shape[0], dtype=torch.float32, device=noise.device)
        for _ in range(num_steps):
            x = x + dt * velocity(x, time)
            time = time + dt
        return x[:, : self.config.action_horizon, : self.config.action_dim]


# ---------------------------------------------------------------------------- what pi0 and SmolVLA share

#: LeRobot 0.3's normaliser buffers inside ``model.safetensors``: statistics, not weights.
NON_PARAMETER_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")


def strip_policy_prefix(name: str) -> str:
    """A LeRobot key without the policy's ``model.`` (or ``model._orig_mod.`` / ``_orig_mod.`` of a policy saved
    from ``torch.compile``)."""
    for prefix in ("model._orig_mod.", "_orig_mod.", "model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def is_non_parameter_key(name: str) -> bool:
    """LeRobot 0.3's normaliser buffers (``normalize_inputs.*`` ...), which hold statistics, not weights."""
    return strip_policy_prefix(name).startswith(NON_PARAMETER_PREFIXES)


def sincos_time_embedding(time: torch.Tensor, dimension: int, min_period: float, max_period: float) -> torch.Tensor:
    """``[B] -> [B, dimension]``: ``[sin(2 pi t / p_i), cos(2 pi t / p_i)]`` over periods geometrically spaced from
    ``min_period`` to ``max_period``, computed in float64 (float32 on MPS), as openpi and LeRobot do."""
    if time.ndim != 1:
        raise ValueError(f"time must be [B], got shape {tuple(time.shape)}")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dimension // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None].to(dtype)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def make_att_2d_masks(pad_masks: torch.Tensor, att_masks: torch.Tensor) -> torch.Tensor:
    """big_vision's block mask: token i sees token j iff both are valid and ``cumsum(att)[j] <= cumsum(att)[i]``
    (``att`` is 1 where a token starts a new block that earlier tokens cannot see)."""
    cumsum = torch.cumsum(att_masks.long(), dim=1)
    blocks = cumsum[:, None, :] <= cumsum[:, :, None]
    return blocks & (pad_masks[:, None, :] & pad_masks[:, :, None])


class JsonConfig:
    """``to_dict`` / ``from_dict`` of a frozen dataclass config, the same JSON round trip as RECAP's own configs
    (``recap_core.models.configuration``: unknown keys refused in one line)."""

    def to_dict(self) -> dict:
        from recap_core.models.configuration import _to_dict

        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        from recap_core.models.configuration import _from_dict

        return _from_dict(cls, data)
