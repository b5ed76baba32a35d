"""The recorder without ROS: topics, episode boundaries, bags, metadata, drops, disk checks, chunks."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_recorder.bag_info import read_info
from recap_recorder.bag_metadata import resolve_topic
from recap_recorder.bag_repair import recover_mcap
from recap_recorder.bag_writer import EpisodeBagWriter
from recap_recorder.episode_tracker import EpisodeTracker, StartBag, StopBag
from recap_recorder.recorder_config import TopicSpec, default_topics
from recap_recorder.write_queue import BoundedQueue

STEPS = 60


def bag_dirs(root):
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_topic_entries_resolve_known_types_and_refuse_unknown_ones():
    assert TopicSpec.parse("joint_command") == TopicSpec("joint_command", "sensor_msgs/msg/JointState", "command")
    assert TopicSpec.parse("camera/top/image_raw").msgtype == "sensor_msgs/msg/Image"
    assert TopicSpec.parse("intervention").kind == "latched"
    assert TopicSpec.parse("my/pose:geometry_msgs/msg/PoseStamped").kind == "sensor"
    assert TopicSpec.parse("my/flag:std_msgs/msg/Bool:latched").kind == "latched"
    with pytest.raises(ValueError, match="give its type"):
        TopicSpec.parse("my/pose")
    with pytest.raises(ValueError, match="package/msg/Type"):
        TopicSpec.parse("my/pose:PoseStamped")
    names = [t.name for t in default_topics(("a", "b"))]
    assert names[:2] == ["camera/a/image_raw", "camera/b/image_raw"] and "episode/status" in names
    assert resolve_topic("joint_states", "/") == "/joint_states"
    assert resolve_topic("joint_states", "/station1") == "/station1/joint_states"
    assert resolve_topic("/clock", "/station1") == "/clock"


STATES = st.sampled_from(["idle", "running", "success", "failure", "aborted"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STATES, st.sampled_from(["e1", "e2", "e3", ""])), max_size=30))
def test_tracker_starts_each_episode_once_and_always_stops_before_starting_another(statuses):
    tracker = EpisodeTracker()
    open_id, started = None, []
    for state, episode_id in statuses:
        for action in tracker.update({"state": state, "episode_id": episode_id}):
            if isinstance(action, StartBag):
                assert open_id is None, "a bag started while another was open"
                assert action.episode_id not in started, "an episode was recorded twice"
                assert state == "running" and action.episode_id == episode_id
                open_id = action.episode_id
                started.append(open_id)
            else:
                assert isinstance(action, StopBag) and action.episode_id == open_id
                assert action.label in ("success", "failure", "aborted", "unknown")
                if action.label != "unknown":
                    assert state == action.label and episode_id == open_id
                open_id = None
        assert tracker.recording == open_id


def test_tracker_labels_from_idle_status_when_the_terminal_one_was_missed():
    tracker = EpisodeTracker()
    tracker.update({"state": "idle"})
    [start] = tracker.update({"state": "running", "episode_id": "e1", "steps": "0"})
    assert not start.partial_start
    [stop] = tracker.update({"state": "idle", "last_episode_id": "e1", "last_label": "failure"})
    assert stop.label == "failure"
    late = EpisodeTracker()
    [start] = late.update({"state": "running", "episode_id": "e2", "steps": "120"})
    assert start.partial_start


def test_bounded_queue_refuses_past_its_byte_and_message_limits():
    q = BoundedQueue(max_bytes=100, max_messages=3)
    assert q.put("a", 60) and not q.put("b", 50) and q.put("c", 40)
    assert not q.put("d", 0) or q.depth()[0] <= 3
    assert q.put("control", None)  # control items always fit
    assert q.get(0.1) == "a" and not q.idle()
    q.done()
    assert q.depth()[1] == 40


def test_two_episodes_make_two_bags_with_metadata_and_counts(tmp_path, new_recorder, feed):
    recorder = new_recorder()
    first = feed(recorder, "sim-0001", "success", steps=STEPS, t0_ns=10**18, intervention_steps=[(10, 20)])
    second = feed(recorder, "sim-0002", "failure", steps=STEPS + 5, t0_ns=10**18 + 10 * 10**9, seed=1)
    assert recorder.drain(20)
    assert recorder.status()["bags_closed"] == 2
    found = bag_dirs(tmp_path / "bags")
    assert [p.name for p in found] == ["sim-0001", "sim-0002"]
    for path, episode in zip(found, (first, second)):
        info = read_info(path)
        steps = len(episode.commands)
        counts = {t.name: t.count for t in info.topics}
        assert counts["/joint_command"] == steps
        # images are stored JPEG-compressed under <topic>/compressed, and none fell back to the raw topic
        assert counts["/camera/base/image_raw/compressed"] == steps and counts["/joint_states"] == steps
        assert not any(t.name.endswith("/image_raw") for t in info.topics)
        assert info.label == episode.label
        meta = info.custom_data
        assert meta["task"] == "transfer the cube" and meta["source"] == "rollout"
        assert meta["policy_checkpoint"] == "ckpt-7" and meta["beta"] == "1.5" and meta["operator"] == "ada"
        assert meta["station"] == "sim_aloha" and meta["start_time"].startswith("2026-01-01T00:00:00")
        assert meta["stop_time"].startswith("2026-01-01T00:00:09") and meta["repaired"] == "false"
        assert meta["cameras"] == "base,left_wrist,right_wrist" and meta["namespace"] == "/"
        received = json.loads(meta["recorder_received"])
        assert received["joint_command"] == steps and meta["recorder_dropped"] == "0"
        assert all(received.get(t.name.lstrip("/").removesuffix("/compressed"), 0) == t.count for t in info.topics)
        assert meta["image_compression"] == "jpeg quality 95 subsampling 420"
        assert json.loads(meta["recorder_uncompressed"]) == {}
        assert 1.0 < info.duration_s < 2.0
    assert read_info(found[0]).custom_data["interventions"] == "1"
    # The second episode starts with the latched flags from before it (snapshot), not with stale images.
    second_info = {t.name: t.count for t in read_info(found[1]).topics}
    assert second_info["/intervention"] == 1 and second_info["/command_source"] == 1


def test_an_episode_starting_soon_after_sensor_data_gets_the_newest_sample_at_its_start(
    tmp_path, new_recorder, feed, synth
):
    recorder = new_recorder()
    t0 = 10**18
    recorder.on_message("camera/base/image_raw", synth.image(7, t0), t0 - 300_000_000)
    recorder.on_message("joint_states", synth.joints(np.zeros(14), t0), t0 - 200_000_000)
    recorder.on_message("joint_command", synth.joints(np.zeros(14), t0), t0 - 100_000_000)  # not state
    feed(recorder, "sim-0001", "success", steps=10, t0_ns=t0)
    assert recorder.drain(20)
    counts = {t.name: t.count for t in read_info(tmp_path / "bags" / "sim-0001").topics}
    assert counts["/camera/base/image_raw/compressed"] == 11 and counts["/joint_states"] == 11
    assert counts["/joint_command"] == 10 and counts["/camera/left_wrist/image_raw/compressed"] == 10


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_callback(tmp_path, new_recorder, feed, monkeypatch):
    release = threading.Event()
    original = EpisodeBagWriter.write

    def slow_write(self, *args):
        release.wait(10)
        original(self, *args)

    monkeypatch.setattr(EpisodeBagWriter, "write", slow_write)
    recorder = new_recorder(max_queue_messages=40)
    feed(recorder, "sim-0001", "success", steps=30)  # ~150 messages into a 40-message queue
    dropped = recorder.totals["queue_overflows"]
    assert dropped > 50
    release.set()
    assert recorder.drain(20)
    info = read_info(tmp_path / "bags" / "sim-0001")
    received = json.loads(info.custom_data["recorder_received"])
    overflows = json.loads(info.custom_data["recorder_queue_overflows"])
    assert int(info.custom_data["recorder_dropped"]) == dropped == sum(overflows.values())
    assert sum(received.values()) - dropped == info.message_count
    assert info.label == "success"


def test_low_disk_refuses_the_episode_with_a_clear_status(tmp_path, new_recorder, feed):
    recorder = new_recorder(disk_free=lambda path: 10 * 2**20, min_free_disk_bytes=500 * 2**20)
    feed(recorder, "sim-0001", "success", steps=10)
    assert recorder.drain(10)
    status = recorder.status()
    assert status["episodes_refused"] == 1 and status["bags_closed"] == 0
    assert "sim-0001 NOT recorded" in status["last_error"] and "10 MB free" in status["last_error"]
    assert not (tmp_path / "bags" / "sim-0001").exists()


def test_stopping_mid_episode_closes_a_valid_bag_labelled_aborted(tmp_path, new_recorder, feed):
    recorder = new_recorder()
    feed(recorder, "sim-0001", "success", steps=20, end=False)
    recorder.close()
    info = read_info(tmp_path / "bags" / "sim-0001")
    assert info.label == "aborted" and info.custom_data["stop_reason"] == "recorder stopped before the episode ended"
    assert {t.name: t.count for t in info.topics}["/joint_command"] == 20


def test_closed_chunks_are_on_disk_while_the_episode_is_still_recording(tmp_path, new_recorder, feed):
    recorder = new_recorder(chunk_size_bytes=8192)
    episode = feed(recorder, "sim-0001", "success", steps=200, end=False, image_shape=(16, 16))
    assert recorder.drain(20)
    mcap = tmp_path / "bags" / "sim-0001" / "sim-0001.mcap"
    recovered = recover_mcap(mcap)  # what a SIGKILL right now would leave
    commands = [m for m in recovered.messages if recovered.channels[m.channel_id].topic == "/joint_command"]
    assert not recovered.complete and 150 <= len(commands) <= 200
    assert [m.log_time for m in commands] == list(episode.command_ns[: len(commands)])


def test_status_lists_silent_topics_and_the_sensor_streams_that_stopped(new_recorder, synth):
    recorder = new_recorder(silent_after_s=1.0)
    t0 = 10**18
    silent, stalled = recorder.silent_topics(now_ns=t0)
    assert "joint_states" in silent and "camera/base/image_raw" in silent and stalled == []
    assert "intervention" not in silent and "episode/status" not in silent  # latched: silent by nature
    recorder.on_message("joint_states", synth.joints(np.zeros(14)), t0)
    recorder.on_message("joint_command", synth.joints(np.zeros(14)), t0)
    recorder.on_message("camera/base/image_raw", synth.image(1), t0 + 900_000_000)
    silent, stalled = recorder.silent_topics(now_ns=t0 + 500_000_000)
    assert "joint_states" not in silent and "joint_command" not in silent and "camera/left_wrist/image_raw" in silent
    silent, stalled = recorder.silent_topics(now_ns=t0 + 1_500_000_000)
    # Heard sensor streams that went quiet are "stalled"; a command stream may pause, a never-heard one
    # is a node that is not running.
    assert stalled == ["joint_states"] and {"joint_states", "joint_command"} <= set(silent)
    assert "camera/base/image_raw" not in silent
