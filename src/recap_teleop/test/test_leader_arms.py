"""Leader arms: the pure joint mapping, and the node as a process."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from recap_ros.conversions import joint_positions, joint_state
from recap_core.station import GRIPPER_INDICES, JOINT_NAMES
from recap_teleop.leader_arms_node import LeaderMapping

LEADER_NAMES = [f"master_{n}" for n in JOINT_NAMES]


def test_reorders_ignores_extra_joints_and_maps_the_grippers():
    mapping = LeaderMapping(LEADER_NAMES, gripper_closed=-1.6, gripper_open=-0.8)
    station_values = np.arange(14) * 0.1
    leader_gripper = {6: -1.6, 13: -1.0}  # closed, and three quarters of the way to closed
    names = list(reversed(LEADER_NAMES)) + ["master_extra"]
    by_name = {f"master_{n}": (leader_gripper.get(i, station_values[i])) for i, n in enumerate(JOINT_NAMES)}
    positions = [by_name[n] for n in names[:-1]] + [42.0]
    command = mapping(names, positions)
    expected = station_values.copy()
    expected[6], expected[13] = 0.0, 0.75
    np.testing.assert_allclose(command, expected)


def test_gripper_map_clips_to_the_normalised_range():
    mapping = LeaderMapping(JOINT_NAMES, gripper_closed=0.0, gripper_open=2.0)
    q = np.zeros(14)
    q[6], q[13] = -1.0, 5.0
    command = mapping([], q)
    assert command[6] == 0.0 and command[13] == 1.0


@pytest.mark.parametrize(
    "names, positions, match",
    [
        (LEADER_NAMES[:13], [0.0] * 13, "lacks joints"),
        ([], [0.0] * 13, "13 positions"),
        (LEADER_NAMES, [math.nan] + [0.0] * 13, "non-finite"),
        (LEADER_NAMES, [0.0] * 12, "names but"),
    ],
)
def test_bad_leader_messages_say_what_is_wrong(names, positions, match):
    with pytest.raises(ValueError, match=match):
        LeaderMapping(LEADER_NAMES, 0.0, 1.0)(names, positions)


def test_configuration_errors():
    with pytest.raises(ValueError, match="different"):
        LeaderMapping(JOINT_NAMES, 1.0, 1.0)
    with pytest.raises(ValueError, match="expected 14"):
        LeaderMapping(JOINT_NAMES[:7], 0.0, 1.0)


@pytest.mark.ros
def test_node_passes_leader_through_and_engages_from_the_parameter(node_process, probe):
    engage = probe.subscribe(Bool, "teleop/engage")
    commands = probe.subscribe(JointState, "teleop/joint_command")
    leader = probe.publisher(JointState, "leader/joint_states")
    node = node_process(
        "recap_teleop.leader_arms_node",
        params={"leader_joint_names": LEADER_NAMES, "gripper_closed": -1.6, "gripper_open": -0.8},
    )
    assert node.wait_for_output("leader arms up", 30), node.output()
    assert probe.wait_for_subscribers(leader)
    q = np.linspace(-0.5, 0.5, 14)
    q[list(GRIPPER_INDICES)] = -0.8  # open
    msg = joint_state(q, names=LEADER_NAMES)
    deadline = time.monotonic() + 10  # until the node's output has reached the probe too (discovery)
    while not commands.wait_for(3, timeout=0.02) and time.monotonic() < deadline:
        leader.publish(msg)
    assert commands.wait_for(3, timeout=1), node.output()
    out = joint_positions(commands.last())
    expected = q.copy()
    expected[list(GRIPPER_INDICES)] = 1.0
    np.testing.assert_allclose(out, expected)
    assert list(commands.last().name) == list(JOINT_NAMES)

    bad = joint_state(q, names=LEADER_NAMES)
    bad.position = [math.nan] + list(bad.position[1:])
    n = len(commands)
    leader.publish(bad)
    time.sleep(0.2)
    assert len(commands) == n and node.alive(), "a NaN leader message is dropped, the node lives"

    assert probe.set_parameters("/leader_arms", {"engaged": True})[0].successful
    assert engage.wait_for(1, timeout=5, predicate=lambda m: m.data is True)
    assert engage.wait_for(2, timeout=3, predicate=lambda m: m.data is True), "re-asserted while engaged"
    assert probe.set_parameters("/leader_arms", {"engaged": False})[0].successful
    assert engage.wait_for(1, timeout=5, predicate=lambda m: m.data is False)
