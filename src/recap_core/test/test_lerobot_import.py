"""``recap dataset import-lerobot``: a native LeRobot v3.0 dataset, written by LeRobot's own writer
(test/data/lerobot_v3_sample, see its README), imported as demonstrations and trained on.

The expected values are those make_sample.py wrote, pinned here: episode lengths, tasks, which episodes succeed,
the joint values (10 * joint + episode + 0.01 * frame, joints shoulder, elbow, wrist, gripper) and each frame's
colour (red 40 + 12 * frame, green 30 + 40 * episode, blue 200 - 10 * frame) with a white (video camera) or black
(image camera) 8-pixel square in the top-left corner. The video camera is AV1 (LeRobot's default codec).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av  # noqa: F401  (the video camera is decoded with PyAV)
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recap_core import cli
from recap_core.checkpoint import load_checkpoint
from recap_core.data import load_episodes, load_frames_table, load_info, load_tasks, schema
from recap_core.data.lerobot_import import (
    LeRobotImportError,
    feature_names,
    import_lerobot,
    parse_image_size,
    parse_map,
)
from recap_core.models import PolicyRunner

torch.set_num_threads(1)
SAMPLE = Path(__file__).resolve().parent / "data" / "lerobot_v3_sample" / "dataset"
LENGTHS = (12, 15, 10, 14, 11)
TASKS = ("pick up the red cube", "push the blue cube to the left")
SUCCESSFUL = (0, 1, 3)
STATE_NAMES = ["shoulder.pos", "elbow.pos", "wrist.pos", "gripper.pos"]
CAMERAS = "overhead=base,gripper_view=left_wrist"
QUIET = ["--no-progress", "--batch-size", "4"]
TOLERANCE = 8  # grey levels: AV1 at crf 30, then JPEG q95 and a 48 -> 32 px resize


def recap(*argv) -> int:
    return cli.main([str(a) for a in argv])


def refused(capsys, *argv) -> str:
    """A command that must fail as a user error: exit 2, one line on stderr (returned), no traceback."""
    capsys.readouterr()
    assert recap(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def background(episode: int, frame: int) -> np.ndarray:
    return np.array([40 + 12 * frame, 30 + 40 * episode, 200 - 10 * frame], float)


def images(root: Path, camera: str) -> list[np.ndarray]:
    """Every stored frame of a camera, decoded, in dataset order."""
    info = load_info(root)
    table = pq.read_table(sorted((root / "data").glob("chunk-*/file-*.parquet"))[0])
    cells = table.sort_by("index")[schema.camera_key(camera)].to_pylist()
    return [schema.decode_image(c["bytes"], "jpeg", schema.info_image_shape(info)) for c in cells]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "demos"
    argv = ["dataset", "import-lerobot", SAMPLE, out, "--cameras", CAMERAS, "--success-column", "next.success"]
    assert recap(*argv, "--image-size", "32") == 0
    return out


def test_the_sample_is_lerobots_own_v3_layout():
    info = json.loads((SAMPLE / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and "recap" not in info
    assert info["features"]["observation.images.overhead"]["dtype"] == "video"
    assert info["features"]["observation.images.overhead"]["info"]["video.codec"] == "av1"
    assert info["features"]["observation.images.gripper_view"]["dtype"] == "image"
    tasks = pq.read_table(SAMPLE / "meta/tasks.parquet")
    assert "task" not in tasks.column_names  # the prompt is the pandas index: what broke `recap train-value`
    episodes = pq.read_table(SAMPLE / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["videos/observation.images.overhead/file_index"] for e in episodes] == [0] * 5  # one mp4, 5 episodes
    assert [e["videos/observation.images.overhead/from_timestamp"] for e in episodes] == pytest.approx(
        [0.0, 1.2, 2.7, 3.7, 5.1]
    )


def test_episodes_tasks_success_and_joints_are_the_written_ones(imported):
    info = load_info(imported)
    layout = schema.info_layout(info)
    assert layout.joint_names == tuple(STATE_NAMES) and layout.cameras == ("base", "left_wrist")
    assert info["fps"] == 10 and info["robot_type"] == "so100_follower"
    episodes = load_episodes(imported)
    assert [e["length"] for e in episodes] == list(LENGTHS)
    assert [e["success"] for e in episodes] == [i in SUCCESSFUL for i in range(5)]
    assert {e["source"] for e in episodes} == {"demo"}
    assert [e["extra"]["lerobot_episode_index"] for e in episodes] == list(range(5))
    tasks = load_tasks(imported)
    assert [tasks[e["task_index"]] for e in episodes] == [TASKS[i % 2] for i in range(5)]

    table = load_frames_table(imported)
    states = np.stack(table[schema.STATE].to_numpy(zero_copy_only=False))
    actions = np.stack(table[schema.ACTION].to_numpy(zero_copy_only=False))
    start = sum(LENGTHS[:2])  # episode 2, frame 3
    np.testing.assert_allclose(states[start + 3], [2.03, 12.03, 22.03, 32.03], atol=1e-5)
    # the LeRobot action lists the joints in another order (gripper first): imported in the state's order
    np.testing.assert_allclose(actions[start + 3], [2.04, 12.04, 22.04, 32.04], atol=1e-5)
    assert not table[schema.IS_INTERVENTION].to_numpy(zero_copy_only=False).any()
    returns = table[schema.RETURN_NORMALISED].to_numpy()
    last = np.cumsum(LENGTHS) - 1
    # L = c_fail = 400: episode 0 (12 frames) succeeded, episode 2 (10 frames) failed
    assert returns[0] == pytest.approx(-11 / 800) and returns[last[0]] == 0
    assert returns[last[1] + 1] == pytest.approx(-409 / 800) and returns[last[2]] == pytest.approx(-0.5)


def test_video_and_image_frames_decode_to_the_written_pixels(imported):
    base, wrist = images(imported, "base"), images(imported, "left_wrist")
    assert len(base) == len(wrist) == sum(LENGTHS) and base[0].shape == (32, 32, 3)
    position = 0
    for episode, length in enumerate(LENGTHS):
        for frame in range(length):
            expected = background(episode, frame)
            for stored in (base[position], wrist[position]):
                flat = stored[12:, 12:].reshape(-1, 3).mean(0)
                assert np.abs(flat - expected).max() < TOLERANCE, (episode, frame, flat, expected)
            assert base[position][:3, :3].mean() > 255 - TOLERANCE  # the video camera's white square
            assert wrist[position][:3, :3].mean() < TOLERANCE  # the image camera's black square
            position += 1


def test_joint_map_by_name_and_index_drops_and_reorders(tmp_path):
    out = tmp_path / "mapped"
    summary = import_lerobot(
        SAMPLE,
        out,
        cameras={"overhead": "top", "gripper_view": "-"},
        joints="gripper.pos=grip,0=shoulder,elbow.pos=elbow,2=-",
        gripper_joints=["grip"],
        success=True,
        episodes=[3, 1],  # out of order: the video is read backwards
    )
    assert summary.episodes == 2 and summary.episode_indices == {3: 0, 1: 1} and summary.image_shape == (48, 48)
    layout = schema.info_layout(load_info(out))
    assert layout.joint_names == ("grip", "shoulder", "elbow") and layout.gripper_joints == ("grip",)
    assert layout.cameras == ("top",)
    table = load_frames_table(out)
    states = np.stack(table[schema.STATE].to_numpy(zero_copy_only=False))
    actions = np.stack(table[schema.ACTION].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(states[0], [33.0, 3.0, 13.0], atol=1e-5)  # LeRobot episode 3, frame 0
    np.testing.assert_allclose(actions[LENGTHS[3]], [31.01, 1.01, 11.01], atol=1e-5)  # episode 1, frame 0
    top = images(out, "top")
    assert np.abs(top[LENGTHS[3] + 2][16:, 16:].reshape(-1, 3).mean(0) - background(1, 2)).max() < TOLERANCE
    assert np.abs(top[5][16:, 16:].reshape(-1, 3).mean(0) - background(3, 5)).max() < TOLERANCE
    assert all(e["success"] for e in load_episodes(out))

    # appending: the same settings add episodes after the existing ones
    (tmp_path / "labels.json").write_text(json.dumps({str(i): i == 4 for i in range(5)}))
    more = import_lerobot(
        SAMPLE,
        out,
        cameras="overhead=top,gripper_view=-",
        joints={"gripper.pos": "grip", "shoulder.pos": "shoulder", "elbow.pos": "elbow", "wrist.pos": "-"},
        gripper_joints=["grip"],
        success_file=tmp_path / "labels.json",
        episodes=[4, 0],
    )
    assert more.episode_indices == {4: 2, 0: 3}
    assert [e["success"] for e in load_episodes(out)] == [True, True, True, False]
    # one camera named "top", three joints: a new model takes the dataset's layout, whatever its names
    assert recap("train-value", out, "--out", tmp_path / "value", "--steps", "1", *QUIET) == 0
    assert load_checkpoint(tmp_path / "value", kind="value").model_config.cameras == ("top",)


def test_a_station_file_orders_the_joints_and_flags_values_outside_its_limits(tmp_path, capsys):
    station = tmp_path / "station.yaml"
    station.write_text(
        "/**:\n  ros__parameters:\n    station_name: arm1\n    joint_names: [j_wrist, j_shoulder, j_elbow, j_grip]\n"
        "    joint_lower_limits: [-40, -40, -40, 0]\n    joint_upper_limits: [40, 40, 40, 1]\n"
        "    joint_max_velocity: [1, 1, 1, 1]\n    gripper_joints: [j_grip]\n    cameras: [front, hand]\n"
    )
    out = tmp_path / "station_demos"
    joints = "shoulder.pos=j_shoulder,elbow.pos=j_elbow,wrist.pos=j_wrist,gripper.pos=j_grip"
    argv = ["dataset", "import-lerobot", SAMPLE, out, "--station", station, "--joints", joints, "--success", "none"]
    assert recap(*argv, "--cameras", "overhead=front,gripper_view=hand", "--image-size", "24x32") == 0
    captured = capsys.readouterr()
    assert "warning: joint j_grip: imported states span [30, 34.1], the station's limits are [0, 1]" in captured.err
    info = load_info(out)
    assert schema.info_layout(info).joint_names == ("j_wrist", "j_shoulder", "j_elbow", "j_grip")
    assert schema.info_layout(info).gripper_joints == ("j_grip",) and schema.info_image_shape(info) == (24, 32)
    states = np.stack(load_frames_table(out)[schema.STATE].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(states[LENGTHS[0] + 1], [21.01, 1.01, 11.01, 31.01], atol=1e-5)
    assert {e["station"] for e in load_episodes(out)} == {"arm1"}
    assert not any(e["success"] for e in load_episodes(out))
    err = refused(capsys, *argv, "--cameras", "overhead=front,gripper_view=wrist")
    assert "the station has ['front', 'hand']" in err


def test_success_from_an_episodes_metadata_column(tmp_path, capsys):
    copy = _copy(tmp_path)
    path = copy / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.append_column("is_success", [[True, False, False, True, True]]), path)
    summary = import_lerobot(copy, tmp_path / "out", cameras=CAMERAS, image_size=32, success_column="is_success")
    assert summary.successes == 3
    assert [e["success"] for e in load_episodes(tmp_path / "out")] == [True, False, False, True, True]
    pq.write_table(table.append_column("is_success", [[1, 0, 2, 1, 1]]), path)
    argv = ["dataset", "import-lerobot", copy, tmp_path / "o2", "--cameras", CAMERAS, "--image-size", "32"]
    err = refused(capsys, *argv, "--success-column", "is_success")
    assert "holds 2 in episode 2's metadata; it must be true/false or 0/1" in err


def test_option_parsing():
    assert parse_map("a=base, b=-,c = wrist", "--cameras") == {"a": "base", "b": "-", "c": "wrist"}
    with pytest.raises(LeRobotImportError, match="is not SOURCE=STATION_NAME"):
        parse_map("a=base,b", "--cameras")
    with pytest.raises(LeRobotImportError, match="maps nothing"):
        parse_map(" , ", "--joints")
    assert parse_image_size("48x64") == (48, 64) and parse_image_size(32) == (32, 32)
    with pytest.raises(LeRobotImportError, match="HEIGHTxWIDTH"):
        parse_image_size("4x4x4")
    assert feature_names({"names": {"motors": ["a", "b"]}}) == ["a", "b"]  # as LeRobot's v2 conversions wrote
    assert feature_names({"names": ["a", "b"]}) == ["a", "b"]
    assert feature_names({"names": None}) is None and feature_names({"names": {"x": ["a"], "y": ["b"]}}) is None


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLE, copy)
    return copy


def test_hostile_inputs_are_refused_in_one_line_and_leave_no_dataset(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["dataset", "import-lerobot", SAMPLE, out]
    ok = ["--cameras", CAMERAS, "--image-size", "32"]
    assert "one of the arguments" in refused(capsys, *base, *ok)
    assert "unmapped" in refused(capsys, *base, "--cameras", "overhead=base", "--success", "all")
    assert "several sources map to ['base']" in refused(
        capsys, *base, "--cameras", "overhead=base,gripper_view=base", "--success", "all"
    )
    assert "no camera 'wrist'" in refused(capsys, *base, "--cameras", "wrist=base", "--success", "all")
    assert "differ in size" in refused(capsys, *base, "--cameras", CAMERAS, "--success", "all")
    assert "['wrist.pos', 'gripper.pos'] unmapped" in refused(
        capsys, *base, *ok, "--success", "all", "--joints", "shoulder.pos=a,elbow.pos=b"
    )
    assert "no joint 'knee'" in refused(capsys, *base, *ok, "--success", "all", "--joints", "knee=a")
    assert "mapped more than once" in refused(capsys, *base, *ok, "--success", "all", "--joints", "0=a,0=b")
    assert "maps LeRobot joint 'shoulder.pos' twice" in refused(
        capsys, *base, *ok, "--success", "all", "--joints", "0=a,shoulder.pos=b,1=c,2=d,3=e"
    )
    assert "neither a frame feature" in refused(capsys, *base, *ok, "--success-column", "done")
    assert "holds 20.0" in refused(capsys, *base, *ok, "--success-column", "observation.temperature")
    labels = tmp_path / "labels.json"
    labels.write_text('{"0": true, "1": false}')
    assert "no label for episode(s) [2, 3, 4]" in refused(capsys, *base, *ok, "--success-file", labels)
    labels.write_text('{"0": "yes"}')
    assert "not true or false" in refused(capsys, *base, *ok, "--success-file", labels)
    labels.write_text("{")
    assert "not JSON" in refused(capsys, *base, *ok, "--success-file", labels)
    assert "--episodes [7]" in refused(capsys, *base, *ok, "--success", "all", "--episodes", "7")
    assert not out.exists()

    copy = _copy(tmp_path)
    recap_dataset = tmp_path / "recap_dataset"
    assert recap(*base[:2], copy, recap_dataset, *ok, "--success", "all") == 0
    assert "is a RECAP dataset already" in refused(capsys, *base[:2], recap_dataset, out, *ok, "--success", "all")
    info = json.loads((copy / "meta/info.json").read_text())
    (copy / "meta/info.json").write_text(json.dumps(dict(info, codebase_version="v2.1")))
    assert "only v3.0 is imported" in refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    (copy / "meta/info.json").write_text("{not json")
    assert "not readable JSON" in refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    (copy / "meta/info.json").write_text(json.dumps(info))

    # a damaged video: the episodes before the damage are not kept, and no dataset is left behind
    video = copy / "videos/observation.images.overhead/chunk-000/file-000.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    err = refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    assert "file-000.mp4" in err and not out.exists()
    video.unlink()
    assert "file-000.mp4: missing" in refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    video.write_bytes(data)

    # an episode whose frames name two tasks
    path = copy / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    tasks = table["task_index"].to_numpy().copy()
    tasks[3] = 1
    pq.write_table(table.set_column(table.schema.get_field_index("task_index"), "task_index", [tasks]), path)
    assert "episode 0 has task_index [0, 1]" in refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    path.write_bytes(b"garbage")
    assert "not a readable parquet file" in refused(capsys, *base[:2], copy, out, *ok, "--success", "all")
    assert not out.exists()


def test_without_pyav_a_video_camera_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(LeRobotImportError, match=r"\['overhead'\] are stored as video; .*pip install av"):
        import_lerobot(SAMPLE, tmp_path / "x", cameras=CAMERAS, image_size=32, success=True)
    # an import of the image camera alone needs no video decoder
    summary = import_lerobot(SAMPLE, tmp_path / "y", cameras="overhead=-,gripper_view=wrist", success=False)
    assert summary.frames == sum(LENGTHS) and summary.image_shape == (32, 32)


def test_value_and_policy_train_on_the_imported_demonstrations(imported, tmp_path, capsys):
    dataset = tmp_path / "demos"
    shutil.copytree(imported, dataset)
    value = tmp_path / "value"
    assert recap("train-value", dataset, "--out", value, "--steps", "2", *QUIET) == 0
    assert load_checkpoint(value, kind="value").model_config.cameras == ("base", "left_wrist")
    assert recap("label", dataset, "--value", value, "--no-progress") == 0
    policy = tmp_path / "policy"
    assert recap("train-policy", dataset, "--mode", "recap", "--out", policy, "--steps", "2", *QUIET) == 0
    runner = PolicyRunner.from_checkpoint(policy)
    assert tuple(runner.cameras) == ("base", "left_wrist")
    obs = {
        "images": {c: np.zeros((32, 32, 3), np.uint8) for c in runner.cameras},
        "state": np.array([2.0, 12.0, 22.0, 32.0], np.float32),
        "task": TASKS[0],
    }
    actions = runner.infer(obs, seed=0)["actions"]
    assert actions.shape[1] == 4 and np.isfinite(actions).all()


def test_training_on_a_native_lerobot_dataset_says_to_import_it(capsys, tmp_path):
    """The issue's traceback (KeyError: 'Field "task" does not exist') is now one line naming the import command."""
    from recap_core.testing import refused

    native = Path(__file__).parent / "data" / "lerobot_v3_sample" / "dataset"
    message = refused(capsys, "train-value", native, "--out", tmp_path / "v", "--steps", "1")
    assert "recap dataset import-lerobot" in message and "native LeRobot v3.0 dataset" in message
