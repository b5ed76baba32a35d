"""Episode driving and topic-rate measurement for ``recap station``."""

from __future__ import annotations

import dataclasses
import re
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from recap_ros import qos
from recap_ros.conversions import diagnostic_values

TERMINAL = ("success", "failure", "aborted")


class StopRequested(Exception):
    """The process was asked to stop (SIGINT/SIGTERM) while an episode was being driven."""


@dataclasses.dataclass
class EpisodeResult:
    index: int
    episode_id: str
    seed: str
    label: str
    steps: int
    interventions: int
    intervention_steps: int
    wall_seconds: float

    @property
    def success(self) -> bool:
        return self.label == "success"


class TopicRateMonitor(Node):
    """Counts messages per topic since the last ``reset()``."""

    def __init__(self, cameras, **kwargs):
        super().__init__("topic_rate_monitor", **kwargs)
        self._counts: dict[str, int] = {}
        self._t0 = time.monotonic()
        topics = [(Image, f"camera/{c}/image_raw") for c in cameras]
        topics += [(JointState, "joint_states"), (JointState, "joint_command")]
        for msg_type, topic in topics:
            self._counts[topic] = 0
            self.create_subscription(msg_type, topic, lambda _m, t=topic: self._count(t), qos.SENSOR_IN)

    def _count(self, topic: str) -> None:
        self._counts[topic] += 1

    def reset(self) -> None:
        for k in self._counts:
            self._counts[k] = 0
        self._t0 = time.monotonic()

    def rates(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {k: v / elapsed for k, v in self._counts.items()}


class EpisodeDriver(Node):
    """Starts episodes through ``episode/start`` and waits for the manager's label."""

    def __init__(self, stop: threading.Event | None = None, **kwargs):
        super().__init__("episode_driver", **kwargs)
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._episodes: dict[str, dict[str, str]] = {}
        self.create_subscription(DiagnosticStatus, "episode/status", self._on_status, qos.LATCHED)
        self._start = self.create_client(Trigger, "episode/start")

    def _on_status(self, msg: DiagnosticStatus) -> None:
        values = diagnostic_values(msg)
        if values.get("episode_id"):
            with self._lock:
                self._episodes[values["episode_id"]] = values

    def _status(self, episode_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._episodes.get(episode_id, {}))

    def _sleep(self, seconds: float) -> None:
        """Sleep, or raise StopRequested as soon as a stop is requested."""
        if self._stop.wait(seconds):
            raise StopRequested()

    def _call(self, client, timeout: float) -> Trigger.Response:
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client.srv_name} is not available: is the episode manager running?")
            self._sleep(0.05)
        future = client.call_async(Trigger.Request())
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client.srv_name} did not answer within {timeout} s")
            self._sleep(0.005)
        return future.result()

    def run_episode(self, index: int, timeout_s: float = 600.0, start_timeout_s: float = 30.0) -> EpisodeResult:
        deadline = time.monotonic() + start_timeout_s
        while True:  # the manager refuses a start while the previous label is still shown
            reply = self._call(self._start, timeout=start_timeout_s)
            if reply.success:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"episode/start refused: {reply.message}")
            self._sleep(0.1)
        match = re.search(r"started episode (\S+)", reply.message)
        if not match:
            raise RuntimeError(f"unexpected episode/start reply: {reply.message!r}")
        episode_id = match.group(1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            s = self._status(episode_id)
            if s.get("state") in TERMINAL:
                return EpisodeResult(
                    index,
                    episode_id,
                    s.get("seed", ""),
                    s.get("label") or s["state"],
                    int(s.get("steps", 0)),
                    int(s.get("interventions", 0)),
                    int(s.get("intervention_steps", 0)),
                    time.monotonic() - t0,
                )
            self._sleep(0.01)
        raise RuntimeError(f"episode {episode_id} did not end within {timeout_s} s")
