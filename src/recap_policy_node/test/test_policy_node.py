"""The policy node as a real process on real topics."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from recap_ros.conversions import diagnostic, diagnostic_values, joint_state, stamp_to_seconds
from recap_ros.images import numpy_to_image

pytestmark = pytest.mark.ros

CAMERAS = ("base", "left_wrist", "right_wrist")


def checkpoint_id(path) -> str:
    return json.loads((path / "provenance.json").read_text())["checkpoint_id"]


def status_of(collector) -> dict:
    msg = collector.last()
    return diagnostic_values(msg) if msg is not None else {}


class FakeStation:
    """Publishes camera images and joint states at 50 Hz from the probe until stopped."""

    def __init__(self, probe, size=64):
        self._cams = {c: probe.publisher(Image, f"camera/{c}/image_raw") for c in CAMERAS}
        self._joints = probe.publisher(JointState, "joint_states")
        self._rng = np.random.default_rng(0)
        self._image = self._rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        self.cameras_on = True
        self._stop = threading.Event()
        self._node = probe.node
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            stamp = self._node.get_clock().now().to_msg()
            if self.cameras_on:
                for pub in self._cams.values():
                    pub.publish(numpy_to_image(self._image, stamp))
            self._joints.publish(joint_state(np.zeros(14), stamp=stamp))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.fixture
def fake_station(probe):
    station = FakeStation(probe)
    yield station
    station.stop()


def start_policy(node_process, checkpoint, **params):
    proc = node_process(
        "recap_policy_node.policy_node",
        params={"checkpoint": str(checkpoint), "task": "reach", "inference_threads": 1, **params},
    )
    return proc


def test_sim_station_under_a_tiny_checkpoint_commands_at_50hz(node_process, probe, tiny_checkpoints):
    station = node_process("recap_sim.station_node", params={"image_width": 64, "image_height": 64})
    assert station.wait_for_output("sim station up", timeout=60), station.output()
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    commands = probe.subscribe(JointState, "policy/joint_command")
    chunks = probe.subscribe(JointTrajectory, "policy/action_chunk")
    assert commands.wait_for(20, timeout=60), policy.output()
    commands.clear()
    window = 4.0
    time.sleep(window)
    msgs, stamps = commands.snapshot()
    rate = len(msgs) / window
    assert 47.5 <= rate <= 52.5, f"policy/joint_command at {rate:.1f} Hz"
    assert all(len(m.position) == 14 and np.all(np.isfinite(m.position)) for m in msgs)
    chunk = chunks.last()
    assert chunk is not None and len(chunk.points) == 50 and len(chunk.joint_names) == 14


def test_a_pi0_family_checkpoint_drives_the_sim_station(node_process, probe, family_checkpoint):
    """A policy initialised from a (tiny) pi0 in LeRobot's layout serves like any other: 50 Hz, 14 joints, CFG."""
    station = node_process("recap_sim.station_node", params={"image_width": 64, "image_height": 64})
    assert station.wait_for_output("sim station up", timeout=60), station.output()
    policy = start_policy(node_process, family_checkpoint, beta=1.5)
    commands = probe.subscribe(JointState, "policy/joint_command")
    chunks = probe.subscribe(JointTrajectory, "policy/action_chunk")
    status = probe.subscribe(DiagnosticStatus, "policy/status")
    assert commands.wait_for(20, timeout=60), policy.output()
    commands.clear()
    window = 3.0
    time.sleep(window)
    msgs, _ = commands.snapshot()
    assert 47.5 <= len(msgs) / window <= 52.5, f"policy/joint_command at {len(msgs) / window:.1f} Hz"
    assert all(len(m.position) == 14 and np.all(np.isfinite(m.position)) for m in msgs)
    chunk = chunks.last()
    assert chunk is not None and len(chunk.points) == 50 and len(chunk.joint_names) == 14
    assert status.wait_for(1, timeout=10)
    values = status_of(status)
    assert values["checkpoint_id"] == checkpoint_id(family_checkpoint) and float(values["beta"]) == 1.5


