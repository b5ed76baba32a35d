"""Pre- and post-processing as ordered, named steps saved with a checkpoint (lerobot processor / openpi transforms).

The step list is stored in ``processor.json``, statistics in ``normalization.json``; nothing in either is
executed. What each step does: :class:`Processor` and docs/learning.md §2.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recap_core.models.tokenizer import PROMPT_TEMPLATES, PromptTokenizer, advantage_codes

#: The smallest spread a state or action dimension is normalised by (rad for the arm joints; the grippers'
#: spread is ~0.2-0.4). A joint the demonstrations barely move (std 0.005 rad: a forearm roll held still)
#: would otherwise make a rollout's 0.3 rad drift a 30-sigma state and the correction that undoes it a
#: 30-sigma flow target (with a floor of 0.01: p99 of 14-28 sigma on that joint in rollouts and loss spikes of
#: 10x; see docs/lab/, batch-mix).
#: New checkpoints record it in their normalise steps (``std_floor``); a fine-tune keeps its parent's.
STD_FLOOR = 0.05
#: What a normalise step without ``std_floor`` means (checkpoints written before it was recorded).
LEGACY_STD_FLOOR = 1e-2
STATE_KEY = "observation.state"
ACTION_KEY = "action"
RELATIVE_ACTION_KEY = "action.relative"


def default_relative_mask(dim: int, gripper_indices: Sequence[int]) -> list[bool]:
    """Which of ``dim`` action dims are learned relative to the state: all but the grippers (the station's
    ``gripper_indices``).

    openpi's Aloha convention: at 50 Hz a chunk moves the arms a little around where they are, so deltas
    normalise to a useful scale; the grippers stay absolute.
    """
    outside = [i for i in gripper_indices if not 0 <= i < dim]
    if outside:
        raise ValueError(f"gripper indices {outside} are outside the {dim} action dims")
    return [i not in set(gripper_indices) for i in range(dim)]


def absolute_still_joints(mask: Sequence[bool], state_std: Sequence[float], still_std: float) -> list[bool]:
    """``mask`` with every relative dim whose state spread in the training data is below ``still_std`` made absolute.

    A relative-action policy predicts "stay where you are" on a joint its
    demonstrations hold still, so its sampling noise accumulates with nothing
    pulling the joint back, and a joint pushed off by contact stays off. An
    absolute target on that joint is the held value, a restoring command (with
    it the right forearm roll was commanded within 0.013 rad of its held angle
    in rollouts; see docs/lab/, batch-mix).
    """
    std = np.asarray(state_std, dtype=np.float64).reshape(-1)
    if len(std) != len(mask) or not np.all(np.isfinite(std)):
        raise ValueError(f"state std must be {len(mask)} finite numbers, got {std.tolist()}")
    if not np.isfinite(still_std) or still_std < 0:
        raise ValueError(f"the still-joint threshold must be a finite number >= 0, got {still_std!r}")
    return [bool(relative) and not std[i] < still_std for i, relative in enumerate(mask)]


def relative_mask_of(steps: Sequence[Mapping] | None) -> list[bool] | None:
    """The relative-action mask of a checkpoint's step list (a fine-tune keeps it); None if it has none."""
    for step in steps or ():
        if step.get("step") == "relative_actions":
            return _step_mask(step)
    return None


def prompt_template(steps: Sequence[Mapping] | None) -> str:
    """The prompt template a step list's ``tokenise_prompt`` writes ("recap" unless it names a family's)."""
    for step in steps or ():
        if step.get("step") == "tokenise_prompt":
            return str(step.get("template", "recap"))
    return "recap"


def check_action_masks(steps: Sequence[Mapping]) -> None:
    """ValueError unless every mask is a list of booleans and ``relative_actions`` and ``absolute_actions``
    agree (a chunk made absolute on other joints than it was made relative on sends wrong targets)."""
    masks = {step.get("step"): _step_mask(step) for step in steps if step.get("step") in _MASK_STEPS}
    if len(masks) == 2 and masks["relative_actions"] != masks["absolute_actions"]:
        raise ValueError(
            f"the relative_actions mask {masks['relative_actions']} differs from the "
            f"absolute_actions mask {masks['absolute_actions']}"
        )


_MASK_STEPS = ("relative_actions", "absolute_actions")


def _step_mask(step: Mapping) -> list[bool]:
    mask = step.get("mask")
    if not isinstance(mask, list) or not mask or not all(isinstance(m, bool) for m in mask):
        raise ValueError(
            f"processor step {step.get('step')!r}: mask must be a non-empty list of booleans, got {mask!r}"
        )
    return list(mask)


