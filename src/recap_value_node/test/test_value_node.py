"""The value node as a real process on real topics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray
from visualization_msgs.msg import MarkerArray

from recap_ros.conversions import diagnostic, diagnostic_values, joint_state
from recap_ros.images import image_to_rgb, numpy_to_image

pytestmark = pytest.mark.ros

CAMERAS = ("base", "left_wrist", "right_wrist")


class Streams:
    """50 Hz camera images and joint states; ``cameras_on = False`` silences the cameras (a reset)."""

    cameras_on = True


@pytest.fixture
def observations(probe):
    cams = {c: probe.publisher(Image, f"camera/{c}/image_raw") for c in CAMERAS}
    joints = probe.publisher(JointState, "joint_states")
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    stop = threading.Event()
    streams = Streams()

    def run():
        while not stop.is_set():
            stamp = probe.node.get_clock().now().to_msg()
            if streams.cameras_on:
                for pub in cams.values():
                    pub.publish(numpy_to_image(image, stamp))
            joints.publish(joint_state(np.zeros(14), stamp=stamp))
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield streams
    stop.set()
    thread.join(timeout=2)


def test_publishes_estimate_distribution_markers_and_plot(node_process, probe, tiny_checkpoints, observations):
    proc = node_process(
        "recap_value_node.value_node",
        params={
            "checkpoint": str(tiny_checkpoints["value"]),
            "task": "reach",
            "rate_hz": 10.0,
            "plot_width": 320,
            "plot_height": 160,
        },
    )
    estimate = probe.subscribe(Float32, "value/estimate")
    dist = probe.subscribe(Float32MultiArray, "value/distribution")
    markers = probe.subscribe(MarkerArray, "value/markers")
    plot = probe.subscribe(Image, "value/plot")
    status = probe.subscribe(DiagnosticStatus, "value/status", probe.LATCHED)
    assert estimate.wait_for(5, timeout=60), proc.output()
    assert dist.wait_for(1) and markers.wait_for(1) and plot.wait_for(2, timeout=10)
    values = [m.data for m in estimate.snapshot()[0]]
    assert all(-1.0 <= v <= 0.0 for v in values), values
    d = np.asarray(dist.last().data)
    assert d.shape == (201,) and abs(d.sum() - 1.0) < 1e-3 and np.all(d >= 0)
    kinds = sorted(m.type for m in markers.last().markers)
    assert len(kinds) == 3 and markers.last().markers[1].text.startswith("V = ")
    img = image_to_rgb(plot.last())
    assert img.shape == (160, 320, 3)
    estimate.clear()
    time.sleep(2.0)
    assert 12 <= len(estimate) <= 28, f"{len(estimate)} estimates in 2 s at rate_hz 10"
    assert status.wait_for(1, timeout=5)
    assert diagnostic_values(status.last())["checkpoint_id"].startswith("value-")


def test_bad_checkpoint_keeps_the_node_up_and_says_why(node_process, probe, tmp_path, observations):
    proc = node_process("recap_value_node.value_node", params={"checkpoint": str(tmp_path / "missing")})
    status = probe.subscribe(DiagnosticStatus, "value/status", probe.LATCHED)
    estimate = probe.subscribe(Float32, "value/estimate")
    assert status.wait_for(1, timeout=30), proc.output()
    assert "cannot load value checkpoint" in diagnostic_values(status.last())["error"]
    time.sleep(1.5)
    assert len(estimate) == 0 and proc.alive()


def test_a_new_episode_is_valued_only_from_its_own_observations(node_process, probe, tiny_checkpoints, observations):
    """The operator's curve and the human's take-over cue start from the reset world, not the last one."""
    proc = node_process(
        "recap_value_node.value_node",
        params={
            "checkpoint": str(tiny_checkpoints["value"]),
            "task": "reach",
            "rate_hz": 20.0,
            "max_observation_age_ms": 5000.0,
        },
    )
    episode = probe.publisher(DiagnosticStatus, "episode/status", probe.LATCHED)
    estimate = probe.subscribe(Float32, "value/estimate")
    assert estimate.wait_for(5, timeout=60), proc.output()
    for k in range(2):
        observations.cameras_on = False  # a reset in progress: the joints go on, the cameras not
        time.sleep(0.1)
        episode.publish(diagnostic("episode_manager", {"episode_id": f"ep-{k}", "state": "running", "task": "reach"}))
        time.sleep(0.2)  # delivery of the status and of an estimate already under way
        estimate.clear()
        time.sleep(0.5)  # the last images are still within max_observation_age_ms
        assert len(estimate) == 0, f"episode {k}: {len(estimate)} estimates before any image of it"
        observations.cameras_on = True
        assert estimate.wait_for(3, timeout=10), f"episode {k}: no estimates once observed"
    assert proc.alive()


def test_an_estimate_inferred_across_a_reset_is_dropped():
    """An inference that began on the episode before and ends after the reset is not the new episode's value.

    In-process, driving ``_evaluate`` by hand: the runner resets the episode mid-inference.
    """
    import rclpy

    from recap_ros.testing.probe import session_domain_id
    from recap_value_node.value_node import ValueNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=session_domain_id())
    node = ValueNode(context=context)
    try:
        node.close()  # the test drives _evaluate itself
        bins = np.full(8, 1 / 8, dtype=np.float32)

        class Runner:
            reset_during_inference = True

            def infer(self, obs):
                if self.reset_during_inference:
                    node._on_episode(diagnostic("episode_manager", {"episode_id": "next", "state": "running"}))
                return {"value": -0.01, "distribution": bins}

        node._runner = Runner()
        node._observation = lambda: {"an": "observation"}
        estimate = node.create_subscription(Float32, "value/estimate", lambda msg: None, 10)
        node._evaluate()
        assert node.counters["discarded_previous_episode"] == 1 and node.counters["estimates"] == 0
        assert node._latest is None and len(node.history.arrays()[0]) == 0
        Runner.reset_during_inference = False
        node._evaluate()
        assert node.counters["estimates"] == 1 and node._latest[0] == pytest.approx(-0.01)
        assert len(node.history.arrays()[0]) == 1
        Runner.infer = lambda self, obs: {"value": float("nan"), "distribution": bins}
        node._evaluate()  # a non-finite estimate is an error, counted; the inference thread goes on
        assert node.counters["errors"] == 1 and node.counters["estimates"] == 1
        node.destroy_subscription(estimate)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