def test_beta_change_and_hot_reload(node_process, probe, tiny_checkpoints, fake_station):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    assert commands.wait_for(10, timeout=60), policy.output()
    assert status_of(status)["checkpoint_id"] == checkpoint_id(tiny_checkpoints["policy_a"])
    # advantage as_trained (the default): an SFT checkpoint is prompted positive; "none" drops the text
    assert status_of(status)["advantage"] == "as_trained" and status_of(status)["prompt_advantage"] == "positive"
    assert probe.set_parameters("/policy_node", {"advantage": "none"})[0].successful
    assert status.wait_for(1, timeout=5, predicate=lambda m: diagnostic_values(m)["prompt_advantage"] == "none")
    assert not probe.set_parameters("/policy_node", {"advantage": "maybe"})[0].successful

    result = probe.set_parameters("/policy_node", {"beta": 2.0})
    assert result[0].successful
    assert status.wait_for(1, timeout=5, predicate=lambda m: diagnostic_values(m)["beta"] == "2.0")
    refused = probe.set_parameters("/policy_node", {"beta": -1.0})
    assert not refused[0].successful and "beta" in refused[0].reason

    probe.set_parameters("/policy_node", {"checkpoint": str(tiny_checkpoints["policy_b"])})
    new_id = checkpoint_id(tiny_checkpoints["policy_b"])
    assert status.wait_for(1, timeout=30, predicate=lambda m: diagnostic_values(m)["checkpoint_id"] == new_id), (
        status_of(status)
    )
    commands.clear()
    assert commands.wait_for(10, timeout=10), "no commands after the hot reload"
    assert policy.alive()


def test_bad_checkpoint_is_a_clear_error_and_the_node_stays_up_silent(node_process, probe, tmp_path, fake_station):
    bogus = tmp_path / "not_a_checkpoint"
    bogus.mkdir()
    (bogus / "config.json").write_text("{ not json")
    policy = start_policy(node_process, bogus)
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    assert status.wait_for(1, timeout=30), policy.output()
    assert status_of(status)["state"] == "no_checkpoint"
    assert "cannot load policy checkpoint" in status_of(status)["reason"]
    time.sleep(2.0)
    assert len(commands) == 0 and policy.alive()
    assert "cannot load policy checkpoint" in policy.output()


def test_stale_cameras_stop_the_commands(node_process, probe, tiny_checkpoints, fake_station):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"], max_observation_age_ms=200.0)
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    assert commands.wait_for(10, timeout=60), policy.output()
    fake_station.cameras_on = False
    time.sleep(0.5)  # the age limit plus delivery
    commands.clear()
    time.sleep(1.5)
    assert len(commands) == 0, f"{len(commands)} commands from stale observations"
    st = status_of(status)
    assert st["state"] == "holding" and "stale observation" in st["reason"], st
    fake_station.cameras_on = True
    assert commands.wait_for(5, timeout=15), "commands did not resume with fresh observations"


def test_a_new_episode_is_planned_only_from_its_own_observations(node_process, probe, tiny_checkpoints, fake_station):
    """After a reset the world is different: no command may come from a plan made before it.

    The cameras go quiet before the episode starts (a reset in progress) while the joint states go
    on, and the node replans on every joint state: a chunk begun before the episode started, or
    planned from the last images before it, would reach the commands.
    """
    policy = start_policy(node_process, tiny_checkpoints["policy_a"], replan_steps=1, max_observation_age_ms=5000.0)
    episode = probe.publisher(DiagnosticStatus, "episode/status", probe.LATCHED)
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    chunks = probe.subscribe(JointTrajectory, "policy/action_chunk")
    assert commands.wait_for(20, timeout=60), policy.output()
    for k in range(3):
        fake_station.cameras_on = False
        time.sleep(0.1)
        started = probe.node.get_clock().now().nanoseconds * 1e-9
        episode.publish(diagnostic("episode_manager", {"episode_id": f"ep-{k}", "state": "running", "task": "reach"}))
        time.sleep(0.1)  # delivery of the status and of anything already planned
        commands.clear()
        chunks.clear()
        time.sleep(0.5)
        assert len(commands) == 0, f"episode {k}: {len(commands)} commands before any observation of it"
        assert len(chunks) == 0, f"episode {k}: chunks planned from observations before it"
        assert "waiting for the first observation of episode" in status_of(status).get("reason", ""), status_of(status)
        fake_station.cameras_on = True
        assert commands.wait_for(5, timeout=15), f"episode {k}: no commands once observed"
        planned_from = [stamp_to_seconds(c.header.stamp) for c in chunks.snapshot()[0]]
        assert planned_from and min(planned_from) >= started, (started, planned_from[:3])
    assert policy.alive()
