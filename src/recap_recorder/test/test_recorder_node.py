"""The recorder as a real process, fed by a probe that plays station, gate and episode manager."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String

from recap_ros import qos
from recap_ros.conversions import diagnostic, diagnostic_values, joint_state
from recap_ros.images import numpy_to_image
from recap_recorder.bag_files import BagError, storage_file
from recap_recorder.bag_info import read_info
from recap_recorder.bag_repair import recover_mcap, repair_bag

pytestmark = pytest.mark.ros

CAMERAS = ("base", "left_wrist", "right_wrist")


class Station:
    """Publishers for the recorded station topics, with what was published."""

    def __init__(self, probe):
        self.probe = probe
        self.status = probe.publisher(DiagnosticStatus, "episode/status", probe.LATCHED)
        self.images = {c: probe.publisher(Image, f"camera/{c}/image_raw") for c in CAMERAS}
        self.joints = probe.publisher(JointState, "joint_states")
        self.command = probe.publisher(JointState, "joint_command", qos.COMMAND)  # as the gate does
        self.intervention = probe.publisher(Bool, "intervention", probe.LATCHED)
        self.source = probe.publisher(String, "command_source", probe.LATCHED)
        self.recorder_status = probe.subscribe(DiagnosticStatus, "recorder/status", probe.LATCHED)
        self.sent = 0

    def wait_for_recorder(self):
        for pub in [self.status, self.joints, self.command, self.intervention, self.source, *self.images.values()]:
            assert self.probe.wait_for_subscribers(pub, timeout=20), f"recorder never subscribed to {pub.topic_name}"

    def warm_up(self, timeout=20.0):
        """Tick until the recorder has heard every stream this station sends. Seeing our subscriber is only
        half of the DDS match: until the recorder's reader has matched our writer as well, what we send
        reaches it later, as a reliable repair, possibly after the episode status that follows it."""
        ours = {f"camera/{c}/image_raw" for c in CAMERAS} | {"joint_states", "joint_command"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ticks(5)
            status = self.recorder_status.last()
            if status is not None and not ours & set(diagnostic_values(status)["silent_topics"].split(",")):
                return
        raise AssertionError(f"the recorder never heard all of {sorted(ours)}")

    def episode(self, episode_id, state, **extra):
        values = {
            "episode_id": episode_id,
            "task": "stack the cups",
            "state": state,
            "label": state if state in ("success", "failure", "aborted") else "",
            "steps": "0",
            "source": "demo",
            "policy_checkpoint": "",
            "beta": "",
            "station": "sim_aloha",
            "operator": "grace",
            "start_time": "2026-01-01T10:00:00.000+00:00",
            "stop_time": "",
        }
        values.update(extra)
        self.status.publish(diagnostic("episode_manager", values))

    def ticks(self, count, intervene_from=None):
        """``count`` 50 Hz control steps; the command's first joint carries its global number."""
        frame = np.zeros((32, 32, 3), np.uint8)
        for _ in range(count):
            k = self.sent
            if intervene_from is not None and k == intervene_from:
                self.intervention.publish(Bool(data=True))
                self.source.publish(String(data="teleop"))
            frame[:] = k % 256
            for pub in self.images.values():
                pub.publish(numpy_to_image(frame))
            self.joints.publish(joint_state(np.full(14, 0.001 * k)))
            command = np.zeros(14)
            command[0] = k
            self.command.publish(joint_state(command))
            self.sent += 1
            time.sleep(0.02)


def start_recorder(node_process, tmp_path, **params):
    params = {
        "output_dir": str(tmp_path / "bags"),
        "min_free_disk_mb": 1.0,
        "chunk_max_duration_s": 0.1,
        "status_rate_hz": 10.0,
        **params,
    }
    proc = node_process("recap_recorder.recorder_node", params=params)
    assert proc.wait_for_output("recorder up", timeout=30), proc.output()
    return proc


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def commands_in(path):
    recovered = recover_mcap(storage_file(path))
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    return [
        int(ts.deserialize_cdr(m.data, "sensor_msgs/msg/JointState").position[0])
        for m in recovered.messages
        if recovered.channels[m.channel_id].topic == "/joint_command"
    ]


def topic_images(path, topic):
    """Pixels of every image on ``topic`` (a ``/compressed`` topic is decoded)."""
    from recap_recorder.images import compressed_payload, decode_compressed, image_pixels

    def pixels(data):
        if not topic.endswith("/compressed"):
            return image_pixels(data)
        fmt, payload = compressed_payload(data)
        return decode_compressed(payload, "jpeg")

    recovered = recover_mcap(storage_file(path))
    return [pixels(m.data) for m in recovered.messages if recovered.channels[m.channel_id].topic == topic]


