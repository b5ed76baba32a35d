"""The gate node as a real process: attribution of every step, handover, watchdog, bad input."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from recap_ros.conversions import diagnostic_values, joint_positions, joint_state
from recap_core.station import StationConfig

pytestmark = pytest.mark.ros

STATION = StationConfig.sim_aloha()
HOME = (STATION.lower_array + STATION.upper_array) / 2
POLICY_TARGET = HOME + np.r_[0.3, [0.0] * 13]
TELEOP_TARGET = HOME - np.r_[0.3, [0.0] * 13]


class Feeder:
    """Publishes joint_states, policy and teleop commands at 50 Hz from a test thread."""

    def __init__(self, probe):
        self.states = probe.publisher(JointState, "joint_states")
        self.policy = probe.publisher(JointState, "policy/joint_command", probe.RELIABLE_10)
        self.teleop = probe.publisher(JointState, "teleop/joint_command", probe.RELIABLE_10)
        self.policy_on = threading.Event()
        self.teleop_on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.states.publish(joint_state(HOME))
            if self.policy_on.is_set():
                self.policy.publish(joint_state(POLICY_TARGET))
            if self.teleop_on.is_set():
                self.teleop.publish(joint_state(TELEOP_TARGET))
            next_tick += 0.02
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.fixture
def gate_outputs(probe):
    return (
        probe.subscribe(JointState, "joint_command"),
        probe.subscribe(String, "command_source"),
        probe.subscribe(Bool, "intervention"),
    )


def start_gate(node_process, **params):
    proc = node_process("recap_teleop.gate_node", params=params)
    assert proc.wait_for_output("gate up", timeout=30), proc.output()
    return proc


def publish_a_few(publisher, msg, times: int = 3) -> None:
    """Deadman messages are idempotent: repeat them so one lost to late discovery does not matter."""
    for _ in range(times):
        publisher.publish(msg)
        time.sleep(0.01)


def velocity_ratio(commands) -> float:
    """Largest |dq| / (max_velocity * dt) between consecutive outputs, dt from the gate's stamps."""
    q = np.stack([joint_positions(m) for m in commands])
    # Integer nanoseconds: epoch seconds as floats are only good to ~0.2 us.
    t_ns = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in commands])
    dt = np.diff(t_ns)[:, None] * 1e-9
    return float(np.max(np.abs(np.diff(q, axis=0)) / (STATION.max_velocity_array * dt)))


def test_holds_the_measured_position_before_any_command(node_process, probe, gate_outputs):
    commands, sources, interventions = gate_outputs
    gate = start_gate(node_process)
    states = probe.publisher(JointState, "joint_states")
    measured = HOME + 0.1
    assert probe.wait_for_subscribers(states)
    for _ in range(10):
        states.publish(joint_state(measured))
        time.sleep(0.02)
    assert commands.wait_for(10, timeout=5), gate.output()
    np.testing.assert_allclose(joint_positions(commands.last()), measured)
    assert sources.last().data == "hold" and interventions.last().data is False


