"""The contract applied to values: merging states from foreign drivers, splitting commands to controllers."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from recap_bridge.mapping import CommandSplitter, MappingError, StateMerger
from recap_core.robot_contract import load_contract

ROBOTS = pathlib.Path(__file__).resolve().parents[2] / "recap_bringup" / "config" / "robots"
ROS2_CONTROL = load_contract(ROBOTS / "aloha_ros2_control.yaml")
INTERBOTIX = load_contract(ROBOTS / "aloha_interbotix.yaml")


def test_a_broadcaster_state_in_its_own_order_with_extra_joints_merges_into_model_order():
    merger = StateMerger(ROS2_CONTROL)
    names = [j.robot_name for j in ROS2_CONTROL.joints] + ["left_finger_mirror", "right_finger_mirror"]
    values = np.linspace(-0.5, 0.5, 14).tolist() + [9.0, 9.0]
    values[6] = 0.022  # left gripper: half open in metres
    order = np.random.default_rng(0).permutation(16)
    assert merger.state() is None and len(merger.missing()) == 14
    assert merger.update("/joint_states", [names[i] for i in order], [values[i] for i in order], 12.5) == 14
    state, stamp = merger.state()
    expect = np.asarray(values[:14])
    expect[6] = 0.5
    expect[13] = values[13] / 0.044
    np.testing.assert_allclose(state, expect)
    assert stamp == 12.5


def test_per_arm_topics_reuse_names_and_the_state_is_as_old_as_its_oldest_arm():
    merger = StateMerger(INTERBOTIX)
    arm = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
    merger.update("/follower_left/joint_states", arm + ["left_finger", "right_finger"], [0.1] * 6 + [1.491, 0, 0], 5.0)
    assert merger.state() is None and merger.missing()[0] == "right_waist"
    merger.update("/follower_right/joint_states", arm, [0.2] * 6 + [-0.6213], 7.0)
    state, stamp = merger.state()
    np.testing.assert_allclose(state[:6], 0.1)
    np.testing.assert_allclose(state[7:13], 0.2)
    assert state[6] == pytest.approx(1.0) and state[13] == pytest.approx(0.0)
    assert stamp == 5.0


@pytest.mark.parametrize(
    "names,values,match",
    [(["left_waist"], [0.0, 1.0], "1 names but 2"), (["left_waist"], [float("nan")], "non-finite")],
)
def test_a_malformed_state_is_refused_and_changes_nothing(names, values, match):
    merger = StateMerger(ROS2_CONTROL)
    with pytest.raises(MappingError, match=match):
        merger.update("/joint_states", names, values, 1.0)
    assert len(merger.missing()) == 14


def test_a_command_goes_to_each_controller_in_its_order_and_units():
    splitter = CommandSplitter(INTERBOTIX)
    q = np.r_[np.full(6, 0.3), 1.0, np.full(6, -0.3), 0.0]
    names = list(INTERBOTIX.joint_names)
    out = splitter.split(names[::-1], q[::-1].tolist())
    assert [c.command.topic for c in out] == [
        "/follower_left/arm_controller/joint_trajectory",
        "/follower_left/gripper_controller/commands",
        "/follower_right/arm_controller/joint_trajectory",
        "/follower_right/gripper_controller/commands",
    ]
    np.testing.assert_allclose(out[0].values, 0.3)
    assert out[1].values == pytest.approx((1.4910,)) and out[3].values == pytest.approx((-0.6213,))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda n, q: (n[:-1], q[:-1]), "missing"),
        (lambda n, q: (n[:-1] + ["elbow"], q), "unknown"),
        (lambda n, q: (n, np.r_[q[:-1], np.inf]), "non-finite"),
        (lambda n, q: (n, np.r_[q[:-1], 1.5]), "outside the joint limits"),
    ],
)
def test_a_command_that_did_not_come_through_the_gate_is_refused(change, match):
    splitter = CommandSplitter(ROS2_CONTROL)
    names, q = change(list(ROS2_CONTROL.joint_names), np.zeros(14) + 0.5)
    with pytest.raises(MappingError, match=match):
        splitter.split(names, list(q))
