"""The newest observation of a station, assembled from its topics, with an age check.

Shared by the nodes that run a model on observations (policy, value): the
latest image per camera and the latest joint state, each with its header
stamp, turned into the ``{"images", "state", "task"}`` dict the runners take --
or a reason why there is no usable observation (missing stream, too old).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sensor_msgs.msg import Image, JointState

from recap_core.ros.convert import image_to_numpy, joint_positions, stamp_to_seconds


class ObservationBuffer:
    """Latest camera images and joint state; ``on_*`` raise MessageError for bad messages."""

    def __init__(self, cameras: Sequence[str], joint_names: Sequence[str]):
        self.cameras = tuple(cameras)
        self.joint_names = tuple(joint_names)
        self._images: dict[str, tuple[float, np.ndarray]] = {}
        self._state: tuple[float, np.ndarray] | None = None

    def on_image(self, camera: str, msg: Image) -> None:
        self._images[camera] = (stamp_to_seconds(msg.header.stamp), image_to_numpy(msg))

    def on_joints(self, msg: JointState) -> None:
        self._state = (stamp_to_seconds(msg.header.stamp), joint_positions(msg, self.joint_names))

    @property
    def state_stamp(self) -> float | None:
        return None if self._state is None else self._state[0]

    def latest(self, now: float, max_age_s: float, task: str) -> tuple[dict | None, str]:
        """The newest observation, or None and why it cannot be used."""
        state = self._state
        if state is None:
            return None, "no joint_states yet"
        missing = [c for c in self.cameras if c not in self._images]
        if missing:
            return None, f"no images yet from {missing}"
        images = {c: self._images[c] for c in self.cameras}
        stamps = {"joint_states": state[0], **{f"camera/{c}": images[c][0] for c in self.cameras}}
        oldest = min(stamps, key=stamps.get)
        age = now - stamps[oldest]
        if age > max_age_s:
            return None, (f"stale observation: {oldest} is {age * 1e3:.0f} ms old "
                          f"(limit {max_age_s * 1e3:.0f} ms)")
        if not task:
            return None, "no task: start an episode (episode/status) or set the `task` parameter"
        return {"images": {c: images[c][1] for c in self.cameras}, "state": state[1], "task": task}, ""
