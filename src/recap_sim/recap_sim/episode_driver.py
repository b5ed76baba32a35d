"""Episode driving and topic-rate measurement for ``recap station --sim``."""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from recap_core.ros import qos
from recap_core.ros.convert import diagnostic_values


class TopicRateMonitor(Node):
    """Counts messages per topic since the last ``reset()``."""

    def __init__(self, cameras, **kwargs):
        super().__init__("topic_rate_monitor", **kwargs)
        self._counts: dict[str, int] = {}
        self._t0 = time.monotonic()
        topics = [(Image, f"camera/{c}/image_raw") for c in cameras] + [(JointState, "joint_states")]
        for msg_type, topic in topics:
            self._counts[topic] = 0
            self.create_subscription(msg_type, topic, lambda _m, t=topic: self._count(t), qos.SENSOR)

    def _count(self, topic: str) -> None:
        self._counts[topic] += 1

    def reset(self) -> None:
        for k in self._counts:
            self._counts[k] = 0
        self._t0 = time.monotonic()

    def rates(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {k: v / elapsed for k, v in self._counts.items()}


class SimEpisodeDriver(Node):
    """Resets the sim and watches ``sim/status`` until success or the time limit."""

    def __init__(self, **kwargs):
        super().__init__("sim_episode_driver", **kwargs)
        self._status: dict[str, str] = {}
        self.create_subscription(DiagnosticStatus, "sim/status", self._on_status, qos.SENSOR)
        self._reset = self.create_client(Trigger, "sim/reset")

    def _on_status(self, msg: DiagnosticStatus) -> None:
        self._status = diagnostic_values(msg)

    def _call_reset(self, timeout: float = 15.0) -> str:
        if not self._reset.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("sim/reset is not available: is the sim station running?")
        future = self._reset.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError("sim/reset did not answer")
            time.sleep(0.005)
        result = future.result()
        if not result.success:
            raise RuntimeError(f"sim/reset failed: {result.message}")
        return result.message

    def run_episode(self, index: int, max_steps: int, dt: float = 0.02):
        from recap_sim.bringup import EpisodeResult

        message = self._call_reset()
        seed = int(message.rsplit(" ", 1)[-1])
        t0 = time.monotonic()
        while True:
            s = self._status
            if s.get("seed") == str(seed):
                step = int(s.get("step", 0))
                if s.get("success") == "True" or step >= max_steps:
                    return EpisodeResult(index, seed, s.get("success") == "True", step, step * dt,
                                         time.monotonic() - t0)
            time.sleep(0.005)
