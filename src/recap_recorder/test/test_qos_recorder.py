"""The recorder node against a best-effort camera that starts after it: the recorder subscribes again best
effort (rosbag2 would record nothing from it), keeps the reliable joint_states reliable, and records every frame."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from recap_ros import qos
from recap_ros.conversions import diagnostic, diagnostic_values, joint_state
from recap_ros.images import numpy_to_image
from recap_ros.testing.probe import latest_diagnostic
from recap_recorder.bag_files import storage_file
from recap_recorder.bag_info import read_info
from recap_recorder.bag_repair import recover_mcap
from recap_recorder.images import compressed_payload, decode_compressed

pytestmark = pytest.mark.ros

CAMERA = "camera/base/image_raw"
#: what v4l2_camera / realsense offer with SENSOR_DATA QoS
SENSOR_DATA = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


def start_recorder(node_process, tmp_path):
    params = {
        "output_dir": str(tmp_path / "bags"),
        "min_free_disk_mb": 1.0,
        "status_rate_hz": 10.0,
        "cameras": ["base"],
        "topics": [CAMERA, "joint_states", "joint_command", "episode/status"],
    }
    proc = node_process("recap_recorder.recorder_node", params=params)
    assert proc.wait_for_output("recorder up", timeout=30), proc.output()
    return proc


def episode(pub, episode_id: str, state: str, **extra) -> None:
    values = {"episode_id": episode_id, "task": "stack the cups", "state": state, "source": "demo", **extra}
    values["label"] = state if state in ("success", "failure", "aborted") else ""
    pub.publish(diagnostic("episode_manager", values))


def recorded_fills(bag) -> list[int]:
    """The grey level of every recorded camera frame, in order."""
    recovered = recover_mcap(storage_file(bag))
    fills = []
    for message in recovered.messages:
        if recovered.channels[message.channel_id].topic == f"/{CAMERA}/compressed":
            fmt, data = compressed_payload(message.data)
            fills.append(int(decode_compressed(data, "jpeg", fmt)[4, 4, 0]))
    return fills


def test_a_best_effort_camera_is_recorded_frame_for_frame(node_process, probe, tmp_path):
    joints = probe.publisher(JointState, "joint_states", qos.SENSOR)  # reliable, like joint_state_broadcaster
    command = probe.publisher(JointState, "joint_command", qos.COMMAND)
    status_pub = probe.publisher(DiagnosticStatus, "episode/status", qos.LATCHED)
    recorder_status = probe.subscribe(DiagnosticStatus, "recorder/status", qos.LATCHED)
    recorder = start_recorder(node_process, tmp_path)
    for pub in (joints, command, status_pub):
        assert probe.wait_for_subscribers(pub, timeout=20), f"recorder never matched {pub.topic_name}"
    cam = probe.publisher(Image, CAMERA, SENSOR_DATA)  # the recorder asked reliable: it must subscribe again
    assert probe.wait_for_subscribers(cam, timeout=20), f"the best-effort camera was never matched\n{recorder.output()}"
    values = latest_diagnostic(
        recorder_status, timeout=10, predicate=lambda m: diagnostic_values(m).get("best_effort_topics") == CAMERA
    )  # and joint_states stays reliable, as its publisher is
    assert int(values["incompatible_publishers"]) == 1 and int(values["messages_lost"]) == 0, values
    assert "subscribing again best effort" in recorder.output()
    episode(status_pub, "", "idle")

    frame = np.zeros((32, 32, 3), np.uint8)

    def tick(k: int) -> None:
        frame[:] = k
        cam.publish(numpy_to_image(frame))
        joints.publish(joint_state(np.zeros(14)))
        command.publish(joint_state(np.full(14, 0.001 * k)))
        time.sleep(1 / 30)

    # Until the recorder's reader has matched our writer too, best-effort frames may go nowhere: warm up.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tick(0)
        silent = latest_diagnostic(recorder_status)["silent_topics"].split(",")
        if CAMERA not in silent and "joint_states" not in silent:
            break
    else:
        raise AssertionError(f"the recorder never heard the camera\n{recorder.output()}")
    episode(status_pub, "sim_aloha-0001", "running")
    time.sleep(0.3)
    frames = list(range(1, 151))  # 5 s at 30 Hz
    for k in frames:
        tick(k)
    time.sleep(0.3)
    episode(status_pub, "sim_aloha-0001", "success", stop_time="2026-01-01T10:00:05.000+00:00")
    time.sleep(0.3)
    episode(status_pub, "", "idle", last_episode_id="sim_aloha-0001", last_label="success")
    bag = tmp_path / "bags" / "sim_aloha-0001"
    deadline = time.monotonic() + 15
    while not (bag / "metadata.yaml").is_file():
        assert time.monotonic() < deadline, recorder.output()
        time.sleep(0.05)
    fills = recorded_fills(bag)
    if fills and fills[0] == 0:  # the newest frame from before the episode (the recorder's snapshot)
        fills = fills[1:]
    assert len(fills) == len(frames) and np.abs(np.array(fills) - frames).max() <= 2, fills
    assert read_info(bag).custom_data["recorder_dropped"] == "0"
    assert int(latest_diagnostic(recorder_status)["messages_lost"]) == 0
    assert recorder.alive()