def test_two_episodes_give_two_bags_with_labels_counts_and_metadata(node_process, probe, tmp_path):
    station = Station(probe)
    recorder = start_recorder(node_process, tmp_path)
    station.wait_for_recorder()
    station.episode("", "idle")
    station.warm_up()
    station.ticks(10)  # before any episode: not recorded
    for episode_id, label, steps in (("sim_aloha-0001", "success", 40), ("sim_aloha-0002", "failure", 30)):
        station.episode(episode_id, "running")
        time.sleep(0.3)
        first = station.sent
        station.ticks(steps, intervene_from=first + 10 if label == "success" else None)
        time.sleep(0.3)
        station.episode(episode_id, label, steps=str(steps), stop_time="2026-01-01T10:00:05.000+00:00")
        time.sleep(0.3)
        station.episode("", "idle", last_episode_id=episode_id, last_label=label)
        assert wait_for(lambda: (tmp_path / "bags" / episode_id / "metadata.yaml").is_file()), recorder.output()
        info = read_info(tmp_path / "bags" / episode_id)
        counts = {t.name: t.count for t in info.topics}
        assert commands_in(info.path) == list(range(first, first + steps))
        # Every image of the episode, after the newest one from before it (snapshot) when that is recent.
        # (stored JPEG-compressed: a flat frame decodes to its grey level)
        fills = [int(p[0, 0, 0]) for p in topic_images(info.path, "/camera/right_wrist/image_raw/compressed")]
        expected = [k % 256 for k in range(first, first + steps)]
        assert fills in (expected, [(first - 1) % 256] + expected)
        assert counts["/joint_states"] == len(fills) and counts["/camera/base/image_raw/compressed"] == len(fills)
        assert "/camera/base/image_raw" not in counts and info.custom_data["image_compression"].startswith("jpeg")
        assert info.label == label and info.custom_data["task"] == "stack the cups"
        assert info.custom_data["operator"] == "grace" and info.custom_data["source"] == "demo"
        assert info.custom_data["recorder_dropped"] == "0" and info.custom_data["station"] == "sim_aloha"
        assert counts["/episode/status"] >= 2
    # The second episode starts with the latched intervention state from the first.
    assert {t.name: t.count for t in read_info(tmp_path / "bags" / "sim_aloha-0002").topics}["/intervention"] == 1
    assert wait_for(lambda: diagnostic_values(station.recorder_status.last()).get("bags_closed") == "2")
    assert recorder.alive()


def test_sigkill_mid_episode_then_repair_keeps_everything_up_to_the_last_chunk(node_process, probe, tmp_path):
    station = Station(probe)
    recorder = start_recorder(node_process, tmp_path)
    station.wait_for_recorder()
    station.warm_up()  # both halves of every DDS match first, or the episode's first commands arrive late
    first = station.sent
    station.episode("sim_aloha-0007", "running")
    time.sleep(0.3)
    station.ticks(60)
    sent_before_kill = station.sent - first
    os.kill(recorder.pid, signal.SIGKILL)
    recorder.proc.wait(5)
    station.ticks(5)  # after the kill: nobody records these
    bag = tmp_path / "bags" / "sim_aloha-0007"
    assert not (bag / "metadata.yaml").exists()
    with pytest.raises(BagError, match="recap bag repair"):
        read_info(bag)
    report = repair_bag(bag)
    kept = commands_in(report.output)
    # A prefix of what was published, losing at most the last chunk (0.1 s = 5 commands, plus delivery slack).
    assert kept == list(range(first, first + len(kept))) and sent_before_kill - 15 <= len(kept) <= sent_before_kill
    info = read_info(report.output)
    assert info.label == "unknown" and info.custom_data["repaired"] == "true"
    assert info.custom_data["episode_id"] == "sim_aloha-0007" and info.custom_data["operator"] == "grace"


def test_low_disk_refuses_the_episode_and_says_so_on_recorder_status(node_process, probe, tmp_path):
    station = Station(probe)
    recorder = start_recorder(node_process, tmp_path, min_free_disk_mb=1e9)
    station.wait_for_recorder()
    station.episode("sim_aloha-0009", "running")
    assert wait_for(
        lambda: (
            station.recorder_status.last() is not None
            and diagnostic_values(station.recorder_status.last()).get("episodes_refused") == "1"
        )
    )
    status = station.recorder_status.last()
    assert status.level in (2, b"\x02") and "sim_aloha-0009 NOT recorded" in status.message
    assert "min_free_disk_mb" in recorder.output()
    assert not (tmp_path / "bags" / "sim_aloha-0009").exists()


def test_a_bad_topic_entry_is_a_clear_startup_error(node_process, tmp_path):
    proc = node_process(
        "recap_recorder.recorder_node", params={"output_dir": str(tmp_path), "topics": ["joint_states", "my/pose"]}
    )
    assert proc.proc.wait(30) == 2
    assert "topic 'my/pose'" in proc.output() and "package/msg/Type" in proc.output()


def test_a_sensor_stream_that_stops_mid_episode_is_a_warning(node_process, probe, tmp_path):
    station = Station(probe)
    recorder = start_recorder(node_process, tmp_path, silent_after_s=0.3)
    station.wait_for_recorder()
    station.warm_up()
    station.episode("sim_aloha-0011", "running")
    station.ticks(10)
    assert diagnostic_values(station.recorder_status.last())["stalled_sensors"] == ""
    # The station stops sending: every camera and joint_states stall, and the status says which. The streams'
    # last messages arrived a few ms apart, so they pass the 0.3 s one after another: wait for all of them.
    assert wait_for(lambda: station.recorder_status.last().level in (1, b"\x01"), timeout=5), recorder.output()
    everything = {f"camera/{c}/image_raw" for c in CAMERAS} | {"joint_states"}

    def stalled() -> set[str]:
        return set(diagnostic_values(station.recorder_status.last())["stalled_sensors"].split(","))

    assert wait_for(lambda: stalled() == everything, timeout=5), stalled()
    status = station.recorder_status.last()
    assert status.level in (1, b"\x01")
    assert status.message.startswith("recording: no data on") and "0.3 s" in status.message
    station.ticks(3)
    assert wait_for(lambda: station.recorder_status.last().level in (0, b"\x00"), timeout=5)
    assert recorder.alive()
