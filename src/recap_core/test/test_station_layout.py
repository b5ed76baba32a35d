"""A station of any layout: a 7-joint single arm, its gripper first, two cameras of its own names.

Its StationConfig, the dataset it writes, the models trained on it and the checks that keep a checkpoint on the
layout it was trained for; and the dataset's ``timestamp`` (frame_index / fps) beside its receive times.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recap_core.checkpoint import load_checkpoint
from recap_core.data import RecapDataset, load_frames_table, make_synthetic_dataset, schema
from recap_core.data.writer import DatasetWriter
from recap_core.layout import StationLayout, model_problem
from recap_core.models.configuration import PolicyConfig
from recap_core.models.processor import default_relative_mask, relative_mask_of
from recap_core.station import GRIPPER_JOINTS, JOINT_NAMES, StationConfig
from recap_core.testing import recap, refused

torch.set_num_threads(1)

ARM = ("gripper", "shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
CAMERAS = ("scene", "wrist")
QUIET = ["--no-progress", "--batch-size", "4", "--steps", "2", "--threads", "1"]


def arm_params(**changes) -> dict:
    params = {
        "station_name": "ur_arm",
        "joint_names": list(ARM),
        "gripper_joints": ["gripper"],
        "joint_lower_limits": [0.0] + [-3.0] * 6,
        "joint_upper_limits": [1.0] + [3.0] * 6,
        "joint_max_velocity": [2.0] + [1.5] * 6,
        "cameras": list(CAMERAS),
        "control_rate_hz": 30.0,
    }
    params.update(changes)
    return params


# ----------------------------------------------------------------------------------------- the station


def test_a_seven_joint_arm_with_its_gripper_first_is_a_station():
    station = StationConfig.from_params(arm_params())
    assert station.num_joints == 7 and station.gripper_indices == (0,)
    assert station.layout == StationLayout(ARM, ("gripper",), CAMERAS)
    assert station.max_step == pytest.approx(np.r_[2.0, [1.5] * 6] / 30.0)
    no_gripper = StationConfig.from_params(arm_params(gripper_joints=[]))
    assert no_gripper.gripper_joints == () and no_gripper.gripper_indices == ()
    # A params file's `[]` reaches a node as an unset value (None): the empty list.
    assert StationConfig.from_params(arm_params(gripper_joints=None)).gripper_joints == ()


def test_the_simulated_station_names_its_grippers():
    station = StationConfig.sim_aloha()
    assert station.gripper_joints == GRIPPER_JOINTS and station.gripper_indices == (6, 13)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"joint_names": []}, "joint_names is empty"),
        ({"joint_names": ["a", "b", "a", "c", "d", "e", "f"]}, "duplicates ['a']"),
        ({"gripper_joints": ["left_gripper"]}, "gripper_joints ['left_gripper'] are not station joints"),
        ({"gripper_joints": ["gripper", "gripper"]}, "gripper_joints has duplicates"),
        ({"cameras": []}, "cameras is empty"),
        ({"cameras": ["scene", "front/left"]}, "camera names ['front/left'] are not valid"),
        ({"cameras": ["scene", "2nd"]}, "camera names ['2nd'] are not valid"),
        ({"cameras": ["scene", "scene"]}, "cameras has duplicates"),
        ({"joint_upper_limits": [3.0] * 6}, "joint_upper_limits has 6 values, expected 7"),
        ({"joint_max_velocity": [1.0] * 6 + [0.0]}, "joint_max_velocity must be > 0"),
    ],
)
def test_a_bad_station_is_refused_in_one_line(changes, message):
    with pytest.raises(ValueError) as raised:
        StationConfig.from_params(arm_params(**changes))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_station_parameter_is_named():
    params = arm_params()
    del params["joint_lower_limits"]
    with pytest.raises(ValueError, match="joint_lower_limits is missing"):
        StationConfig.from_params(params)


def test_the_relative_mask_keeps_the_stations_grippers_absolute():
    assert default_relative_mask(7, (0,)) == [False] + [True] * 6
    assert default_relative_mask(3, ()) == [True] * 3
    with pytest.raises(ValueError, match="outside the 7 action dims"):
        default_relative_mask(7, (7,))


def test_a_model_that_does_not_fit_a_layout_is_told_why_in_one_line():
    layout = StationLayout(ARM, ("gripper",), CAMERAS)
    fits = PolicyConfig(cameras=CAMERAS, state_dim=7, action_dim=7)
    trained = {"joint_names": list(ARM), "gripper_joints": ["gripper"]}
    assert model_problem("policy", fits, trained, layout) == ""
    problems = [
        model_problem("policy", PolicyConfig(cameras=("scene", "top"), state_dim=7, action_dim=7), {}, layout),
        model_problem("policy", PolicyConfig(cameras=CAMERAS), {}, layout),
        model_problem("policy", fits, {**trained, "joint_names": list(reversed(ARM))}, layout),
        model_problem("policy", fits, {**trained, "gripper_joints": ["wrist_3"]}, layout, "dataset"),
        model_problem("policy", fits, {**trained, "gripper_joints": []}, layout),
    ]
    assert "camera(s) ['top']" in problems[0]
    assert "state of 14 joints, the station has 7" in problems[1]
    assert "order differ" in problems[2]
    assert "gripper joints ['wrist_3'], the dataset's are ['gripper']" in problems[3]
    assert "gripper joints [], the station's are ['gripper']" in problems[4]
    assert all(problem and "\n" not in problem for problem in problems)


# ----------------------------------------------------------------------------------------- its dataset


def arm_dataset(root, **kwargs):
    kwargs = {"num_episodes": 4, "image_size": 8, "max_episode_length": 30, "seed": 0, **kwargs}
    return make_synthetic_dataset(root, cameras=CAMERAS, joint_names=ARM, gripper_joints=("gripper",), **kwargs)


@pytest.fixture(scope="module")
def arm_data(tmp_path_factory):
    return arm_dataset(tmp_path_factory.mktemp("arm") / "arm")


def test_the_dataset_records_the_stations_layout(arm_data):
    info = schema.load_info(arm_data)
    for feature in (schema.STATE, schema.ACTION):
        assert info["features"][feature]["shape"] == [7] and info["features"][feature]["names"] == list(ARM)
    assert info["recap"]["gripper_joints"] == ["gripper"] and info["recap"]["cameras"] == list(CAMERAS)
    assert schema.info_layout(info) == StationLayout(ARM, ("gripper",), CAMERAS)
    dataset = RecapDataset(arm_data, chunk_size=5, image_size=8)
    item = dataset[0]
    assert item[schema.STATE].shape == (7,) and item[schema.ACTION].shape == (5, 7)
    assert set(k for k in item if k.startswith(schema.IMAGE_PREFIX)) == {
        "observation.images.scene",
        "observation.images.wrist",
    }
    assert dataset.layout.gripper_indices == (0,)


def test_appending_another_layout_is_refused(arm_data, tmp_path):
    root = tmp_path / "arm"
    shutil.copytree(arm_data, root)
    with pytest.raises(ValueError) as raised:
        DatasetWriter(root, joint_names=list(reversed(ARM)), image_shape=(8, 8), robot="synthetic")
    assert "joint_names: dataset has" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="gripper_joints: dataset has"):
        DatasetWriter(root, gripper_joints=(), image_shape=(8, 8), robot="synthetic")
    with DatasetWriter(root, image_shape=(8, 8), robot="synthetic") as writer:  # its own layout where not given
        assert writer.layout == StationLayout(ARM, ("gripper",), CAMERAS)
        with pytest.raises(ValueError, match=r"states must be \[T, 7\]"):
            writer.add_episode(
                states=np.zeros((3, 14)),
                actions=np.zeros((3, 14)),
                images={c: np.zeros((3, 8, 8, 3), np.uint8) for c in CAMERAS},
                is_intervention=np.zeros(3, bool),
                success=True,
                task="reach",
            )


def episode(length: int, cameras=CAMERAS, joints: int = 7) -> dict:
    return dict(
        states=np.zeros((length, joints)),
        actions=np.zeros((length, joints)),
        images={c: np.zeros((length, 8, 8, 3), np.uint8) for c in cameras},
        is_intervention=np.zeros(length, bool),
        success=True,
        task="reach",
    )


def test_timestamps_are_frame_index_over_fps_and_the_receive_times_have_their_own_column(tmp_path):
    received = np.array([0.0, 0.031, 0.034, 0.034, 0.09, 0.5])  # a late tick, two at once, a stall
    with DatasetWriter(tmp_path / "d", fps=30, cameras=CAMERAS, joint_names=ARM, gripper_joints=["gripper"],
                       image_shape=(8, 8)) as writer:  # fmt: skip
        writer.add_episode(**episode(6), receive_times=received)
        writer.add_episode(**episode(4))  # no clock (synthetic data): receive times are the nominal ones
    table = load_frames_table(tmp_path / "d")
    frame_index = table[schema.FRAME_INDEX].to_numpy()
    np.testing.assert_array_equal(table[schema.TIMESTAMP].to_numpy(), (frame_index / 30).astype(np.float32))
    np.testing.assert_array_equal(table[schema.RECEIVE_TIME].to_numpy(), np.r_[received, np.arange(4) / 30])
    info = schema.load_info(tmp_path / "d")
    assert info["features"][schema.RECEIVE_TIME]["dtype"] == "float64"
    stats = json.loads((tmp_path / "d" / schema.STATS_PATH).read_text())
    assert stats[schema.RECEIVE_TIME]["max"] == [0.5] and stats[schema.TIMESTAMP]["max"] == pytest.approx([5 / 30])
    item = RecapDataset(tmp_path / "d", chunk_size=2)[3]
    assert item[schema.TIMESTAMP] == pytest.approx(3 / 30) and item[schema.RECEIVE_TIME] == pytest.approx(0.034)
    with DatasetWriter(tmp_path / "d", fps=30, image_shape=(8, 8)) as writer:
        with pytest.raises(ValueError, match="receive_times must not decrease; frame 2"):
            writer.add_episode(**episode(3), receive_times=[0.0, 0.1, 0.05])


def test_a_dataset_written_before_layouts_and_receive_times_reads_as_the_simulated_station(tmp_path):
    """Such a dataset has the 14 simulated joints without gripper_joints, and receive times in ``timestamp``."""
    root = tmp_path / "old"
    cameras = ("base", "left_wrist")
    with DatasetWriter(root, cameras=cameras, image_shape=(8, 8)) as writer:
        writer.add_episode(**episode(4, cameras, 14), receive_times=[0.0, 0.02, 0.05, 0.06])
    info = schema.load_info(root)
    del info["features"][schema.RECEIVE_TIME], info["recap"]["gripper_joints"]
    (root / schema.INFO_PATH).write_text(json.dumps(info))
    stats = json.loads((root / schema.STATS_PATH).read_text())
    del stats[schema.RECEIVE_TIME]
    (root / schema.STATS_PATH).write_text(json.dumps(stats))
    for path in (root / "data").rglob("*.parquet"):
        table = pq.read_table(path)
        table = table.set_column(
            table.schema.get_field_index(schema.TIMESTAMP), schema.TIMESTAMP, table[schema.RECEIVE_TIME].cast("float32")
        ).drop_columns([schema.RECEIVE_TIME])
        pq.write_table(table, path)

    assert schema.info_layout(schema.load_info(root)) == StationLayout(JOINT_NAMES, GRIPPER_JOINTS, cameras)
    assert RecapDataset(root, chunk_size=2)[2][schema.RECEIVE_TIME] == pytest.approx(0.05)
    with DatasetWriter(root, image_shape=(8, 8)) as writer:  # appends in its own format
        writer.add_episode(**episode(3, cameras, 14))
    table = load_frames_table(root)
    assert schema.RECEIVE_TIME not in table.column_names and table.num_rows == 7
    assert RecapDataset(root, chunk_size=2)[5][schema.TIMESTAMP] == pytest.approx(1 / 50)


# ----------------------------------------------------------------------------------------- its models


@pytest.fixture(scope="module")
def arm_models(arm_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("arm_models")
    assert recap("train-value", arm_data, "--out", out / "value", *QUIET) == 0
    assert recap("train-policy", arm_data, "--mode", "bc", "--out", out / "policy", *QUIET) == 0
    return out


def test_models_trained_on_the_arm_take_its_layout_from_the_data(arm_models):
    for kind in ("value", "policy"):
        checkpoint = load_checkpoint(arm_models / kind, kind=kind)
        assert checkpoint.model_config.cameras == CAMERAS and checkpoint.model_config.state_dim == 7
        assert checkpoint.training_config["joint_names"] == list(ARM)
        assert checkpoint.training_config["gripper_joints"] == ["gripper"]
    policy = load_checkpoint(arm_models / "policy", kind="policy")
    assert policy.model_config.action_dim == 7
    assert relative_mask_of(policy.processor_steps) == [False] + [True] * 6  # the gripper stays absolute
    station = StationConfig.from_params(arm_params())
    assert model_problem("policy", policy.model_config, policy.training_config, station.layout) == ""
    other = StationConfig.from_params(arm_params(gripper_joints=["wrist_3"]))
    assert "gripper joints ['gripper']" in model_problem(
        "policy", policy.model_config, policy.training_config, other.layout
    )


def test_cameras_come_from_a_flag_checked_against_every_dataset(arm_data, tmp_path, capsys):
    assert recap("train-value", arm_data, "--cameras", "wrist", "--out", tmp_path / "v", *QUIET) == 0
    assert load_checkpoint(tmp_path / "v", kind="value").model_config.cameras == ("wrist",)
    err = refused(capsys, "train-policy", arm_data, "--cameras", "wrist,top", "--out", tmp_path / "p", *QUIET)
    assert "has no camera 'top'" in err and "['scene', 'wrist']" in err
    assert "not valid" in refused(capsys, "train-value", arm_data, "--cameras", "a/b", "--out", tmp_path / "q", *QUIET)


def test_data_of_another_layout_is_refused_in_one_line(arm_data, arm_models, tmp_path, capsys):
    sim = make_synthetic_dataset(tmp_path / "sim", num_episodes=2, image_size=8, max_episode_length=20)
    err = refused(capsys, "train-value", arm_data, sim, "--out", tmp_path / "v", *QUIET)
    assert "differ" in err and "one station layout" in err
    err = refused(capsys, "train-policy", sim, "--mode", "bc", "--init", arm_models / "policy", "--out",
                  tmp_path / "p", *QUIET)  # fmt: skip
    assert "cannot train on these datasets" in err and "reads camera(s) ['scene', 'wrist']" in err
    assert "drop --cameras" in refused(
        capsys, "train-value", arm_data, "--init", arm_models / "value", "--cameras", "scene", "--out",
        tmp_path / "v2", *QUIET,
    )  # fmt: skip
    sim_cameras = make_synthetic_dataset(
        tmp_path / "sim_cams", num_episodes=2, image_size=8, max_episode_length=20, cameras=CAMERAS
    )
    err = refused(capsys, "label", sim_cameras, "--value", arm_models / "value", "--no-progress")
    assert "cannot label it" in err and "takes a state of 7 joints, the dataset has 14" in err


def test_the_arm_dataset_is_labelled_by_its_own_value_model(arm_data, arm_models, tmp_path):
    root = tmp_path / "arm"
    shutil.copytree(arm_data, root)
    assert recap("label", root, "--value", arm_models / "value", "--no-progress") == 0
    assert RecapDataset(root, chunk_size=1).labelled
