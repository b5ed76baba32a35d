"""The newest observation of a station, assembled from its topics, with an age check.

Shared by the nodes that run a model (policy, value): :class:`ObservationBuffer` turns the latest image per
camera and joint state into the dict the runners take, or says why there is no usable observation.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, JointState

from recap_ros.conversions import MessageError, joint_positions, stamp_to_seconds
from recap_ros.images import image_to_rgb


class FutureStampError(MessageError):
    """A message stamped further in the future than the tolerance (a wrong or foreign clock)."""


def refuse_future_stamp(stamp: float, now: float, tolerance_s: float, what: str) -> None:
    """Raise FutureStampError when ``stamp`` lies more than ``tolerance_s`` ahead of ``now`` (seconds)."""
    lead = stamp - now
    if lead > tolerance_s:
        raise FutureStampError(
            f"{what} is stamped {lead * 1e3:.0f} ms in the future (tolerance "
            f"{tolerance_s * 1e3:.0f} ms): check the clocks of the station"
        )


class ObservationBuffer:
    """Latest camera images and joint state; ``on_*`` raise MessageError for bad messages.

    ``clock`` returns the node clock's now in seconds (the stamps' time base);
    ``monotonic`` the receive clock (tests pass their own). Thread-safe:
    subscriptions feed it from the executor while an inference thread reads it.

    Freshness cannot be faked by a stamp: a message stamped further ahead of the node clock than
    ``future_tolerance_s`` is refused (:class:`FutureStampError`), and a message's age is the larger of its
    stamp's age and the time since it was received (monotonic clock), so a stream that stops is stale after
    the age limit whatever its last stamp said.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        joint_names: Sequence[str],
        *,
        clock: Callable[[], float],
        future_tolerance_s: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.cameras = tuple(cameras)
        self.joint_names = tuple(joint_names)
        self.future_tolerance_s = float(future_tolerance_s)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # name -> (stamp, monotonic receive time, data)
        self._images: dict[str, tuple[float, float, np.ndarray]] = {}
        self._state: tuple[float, float, np.ndarray] | None = None
        self._not_before = float("-inf")
        self._waiting_for = ""

    def restart(self, not_before: float, why: str) -> None:
        """Forget every image and joint state, and ignore those stamped before ``not_before``.

        For a new episode: the world may have been reset (a sim teleports the
        arm; an operator moves the objects), so nothing observed before the
        episode began describes it. Until every stream has delivered a newer
        message, :meth:`latest` returns None with ``why``.
        """
        with self._lock:
            self._images.clear()
            self._state = None
            self._not_before = float(not_before)
            self._waiting_for = why

    def on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        image = image_to_rgb(msg)  # validate first: a bad message is rejected whatever its stamp
        received = self._monotonic()
        refuse_future_stamp(stamp, self._clock(), self.future_tolerance_s, f"camera/{camera}")
        with self._lock:
            if stamp >= self._not_before:
                self._images[camera] = (stamp, received, image)

    def on_joints(self, msg: JointState) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        positions = joint_positions(msg, self.joint_names)
        received = self._monotonic()
        refuse_future_stamp(stamp, self._clock(), self.future_tolerance_s, "joint_states")
        with self._lock:
            if stamp >= self._not_before:
                self._state = (stamp, received, positions)

    @property
    def state_stamp(self) -> float | None:
        return None if self._state is None else self._state[0]

    def latest(self, now: float, max_age_s: float, task: str) -> tuple[dict | None, str]:
        """The newest observation, or None and why it cannot be used."""
        with self._lock:
            state, stored, waiting_for = self._state, dict(self._images), self._waiting_for
        since = f" ({waiting_for})" if waiting_for else ""
        if state is None:
            return None, f"no joint_states yet{since}"
        missing = [c for c in self.cameras if c not in stored]
        if missing:
            return None, f"no images yet from {missing}{since}"
        images = {c: stored[c] for c in self.cameras}
        entries = {"joint_states": state, **{f"camera/{c}": images[c] for c in self.cameras}}
        received_now = self._monotonic()
        # Age by stamp, and by receive time: a stamp cannot keep a stream that stopped fresh.
        ages = {name: max(now - stamp, received_now - received) for name, (stamp, received, _) in entries.items()}
        oldest = max(ages, key=ages.get)
        if ages[oldest] > max_age_s:
            return None, (
                f"stale observation: {oldest} is {ages[oldest] * 1e3:.0f} ms old (limit {max_age_s * 1e3:.0f} ms)"
            )
        if not task:
            return None, "no task: start an episode (episode/status) or set the `task` parameter"
        return {"images": {c: images[c][2] for c in self.cameras}, "state": state[2], "task": task}, ""