@dataclasses.dataclass(frozen=True)
class Normaliser:
    """One feature's normalisation over the last axis.

    ``mean_std`` (RECAP's): ``(x - mean) / max(std, floor)``. The pretrained families keep their checkpoint's
    convention (``mode`` and ``eps`` in the step): ``mean_std`` with ``eps``: ``(x - mean) / (std + eps)``;
    ``quantiles``: ``2 (x - q01) / (q99 - q01 + eps) - 1`` (pi0.5); ``identity``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_step(cls, stats: Mapping[str, Any], step: Mapping) -> "Normaliser":
        name = step["stats"]
        if name not in stats:
            raise ValueError(f"processor step {step.get('step')!r} needs statistics for {name!r}")
        mode = step.get("mode", "mean_std")
        if mode == "mean_std" and "eps" not in step:
            return cls.from_stats(stats[name], name, step_std_floor(step))
        eps = step.get("eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise ValueError(f"processor step {step.get('step')!r}: eps must be a number in [0, 1), got {eps!r}")
        if mode == "identity":
            return cls(torch.zeros(()), torch.ones(()))
        low, high = {"mean_std": ("mean", "std"), "quantiles": ("q01", "q99")}.get(mode, (None, None))
        if low is None:
            raise ValueError(f"processor step {step.get('step')!r}: mode must be mean_std, quantiles or identity")
        entry = stats[name]
        try:
            a = np.asarray(entry[low], dtype=np.float64)
            b = np.asarray(entry[high], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"statistics for {name!r} lack {exc.args[0]!r}; {mode} needs {low} and {high}") from exc
        if a.shape != b.shape or a.ndim != 1 or not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
            raise ValueError(f"statistics for {name!r} must be finite 1-D {low}/{high} of equal length")
        if mode == "mean_std":
            return cls(torch.tensor(a, dtype=torch.float32), torch.tensor(b + eps, dtype=torch.float32))
        # 2 (x - q01) / (q99 - q01 + eps) - 1  ==  (x - centre) / half-range
        half = (b - a + eps) / 2.0
        return cls(torch.tensor(a + half, dtype=torch.float32), torch.tensor(half, dtype=torch.float32))

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], name: str, floor: float) -> "Normaliser":
        try:
            mean = np.asarray(stats["mean"], dtype=np.float64)
            std = np.asarray(stats["std"], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"statistics for {name!r} lack {exc.args[0]!r}; need mean and std") from exc
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)):
            raise ValueError(
                f"statistics for {name!r} must be finite 1-D mean/std of equal length; "
                f"got shapes {mean.shape} and {std.shape}"
            )
        return cls(torch.tensor(mean, dtype=torch.float32), torch.tensor(np.maximum(std, floor), dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x.device) + self.mean.to(x.device)


class Processor:
    """Runs the configured steps. ``steps`` is the JSON list from ``processor.json``.

    A *frame batch* is a dict flowing through the steps::

        "images":  {cam: uint8 [B, 3, h, w]}   -> after ``images``: "pixels" float [B, N, 3, S, S] in [-1, 1]
        "state":   float [B, J] raw joints     -> after ``normalise_state``: "state_normalised"
        "actions": float [B, H, J] (training)  -> after ``relative_actions`` + ``normalise_actions``: normalised
        "task", "advantage": lists of B        -> after ``tokenise_prompt``: "prompt_ids", "prompt_mask" [B, L],
                                                  "advantage_code" long [B] (0 none, 1 positive, 2 negative)

    Post-processing turns the model's normalised chunk ``[B, H, J]`` back into absolute joint targets
    (``unnormalise_actions`` then ``absolute_actions``).
    """

    def __init__(
        self,
        steps: Sequence[Mapping[str, Any]],
        stats: Mapping[str, Mapping[str, Any]],
        prompt_tokenizer: PromptTokenizer | None,
    ):
        self.steps = [dict(step) for step in steps]
        self.stats = stats
        self.prompt_tokenizer = prompt_tokenizer
        self._pre: list[Callable[[dict], dict]] = []
        self._post: list[Callable[[torch.Tensor, dict], torch.Tensor]] = []
        for step in self.steps:
            name = step.get("step")
            if name in _PRE_STEPS:
                self._pre.append(_PRE_STEPS[name](self, step))
            elif name in _POST_STEPS:
                self._post.append(_POST_STEPS[name](self, step))
            else:
                known = sorted(_PRE_STEPS) + sorted(_POST_STEPS)
                raise ValueError(f"unknown processor step {name!r}; known steps: {known}")

    def preprocess(self, batch: dict) -> dict:
        out = dict(batch)
        for step in self._pre:
            out = step(out)
        return out

    def postprocess(self, normalised_actions: torch.Tensor, batch: dict) -> torch.Tensor:
        """Model chunk ``[B, H, A]`` (normalised) -> absolute joint targets ``[B, H, A]``."""
        actions = normalised_actions
        for step in self._post:
            actions = step(actions, batch)
        return actions


# ---------------------------------------------------------------------------- steps

_NORMALISE_STEPS = ("normalise_state", "normalise_actions", "unnormalise_actions")


def step_std_floor(step: Mapping) -> float:
    """The std floor a normalise step records (``LEGACY_STD_FLOOR`` where it records none)."""
    floor = step.get("std_floor", LEGACY_STD_FLOOR)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not np.isfinite(floor) or floor <= 0:
        raise ValueError(f"processor step {step.get('step')!r}: std_floor must be a positive number, got {floor!r}")
    return float(floor)


def std_floor_of(steps: Sequence[Mapping] | None) -> float:
    """The floor of a checkpoint's step list (a fine-tune keeps it); ``STD_FLOOR`` for a new model (None)."""
    if steps is None:
        return STD_FLOOR
    floors = {step_std_floor(step) for step in steps if step.get("step") in _NORMALISE_STEPS}
    if len(floors) > 1:
        raise ValueError(f"processor steps normalise with different std floors {sorted(floors)}")
    return floors.pop() if floors else STD_FLOOR


