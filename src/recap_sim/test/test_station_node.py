"""The sim station as a real process on real topics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from recap_ros.conversions import diagnostic_values, joint_positions, joint_state
from recap_ros.images import image_to_rgb
from recap_core.station import JOINT_NAMES, StationConfig

pytestmark = pytest.mark.ros

CAMERAS = ("base", "left_wrist", "right_wrist")


def _status(collector) -> dict:
    msg = collector.last()
    return diagnostic_values(msg) if msg is not None else {}


@pytest.fixture
def station(node_process):
    proc = node_process("recap_sim.station_node", params={"seed": 3})
    assert proc.wait_for_output("sim station up", timeout=60), proc.output()
    return proc


def test_publishes_cameras_and_joints_at_50hz(station, probe):
    cams = {c: probe.subscribe(Image, f"camera/{c}/image_raw") for c in CAMERAS}
    joints = probe.subscribe(JointState, "joint_states")
    assert joints.wait_for(5, timeout=20), station.output()
    time.sleep(0.5)
    for c in list(cams.values()) + [joints]:
        c.clear()
    window = 5.0
    time.sleep(window)
    for cam, col in cams.items():
        msgs, stamps = col.snapshot()
        rate = len(msgs) / window
        assert rate >= 45.0, f"camera {cam}: {rate:.1f} Hz"
        img = image_to_rgb(msgs[-1], expect_shape=(224, 224))
        assert msgs[-1].encoding == "rgb8" and img.shape == (224, 224, 3)
        assert img.std() > 1.0, f"camera {cam} image is blank"
    msgs, _ = joints.snapshot()
    assert len(msgs) / window >= 45.0, f"joint_states {len(msgs) / window:.1f} Hz"
    assert list(msgs[-1].name) == list(JOINT_NAMES) and len(msgs[-1].position) == 14
    assert station.alive()


def test_joint_command_moves_the_joints(station, probe):
    joints = probe.subscribe(JointState, "joint_states")
    pub = probe.publisher(JointState, "joint_command", probe.RELIABLE_10)
    assert joints.wait_for(5, timeout=20)
    start = joint_positions(joints.last())
    target = start.copy()
    target[0] += 0.3  # left waist
    target[8] -= 0.2  # right shoulder
    assert probe.wait_for_subscribers(pub)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        pub.publish(joint_state(target))
        time.sleep(0.05)
        now = joint_positions(joints.last())
        if abs(now[0] - target[0]) < 0.05 and abs(now[8] - target[8]) < 0.05:
            break
    now = joint_positions(joints.last())
    assert abs(now[0] - target[0]) < 0.05, (start[0], now[0], target[0])
    assert abs(now[8] - target[8]) < 0.05, (start[8], now[8], target[8])


def test_same_reset_seed_reproduces_object_pose(station, probe):
    poses = probe.subscribe(PoseStamped, "sim/object_pose")
    status = probe.subscribe(DiagnosticStatus, "sim/status")

    def reset_with(seed: int) -> np.ndarray:
        probe.set_parameters("/sim_station", {"seed": seed})
        status.clear()
        reply = probe.call(Trigger, "sim/reset")
        assert reply.success and reply.message == f"reset with seed {seed}", reply.message
        # the cube drops onto the table after a reset: compare where it rests
        assert status.wait_for(
            1,
            timeout=10,
            predicate=lambda m: diagnostic_values(m)["seed"] == str(seed) and int(diagnostic_values(m)["step"]) >= 40,
        )
        poses.clear()
        assert poses.wait_for(1, timeout=5)
        p = poses.last().pose.position
        return np.array([p.x, p.y, p.z])

    a = reset_with(11)
    b = reset_with(12)
    c = reset_with(11)
    np.testing.assert_allclose(a, c, atol=1e-3)
    assert np.linalg.norm(a[:2] - b[:2]) > 1e-3, "different seeds gave the same object pose"


def test_after_a_reset_commands_for_the_old_episode_do_not_move_the_arm(station, probe):
    joints = probe.subscribe(JointState, "joint_states")
    status = probe.subscribe(DiagnosticStatus, "sim/status")
    pub = probe.publisher(JointState, "joint_command", probe.RELIABLE_10)
    assert joints.wait_for(5, timeout=20) and probe.wait_for_subscribers(pub)
    assert probe.call(Trigger, "sim/reset").success
    joints.clear()
    assert joints.wait_for(3, timeout=10)
    home = joint_positions(joints.last())
    old_episode = home.copy()
    old_episode[1] += 0.6  # where the previous episode's last command pointed
    for _ in range(10):
        pub.publish(joint_state(old_episode))
        time.sleep(0.02)
    assert status.wait_for(
        1, timeout=5, predicate=lambda m: int(diagnostic_values(m)["commands_ignored_after_reset"]) >= 5
    ), _status(status)
    time.sleep(0.3)
    assert np.max(np.abs(joint_positions(joints.last())[:6] - home[:6])) < 0.02, "a stale command moved the arm"
    # a command stream that starts where the arm is takes over, and may then go anywhere within the limits
    target = home.copy()
    target[1] += 0.3
    deadline = time.monotonic() + 8.0
    for alpha in np.linspace(0.0, 1.0, 40):
        pub.publish(joint_state(home + alpha * (target - home)))
        time.sleep(0.02)
    while time.monotonic() < deadline and abs(joint_positions(joints.last())[1] - target[1]) > 0.05:
        pub.publish(joint_state(target))
        time.sleep(0.05)
    assert abs(joint_positions(joints.last())[1] - target[1]) < 0.05
    assert station.alive()


@pytest.mark.parametrize("bad", ["wrong_count", "wrong_names", "nan", "outside_limits"])
def test_bad_commands_are_rejected_counted_and_the_station_holds(station, probe, bad):
    joints = probe.subscribe(JointState, "joint_states")
    status = probe.subscribe(DiagnosticStatus, "sim/status")
    pub = probe.publisher(JointState, "joint_command", probe.RELIABLE_10)
    assert joints.wait_for(5, timeout=20) and probe.wait_for_subscribers(pub)
    held = joint_positions(joints.last())
    upper = StationConfig.sim_aloha().upper_array
    msg = joint_state(held, names=JOINT_NAMES)
    if bad == "wrong_count":
        msg.position = msg.position[:13]
        msg.name = msg.name[:13]
    elif bad == "wrong_names":
        msg.name = [n.replace("left", "lft") for n in msg.name]
    elif bad == "nan":
        msg.position = [math.nan] + list(msg.position[1:])
    else:
        msg.position = [float(upper[0] + 0.5)] + list(msg.position[1:])
    for _ in range(5):
        pub.publish(msg)
        time.sleep(0.02)
    assert status.wait_for(1, timeout=5, predicate=lambda m: int(diagnostic_values(m)["commands_rejected"]) >= 5), (
        _status(status)
    )
    time.sleep(0.5)
    now = joint_positions(joints.last())
    assert np.max(np.abs(now[:6] - held[:6])) < 0.02, "station moved on a rejected command"
    assert station.alive()
    assert "rejected joint_command" in station.output()


def test_invalid_parameter_is_a_clear_startup_error(node_process):
    proc = node_process("recap_sim.station_node", params={"task_name": "laundry"})
    proc.proc.wait(timeout=60)
    assert proc.proc.returncode == 2
    assert "task_name" in proc.output() and "transfer_cube" in proc.output()
