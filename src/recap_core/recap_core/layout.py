"""A station's layout as a model sees it (joint order, gripper joints, camera names), and whether a model fits it.

A station's ``/**`` parameters, a dataset's ``meta/info.json`` and a checkpoint's ``config.json`` each record one
(docs/design.md §4, §7, §8); :func:`model_problem` says in one line why a checkpoint cannot serve a layout.
Pure Python: the nodes, the converter and the training read it alike.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

#: A camera name is one token of its topic ``camera/<name>/image_raw``: a letter, then letters, digits, ``_``.
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_joint_names(joint_names: Sequence[str]) -> None:
    """ValueError (one line) unless ``joint_names`` is one or more distinct non-empty strings."""
    names = list(joint_names)
    if not names:
        raise ValueError("joint_names is empty; a station has at least one joint")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"joint_names must be non-empty strings, got {bad}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"joint_names has duplicates {twice}; each joint once")


def check_gripper_joints(gripper_joints: Sequence[str], joint_names: Sequence[str]) -> None:
    """ValueError (one line) unless every gripper joint is a distinct station joint."""
    grippers = list(gripper_joints)
    unknown = [g for g in grippers if g not in joint_names]
    if unknown:
        raise ValueError(
            f"gripper_joints {unknown} are not station joints {list(joint_names)}; name the station's gripper "
            "joints (normalised 0 closed .. 1 open), or none"
        )
    twice = sorted({g for g in grippers if grippers.count(g) > 1})
    if twice:
        raise ValueError(f"gripper_joints has duplicates {twice}")


def check_cameras(cameras: Sequence[str]) -> None:
    """ValueError (one line) unless ``cameras`` is one or more distinct names usable as a topic token."""
    names = list(cameras)
    if not names:
        raise ValueError("cameras is empty; a station has at least one camera")
    bad = [c for c in names if not isinstance(c, str) or not CAMERA_NAME.match(c)]
    if bad:
        raise ValueError(
            f"camera names {bad} are not valid: each is a token of camera/<name>/image_raw (a letter, then "
            "letters, digits or '_')"
        )
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ValueError(f"cameras has duplicates {twice}")


@dataclasses.dataclass(frozen=True)
class StationLayout:
    """The joint order, the gripper joints among them and the camera names of one station."""

    joint_names: tuple[str, ...]
    gripper_joints: tuple[str, ...]
    cameras: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "gripper_joints", tuple(self.gripper_joints))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        check_joint_names(self.joint_names)
        check_gripper_joints(self.gripper_joints, self.joint_names)
        check_cameras(self.cameras)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        """Indices of the gripper joints in the joint order, ascending."""
        return gripper_indices(self.joint_names, self.gripper_joints)


def gripper_indices(joint_names: Sequence[str], gripper_joints: Sequence[str]) -> tuple[int, ...]:
    return tuple(sorted(list(joint_names).index(g) for g in gripper_joints))


def model_problem(
    kind: str, model_config: Any, training_config: dict, layout: StationLayout, holder: str = "station"
) -> str:
    """Why a ``kind`` checkpoint with this model and training config cannot serve ``layout`` ('' if it can).

    The model must read only cameras the layout has and take (and, a policy, command) as many joints; where
    the checkpoint records them (``training.joint_names``, ``training.gripper_joints``), the joint order and
    the gripper joints must be the layout's. ``holder`` names whose layout it is in the message (the station,
    the dataset).
    """
    joints = layout.num_joints
    missing = [c for c in model_config.cameras if c not in layout.cameras]
    if missing:
        return (
            f"the {kind} reads camera(s) {missing}, which the {holder} does not have ({holder} cameras "
            f"{list(layout.cameras)})"
        )
    if model_config.state_dim != joints:
        return f"the {kind} takes a state of {model_config.state_dim} joints, the {holder} has {joints}"
    if kind == "policy" and model_config.action_dim != joints:
        return f"the policy commands {model_config.action_dim} joints, the {holder} has {joints}"
    training = training_config if isinstance(training_config, dict) else {}
    names = training.get("joint_names")
    if names and list(names) != list(layout.joint_names):
        return (
            f"the {kind} was trained on joints {list(names)}, the {holder}'s are {list(layout.joint_names)} "
            "(names or order differ)"
        )
    grippers = training.get("gripper_joints")
    if grippers is not None and sorted(grippers) != sorted(layout.gripper_joints):
        return (
            f"the {kind} was trained with gripper joints {list(grippers)}, the {holder}'s are "
            f"{list(layout.gripper_joints)}"
        )
    return ""
