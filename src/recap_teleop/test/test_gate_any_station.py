"""The gate on a station that is not the simulated ALOHA: a 7-joint single arm, its gripper first, with its own
limits and velocities per joint; the rules as plain Python, then the node started with that station's
parameters, fed joint states in another order than the station's."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState

from recap_core.station import StationConfig
from recap_ros.conversions import joint_positions, joint_state
from recap_ros.testing.probe import latest_diagnostic
from recap_teleop.gate import Gate, GateConfig

ARM = ("gripper", "shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
PARAMS = {
    "station_name": "ur_arm",
    "joint_names": list(ARM),
    "gripper_joints": ["gripper"],
    "joint_lower_limits": [0.0, -3.0, -2.0, -2.5, -3.0, -3.0, -3.0],
    "joint_upper_limits": [1.0, 3.0, 2.0, 2.5, 3.0, 3.0, 3.0],
    "joint_max_velocity": [2.0, 1.0, 1.0, 1.5, 2.5, 2.5, 3.0],
    "cameras": ["scene", "wrist"],
    "control_rate_hz": 25.0,
}
STATION = StationConfig.from_params(PARAMS)
PERIOD = 1.0 / STATION.control_rate_hz
HOME = np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
BEYOND = np.array([2.0, 9.0, -9.0, 9.0, -9.0, 9.0, -9.0])  # outside every joint's limits


def test_the_gate_limits_each_joint_by_its_own_position_and_velocity_limits():
    gate = Gate(GateConfig.from_station(STATION))
    assert gate.on_joint_state(HOME, 0.0)
    previous = HOME
    for k in range(1, 200):
        assert gate.on_policy(BEYOND, k * PERIOD)
        out = gate.tick(k * PERIOD)
        assert out.source == "policy"
        np.testing.assert_array_less(np.abs(out.command - previous), STATION.max_step + 1e-12)
        assert np.all(out.command >= STATION.lower_array) and np.all(out.command <= STATION.upper_array)
        if k == 1:  # the first step moves every joint by exactly its own limit towards the target
            np.testing.assert_allclose(np.abs(out.command - HOME), STATION.max_step)
        previous = out.command
    np.testing.assert_allclose(previous, np.clip(BEYOND, STATION.lower_array, STATION.upper_array))


def test_commands_of_another_length_are_refused_and_counted():
    gate = Gate(GateConfig.from_station(STATION))
    assert not gate.on_policy(np.zeros(14), 0.0)  # the simulated ALOHA's 14 joints
    assert not gate.on_teleop(np.zeros(6), 0.0)
    assert not gate.on_joint_state(np.zeros(8), 0.0)
    assert gate.counters["rejected_policy"] == 1 and gate.counters["rejected_teleop"] == 1
    assert gate.counters["rejected_joint_states"] == 1
    with pytest.raises(ValueError, match="must be 7 finite values"):
        gate.set_velocity_limits(0.0, max_velocity=[1.0] * 14)


@pytest.mark.ros
def test_the_gate_node_runs_the_arm_from_its_station_parameters(node_process, probe):
    commands = probe.subscribe(JointState, "joint_command")
    status = probe.subscribe(DiagnosticStatus, "gate/status")
    states = probe.publisher(JointState, "joint_states")
    policy = probe.publisher(JointState, "policy/joint_command", probe.RELIABLE_10)
    gate = node_process("recap_teleop.gate_node", params={**PARAMS, "status_rate_hz": 5.0})
    assert gate.wait_for_output("gate up", timeout=30), gate.output()
    assert probe.wait_for_subscribers(states) and probe.wait_for_subscribers(policy)

    shuffled = [ARM[i] for i in (3, 0, 6, 1, 5, 2, 4)]  # a joint_state_broadcaster-like order
    order = [ARM.index(name) for name in shuffled]
    stop = threading.Event()

    def drive():
        while not stop.is_set():
            states.publish(joint_state(HOME[order], names=shuffled))
            policy.publish(joint_state(BEYOND, names=ARM))
            time.sleep(PERIOD)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        assert commands.wait_for(40, timeout=15, predicate=lambda m: len(m.position) == 7), gate.output()
        aloha = joint_state(np.zeros(14), names=[f"j{i}" for i in range(14)])
        for _ in range(3):  # a command depth of 1: the gate may see only the last of a burst
            policy.publish(aloha)
            time.sleep(PERIOD / 2)
        counted = latest_diagnostic(status, predicate=lambda m: int(_value(m, "rejected_policy")) >= 1)
        assert int(counted["rejected_policy"]) >= 1 and gate.alive()
        msgs, _ = commands.snapshot()
    finally:
        stop.set()
        driver.join(timeout=2)
    assert all(list(m.name) == list(ARM) for m in msgs)
    q = np.stack([joint_positions(m, ARM) for m in msgs])
    assert np.all(q >= STATION.lower_array - 1e-9) and np.all(q <= STATION.upper_array + 1e-9)
    t_ns = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in msgs])
    ratio = np.abs(np.diff(q, axis=0)) / (STATION.max_velocity_array * np.diff(t_ns)[:, None] * 1e-9)
    assert ratio.max() <= 1.0 + 1e-6, f"an output moved at {ratio.max():.3f}x a joint's velocity limit"
    assert np.abs(q[-1] - q[0]).max() > 0.5, "the policy moved the arm"


def _value(msg, key: str) -> str:
    return next((kv.value for kv in msg.values if kv.key == key), "0")
