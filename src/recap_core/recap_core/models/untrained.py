"""Checkpoints of untrained (randomly initialised) models, for benchmarks, tests and smoke runs.

The weights are random and the statistics are neutral (zero mean, unit std),
so these checkpoints load and run exactly like trained ones but act at random.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import torch

from recap_core.checkpoint import build_model, make_provenance, save_checkpoint
from recap_core.models.configuration import PolicyConfig, ValueConfig
from recap_core.models.processor import (
    ACTION_KEY,
    RELATIVE_ACTION_KEY,
    STATE_KEY,
    default_relative_mask,
    policy_steps,
    value_steps,
)
from recap_core.models.tokenizer import train_prompt_tokenizer
from recap_core.station import StationConfig


def neutral_stats(dim: int) -> dict[str, list[float]]:
    return {"mean": [0.0] * dim, "std": [1.0] * dim, "min": [-1.0] * dim, "max": [1.0] * dim}


def save_untrained_checkpoint(
    directory: str | pathlib.Path,
    config: PolicyConfig | ValueConfig,
    *,
    tasks: Sequence[str] = ("transfer the cube",),
    seed: int = 0,
    joint_names: Sequence[str] | None = None,
    gripper_joints: Sequence[str] = (),
) -> pathlib.Path:
    """Write a checkpoint of a freshly initialised model (seeded) to ``directory``.

    ``joint_names`` and ``gripper_joints`` record the station layout it was made for (a node then checks them);
    without them the grippers kept absolute are the simulated station's when the sizes are its own.
    """
    kind = "policy" if isinstance(config, PolicyConfig) else "value"
    training = {"command": "untrained", "seed": seed}
    if joint_names is not None:
        training.update(joint_names=list(joint_names), gripper_joints=list(gripper_joints))
        grippers = [list(joint_names).index(g) for g in gripper_joints]
    else:
        layout = StationConfig.sim_aloha().layout
        grippers = list(layout.gripper_indices) if config.state_dim == layout.num_joints else []
    torch.manual_seed(seed)
    model = build_model(kind, config)
    tokenizer = train_prompt_tokenizer(tasks, config.backbone.vocab_size)
    normalization = {STATE_KEY: neutral_stats(config.state_dim)}
    if kind == "policy":
        mask = default_relative_mask(config.action_dim, grippers)
        normalization[ACTION_KEY] = neutral_stats(config.action_dim)
        normalization[RELATIVE_ACTION_KEY] = neutral_stats(config.action_dim)
        steps = policy_steps(config.cameras, config.image_size, mask)
    else:
        steps = value_steps(config.cameras, config.image_size)
    provenance = make_provenance(kind=kind, datasets=[], extra={"untrained": True, "seed": seed})
    return save_checkpoint(
        directory,
        kind=kind,
        model=model,
        model_config=config,
        training_config=training,
        normalization=normalization,
        processor_steps=steps,
        tokenizer=tokenizer,
        provenance=provenance,
    )
