"""The episode manager as a real process: services, counters, sim auto-labels."""

from __future__ import annotations

import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from recap_ros.conversions import diagnostic, diagnostic_values, joint_state

pytestmark = pytest.mark.ros

TASK = "transfer the cube to the other arm"


def start_manager(node_process, **params):
    params.setdefault("task", TASK)
    proc = node_process("recap_teleop.episode_manager_node", params=params)
    assert proc.wait_for_output("episode manager up", timeout=30), proc.output()
    return proc


def status_where(collector, timeout=5.0, since=0, **expected):
    """The first episode/status (from message ``since`` on) whose values include ``expected``."""

    def find():
        for m in collector.snapshot()[0][since:]:
            v = diagnostic_values(m)
            if all(v.get(k) == str(want) for k, want in expected.items()):
                return v
        return None

    deadline = time.monotonic() + timeout
    while (found := find()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if found is None:
        last = collector.last()
        raise AssertionError(f"no episode/status with {expected}; last: {diagnostic_values(last) if last else None}")
    return found


def call(probe, name):
    return probe.call(Trigger, name, timeout=15)


def test_services_count_steps_and_interventions_and_refuse_invalid_calls(node_process, probe):
    status = probe.subscribe(DiagnosticStatus, "episode/status", probe.LATCHED)
    steps = probe.publisher(JointState, "joint_command")
    intervention = probe.publisher(Bool, "intervention", probe.LATCHED)
    manager = start_manager(node_process, operator="ada", source="demo")
    status_where(status, state="idle")

    reply = call(probe, "episode/success")
    assert not reply.success and "no episode is running" in reply.message
    reply = call(probe, "episode/start")
    assert reply.success, reply.message
    running = status_where(status, state="running")
    assert running["task"] == TASK and running["operator"] == "ada" and running["source"] == "demo"
    assert running["episode_id"].startswith("sim_aloha-") and running["label"] == ""
    reply = call(probe, "episode/start")
    assert not reply.success and "still running" in reply.message
    n = len(status)
    time.sleep(1.1)
    assert len(status) - n >= 2, "episode/status is re-published at >= 2 Hz while running"

    assert probe.wait_for_subscribers(steps) and probe.wait_for_subscribers(intervention)
    for flag in (False, True, False, True):  # two rising edges, 5 steps each
        intervention.publish(Bool(data=flag))
        time.sleep(0.05)
        for _ in range(5):
            steps.publish(joint_state([0.0] * 14))
            time.sleep(0.01)
    status_where(status, state="running", steps=20, interventions=2)

    since = len(status)
    reply = call(probe, "episode/failure")
    assert reply.success, reply.message
    done = status_where(status, since=since, state="failure", label="failure")
    assert done["episode_id"] == running["episode_id"] and done["stop_time"] and done["reason"] == "operator"
    idle = status_where(status, since=since, state="idle")
    assert idle["last_episode_id"] == running["episode_id"] and idle["last_label"] == "failure"
    assert not call(probe, "episode/abort").success

    # The task is settable between episodes; the next id is new.
    assert probe.set_parameters("/episode_manager", {"task": "insert the peg"})[0].successful
    assert not probe.set_parameters("/episode_manager", {"source": "teleop"})[0].successful
    assert call(probe, "episode/start").success
    second = status_where(status, state="running", task="insert the peg")
    assert second["episode_id"] != running["episode_id"]
    assert call(probe, "episode/abort").success
    status_where(status, state="aborted", label="aborted")
    assert manager.alive()


class FakeSim:
    """sim/reset and a sim/status stream, as the sim station provides them."""

    def __init__(self, probe, success_at: int | None):
        self.seed = 4
        self.step = 0
        self.success_at = success_at
        self.resets = 0
        self._lock = threading.Lock()
        self.pub = probe.publisher(DiagnosticStatus, "sim/status")
        probe.node.create_service(Trigger, "sim/reset", self._on_reset)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_reset(self, request, response):
        with self._lock:
            self.seed += 1
            self.step = 0
            self.resets += 1
        response.success, response.message = True, f"reset with seed {self.seed}"
        return response

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                self.step += 1
                success = self.success_at is not None and self.step >= self.success_at
                values = {
                    "task": "transfer_cube",
                    "seed": self.seed,
                    "step": self.step,
                    "reward": "0.0",
                    "success": success,
                    "truncated": False,
                }
            self.pub.publish(diagnostic("sim_station", values))
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


def test_auto_label_success_from_sim_status_after_a_reset(node_process, probe):
    status = probe.subscribe(DiagnosticStatus, "episode/status", probe.LATCHED)
    sim = FakeSim(probe, success_at=40)
    try:
        # Before the reset the old world (seed 4) already reports success: it must not label the new episode.
        sim.step = 100
        start_manager(node_process, auto_label=True, reset_service="sim/reset", max_episode_steps=400)
        status_where(status, state="idle")
        reply = call(probe, "episode/start")
        assert reply.success, reply.message
        assert sim.resets == 1
        running = status_where(status, state="running")
        assert running["seed"] == "5"
        since = len(status)
        done = status_where(status, state="success", timeout=10)
        assert done["label"] == "success" and "sim reported success" in done["reason"]
        status_where(status, since=since, state="idle", last_label="success")
    finally:
        sim.stop()


def test_auto_label_failure_at_the_time_limit(node_process, probe):
    status = probe.subscribe(DiagnosticStatus, "episode/status", probe.LATCHED)
    sim = FakeSim(probe, success_at=None)
    try:
        start_manager(node_process, auto_label=True, reset_service="sim/reset", max_episode_steps=30)
        status_where(status, state="idle")
        assert call(probe, "episode/start").success
        done = status_where(status, state="failure", timeout=10)
        assert "time limit" in done["reason"] and done["label"] == "failure"
    finally:
        sim.stop()


def test_start_fails_clearly_when_the_reset_service_is_missing(node_process, probe):
    status = probe.subscribe(DiagnosticStatus, "episode/status", probe.LATCHED)
    start_manager(node_process, reset_service="no_such/reset", reset_timeout_s=0.5)
    status_where(status, state="idle")
    reply = call(probe, "episode/start")
    assert not reply.success and "no_such/reset" in reply.message and "not available" in reply.message
    time.sleep(0.3)
    assert diagnostic_values(status.last())["state"] == "idle"