def _images_step(processor: Processor, step: Mapping) -> Callable[[dict], dict]:
    cameras, size = list(step["cameras"]), int(step["size"])
    resize = step.get("resize", "stretch")
    if resize not in ("stretch", "pad"):
        raise ValueError(f"processor step 'images': resize must be 'stretch' or 'pad', got {resize!r}")
    pad_value, pad_side = float(step.get("pad_value", -1.0)), str(step.get("pad_side", "center"))

    def run(batch: dict) -> dict:
        images = batch["images"]
        missing = [c for c in cameras if c not in images]
        if missing:
            raise ValueError(f"observation lacks camera(s) {missing}; the model needs {cameras}, got {sorted(images)}")
        stacked = []
        for camera in cameras:
            image = images[camera]
            if image.dim() != 4 or image.shape[1] != 3:
                raise ValueError(f"camera {camera!r}: expected uint8 [B, 3, h, w], got {tuple(image.shape)}")
            image = image.float() / 127.5 - 1.0
            if resize == "pad":
                from recap_core.models.families.common import resize_with_pad

                image = resize_with_pad(image, size, pad_value=pad_value, side=pad_side)
            elif image.shape[-2:] != (size, size):
                image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            stacked.append(image)
        return {**batch, "pixels": torch.stack(stacked, dim=1)}

    return run


def _normalise_state_step(processor: Processor, step: Mapping) -> Callable[[dict], dict]:
    normaliser = Normaliser.from_step(processor.stats, step)

    def run(batch: dict) -> dict:
        return {**batch, "state_normalised": normaliser.normalise(batch["state"].float())}

    return run


def _relative_actions_step(processor: Processor, step: Mapping) -> Callable[[dict], dict]:
    mask = torch.tensor(_step_mask(step), dtype=torch.float32)

    def run(batch: dict) -> dict:
        if batch.get("actions") is None:
            return batch
        offset = batch["state"].float()[:, None, :] * mask.to(batch["state"].device)
        return {**batch, "actions": batch["actions"].float() - offset}

    return run


def _normalise_actions_step(processor: Processor, step: Mapping) -> Callable[[dict], dict]:
    normaliser = Normaliser.from_step(processor.stats, step)

    def run(batch: dict) -> dict:
        if batch.get("actions") is None:
            return batch
        return {**batch, "actions": normaliser.normalise(batch["actions"])}

    return run


def _tokenise_step(processor: Processor, step: Mapping) -> Callable[[dict], dict]:
    if processor.prompt_tokenizer is None:
        raise ValueError("processor step 'tokenise_prompt' needs a tokenizer")
    template = step.get("template", "recap")
    if template not in PROMPT_TEMPLATES:
        raise ValueError(
            f"processor step 'tokenise_prompt': template must be one of {PROMPT_TEMPLATES}, got {template!r}"
        )
    if processor.prompt_tokenizer.template != template:
        raise ValueError(
            f"processor step 'tokenise_prompt' writes the {template!r} prompt, the tokenizer the "
            f"{processor.prompt_tokenizer.template!r} one"
        )

    def run(batch: dict) -> dict:
        tasks = list(batch["task"])
        advantages = list(batch.get("advantage") or [None] * len(tasks))
        states = batch.get("state_normalised") if template == "pi05" else None
        ids, mask = processor.prompt_tokenizer(tasks, advantages, device=batch["state"].device, states=states)
        return {
            **batch,
            "prompt_ids": ids,
            "prompt_mask": mask,
            "advantage_code": advantage_codes(advantages, device=batch["state"].device),
        }

    return run


