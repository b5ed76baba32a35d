"""The robot bridge as a real process on real topics, fed like a foreign robot: per-arm Interbotix-style
states, best-effort cameras on their own device clock, and hostile input it must count and survive."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from recap_core.robot_contract import load_contract
from recap_ros.conversions import diagnostic_values, seconds_to_stamp, stamp_to_seconds
from recap_ros.qos import COMMAND, LATCHED, SENSOR_IN

pytestmark = pytest.mark.ros

ROBOTS = pathlib.Path(__file__).resolve().parents[2] / "recap_bringup" / "config" / "robots"
INTERBOTIX = ROBOTS / "aloha_interbotix.yaml"
CONTRACT = load_contract(INTERBOTIX)
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]


def start_bridge(node_process):
    # the Interbotix example has the simulated station's layout, which is every node's default
    return node_process("recap_bridge.bridge_node", params={"contract": str(INTERBOTIX), "status_rate_hz": 10.0})


def status(probe, collector, predicate=lambda v: True, timeout=10.0) -> dict:
    assert collector.wait_for(1, timeout=timeout, predicate=lambda m: predicate(diagnostic_values(m))), (
        diagnostic_values(collector.last()) if collector.last() else "no bridge/status"
    )
    return diagnostic_values(collector.last())


def publish_arms(probe, pubs, left, right, stamp_s):
    for pub, values in zip(pubs, (left, right)):
        msg = JointState(name=ARM[::-1] + ["left_finger"], position=list(values[::-1]) + [0.02])
        msg.header.stamp = seconds_to_stamp(stamp_s)
        pub.publish(msg)


def test_per_arm_states_merge_into_the_model_order_with_grippers_normalised(node_process, probe):
    start_bridge(node_process)
    merged = probe.subscribe(JointState, "joint_states", SENSOR_IN)
    pubs = [
        probe.publisher(JointState, t, qos_profile_sensor_data)
        for t in ("/follower_left/joint_states", "/follower_right/joint_states")
    ]
    assert probe.wait_for_subscribers(pubs[0]) and probe.wait_for_subscribers(pubs[1])
    left = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.4910]  # gripper open in motor radians
    right = [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.6213]  # closed
    deadline = time.monotonic() + 10
    while not merged.wait_for(1, timeout=0.05) and time.monotonic() < deadline:
        publish_arms(probe, pubs, left, right, 0.0)
    msg = merged.last()
    assert list(msg.name) == list(CONTRACT.joint_names)
    np.testing.assert_allclose(msg.position, left[:6] + [1.0] + right[:6] + [0.0], atol=1e-9)
    # stamps: receive (the per-arm drivers' own clocks are not trusted): the stamp is the bridge's arrival time
    now = probe.node.get_clock().now().nanoseconds * 1e-9
    assert abs(stamp_to_seconds(msg.header.stamp) - now) < 5.0


def test_commands_reach_each_controller_and_bad_ones_are_refused_and_counted(node_process, probe):
    start_bridge(node_process)
    arm = probe.subscribe(JointTrajectory, "/follower_left/arm_controller/joint_trajectory")
    grip = probe.subscribe(Float64MultiArray, "/follower_right/gripper_controller/commands")
    stat = probe.subscribe(DiagnosticStatus, "bridge/status", LATCHED)
    commands = probe.publisher(JointState, "joint_command", COMMAND)
    assert probe.wait_for_subscribers(commands)
    q = np.r_[np.full(6, 0.25), 0.5, np.full(6, -0.25), 1.0]
    good = JointState(name=list(CONTRACT.joint_names), position=q.tolist())
    deadline = time.monotonic() + 10  # until the bridge's controller publishers have reached the probe too
    while not (arm.wait_for(1, timeout=0.05) and grip.wait_for(1, timeout=0.05)) and time.monotonic() < deadline:
        commands.publish(good)
    assert arm.wait_for(1, timeout=1) and grip.wait_for(1, timeout=1)
    traj = arm.last()
    assert list(traj.joint_names) == ARM[:6] and traj.points[0].positions.tolist() == pytest.approx([0.25] * 6)
    assert traj.points[0].time_from_start.nanosec == 40_000_000
    assert list(grip.last().data) == pytest.approx([1.4910])
    arm.clear()
    hostile = [
        JointState(name=list(CONTRACT.joint_names), position=(q + 10.0).tolist()),  # outside the limits
        JointState(name=list(CONTRACT.joint_names)[:-1], position=q[:-1].tolist()),  # a joint missing
        JointState(name=list(CONTRACT.joint_names), position=[float("nan")] * 14),
        JointState(name=["x"] * 14, position=q.tolist()),
    ]
    for msg in hostile:  # commands are keep-last 1: one at a time
        commands.publish(msg)
        time.sleep(0.1)
    values = status(probe, stat, lambda v: int(v["commands_rejected"]) >= 4)
    assert int(values["commands_rejected"]) == 4 and "joint_command" in values["last_error"]
    time.sleep(0.3)
    assert len(arm) == 0, "a refused command reached a controller"
    commands.publish(JointState(name=list(CONTRACT.joint_names), position=q.tolist()))
    assert arm.wait_for(1, timeout=5), "the bridge stopped forwarding after hostile input"


def test_cameras_on_a_device_clock_best_effort_raw_and_compressed_and_bad_frames(node_process, probe):
    start_bridge(node_process)
    stat = probe.subscribe(DiagnosticStatus, "bridge/status", LATCHED)
    out = probe.subscribe(Image, "camera/base/image_raw", SENSOR_IN)
    raw = probe.publisher(Image, "/cam_high/image_raw", qos_profile_sensor_data)
    assert probe.wait_for_subscribers(raw)
    bgr = np.zeros((8, 10, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    device_clock = probe.node.get_clock().now().nanoseconds * 1e-9 + 1000.0
    msg = Image(height=8, width=10, encoding="bgr8", step=30, data=bgr.tobytes())
    msg.header.stamp = seconds_to_stamp(device_clock)
    deadline = time.monotonic() + 10
    while not out.wait_for(1, timeout=0.05) and time.monotonic() < deadline:
        raw.publish(msg)
    got = out.last()
    assert got.encoding == "rgb8"
    rgb = np.frombuffer(bytes(got.data), np.uint8).reshape(8, 10, 3)
    assert (rgb[..., 2] == 255).all() and (rgb[..., 0] == 0).all()  # blue stays blue
    assert abs(stamp_to_seconds(got.header.stamp) - (device_clock - 1000.0)) < 5.0  # restamped on arrival
    for bad in (
        Image(height=8, width=10, encoding="32FC1", step=40, data=bytes(320)),
        Image(height=8, width=10, encoding="bgr8", step=30, data=bytes(17)),
    ):
        raw.publish(bad)
    values = status(probe, stat, lambda v: int(v["frames_rejected"]) >= 2)
    assert int(values["frames_rejected"]) >= 2
    out.clear()
    raw.publish(msg)
    assert out.wait_for(1, timeout=5), "the bridge stopped converting after bad frames"
