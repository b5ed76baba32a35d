"""What the model-serving nodes (policy, value) check before they run a checkpoint.

A checkpoint is served only if it fits the station: the right kind, every
camera it reads among the station's cameras, and a state (and action) size
equal to the station's joint count, with the same joint names where the
checkpoint records them. The check reads ``config.json`` only, so a node can
refuse a runtime ``checkpoint`` change at once, before any weights load.
"""
from __future__ import annotations

from typing import Any

from recap_core.station import StationConfig


def model_problem(kind: str, model_config: Any, training_config: dict, station: StationConfig) -> str:
    """Why a checkpoint of ``kind`` with this config cannot run on ``station`` ('' if it can)."""
    joints = len(station.joint_names)
    missing = [c for c in model_config.cameras if c not in station.cameras]
    if missing:
        return (f"the {kind} reads camera(s) {missing}, which the station does not have (station cameras "
                f"{list(station.cameras)})")
    if model_config.state_dim != joints:
        return f"the {kind} takes a state of {model_config.state_dim} joints, the station has {joints}"
    if kind == "policy" and model_config.action_dim != joints:
        return f"the policy commands {model_config.action_dim} joints, the station has {joints}"
    names = training_config.get("joint_names") if isinstance(training_config, dict) else None
    if names and list(names) != list(station.joint_names):
        return (f"the {kind} was trained on joints {list(names)}, the station's are {list(station.joint_names)} "
                "(names or order differ)")
    return ""


def checkpoint_problem(path: str, kind: str, station: StationConfig) -> str:
    """Why the checkpoint directory ``path`` cannot be served as ``kind`` on ``station`` ('' if it can).

    Reads ``config.json`` only (no weights): cheap enough to answer a parameter change.
    """
    from recap_core.checkpoint import check_directory, read_config

    if not path:
        return "no checkpoint given"
    try:
        check_directory(path)
        found, model_config, training_config = read_config(path)
    except Exception as exc:  # CheckpointError, OSError, JSON errors: all one line for the operator
        return str(exc)
    if found != kind:
        return f"{path} is a {found} checkpoint, a {kind} one is needed"
    problem = model_problem(kind, model_config, training_config, station)
    return f"{path}: {problem}" if problem else ""