def _unnormalise_actions_step(processor: Processor, step: Mapping):
    normaliser = Normaliser.from_step(processor.stats, step)
    return lambda actions, batch: normaliser.unnormalise(actions)


def _absolute_actions_step(processor: Processor, step: Mapping):
    mask = torch.tensor(_step_mask(step), dtype=torch.float32)

    def run(actions: torch.Tensor, batch: dict) -> torch.Tensor:
        return actions + batch["state"].float()[:, None, :] * mask.to(actions.device)

    return run


_PRE_STEPS = {
    "images": _images_step,
    "normalise_state": _normalise_state_step,
    "relative_actions": _relative_actions_step,
    "normalise_actions": _normalise_actions_step,
    "tokenise_prompt": _tokenise_step,
}
_POST_STEPS = {"unnormalise_actions": _unnormalise_actions_step, "absolute_actions": _absolute_actions_step}


def policy_steps(
    cameras: Sequence[str], image_size: int, relative_mask: Sequence[bool], std_floor: float = STD_FLOOR
) -> list[dict]:
    """The policy's step list (what ``processor.json`` holds)."""
    action_stats = RELATIVE_ACTION_KEY if any(relative_mask) else ACTION_KEY
    floor = float(std_floor)
    return [
        {"step": "images", "cameras": list(cameras), "size": int(image_size)},
        {"step": "normalise_state", "stats": STATE_KEY, "std_floor": floor},
        {"step": "relative_actions", "mask": [bool(m) for m in relative_mask]},
        {"step": "normalise_actions", "stats": action_stats, "std_floor": floor},
        {"step": "tokenise_prompt"},
        {"step": "unnormalise_actions", "stats": action_stats, "std_floor": floor},
        {"step": "absolute_actions", "mask": [bool(m) for m in relative_mask]},
    ]


def value_steps(cameras: Sequence[str], image_size: int, std_floor: float = STD_FLOOR) -> list[dict]:
    """The value model's step list: no actions, the prompt never carries advantage text."""
    return [
        {"step": "images", "cameras": list(cameras), "size": int(image_size)},
        {"step": "normalise_state", "stats": STATE_KEY, "std_floor": float(std_floor)},
        {"step": "tokenise_prompt"},
    ]


def relative_action_stats(
    states: np.ndarray,
    actions: np.ndarray,
    episode_index: np.ndarray,
    horizon: int,
    mask: Sequence[bool],
    max_frames: int = 4096,
    seed: int = 0,
) -> dict[str, list[float]]:
    """mean/std/min/max of chunk actions relative to the state, ``a[t+k] - s[t]`` on masked dims.

    ``states``, ``actions`` ``[N, A]``, ``episode_index`` ``[N]`` (frames of an
    episode contiguous, in order). Chunks are cut at the episode end as the
    dataset pads them. At most ``max_frames`` start frames (a fixed random subset).
    """
    states = np.asarray(states, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    episode_index = np.asarray(episode_index)
    count = len(states)
    if count == 0:
        raise ValueError("cannot compute action statistics from zero frames")
    change = np.flatnonzero(episode_index[1:] != episode_index[:-1]) + 1
    stops = np.concatenate([change, [count]])
    episode_stop = np.repeat(stops, np.diff(np.concatenate([[0], stops])))
    rng = np.random.default_rng(seed)
    starts = np.arange(count) if count <= max_frames else np.sort(rng.choice(count, max_frames, replace=False))
    steps = starts[:, None] + np.arange(horizon)[None, :]
    steps = np.minimum(steps, episode_stop[starts][:, None] - 1)
    relative = actions[steps] - states[starts][:, None, :] * np.asarray(mask, dtype=np.float64)
    flat = relative.reshape(-1, actions.shape[1])
    return {
        "mean": flat.mean(axis=0).tolist(),
        "std": flat.std(axis=0).tolist(),
        "min": flat.min(axis=0).tolist(),
        "max": flat.max(axis=0).tolist(),
    }
