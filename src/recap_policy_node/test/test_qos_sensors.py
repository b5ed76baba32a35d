"""The policy node as a real process, fed the way real drivers publish: best-effort cameras in several encodings
(v4l2_camera and realsense with SENSOR_DATA QoS) and a best-effort joint_states. An encoding it cannot read is
refused, logged and counted while it keeps commanding; a lab overrides a sensor subscription's QoS by parameter."""

from __future__ import annotations

import array
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from recap_ros import qos
from recap_ros.conversions import joint_state
from recap_ros.images import numpy_to_image
from recap_ros.testing.image_transport import yuv422_bytes
from recap_ros.testing.probe import latest_diagnostic

pytestmark = pytest.mark.ros

SENSOR_DATA = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
#: one camera per kind of driver output
ENCODINGS = {"base": "bgr8", "left_wrist": "yuv422", "right_wrist": "mono8"}


def camera_image(rgb: np.ndarray, encoding: str, stamp) -> Image:
    if encoding != "yuv422":
        return numpy_to_image(rgb, stamp, encoding=encoding)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="yuv422", step=rgb.shape[1] * 2)
    msg.header.stamp = stamp
    msg.data = array.array("B", yuv422_bytes(rgb))
    return msg


class BestEffortDrivers:
    """Cameras and joint_states at 50 Hz with sensor-data QoS, from a thread on the probe."""

    def __init__(self, probe, size=64):
        self._cams = {c: probe.publisher(Image, f"camera/{c}/image_raw", SENSOR_DATA) for c in ENCODINGS}
        self._joints = probe.publisher(JointState, "joint_states", SENSOR_DATA)
        self._image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        self._node = probe.node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            stamp = self._node.get_clock().now().to_msg()
            for cam, pub in self._cams.items():
                pub.publish(camera_image(self._image, ENCODINGS[cam], stamp))
            self._joints.publish(joint_state(np.zeros(14), stamp=stamp))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.fixture
def drivers(probe):
    feed = BestEffortDrivers(probe)
    yield feed
    feed.stop()


def test_best_effort_drivers_drive_the_policy_and_an_unknown_encoding_is_counted(
    node_process, probe, drivers, tiny_checkpoints
):
    policy = node_process(
        "recap_policy_node.policy_node",
        params={"checkpoint": str(tiny_checkpoints["policy_a"]), "task": "reach", "inference_threads": 1},
    )
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    assert commands.wait_for(20, timeout=90), policy.output()
    before = latest_diagnostic(status)
    assert before["rejected_images"] == "0" and before["rejected_states"] == "0", before
    # A camera in an encoding the node does not read (a Bayer raw), on the same topic, reliable.
    bayer = probe.publisher(Image, "camera/base/image_raw", qos.SENSOR)
    assert probe.wait_for_subscribers(bayer, timeout=20)
    sent = 15
    for _ in range(sent):
        msg = Image(height=64, width=64, encoding="bayer_rggb8", step=64)
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        msg.data = array.array("B", bytes(64 * 64))
        bayer.publish(msg)
        time.sleep(0.05)  # best effort both ways: paced so that a busy node takes every one
    values = latest_diagnostic(status, timeout=10, predicate=lambda m: _rejected(m) >= sent)
    assert int(values["rejected_images"]) == sent, values
    assert "image encoding 'bayer_rggb8' is not supported" in policy.output()
    assert policy.alive(), policy.output()
    commands.clear()
    assert commands.wait_for(20, timeout=10), "the readable cameras must keep driving the policy"


def _rejected(msg) -> int:
    from recap_ros.conversions import diagnostic_values

    return int(diagnostic_values(msg).get("rejected_images", "0"))


def test_a_lab_makes_a_sensor_subscription_reliable_by_parameter(node_process, probe):
    overrides = {"qos_overrides": {"/joint_states": {"subscription": {"reliability": "reliable"}}}}
    policy = node_process("recap_policy_node.policy_node", params=overrides)
    refused = threading.Event()
    best_effort = probe.node.create_publisher(
        JointState,
        "joint_states",
        SENSOR_DATA,
        event_callbacks=PublisherEventCallbacks(incompatible_qos=lambda e: refused.set()),
    )
    reliable = probe.publisher(JointState, "joint_states", qos.SENSOR)
    assert probe.wait_for_subscribers(reliable, timeout=30), policy.output()
    assert refused.wait(10), "the reliable subscription must not match a best-effort publisher"
    assert best_effort.get_subscription_count() == 0
    values = probe.parameters("/policy_node")
    value, descriptor = values["qos_overrides./joint_states.subscription.reliability"]
    assert value == "reliable" and descriptor.read_only
    assert values["qos_overrides./camera/base/image_raw.subscription.reliability"][0] == "best_effort"


def test_a_bad_qos_override_stops_the_node_with_one_line(node_process):
    bad = {"qos_overrides": {"/joint_states": {"subscription": {"reliability": "sometimes"}}}}
    policy = node_process("recap_policy_node.policy_node", params=bad)
    assert policy.proc.wait(timeout=60) == 2, policy.output()
    lines = [line for line in policy.output().splitlines() if "[FATAL]" in line]
    assert len(lines) == 1 and "qos_overrides./joint_states.subscription.reliability" in lines[0], policy.output()
    assert "'sometimes'" in lines[0] and "best_effort" in lines[0] and "Traceback" not in policy.output()