def test_engage_and_release_attribute_every_step_and_reset_the_policy(node_process, probe, gate_outputs):
    commands, sources, interventions = gate_outputs
    reset_calls = []

    def on_reset(request, response):
        reset_calls.append(time.monotonic())
        response.success, response.message = True, "replanning"
        return response

    probe.node.create_service(Trigger, "policy/reset", on_reset)
    engage = probe.publisher(Bool, "teleop/engage", probe.RELIABLE_10)
    # A long watchdog: any hold below must come from the release rule, not from staleness.
    gate = start_gate(node_process, stale_timeout_ms=5000.0)
    feeder = Feeder(probe).start()
    try:
        assert probe.wait_for_subscribers(engage) and probe.wait_for_subscribers(feeder.policy)
        feeder.policy_on.set()
        feeder.teleop_on.set()  # the teleop device streams all the time, like the scripted operator
        assert commands.wait_for(1, timeout=10, predicate=lambda m: abs(m.position[0] - POLICY_TARGET[0]) < 1e-9), (
            gate.output()
        )
        time.sleep(0.3)
        publish_a_few(engage, Bool(data=True))
        assert commands.wait_for(1, timeout=5, predicate=lambda m: abs(m.position[0] - TELEOP_TARGET[0]) < 1e-9)
        time.sleep(0.3)
        feeder.policy_on.clear()  # the policy goes quiet until told to replan
        time.sleep(0.1)
        publish_a_few(engage, Bool(data=False))
        deadline = time.monotonic() + 5
        while not reset_calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(reset_calls) == 1, "release must call policy/reset once"
        time.sleep(0.3)  # the gate must hold all this time: no policy command came after the release
        feeder.policy_on.set()
        assert commands.wait_for(1, timeout=5, predicate=lambda m: abs(m.position[0] - POLICY_TARGET[0]) < 1e-9)
        commands.wait_for(len(commands) + 10, timeout=2)
    finally:
        feeder.stop()
    time.sleep(0.2)
    cmd_msgs, _ = commands.snapshot()
    src = [m.data for m in sources.snapshot()[0]]
    flags = [m.data for m in interventions.snapshot()[0]]
    # Every step carries its attribution (allow the very last messages to be in flight).
    assert abs(len(src) - len(cmd_msgs)) <= 2 and abs(len(flags) - len(cmd_msgs)) <= 2, (
        len(cmd_msgs),
        len(src),
        len(flags),
    )
    n = min(len(src), len(flags))
    assert all(flag == (s == "teleop") for s, flag in zip(src[:n], flags[:n]) if s != "hold"), (
        "teleop steps and only they are interventions"
    )
    # The phases in order: policy, teleop (ramp through the same stream), hold after release, policy.
    phases = [s for i, s in enumerate(src) if i == 0 or src[i - 1] != s]
    while phases and phases[0] == "hold":  # before the first policy command
        phases.pop(0)
    assert phases == ["policy", "teleop", "hold", "policy"], phases
    held = [joint_positions(m)[0] for m, s in zip(cmd_msgs, src) if s == "hold"][-5:]
    assert np.ptp(held) < 1e-9, "holding must not move"
    assert velocity_ratio(cmd_msgs) <= 1.0 + 1e-6
    _, stamps = commands.snapshot()
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 45 <= rate <= 60, f"joint_command at {rate:.1f} Hz"


def test_watchdog_holds_a_stale_policy(node_process, probe, gate_outputs):
    commands, sources, _ = gate_outputs
    gate = start_gate(node_process, stale_timeout_ms=100.0)
    feeder = Feeder(probe).start()
    try:
        assert probe.wait_for_subscribers(feeder.policy)
        feeder.policy_on.set()
        assert sources.wait_for(1, timeout=10, predicate=lambda m: m.data == "policy"), gate.output()
        feeder.policy_on.clear()
        t_stop = time.monotonic()

        def first_hold_after_stop():
            msgs, stamps = sources.snapshot()
            return next((t for m, t in zip(msgs, stamps) if m.data == "hold" and t > t_stop), None)

        deadline = time.monotonic() + 2
        while first_hold_after_stop() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first_hold = first_hold_after_stop()
        assert first_hold is not None, "the gate never held after the policy stopped"
        assert first_hold - t_stop < 0.1 + 0.1, f"the watchdog fired {first_hold - t_stop:.3f} s after the stop"
        n = len(commands)
        assert commands.wait_for(n + 10, timeout=2), "the gate keeps commanding (holding) at the control rate"
        last = [joint_positions(m) for m in commands.snapshot()[0][-5:]]
        assert np.ptp(np.stack(last), axis=0).max() < 1e-9
    finally:
        feeder.stop()


def test_malformed_commands_are_rejected_counted_and_the_node_lives(node_process, probe, gate_outputs):
    commands, _, _ = gate_outputs
    status = probe.subscribe(DiagnosticStatus, "gate/status")
    gate = start_gate(node_process, status_rate_hz=10.0)
    feeder = Feeder(probe).start()
    try:
        # A good command first: proves the policy stream is connected before the bad ones go out.
        feeder.policy_on.set()
        assert commands.wait_for(1, timeout=10, predicate=lambda m: abs(m.position[0] - POLICY_TARGET[0]) < 1e-9), (
            gate.output()
        )
        feeder.policy_on.clear()
        nan_cmd = joint_state(HOME)
        nan_cmd.position = [math.nan] + list(nan_cmd.position[1:])
        short = joint_state(HOME[:13], names=STATION.joint_names[:13])
        for msg in (nan_cmd, short, nan_cmd):
            feeder.policy.publish(msg)
            time.sleep(0.05)
        assert status.wait_for(1, timeout=5, predicate=lambda m: diagnostic_values(m)["rejected_policy"] == "3"), (
            str(diagnostic_values(status.last())) if status.last() else gate.output()
        )
        assert gate.alive()
        n = len(commands)
        assert commands.wait_for(n + 5, timeout=2)
        assert all(np.all(np.isfinite(joint_positions(m))) for m in commands.snapshot()[0])
    finally:
        feeder.stop()
