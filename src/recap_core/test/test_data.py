"""The RECAP dataset: writer -> files in the LeRobot v3 layout -> reader, append, labels, synthetic data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recap_core import rl
from recap_core.data import reader, schema, synthetic
from recap_core.data import writer as writer_module
from recap_core.data.writer import DatasetWriter

torch.set_num_threads(1)

CAMERAS = ("base", "left_wrist")
SHAPE = (24, 32)


def make_episode(
    seed: int,
    length: int,
    *,
    success: bool = True,
    task: str = "pick the cube",
    cameras=CAMERAS,
    shape=SHAPE,
    **overrides,
) -> dict:
    rng = np.random.default_rng(seed)
    episode = dict(
        states=rng.normal(size=(length, 14)).astype(np.float32),
        actions=rng.normal(size=(length, 14)).astype(np.float32),
        images={c: rng.integers(0, 256, size=(length, *shape, 3), dtype=np.uint8) for c in cameras},
        is_intervention=rng.random(length) < 0.3,
        success=success,
        task=task,
        metadata={
            "source": "rollout",
            "policy_checkpoint": "ckpt-7",
            "beta": 1.5,
            "station": "sim1",
            "operator": "ada",
            "bag_path": f"/bags/ep{seed}",
            "start_time": 1700000000.5 + seed,
            "note": "kept as extra",
        },
    )
    episode.update(overrides)
    return episode


def writer(root, **kwargs) -> DatasetWriter:
    kwargs.setdefault("cameras", CAMERAS)
    kwargs.setdefault("image_shape", SHAPE)
    kwargs.setdefault("image_format", "raw")
    kwargs.setdefault("max_episode_length", 20)
    kwargs.setdefault("c_fail", 10.0)
    return DatasetWriter(root, **kwargs)


def data_file_digests(root) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted((root / "data").rglob("*.parquet"))
    }


@pytest.fixture
def two_episodes(tmp_path):
    root = tmp_path / "ds"
    episodes = [make_episode(1, 7, success=True), make_episode(2, 5, success=False, task="open the drawer")]
    with writer(root) as w:
        indices = [w.add_episode(**e) for e in episodes]
    assert indices == [0, 1]
    return root, episodes


# ----------------------------------------------------------------- round trip


def test_frames_round_trip(two_episodes):
    root, episodes = two_episodes
    table = reader.load_frames_table(root)
    assert table.num_rows == 12
    assert not any(name.startswith("observation.images") for name in table.column_names)
    states = table["observation.state"].combine_chunks().flatten().to_numpy().reshape(-1, 14)
    actions = table["action"].combine_chunks().flatten().to_numpy().reshape(-1, 14)
    np.testing.assert_array_equal(states, np.concatenate([e["states"] for e in episodes]))
    np.testing.assert_array_equal(actions, np.concatenate([e["actions"] for e in episodes]))
    np.testing.assert_array_equal(
        table["is_intervention"].to_numpy(zero_copy_only=False),
        np.concatenate([e["is_intervention"] for e in episodes]),
    )
    np.testing.assert_array_equal(table["episode_success"].to_numpy(zero_copy_only=False), [True] * 7 + [False] * 5)
    np.testing.assert_array_equal(table["episode_index"].to_numpy(), [0] * 7 + [1] * 5)
    np.testing.assert_array_equal(table["frame_index"].to_numpy(), list(range(7)) + list(range(5)))
    np.testing.assert_array_equal(table["index"].to_numpy(), np.arange(12))
    np.testing.assert_array_equal(table["task_index"].to_numpy(), [0] * 7 + [1] * 5)
    np.testing.assert_allclose(table["timestamp"].to_numpy(), np.r_[np.arange(7), np.arange(5)] / 50, rtol=1e-6)


def test_rewards_and_returns_follow_rl(two_episodes):
    root, _ = two_episodes
    table = reader.load_frames_table(root)
    expected_rewards = np.r_[rl.episode_rewards(7, True, 10.0), rl.episode_rewards(5, False, 10.0)]
    np.testing.assert_array_equal(table["reward"].to_numpy(), expected_rewards)
    expected_returns = np.r_[
        rl.normalise_returns(rl.returns_to_go(expected_rewards[:7]), 20, 10.0),
        rl.normalise_returns(rl.returns_to_go(expected_rewards[7:]), 20, 10.0),
    ]
    np.testing.assert_allclose(table["return_normalised"].to_numpy(), expected_returns, rtol=1e-6)
    tasks = reader.load_tasks(root)
    recap = schema.RecapConfig.from_json(schema.load_info(root)["recap"])
    rewards_norm = reader.normalised_rewards(table, recap, tasks)
    np.testing.assert_allclose(rl.returns_to_go(rewards_norm[:7]), expected_returns[:7], rtol=1e-6)


def test_episode_metadata_round_trip(two_episodes):
    root, episodes = two_episodes
    loaded = reader.load_episodes(root)
    assert [e["length"] for e in loaded] == [7, 5]
    assert [e["tasks"] for e in loaded] == [["pick the cube"], ["open the drawer"]]
    assert [e["success"] for e in loaded] == [True, False]
    first = loaded[0]
    assert (
        first["source"],
        first["policy_checkpoint"],
        first["beta"],
        first["station"],
        first["operator"],
        first["bag_path"],
        first["start_time"],
    ) == ("rollout", "ckpt-7", 1.5, "sim1", "ada", "/bags/ep1", 1700000001.5)
    assert first["extra"] == {"note": "kept as extra"}
    flags = episodes[0]["is_intervention"]
    assert first["intervention_frames"] == flags.sum()
    segments = int(flags[0]) + int(np.sum(flags[1:] & ~flags[:-1]))
    assert first["intervention_count"] == segments
    assert (first["dataset_from_index"], first["dataset_to_index"]) == (0, 7)
    assert reader.load_tasks(root) == ["pick the cube", "open the drawer"]


def test_images_round_trip_exactly_when_raw(two_episodes):
    root, episodes = two_episodes
    dataset = reader.RecapDataset(root, chunk_size=3)
    item = dataset[8]  # episode 1, frame 1
    for camera in CAMERAS:
        image = item[f"observation.images.{camera}"]
        assert image.dtype == torch.uint8 and image.shape == (3, *SHAPE)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), episodes[1]["images"][camera][1])


@pytest.mark.parametrize("image_format, tolerance", [("png", 0.0), ("jpeg", 12.0)])
def test_encoded_images_round_trip(tmp_path, image_format, tolerance):
    smooth = np.zeros((4, *SHAPE, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, SHAPE[1], dtype=np.uint8)
    smooth[..., 1] = np.linspace(0, 255, SHAPE[0], dtype=np.uint8)[:, None]
    smooth[1:, 5:15, 5:15] = 200  # frames differ
    episode = make_episode(3, 4, images={c: smooth for c in CAMERAS})
    with writer(tmp_path / "ds", image_format=image_format) as w:
        w.add_episode(**episode)
    dataset = reader.RecapDataset(tmp_path / "ds")
    for frame in range(4):
        decoded = dataset[frame]["observation.images.base"].permute(1, 2, 0).numpy().astype(float)
        assert np.abs(decoded - smooth[frame]).mean() <= tolerance


def test_already_compressed_frames_are_stored_as_they_are_or_decoded(tmp_path):
    """``EncodedImage`` frames (a recorded CompressedImage): kept byte for byte in a dataset of their format,
    decoded into one of another format, refused at another size; stats come from the decoded pixels."""
    episode = make_episode(5, 6)
    jpegs = {c: [schema.encode_image(f, "jpeg") for f in episode["images"][c]] for c in CAMERAS}
    encoded = {c: [schema.EncodedImage(j, "jpeg", SHAPE) for j in jpegs[c]] for c in CAMERAS}
    for image_format in ("jpeg", "png"):
        with writer(tmp_path / image_format, image_format=image_format) as w:
            w.add_episode(**dict(episode, images={c: iter(encoded[c]) for c in CAMERAS}))
    cells = pq.read_table(next((tmp_path / "jpeg" / "data").rglob("*.parquet")))
    assert [c["bytes"] for c in cells[schema.camera_key("base")].to_pylist()] == jpegs["base"]
    as_png = reader.RecapDataset(tmp_path / "png")
    for k in (0, 5):
        pixels = as_png[k]["observation.images.left_wrist"].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(pixels, schema.decode_image(jpegs["left_wrist"][k], "jpeg", SHAPE))
    stats = reader.load_stats(tmp_path / "jpeg")[schema.camera_key("base")]
    decoded = np.stack([schema.decode_image(j, "jpeg", SHAPE) for j in jpegs["base"]])
    np.testing.assert_allclose(np.asarray(stats["mean"]).reshape(-1), decoded.reshape(-1, 3).mean(0) / 255, atol=0.02)
    wrong = dict(encoded, base=[schema.EncodedImage(jpegs["base"][0], "jpeg", (SHAPE[0] + 1, SHAPE[1]))] * 6)
    with writer(tmp_path / "jpeg", image_format="jpeg") as w:
        with pytest.raises(ValueError, match="base.*frame 0.*image_shape"):
            w.add_episode(**dict(episode, images=wrong))


def test_frames_may_come_from_an_iterator(tmp_path):
    episode = make_episode(4, 6)
    frames = episode["images"]
    episode["images"] = {c: (frame for frame in frames[c]) for c in CAMERAS}
    with writer(tmp_path / "ds") as w:
        w.add_episode(**episode)
    dataset = reader.RecapDataset(tmp_path / "ds")
    np.testing.assert_array_equal(
        dataset[5]["observation.images.left_wrist"].permute(1, 2, 0).numpy(), frames["left_wrist"][5]
    )


def test_cameras_encoded_in_threads_give_the_same_dataset(tmp_path):
    episode = make_episode(4, 6)
    threads_seen = set()

    def frames(camera):
        for frame in episode["images"][camera]:
            threads_seen.add(threading.get_ident())
            yield frame

    for name, threads in (("serial", 1), ("threads", 2)):
        with writer(tmp_path / name, image_format="jpeg", encode_threads=threads) as w:
            w.add_episode(**dict(episode, images={c: frames(c) for c in CAMERAS}))
    assert len(threads_seen) >= 2  # the threaded writer consumed the cameras off the calling thread
    serial, threaded = (pq.read_table(next((tmp_path / n / "data").rglob("*.parquet"))) for n in ("serial", "threads"))
    for camera in CAMERAS:
        key = schema.camera_key(camera)
        assert serial[key].to_pylist() == threaded[key].to_pylist()
    # an error in one camera's frames surfaces from add_episode, and the dataset stays valid
    with writer(tmp_path / "threads", image_format="jpeg", encode_threads=2) as w:
        short = dict(episode["images"], left_wrist=(f for f in episode["images"]["left_wrist"][:3]))
        with pytest.raises(ValueError, match="left_wrist.*3 frames"):
            w.add_episode(**dict(episode, images=short))
    assert reader.RecapDataset(tmp_path / "threads").num_episodes == 1
    with pytest.raises(ValueError, match="encode_threads"):
        writer(tmp_path / "bad", encode_threads=0)


@pytest.mark.parametrize("image_format, image_codec", [("jpeg", "UNCOMPRESSED"), ("raw", "SNAPPY")])
def test_encoded_image_cells_are_not_compressed_again(tmp_path, image_format, image_codec):
    with writer(tmp_path / "ds", image_format=image_format) as w:
        w.add_episode(**make_episode(1, 7))
    group = pq.ParquetFile(next((tmp_path / "ds" / "data").rglob("*.parquet"))).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    image = columns["observation.images.base.bytes"]
    assert image.compression == image_codec and "RLE_DICTIONARY" not in image.encodings
    for name in ("observation.state.list.element", "action.list.element", "timestamp", "index"):
        assert columns[name].compression == "SNAPPY" and columns[name].is_stats_set, name


# ----------------------------------------------------------------- LeRobot v3 layout


def test_files_follow_the_lerobot_v3_layout(two_episodes):
    root, _ = two_episodes
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (info["fps"], info["chunks_size"], info["total_episodes"], info["total_frames"], info["total_tasks"]) == (
        50,
        1000,
        2,
        12,
        2,
    )
    assert info["splits"] == {"train": "0:2"}
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert info["features"][name]["shape"] == [1]
    assert info["features"]["observation.state"] == {
        "dtype": "float32",
        "shape": [14],
        "names": info["features"]["observation.state"]["names"],
    }
    assert info["features"]["observation.images.base"]["shape"] == [*SHAPE, 3]
    assert info["recap"]["c_fail"] == 10.0
    assert info["recap"]["max_episode_length"] == {"pick the cube": 20, "open the drawer": 20}
    assert (root / info["data_path"].format(chunk_index=0, file_index=0)).is_file()
    assert (root / "meta/episodes/chunk-000/file-000.parquet").is_file()
    assert (root / "meta/stats.json").is_file()
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    for column in (
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
        "meta/episodes/chunk_index",
        "meta/episodes/file_index",
        "stats/observation.state/mean",
        "stats/action/max",
    ):
        assert column in episodes.column_names
    data = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert set(data.names) == {n for n in info["features"]}
    assert data.field("observation.images.base").type.names == ["bytes", "path"]
    assert not list(root.rglob(".*.partial")) and not (root / schema.LOCK_PATH).exists()


def test_stats_cover_state_and_action(two_episodes):
    root, episodes = two_episodes
    stats = reader.load_stats(root)
    states = np.concatenate([e["states"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["min"], states.min(0), rtol=1e-6)
    assert stats["action"]["count"][0] == 12
    assert stats["observation.images.base"]["mean"].shape == (3, 1, 1)


# ----------------------------------------------------------------- append


def test_append_writes_new_files_and_never_touches_old_ones(two_episodes):
    root, episodes = two_episodes
    before = data_file_digests(root)
    third = make_episode(5, 6, task="pick the cube")
    with writer(root) as w:
        assert w.add_episode(**third) == 2
    after = data_file_digests(root)
    assert {k: after[k] for k in before} == before, "old data files were rewritten"
    assert set(after) - set(before) == {"data/chunk-000/file-001.parquet"}
    assert (root / "meta/episodes/chunk-000/file-001.parquet").is_file()
    table = reader.load_frames_table(root)
    np.testing.assert_array_equal(table["index"].to_numpy(), np.arange(18))
    assert reader.load_episodes(root)[2]["dataset_from_index"] == 12
    assert reader.load_tasks(root) == ["pick the cube", "open the drawer"]
    info = schema.load_info(root)
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 2)
    stats = reader.load_stats(root)
    states = np.concatenate([e["states"] for e in [*episodes, third]]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(0), rtol=1e-5, atol=1e-6)
    dataset = reader.RecapDataset(root)
    np.testing.assert_array_equal(dataset[12]["observation.state"].numpy(), third["states"][0])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(fps=30), "fps: dataset has 50"),
        (dict(cameras=("base",)), "cameras"),
        (dict(image_shape=(48, 64)), "image_shape"),
        (dict(image_format="jpeg"), "image_format"),
        (dict(c_fail=99.0), "c_fail"),
    ],
)
def test_mismatched_append_says_what_differs(two_episodes, change, message):
    root, _ = two_episodes
    with pytest.raises(ValueError, match=message):
        writer(root, **change)
    assert not (root / schema.LOCK_PATH).exists(), "a refused writer must release the lock"


def test_a_second_writer_is_refused_while_one_is_open(two_episodes):
    root, _ = two_episodes
    first = writer(root)
    try:
        with pytest.raises(RuntimeError, match="being written by process"):
            writer(root)
    finally:
        first.close()


def test_a_writer_that_dies_leaves_the_dataset_unchanged(two_episodes):
    root, _ = two_episodes
    before = data_file_digests(root)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_data import make_episode, writer
        w = writer({str(root)!r})
        w.add_episode(**make_episode(9, 4))
        os._exit(1)  # killed before close()
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    assert list((root / "data").rglob(".*.partial")), "the dead writer should have left a partial file"
    assert data_file_digests(root) == before
    assert schema.load_info(root)["total_episodes"] == 2
    with writer(root) as w:  # takes over the stale lock and clears the leftovers
        assert w.add_episode(**make_episode(10, 3)) == 2
    assert not list((root / "data").rglob(".*.partial"))
    assert reader.load_frames_table(root).num_rows == 15


def test_data_files_roll_over_at_the_size_limit(tmp_path):
    root = tmp_path / "ds"
    shape = (224, 224)
    with writer(root, image_shape=shape, data_files_size_in_mb=1) as w:
        for seed in range(2):
            w.add_episode(**make_episode(seed, 12, shape=shape))
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == ["file-000.parquet", "file-001.parquet"]
    assert [e["data/file_index"] for e in reader.load_episodes(root)] == [0, 1]
    assert len(reader.RecapDataset(root, load_images=False)) == 24


# ----------------------------------------------------------------- row groups, a frame failing mid-episode


def frames_failing_at(frames, number: int):
    for index, frame in enumerate(frames):
        if index == number:
            raise OSError(f"frame {number} cannot be read")
        yield frame


def test_an_episode_is_written_a_row_group_at_a_time_and_reads_back_whole(tmp_path, monkeypatch):
    episodes = [make_episode(1, 10), make_episode(2, 3)]
    with writer(tmp_path / "whole") as w:
        for episode in episodes:
            w.add_episode(**episode)
    monkeypatch.setattr(writer_module, "ROW_GROUP_FRAMES", 4)
    with writer(tmp_path / "groups") as w:
        for episode in episodes:
            w.add_episode(**episode)
    file = next((tmp_path / "groups" / "data").rglob("*.parquet"))
    assert [g.num_rows for g in map(pq.ParquetFile(file).metadata.row_group, range(4))] == [4, 4, 2, 3]
    whole, groups = (reader.load_frames_table(tmp_path / name) for name in ("whole", "groups"))
    assert whole.equals(groups)
    assert (tmp_path / "whole/meta/stats.json").read_text() == (tmp_path / "groups/meta/stats.json").read_text()


@pytest.mark.parametrize("first_in_file", [True, False])
def test_a_frame_failing_mid_episode_takes_its_written_row_groups_out_again(tmp_path, monkeypatch, first_in_file):
    monkeypatch.setattr(writer_module, "ROW_GROUP_FRAMES", 3)
    root = tmp_path / "ds"
    kept = [] if first_in_file else [make_episode(1, 7)]
    failing = make_episode(2, 10)
    failing["images"] = dict(failing["images"], left_wrist=frames_failing_at(failing["images"]["left_wrist"], 8))
    with writer(root) as w:
        for episode in kept:
            w.add_episode(**episode)
        with pytest.raises(OSError, match="frame 8"):
            w.add_episode(**failing)  # after two row groups of it were written
        kept.append(make_episode(3, 5))
        assert w.add_episode(**kept[-1]) == len(kept) - 1
    table = reader.load_frames_table(root)
    assert table.num_rows == sum(len(e["states"]) for e in kept)
    np.testing.assert_array_equal(
        np.stack(table["observation.state"].to_numpy(zero_copy_only=False)),
        np.concatenate([e["states"] for e in kept]),
    )
    dataset = reader.RecapDataset(root)
    np.testing.assert_array_equal(
        dataset[len(dataset) - 1]["observation.images.left_wrist"].permute(1, 2, 0).numpy(),
        kept[-1]["images"]["left_wrist"][-1],
    )
    assert not list(root.rglob(".*.partial")) and not list(root.rglob("*.tmp"))
    files = sorted(p.name for p in (root / "data/chunk-000").iterdir())
    # the file the failed episode was taken out of is closed; the next episode starts a new one
    assert files == (["file-000.parquet"] if first_in_file else ["file-000.parquet", "file-001.parquet"])


def test_image_stats_are_those_of_every_fourth_pixel(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 24, 32, 3), dtype=np.uint8)
    frames[..., 2] //= 4  # channels of different spread
    pixels = frames[:, ::4, ::4].reshape(-1, 3).astype(np.float64) / 255.0
    stats = writer_module.image_stats(frames)
    for name, expected in (("min", pixels.min(0)), ("max", pixels.max(0)), ("mean", pixels.mean(0))):
        np.testing.assert_allclose(stats[name].reshape(3), expected, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(stats["std"].reshape(3), pixels.std(0), rtol=1e-9)
    assert stats["mean"].shape == (3, 1, 1) and stats["count"].tolist() == [5]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_sampled_jpeg_frames_decode_to_the_pixels_pillow_gives(mode):
    import io

    from PIL import Image

    from recap_core.data import image_cells

    frame = np.random.default_rng(1).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(frame).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    encoded = schema.EncodedImage(buffer.getvalue(), "jpeg", (24, 32))
    np.testing.assert_array_equal(image_cells._pixels(encoded), encoded.decode())


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(states=np.full((5, 14), np.nan, np.float32)), "states must be finite"),
        (dict(actions=np.zeros((4, 14), np.float32)), "actions has 4 frames but states has 5"),
        (dict(actions=np.zeros((5, 7), np.float32)), r"actions must be \[T, 14\]"),
        (dict(is_intervention=np.zeros(3, bool)), "is_intervention must be"),
        (dict(task=""), "task must be a non-empty"),
        (dict(receive_times=np.array([0.0, 0.1, 0.05, 0.2, 0.3])), "receive_times must not decrease"),
        (dict(metadata={"source": "teleop"}), "episode source must be one of"),
        (dict(metadata={"start_time": "yesterday"}), "start_time"),
    ],
)
def test_bad_episodes_are_rejected_with_a_clear_error(tmp_path, override, message):
    episode = make_episode(6, 5, **override)
    with writer(tmp_path / "ds") as w:
        with pytest.raises(ValueError, match=message):
            w.add_episode(**episode)
        assert w.add_episode(**make_episode(7, 3)) == 0, "a rejected episode must not use up an index"


def test_images_must_match_cameras_shape_and_length(tmp_path):
    with writer(tmp_path / "ds") as w:
        episode = make_episode(6, 5)
        with pytest.raises(ValueError, match="missing \\['left_wrist'\\]"):
            w.add_episode(**dict(episode, images={"base": episode["images"]["base"]}))
        wrong_size = {c: np.zeros((5, 10, 10, 3), np.uint8) for c in CAMERAS}
        with pytest.raises(ValueError, match="image_shape"):
            w.add_episode(**dict(episode, images=wrong_size))
        short = {c: (f for f in episode["images"][c][:3]) for c in CAMERAS}
        with pytest.raises(ValueError, match="has 3 frames but states has 5"):
            w.add_episode(**dict(episode, images=short))


def test_a_writer_closed_without_episodes_leaves_a_valid_empty_dataset(tmp_path):
    writer(tmp_path / "ds").close()
    assert schema.load_info(tmp_path / "ds")["total_episodes"] == 0
    assert reader.load_frames_table(tmp_path / "ds").num_rows == 0
    dataset = reader.RecapDataset(tmp_path / "ds")
    assert len(dataset) == 0 and dataset.num_episodes == 0
    with writer(tmp_path / "ds") as w:
        assert w.add_episode(**make_episode(1, 3)) == 0


def test_a_non_dataset_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a RECAP dataset"):
        writer(tmp_path)


# ----------------------------------------------------------------- reader


def test_action_chunks_are_padded_at_the_episode_end(two_episodes):
    root, episodes = two_episodes
    dataset = reader.RecapDataset(root, chunk_size=4, load_images=False)
    item = dataset[5]  # episode 0 (7 frames), frame 5: frames 5, 6 then two pads
    expected = episodes[0]["actions"][[5, 6, 6, 6]]
    np.testing.assert_array_equal(item["action"].numpy(), expected)
    assert item["action_is_pad"].tolist() == [False, False, True, True]
    assert item["episode_length"] == 7 and item["frame_index"] == 5
    first_of_next = dataset[7]
    np.testing.assert_array_equal(first_of_next["action"].numpy(), episodes[1]["actions"][:4])
    assert not first_of_next["action_is_pad"].any()
    assert first_of_next["task"] == "open the drawer" and first_of_next["episode_success"] is False


def test_episode_selection_and_ranges(two_episodes):
    root, episodes = two_episodes
    dataset = reader.RecapDataset(root, episodes=[1], image_size=8)
    assert len(dataset) == 5 and dataset.num_episodes == 1
    assert dataset.episode_ranges == {1: (0, 5)}
    item = dataset[0]
    np.testing.assert_array_equal(item["observation.state"].numpy(), episodes[1]["states"][0])
    assert item["observation.images.base"].shape == (3, 8, 8)
    assert dataset.tasks == ["pick the cube", "open the drawer"]
    assert dataset.stats["observation.state"]["mean"].shape == (14,)
    with pytest.raises(ValueError, match="episodes \\[5\\]"):
        reader.RecapDataset(root, episodes=[5])
    with pytest.raises(ValueError, match="cameras \\['top'\\]"):
        reader.RecapDataset(root, cameras=["top"])


def test_cached_images_equal_decoded_ones_and_batches_collate(two_episodes):
    root, _ = two_episodes
    plain = reader.RecapDataset(root, image_size=16, cameras=["left_wrist"])
    cached = reader.RecapDataset(root, image_size=16, cameras=["left_wrist"], cache_images=True)
    cached.preload_images()
    for i in (0, 6, 11):
        assert torch.equal(plain[i]["observation.images.left_wrist"], cached[i]["observation.images.left_wrist"])
    assert "observation.images.base" not in plain[0]
    batch = next(iter(torch.utils.data.DataLoader(cached, batch_size=4, shuffle=False)))
    assert batch["action"].shape == (4, 50, 14) and batch["action_is_pad"].dtype == torch.bool
    assert batch["observation.images.left_wrist"].shape == (4, 3, 16, 16)
    assert batch["task"] == ["pick the cube"] * 4


# ----------------------------------------------------------------- labels


def label_arrays(total: int):
    rng = np.random.default_rng(11)
    return rng.uniform(-1, 0, total), rng.normal(size=total), rng.random(total) < 0.4


def test_write_labels_round_trip(two_episodes):
    root, _ = two_episodes
    value, advantage, indicator = label_arrays(12)
    thresholds = {"pick the cube": 0.1, "open the drawer": -0.2}
    reader.write_labels(
        root, value=value, advantage=advantage, indicator=indicator, thresholds=thresholds, value_checkpoint="value-3"
    )
    table = reader.load_frames_table(root)
    np.testing.assert_allclose(table["value"].to_numpy(), value, rtol=1e-6)
    np.testing.assert_allclose(table["advantage"].to_numpy(), advantage, rtol=1e-6)
    np.testing.assert_array_equal(table["indicator"].to_numpy(zero_copy_only=False), indicator)
    info = schema.load_info(root)
    assert info["recap"]["labels"]["thresholds"] == thresholds
    assert info["recap"]["labels"]["value_checkpoint"] == "value-3"
    assert info["features"]["indicator"]["dtype"] == "bool"
    dataset = reader.RecapDataset(root, load_images=False)
    assert dataset.labelled and dataset.thresholds == thresholds
    item = dataset[9]
    assert item["value"] == pytest.approx(value[9], rel=1e-6) and item["indicator"] == bool(indicator[9])
    # Relabelling replaces the columns.
    reader.write_labels(
        root, value=-value, advantage=advantage, indicator=~indicator, thresholds=thresholds, value_checkpoint="value-4"
    )
    table = reader.load_frames_table(root)
    np.testing.assert_array_equal(table["indicator"].to_numpy(zero_copy_only=False), ~indicator)
    assert table.column_names.count("value") == 1
    assert not list(root.rglob("*.tmp"))


def test_write_labels_validates(two_episodes):
    root, _ = two_episodes
    value, advantage, indicator = label_arrays(12)
    good = dict(value=value, advantage=advantage, indicator=indicator, thresholds={}, value_checkpoint="v")
    with pytest.raises(ValueError, match="one entry per frame"):
        reader.write_labels(root, **dict(good, value=value[:5]))
    with pytest.raises(ValueError, match="advantage must be finite"):
        reader.write_labels(root, **dict(good, advantage=np.where(np.arange(12) == 3, np.nan, advantage)))
    with pytest.raises(ValueError, match="indicator must be"):
        reader.write_labels(root, **dict(good, indicator=indicator.astype(int)))
    with pytest.raises(ValueError, match="tasks not in the dataset"):
        reader.write_labels(root, **dict(good, thresholds={"fold": 0.0}))
    assert "value" not in reader.load_frames_table(root).column_names


def test_interrupted_labelling_is_detected(two_episodes):
    root, _ = two_episodes
    with writer(root) as w:  # a second data file, so labelling touches two files
        w.add_episode(**make_episode(8, 4))
    old_first_file = (root / "data/chunk-000/file-000.parquet").read_bytes()
    value, advantage, indicator = label_arrays(16)
    reader.write_labels(
        root, value=value, advantage=advantage, indicator=indicator, thresholds={}, value_checkpoint="v"
    )
    (root / "data/chunk-000/file-000.parquet").write_bytes(old_first_file)  # as if the rename never happened
    with pytest.raises(ValueError, match="run `recap label`"):
        reader.load_frames_table(root)


def test_appending_makes_labels_stale(two_episodes):
    root, _ = two_episodes
    value, advantage, indicator = label_arrays(12)
    reader.write_labels(
        root, value=value, advantage=advantage, indicator=indicator, thresholds={}, value_checkpoint="v"
    )
    with writer(root) as w:
        w.add_episode(**make_episode(12, 3))
    info = schema.load_info(root)
    assert "labels" not in info["recap"] and "stale_labels" in info["recap"]
    table = reader.load_frames_table(root)
    assert "value" not in table.column_names and table.num_rows == 15
    assert not reader.RecapDataset(root, load_images=False).labelled


# ----------------------------------------------------------------- synthetic datasets


def test_reach_dataset_mixes_outcomes_and_its_returns_track_the_distance(tmp_path):
    root = synthetic.make_synthetic_dataset(tmp_path / "reach", num_episodes=30, image_size=16, seed=3)
    episodes = reader.load_episodes(root)
    assert len(episodes) == 30
    assert 0 < sum(e["success"] for e in episodes) < 30
    assert any(e["intervention_frames"] > 0 for e in episodes)
    assert {e["source"] for e in episodes} == {"demo", "rollout"}
    table = reader.load_frames_table(root)
    states = table["observation.state"].combine_chunks().flatten().to_numpy().reshape(-1, 14)
    demo_frames = np.isin(
        table["episode_index"].to_numpy(), [e["episode_index"] for e in episodes if e["source"] == "demo"]
    )
    distance = np.linalg.norm(states[:, 0:2] - states[:, 2:4], axis=1)
    returns = table["return_normalised"].to_numpy()
    assert np.corrcoef(distance[demo_frames], returns[demo_frames])[0, 1] < -0.95
    image = reader.RecapDataset(root)[0]["observation.images.base"]
    assert image.shape == (3, 16, 16) and image.float().std() > 10, "the point and goal should be drawn"


def test_bimodal_dataset_good_mode_succeeds_bad_mode_fails(tmp_path):
    root = synthetic.make_bimodal_dataset(tmp_path / "bimodal", num_episodes=24, image_size=16, seed=5)
    dataset = reader.RecapDataset(root, chunk_size=4, load_images=False)
    per_episode = {}
    for episode, (start, stop) in dataset.episode_ranges.items():
        item = dataset[start]
        good = synthetic.bimodal_good_mode(item["observation.state"].numpy(), item["action"].numpy())
        per_episode[episode] = (bool(good), item["episode_success"], stop - start)
    goods = [v for v in per_episode.values() if v[0]]
    bads = [v for v in per_episode.values() if not v[0]]
    assert goods and bads
    assert all(success for _, success, _ in goods) and not any(success for _, success, _ in bads)
    assert max(length for *_, length in goods) < min(length for *_, length in bads)


def test_bimodal_good_mode_classifies_single_steps_and_chunks():
    state = np.full(14, 0.2)
    assert synthetic.bimodal_good_mode(state, state + synthetic.STEP)
    assert not synthetic.bimodal_good_mode(state, state - synthetic.STEP)
    chunk = state + synthetic.STEP * np.arange(1, 5)[:, None] * np.ones(14)
    assert synthetic.bimodal_good_mode(state, chunk)
    assert synthetic.bimodal_good_mode(np.stack([state, state]), np.stack([chunk, -chunk])).tolist() == [True, False]


def test_cli_synth_then_info(tmp_path, capsys):
    from recap_core.cli import main

    assert (
        main(["dataset", "synth", str(tmp_path / "ds"), "--kind", "bimodal", "--episodes", "3", "--image-size", "8"])
        == 0
    )
    assert main(["dataset", "info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "episodes  3" in out and "move to the right end" in out and "labels    none" in out
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 2


def test_cli_output_into_a_closed_pipe_exits_quietly(tmp_path):
    """`recap dataset info DS | head -0`: the reader is gone; no traceback, exit 141 like a shell tool."""
    from recap_core.cli import main

    assert (
        main(["dataset", "synth", str(tmp_path / "ds"), "--kind", "bimodal", "--episodes", "2", "--image-size", "8"])
        == 0
    )
    script = textwrap.dedent(f"""
        import os, sys
        read, write = os.pipe()
        os.close(read)
        os.dup2(write, 1)
        from recap_core.cli import main
        sys.exit(main(["dataset", "info", {str(tmp_path / "ds")!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_dataset_written_without_the_page_cache_is_the_same_dataset(tmp_path, monkeypatch):
    """direct_io (O_DIRECT data files, the default) and plain writes give byte-identical data files."""
    from recap_core.data import direct_io

    monkeypatch.setattr(direct_io, "DIRECT_AFTER", 0)  # direct from the first block (64 MiB by default)
    monkeypatch.setattr(direct_io, "BUFFER", 4 * direct_io.BLOCK)
    sinks = []
    monkeypatch.setattr(
        writer_module, "DirectFile", lambda *a, **k: sinks.append(direct_io.DirectFile(*a, **k)) or sinks[-1]
    )
    episodes = [make_episode(1, 7, success=True), make_episode(2, 5, success=False, task="open the drawer")]
    digests = []
    for direct in (True, False):
        root = tmp_path / f"direct_{direct}"
        with writer(root, direct_io=direct) as w:
            for episode in episodes:
                w.add_episode(**episode)
        assert sinks and all(s.closed for s in sinks)
        assert (sum(s.direct_bytes for s in sinks) > 0) == direct
        sinks.clear()
        files = sorted((root / "data").rglob("*.parquet"))
        assert files
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in files])
    assert digests[0] == digests[1]
