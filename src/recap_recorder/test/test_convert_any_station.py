"""Bags of a station that is not the simulated ALOHA convert into a dataset with that station's layout.

A 7-joint single arm (its gripper first) with cameras ``scene`` and ``wrist`` at 25 Hz: its joint_states come in
another order than the station's (as joint_state_broadcaster sends them), the gate's commands in the station's.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from recap_core.data import load_frames_table, schema
from recap_core.layout import StationLayout
from recap_core.testing import recap
from recap_recorder.bag_to_dataset import convert_bags

ARM = ("gripper", "shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
SHUFFLED = ("elbow", "gripper", "wrist_3", "shoulder_pan", "wrist_2", "shoulder_lift", "wrist_1")
CAMERAS = ("scene", "wrist")
PERIOD_NS = 40_000_000  # 25 Hz
STATION = {
    "/**": {
        "ros__parameters": {
            "station_name": "ur_arm",
            "joint_names": list(ARM),
            "gripper_joints": ["gripper"],
            "joint_lower_limits": [0.0] + [-3.0] * 6,
            "joint_upper_limits": [1.0] + [3.0] * 6,
            "joint_max_velocity": [2.0] + [1.5] * 6,
            "cameras": list(CAMERAS),
            "control_rate_hz": 25.0,
        }
    }
}


def joints(synth, names, positions, stamp_ns: int) -> bytes:
    msg = synth.T["sensor_msgs/msg/JointState"](
        header=synth._header(stamp_ns),
        name=list(names),
        position=np.asarray(positions, np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def record_arm_episode(output_dir, synth, episode_id: str, *, steps: int = 40, seed: int = 0) -> np.ndarray:
    """One success episode of the arm through the real Recorder; returns the commands ``[steps, 7]``."""
    from recap_recorder.episode_recorder import Recorder
    from recap_recorder.recorder_config import RecorderConfig, default_topics

    config = RecorderConfig(output_dir=output_dir, topics=default_topics(CAMERAS), station="ur_arm", cameras=CAMERAS)
    recorder = Recorder(config, typestore=synth.ts)
    rng = np.random.default_rng(seed)
    commands = rng.uniform(-0.5, 0.5, (steps, 7))
    commands[:, 0] = rng.uniform(0, 1, steps)
    order = [ARM.index(name) for name in SHUFFLED]
    t0 = 10**18 + seed * 10**12
    try:
        values, data = synth.status(episode_id, "running", station="ur_arm")
        recorder.on_episode_status(values, data, t0 - 5_000_000)
        for k in range(steps):
            t = t0 + k * PERIOD_NS
            for i, camera in enumerate(CAMERAS):
                recorder.on_message(f"camera/{camera}/image_raw", synth.image(100 * i + k, t), t - 2_000_000)
            state = commands[k - 1] if k else commands[0]
            recorder.on_message("joint_states", joints(synth, SHUFFLED, state[order], t), t - 1_000_000)
            recorder.on_message("joint_command", joints(synth, ARM, commands[k], t), t)
        end = t0 + steps * PERIOD_NS
        values, data = synth.status(episode_id, "success", steps=steps, station="ur_arm")
        recorder.on_episode_status(values, data, end)
        values, data = synth.status("", "idle", last_episode_id=episode_id, last_label="success")
        recorder.on_episode_status(values, data, end + 500_000_000)
        assert recorder.drain(20)
    finally:
        recorder.close()
    return commands


@pytest.fixture(scope="module")
def arm_bags(tmp_path_factory, helpers):
    root = tmp_path_factory.mktemp("arm_bags")
    commands = {f"arm-000{n}": record_arm_episode(root, helpers.synth, f"arm-000{n}", seed=n) for n in (1, 2)}
    station_file = root / "station.yaml"
    station_file.write_text(yaml.safe_dump(STATION))
    return {"root": root, "commands": commands, "station": station_file}


def test_a_bag_that_records_no_gripper_joints_asks_for_the_station(arm_bags, tmp_path, capsys):
    assert recap("convert", arm_bags["root"] / "arm-0001", "--out", tmp_path / "d", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "records no gripper_joints" in err and "--station" in err


def test_the_arm_converts_with_its_station_file(arm_bags, tmp_path):
    out = tmp_path / "arm"
    bag = arm_bags["root"] / "arm-0001"
    assert recap("convert", bag, "--out", out, "--station", arm_bags["station"], "--no-progress") == 0
    info = schema.load_info(out)
    assert schema.info_layout(info) == StationLayout(ARM, ("gripper",), CAMERAS) and info["fps"] == 25
    table = load_frames_table(out)
    fed = arm_bags["commands"]["arm-0001"]
    actions = np.array(table["action"].to_pylist())
    states = np.array(table["observation.state"].to_pylist())
    assert actions.shape[1] == 7 and np.allclose(actions, fed[-len(actions) :], atol=1e-6)
    assert np.allclose(states[1:], fed[-len(actions) : -1], atol=1e-6)  # joint_states put in the station's order
    frame_index = table[schema.FRAME_INDEX].to_numpy()
    np.testing.assert_array_equal(table[schema.TIMESTAMP].to_numpy(), (frame_index / 25).astype(np.float32))
    np.testing.assert_allclose(np.diff(table[schema.RECEIVE_TIME].to_numpy()), 0.04, atol=1e-9)


def test_a_bag_that_records_its_layout_converts_without_a_flag_and_another_layout_is_not_appended(
    arm_bags, tmp_path, helpers
):
    import shutil

    bag = tmp_path / "arm-0002"
    shutil.copytree(arm_bags["root"] / "arm-0002", bag)
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())
    custom = metadata["rosbag2_bagfile_information"]["custom_data"]
    custom.update(joint_names=",".join(ARM), gripper_joints="gripper")
    (bag / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    sim = helpers.make_recorder(tmp_path / "sim")
    try:
        helpers.feed(sim, "sim-0001", "success", steps=30)
        assert sim.drain(20)
    finally:
        sim.close()

    outcomes = convert_bags([bag, tmp_path / "sim" / "sim-0001"], tmp_path / "d", progress=False)
    assert [o.status for o in outcomes] == ["converted", "failed"]
    assert "its joints" in outcomes[1].reason and "differ from" in outcomes[1].reason
    assert schema.info_layout(schema.load_info(tmp_path / "d")).gripper_joints == ("gripper",)
