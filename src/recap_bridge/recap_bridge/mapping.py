"""The robot contract applied to values (pure; no ROS): robot joint states -> the model's joint vector,
the gate's command -> each controller's values in robot units.

A robot joint is known by the topic it comes from and its name there: per-arm drivers (Interbotix) reuse
names such as ``waist`` on each arm's topic; a joint_state_broadcaster names every joint once on one topic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from recap_core.robot_contract import Command, RobotContract

#: how far (model units) a command may sit outside the joint limits before the bridge refuses it; the gate
#: clamps to the limits exactly, so anything beyond rounding did not come through the gate
LIMIT_TOLERANCE = 1e-6


class MappingError(ValueError):
    """A message that does not fit the contract (one line)."""


class StateMerger:
    """The newest value and stamp of every model joint, merged from the robot's joint state topics.

    ``update`` takes one JointState's names, positions and stamp; joints the contract does not name are
    ignored (a joint_state_broadcaster reports every joint, finger mimics included). ``state`` is the joint
    vector in model order and units, stamped with the OLDEST of its joints' stamps, so a topic that stops
    makes the whole state age (the gate and the policy hold on age), or None while a joint was never seen.
    """

    def __init__(self, contract: RobotContract):
        self.joints = contract.joints
        self.names = contract.joint_names
        self.topics: dict[str, dict[str, int]] = {}
        index = 0
        shared: dict[str, int] = {}
        for arm in contract.arms:
            for joint in arm.joints:
                if arm.joint_states is None:
                    shared[joint.robot_name] = index
                else:
                    self.topics.setdefault(arm.joint_states.topic, {})[joint.robot_name] = index
                index += 1
        for topic in contract.joint_states:
            self.topics.setdefault(topic.topic, {}).update(shared)
        self.position = np.full(len(self.names), np.nan)
        self.stamp = np.full(len(self.names), np.nan)

    def update(self, topic: str, names: Sequence[str], positions: Sequence[float], stamp_s: float) -> int:
        """Take one message; returns how many contract joints it carried. MappingError if it is malformed."""
        lookup = self.topics[topic]
        if len(names) != len(positions):
            raise MappingError(f"{topic}: {len(names)} names but {len(positions)} positions")
        hits = [(lookup[n], float(p)) for n, p in zip(names, positions) if n in lookup]
        bad = [self.names[i] for i, p in hits if not math.isfinite(p)]
        if bad:
            raise MappingError(f"{topic}: non-finite positions for {bad}")
        for i, p in hits:
            self.position[i] = self.joints[i].to_model(p)
            self.stamp[i] = stamp_s
        return len(hits)

    def missing(self) -> list[str]:
        return [self.names[i] for i in np.flatnonzero(np.isnan(self.position))]

    def state(self) -> tuple[np.ndarray, float] | None:
        if np.isnan(self.position).any():
            return None
        return self.position.copy(), float(self.stamp.min())


@dataclasses.dataclass(frozen=True)
class ControllerCommand:
    command: Command
    values: tuple[float, ...]  # robot units, in ``command.joints`` order


class CommandSplitter:
    """The gate's command (model names and units) -> one ``ControllerCommand`` per controller.

    The command must name every model joint once, finite and inside the joint limits (the gate guarantees
    both; a command that breaks them did not come through the gate and is refused, never clamped).
    """

    def __init__(self, contract: RobotContract):
        self.names = contract.joint_names
        self.lower = np.array([j.lower for j in contract.joints])
        self.upper = np.array([j.upper for j in contract.joints])
        self._plan = []
        index = {j.name: i for i, j in enumerate(contract.joints)}
        for arm in contract.arms:
            by_robot = {j.robot_name: j for j in arm.joints}
            for command in arm.commands:
                joints = [by_robot[r] for r in command.joints]
                self._plan.append((command, [index[j.name] for j in joints], joints))

    def split(self, names: Sequence[str], positions: Sequence[float]) -> list[ControllerCommand]:
        pos = np.asarray(positions, dtype=np.float64)
        if len(names) != pos.size:
            raise MappingError(f"joint_command has {len(names)} names but {pos.size} positions")
        if sorted(names) != sorted(self.names):
            missing = sorted(set(self.names) - set(names))
            extra = sorted(set(names) - set(self.names))
            raise MappingError(f"joint_command names do not match the contract: missing {missing}, unknown {extra}")
        order = {n: i for i, n in enumerate(names)}
        q = pos[[order[n] for n in self.names]]
        if not np.all(np.isfinite(q)):
            raise MappingError(
                f"joint_command has non-finite values for {[self.names[i] for i in np.flatnonzero(~np.isfinite(q))]}"
            )
        outside = np.flatnonzero((q < self.lower - LIMIT_TOLERANCE) | (q > self.upper + LIMIT_TOLERANCE))
        if outside.size:
            raise MappingError(
                f"joint_command outside the joint limits for {[self.names[i] for i in outside]}: refused (commands "
                "must come through the gate)"
            )
        return [
            ControllerCommand(command, tuple(j.to_robot(float(q[i])) for i, j in zip(indices, joints)))
            for command, indices, joints in self._plan
        ]
