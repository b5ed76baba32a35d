"""Synthetic station streams for the recorder, bag and converter tests (no ROS needed).

Messages are serialised with rosbags' ROS 2 typestore, so they are the same
CDR bytes a raw rclpy subscription hands the recorder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from recap_core.station import JOINT_NAMES

CAMERAS = ("base", "left_wrist", "right_wrist")
PERIOD_NS = 20_000_000  # 50 Hz


class Synth:
    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.ts = get_typestore(Stores.ROS2_KILTED)
        self.T = self.ts.types

    def _header(self, stamp_ns: int):
        T = self.T
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=""
        )

    def status(self, episode_id: str, state: str, **extra) -> tuple[dict, bytes]:
        values = {
            "episode_id": episode_id,
            "task": "transfer the cube",
            "state": state,
            "label": state if state in ("success", "failure", "aborted") else "",
            "steps": "0",
            "interventions": "0",
            "source": "rollout",
            "policy_checkpoint": "ckpt-7",
            "beta": "1.5",
            "station": "sim_aloha",
            "operator": "ada",
            "seed": "3",
            "start_time": "2026-01-01T00:00:00.000+00:00",
            "stop_time": "",
        }
        values.update({k: str(v) for k, v in extra.items()})
        T = self.T
        msg = T["diagnostic_msgs/msg/DiagnosticStatus"](
            level=0,
            name="episode_manager",
            message=state,
            hardware_id="sim_aloha",
            values=[T["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in values.items()],
        )
        return values, bytes(self.ts.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticStatus"))

    def joints(self, positions, stamp_ns: int = 0) -> bytes:
        msg = self.T["sensor_msgs/msg/JointState"](
            header=self._header(stamp_ns),
            name=list(JOINT_NAMES),
            position=np.asarray(positions, np.float64),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        return bytes(self.ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))

    def image(self, fill: int, stamp_ns: int = 0, shape=(8, 8)) -> bytes:
        h, w = shape
        data = np.full((h, w, 3), fill % 256, np.uint8)
        data[0, 0] = (fill // 256) % 256, fill % 7, 1  # distinct frames even when fill wraps
        msg = self.T["sensor_msgs/msg/Image"](
            header=self._header(stamp_ns),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=data.reshape(-1),
        )
        return bytes(self.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def boolean(self, value: bool) -> bytes:
        return bytes(self.ts.serialize_cdr(self.T["std_msgs/msg/Bool"](data=bool(value)), "std_msgs/msg/Bool"))

    def string(self, value: str) -> bytes:
        return bytes(self.ts.serialize_cdr(self.T["std_msgs/msg/String"](data=value), "std_msgs/msg/String"))


@dataclasses.dataclass
class SyntheticEpisode:
    episode_id: str
    label: str
    commands: np.ndarray  # [T, 14] joint_command positions, in order
    command_ns: np.ndarray  # [T] receive times
    intervention: np.ndarray  # [T] flag in force at each command
    image_fill: dict  # camera -> [T] fill value of the image before each command


def feed_episode(
    recorder,
    synth: Synth,
    episode_id: str,
    label: str,
    *,
    steps: int,
    t0_ns: int = 10**18,
    cameras=CAMERAS,
    intervention_steps=(),
    image_shape=(8, 8),
    seed: int = 0,
    end: bool = True,
) -> SyntheticEpisode:
    """A 50 Hz episode as a station + gate + episode manager would produce it.

    Per tick: images (2 ms before), joint_states (1 ms before), then the
    intervention flag when it changes, then joint_command at ``t0 + k*20 ms``.
    """
    rng = np.random.default_rng(seed)
    values, data = synth.status(episode_id, "running")
    recorder.on_episode_status(values, data, t0_ns - 5_000_000)
    commands = rng.uniform(-0.5, 0.5, (steps, 14))
    commands[:, [6, 13]] = rng.uniform(0, 1, (steps, 2))
    command_ns = t0_ns + PERIOD_NS * np.arange(steps, dtype=np.int64)
    flags = np.zeros(steps, bool)
    for a, b in intervention_steps:
        flags[a:b] = True
    fills = {cam: np.zeros(steps, np.int64) for cam in cameras}
    current = False
    for k in range(steps):
        t = int(command_ns[k])
        for i, cam in enumerate(cameras):
            fills[cam][k] = 1000 * i + k
            recorder.on_message(f"camera/{cam}/image_raw", synth.image(1000 * i + k, t, image_shape), t - 2_000_000)
        recorder.on_message("joint_states", synth.joints(commands[k - 1] if k else commands[0], t), t - 1_000_000)
        if flags[k] != current:
            current = bool(flags[k])
            recorder.on_message("intervention", synth.boolean(current), t - 500_000)
            recorder.on_message("command_source", synth.string("teleop" if current else "policy"), t - 400_000)
        recorder.on_message("joint_command", synth.joints(commands[k], t), t)
        if k % 25 == 0:
            values, data = synth.status(episode_id, "running", steps=k)
            recorder.on_episode_status(values, data, t + 100_000)
    if end:
        t_end = int(command_ns[-1]) + 10_000_000
        values, data = synth.status(
            episode_id,
            label,
            steps=steps,
            stop_time="2026-01-01T00:00:09.000+00:00",
            interventions=len(intervention_steps),
        )
        recorder.on_episode_status(values, data, t_end)
        values, data = synth.status("", "idle", last_episode_id=episode_id, last_label=label)
        recorder.on_episode_status(values, data, t_end + 500_000_000)
    return SyntheticEpisode(episode_id, label, commands, command_ns, flags, fills)


def make_recorder(output_dir: Path, cameras=CAMERAS, disk_free=None, **overrides):
    from recap_recorder.episode_recorder import Recorder
    from recap_recorder.recorder_config import RecorderConfig, default_topics

    config = RecorderConfig(
        output_dir=output_dir, topics=default_topics(cameras), station="sim_aloha", cameras=tuple(cameras), **overrides
    )
    return Recorder(config, typestore=_SYNTH.ts, disk_free=disk_free)


_SYNTH = Synth()


@pytest.fixture(scope="session")
def synth() -> Synth:  # session: hypothesis tests share it (it holds no state)
    return _SYNTH


@pytest.fixture(scope="session")
def helpers():
    """make_recorder(output_dir, **config) and feed(recorder, episode_id, label, steps=..., ...) for
    module- or session-scoped fixtures."""
    import types

    return types.SimpleNamespace(
        make_recorder=make_recorder,
        synth=_SYNTH,
        feed=lambda recorder, *args, **kwargs: feed_episode(recorder, _SYNTH, *args, **kwargs),
    )


@pytest.fixture
def feed():
    """``feed(recorder, episode_id, label, steps=..., t0_ns=..., ...)`` -> SyntheticEpisode."""
    return lambda recorder, *args, **kwargs: feed_episode(recorder, _SYNTH, *args, **kwargs)


@pytest.fixture
def new_recorder(tmp_path):
    """``new_recorder(**config_overrides)`` -> a Recorder writing into ``tmp_path/bags``; closed after the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("output_dir", tmp_path / "bags")
        recorder = make_recorder(**kwargs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close()


@pytest.fixture(scope="session")
def example_bags(tmp_path_factory):
    """A closed bag (sim-0001, success, 120 steps) and a copy of one whose recorder was still writing
    (sim-0002, 150 steps fed, never ended: no metadata.yaml, no MCAP summary), small chunks."""
    import shutil

    root = tmp_path_factory.mktemp("example_bags")
    recorder = make_recorder(root / "rec", chunk_size_bytes=8192)
    try:
        feed_episode(recorder, _SYNTH, "sim-0001", "success", steps=120, image_shape=(16, 16))
        feed_episode(
            recorder, _SYNTH, "sim-0002", "failure", steps=150, t0_ns=2 * 10**18, image_shape=(16, 16), end=False
        )
        assert recorder.drain(20)
        killed = root / "killed" / "sim-0002"
        shutil.copytree(root / "rec" / "sim-0002", killed)
    finally:
        recorder.close()
    return {"complete": root / "rec" / "sim-0001", "killed": killed, "root": root}
