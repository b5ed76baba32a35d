"""Sensor QoS (recap_ros.qos) in-process, in a private rclpy context: best-effort sensor subscriptions that a
lab overrides by parameter, and the recorder's subscriptions that adapt to what their publishers offer."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Int32

from recap_ros import qos
from recap_ros.params import ParameterError
from recap_ros.testing.procs import session_domain_id

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


class Ros:
    """Nodes in one private context, spun on a background thread."""

    def __init__(self):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=session_domain_id())
        self.executor = SingleThreadedExecutor(context=self.context)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.02)
            except Exception:  # a node destroyed under the executor at shutdown
                if self._stop.is_set():
                    return
                raise

    def node(self, name: str, **kwargs) -> Node:
        node = Node(name, context=self.context, **kwargs)
        self.executor.add_node(node)
        return node

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        rclpy.shutdown(context=self.context)


@pytest.fixture
def ros():
    session = Ros()
    yield session
    session.close()


def wait_until(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def publish_until_received(pub, received: list, value: int, timeout=10.0) -> bool:
    """Publish ``value`` until the subscriber has it (a first message may go out before the match)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(Int32(data=value))
        if wait_until(lambda: value in received, 0.1):
            return True
    return False


def test_reliability_is_adapted_as_rosbag2_adapts_it():
    R, B = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    assert qos.adapted_reliability([]) == R  # no publisher known yet: reliable, as rosbag2 requests
    assert qos.adapted_reliability([R, R]) == R
    assert qos.adapted_reliability([R, B]) == B and qos.adapted_reliability([B]) == B


def test_a_sensor_subscription_receives_from_reliable_and_best_effort_publishers(ros):
    subscriber, station = ros.node("subscriber"), ros.node("station")
    received: list[int] = []
    qos.subscribe_sensor(subscriber, Int32, "joint_states", lambda m: received.append(m.data))
    reliable = station.create_publisher(Int32, "joint_states", RELIABLE)
    best_effort = station.create_publisher(Int32, "joint_states", BEST_EFFORT)  # v4l2_camera's SENSOR_DATA
    assert publish_until_received(reliable, received, 1)
    assert publish_until_received(best_effort, received, 2)
    name = "qos_overrides./joint_states.subscription.reliability"
    assert subscriber.get_parameter(name).value == "best_effort"
    assert subscriber.describe_parameter(name).read_only
    assert qos.SENSOR_IN.reliability == ReliabilityPolicy.BEST_EFFORT and qos.SENSOR_IN.depth == 10


def test_a_lab_overrides_the_sensor_qos_by_parameter(ros):
    prefix = "qos_overrides./station1/joint_states.subscription"
    subscriber = ros.node(
        "subscriber",
        namespace="station1",
        parameter_overrides=[
            Parameter(f"{prefix}.reliability", value="reliable"),
            Parameter(f"{prefix}.depth", value=3),
        ],
    )
    station = ros.node("station", namespace="station1")
    received: list[int] = []
    subscription = qos.subscribe_sensor(subscriber, Int32, "joint_states", lambda m: received.append(m.data))
    assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE and subscription.qos_profile.depth == 3
    refused = threading.Event()
    best_effort = station.create_publisher(
        Int32,
        "joint_states",
        BEST_EFFORT,
        event_callbacks=PublisherEventCallbacks(incompatible_qos=lambda e: refused.set()),
    )
    reliable = station.create_publisher(Int32, "joint_states", RELIABLE)
    assert refused.wait(10), "a reliable subscription must not match a best-effort publisher"
    assert best_effort.get_subscription_count() == 0
    assert publish_until_received(reliable, received, 7)


@pytest.mark.parametrize(
    "policy, value, reason",
    [
        ("reliability", "sometimes", "expected one of \\['system_default', 'reliable', 'best_effort'"),
        ("history", "keep_some", "expected one of"),
        ("depth", -1, "out of range. Min: 0, Max: 100000"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_parameter(ros, policy, value, reason):
    name = f"qos_overrides./joint_states.subscription.{policy}"
    node = ros.node("subscriber", parameter_overrides=[Parameter(name, value=value)])
    with pytest.raises(ParameterError, match=reason) as caught:
        qos.subscribe_sensor(node, Int32, "joint_states", lambda m: None)
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_adapted_subscriptions_follow_what_publishers_offer(ros):
    station, recorder = ros.node("station"), ros.node("recorder")
    early = station.create_publisher(Int32, "camera", BEST_EFFORT)
    assert wait_until(lambda: recorder.get_publishers_info_by_topic("/camera")), "publisher never discovered"
    adapted = qos.AdaptedSubscriptions(recorder, depth=50)
    got: dict[str, list[int]] = {"camera": [], "joint_states": []}
    adapted.add(Int32, "camera", lambda m: got["camera"].append(m.data))
    adapted.add(Int32, "joint_states", lambda m: got["joint_states"].append(m.data))
    assert adapted.reliability("camera") == ReliabilityPolicy.BEST_EFFORT  # known when added
    assert adapted.reliability("joint_states") == ReliabilityPolicy.RELIABLE  # nobody offers anything yet
    assert publish_until_received(early, got["camera"], 1)
    reliable = station.create_publisher(Int32, "joint_states", RELIABLE)
    assert publish_until_received(reliable, got["joint_states"], 1)
    late = station.create_publisher(Int32, "joint_states", BEST_EFFORT)  # joins later: subscribed again
    assert wait_until(lambda: adapted.reliability("joint_states") == ReliabilityPolicy.BEST_EFFORT)
    assert publish_until_received(late, got["joint_states"], 2)
    assert publish_until_received(reliable, got["joint_states"], 3)  # best effort still matches reliable
    assert adapted.status() == {
        "best_effort_topics": "camera,joint_states",
        "incompatible_publishers": 1,
        "messages_lost": 0,
    }
