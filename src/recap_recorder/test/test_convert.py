"""Bags -> RECAP dataset: the resampling rule, image decoding, labels, flags, skips, appending, loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_core.cli import main as recap
from recap_recorder.bag_files import storage_file
from recap_recorder.bag_info import read_info
from recap_recorder.bag_repair import recover_mcap, repair_bag
from recap_recorder.bag_to_dataset import convert_bags, latest_at_or_before, resample
from recap_recorder.images import image_layout, image_pixels

times = st.lists(st.integers(0, 10_000), max_size=40).map(lambda v: np.array(sorted(v), np.int64))


@settings(max_examples=200, deadline=None)
@given(
    commands=times.filter(len),
    states=times,
    images=times,
    flags=times,
    data=st.data(),
    tolerance=st.sampled_from([0, 3, 50]),
    start=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_resampling_takes_the_newest_sample_at_or_before_each_command(
    commands, states, images, flags, data, tolerance, start
):
    flag_values = np.array(data.draw(st.lists(st.booleans(), min_size=len(flags), max_size=len(flags))), bool)
    actions = np.arange(len(commands) * 14, dtype=float).reshape(-1, 14)
    state_values = np.arange(len(states) * 14, dtype=float).reshape(-1, 14) + 0.5
    t = resample(
        command_ns=commands,
        commands=actions,
        state_ns=states,
        states=state_values,
        image_ns={"cam": images},
        intervention_ns=flags,
        intervention=flag_values,
        source_ns=np.zeros(0, np.int64),
        source_is_teleop=np.zeros(0, bool),
        flag_tolerance_ns=tolerance,
        observed_after_ns=start,
    )
    after = -1 if start is None else start  # the start snapshot (stamped at the start) is no observation
    kept = 0
    for k, tick in enumerate(commands):
        s = [i for i, x in enumerate(states) if x <= tick]
        im = [i for i, x in enumerate(images) if x <= tick]
        if not s or not im or states[s[-1]] <= after or images[im[-1]] <= after:
            assert kept == 0, "only leading ticks may be dropped"
            continue
        assert np.array_equal(t.actions[kept], actions[k]) and np.array_equal(t.states[kept], state_values[s[-1]])
        assert t.image_index["cam"][kept] == im[-1]
        f = [i for i, x in enumerate(flags) if x <= tick + tolerance]  # flags may arrive just after
        assert t.is_intervention[kept] == (bool(flag_values[f[-1]]) if f else False)
        kept += 1
    assert len(t.tick_ns) == kept and t.dropped_leading_ticks == len(commands) - kept


def test_latest_at_or_before_is_minus_one_before_the_first_sample():
    assert list(latest_at_or_before(np.array([10, 20]), np.array([5, 10, 15, 25]))) == [-1, 0, 0, 1]


@settings(max_examples=50, deadline=None)
@given(
    frame_id=st.text(max_size=9),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    encoding=st.sampled_from(["rgb8", "bgr8"]),
    pad=st.integers(0, 3),
)
def test_image_layout_agrees_with_rosbags(synth, frame_id, height, width, encoding, pad):
    rng = np.random.default_rng(height * 7 + width)
    rgb = rng.integers(0, 255, (height, width * 3 + pad), dtype=np.uint8)
    T = synth.T
    msg = T["sensor_msgs/msg/Image"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id=frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * 3 + pad,
        data=rgb.reshape(-1),
    )
    raw = bytes(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    assert image_layout(raw)[:4] == (height, width, encoding, width * 3 + pad)
    pixels = rgb[:, : width * 3].reshape(height, width, 3)
    assert np.array_equal(image_pixels(raw), pixels if encoding == "rgb8" else pixels[:, :, ::-1])


@pytest.fixture(scope="module", params=["jpeg", "none"])
def station_bags(request, tmp_path_factory, helpers):
    """sim-0001 success with an intervention, sim-0002 failure, sim-0003 aborted, plus damaged copies;
    recorded with images JPEG-compressed (the recorder's default) and as received."""
    root = tmp_path_factory.mktemp("station_bags")
    recorder = helpers.make_recorder(root / "bags", chunk_size_bytes=16384, image_compression=request.param)
    episodes = [
        helpers.feed(recorder, "sim-0001", "success", steps=100, t0_ns=10**18, intervention_steps=[(20, 41)], seed=1),
        helpers.feed(recorder, "sim-0002", "failure", steps=80, t0_ns=10**18 + 10**10, seed=2),
        helpers.feed(recorder, "sim-0003", "aborted", steps=30, t0_ns=10**18 + 2 * 10**10, seed=3),
    ]
    assert recorder.drain(20)
    recorder.close()
    damaged = root / "damaged"
    truncated = damaged / "truncated"
    shutil.copytree(root / "bags" / "sim-0001", truncated)
    mcap = storage_file(truncated)
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    killed = damaged / "killed"
    shutil.copytree(root / "bags" / "sim-0002", killed)
    (killed / "metadata.yaml").unlink()
    return {
        "root": root,
        "episodes": {e.episode_id: e for e in episodes},
        "truncated": truncated,
        "killed": killed,
        "compression": request.param,
    }


def test_conversion_round_trips_commands_labels_flags_and_images(station_bags, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from recap_core.data import load_episodes, load_frames_table
    from recap_core.data.schema import decode_image

    root = station_bags["root"] / "bags"
    out = tmp_path / "dataset"
    outcomes = convert_bags(
        [root / "sim-0001", root / "sim-0002", root / "sim-0003"], out, image_format="png", progress=False
    )
    assert [o.status for o in outcomes] == ["converted", "converted", "skipped"]
    assert "aborted" in outcomes[2].reason and "--include-aborted" in outcomes[2].reason
    episodes = load_episodes(out)
    table = load_frames_table(out)
    images = pa.concat_tables(pq.read_table(p) for p in sorted((out / "data").rglob("*.parquet")))
    for row, (episode_id, label) in zip(episodes, [("sim-0001", "success"), ("sim-0002", "failure")]):
        fed = station_bags["episodes"][episode_id]
        frames = table.slice(row["dataset_from_index"], row["length"])
        assert abs(row["length"] - len(fed.commands)) <= 1  # 50 Hz x duration
        assert row["success"] == (label == "success") and row["extra"]["episode_id"] == episode_id
        assert row["extra"]["label"] == label and row["policy_checkpoint"] == "ckpt-7" and row["beta"] == 1.5
        actions = np.array(frames["action"].to_pylist())
        assert np.allclose(actions, fed.commands[-len(actions) :], atol=1e-6)  # float32 of the sent commands
        states = np.array(frames["observation.state"].to_pylist())
        assert np.allclose(states[1:], fed.commands[-len(actions) : -1], atol=1e-6)  # the state before the command
        assert np.array_equal(frames["is_intervention"].to_numpy(), fed.intervention[-len(actions) :])
        timestamps = frames["timestamp"].to_numpy()
        assert np.allclose(np.diff(timestamps), 0.02, atol=1e-4)
        for i, cam in enumerate(("base", "left_wrist", "right_wrist")):
            cells = images.slice(row["dataset_from_index"], row["length"])[f"observation.images.{cam}"].to_pylist()
            jpegs = recorded_jpegs(root / episode_id, cam)
            for k in (0, len(cells) // 2, len(cells) - 1):
                pixels = decode_image(cells[k]["bytes"], "png", (8, 8))
                expected = fed.image_fill[cam][len(fed.commands) - len(cells) + k]
                if station_bags["compression"] == "none":  # exact
                    assert pixels[5, 5, 0] == expected % 256 and pixels[0, 0, 0] == (expected // 256) % 256
                else:  # recorded as JPEG: exactly that JPEG's pixels, close to what was sent
                    assert len(jpegs) == len(fed.commands)
                    jpeg = jpegs[len(jpegs) - len(cells) + k]
                    assert np.array_equal(pixels, simplejpeg.decode_jpeg(jpeg, colorspace="RGB"))
                    assert abs(int(pixels[5, 5, 0]) - expected % 256) <= 12, (pixels[5, 5, 0], expected % 256)
    assert episodes[0]["intervention_count"] == 1 and episodes[0]["intervention_frames"] == 21
    assert pq.read_table(next((out / "meta" / "episodes").rglob("*.parquet"))).num_rows == 2


def recorded_jpegs(bag, camera: str) -> list[bytes]:
    """The JPEG streams of ``camera/<camera>/image_raw/compressed`` in a bag, in recorded order."""
    from recap_recorder.images import compressed_payload

    recovered = recover_mcap(storage_file(bag))
    topic = f"/camera/{camera}/image_raw/compressed"
    return [
        bytes(compressed_payload(m.data)[1])
        for m in recovered.messages
        if recovered.channels[m.channel_id].topic == topic
    ]


def test_recorded_jpeg_goes_into_a_jpeg_dataset_byte_for_byte(station_bags, tmp_path):
    """The converter stores what the recorder compressed, unchanged (and encodes what it did not)."""
    import pyarrow.parquet as pq
    from recap_core.data import load_episodes

    bag = station_bags["root"] / "bags" / "sim-0002"
    out = tmp_path / "dataset"
    [outcome] = convert_bags([bag], out, image_format="jpeg", progress=False)
    assert outcome.status == "converted"
    [episode] = load_episodes(out)
    cells = [
        c["bytes"]
        for c in pq.read_table(next((out / "data").rglob("*.parquet")))["observation.images.base"].to_pylist()
    ]
    jpegs = recorded_jpegs(bag, "base")
    assert len(cells) == episode["length"]
    if station_bags["compression"] == "none":
        assert jpegs == [] and read_info(bag).topic("camera/base/image_raw").count == 80
        return
    assert cells == jpegs[len(jpegs) - len(cells) :]  # the recorded bytes, tick by tick


def test_appending_keeps_existing_files_and_skips_converted_bags(station_bags, tmp_path, capsys):
    root = station_bags["root"] / "bags"
    out = tmp_path / "dataset"
    assert recap(["convert", str(root / "sim-0001"), "--out", str(out), "--image-format", "raw", "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in (out / "data").rglob("*.parquet")}
    capsys.readouterr()
    assert recap(["convert", str(root), "--out", str(out), "--include-aborted", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "already in" in captured.err
    assert "2 episode(s)" in captured.out
    assert all(p.read_bytes() == data for p, data in before.items())  # first episode's files untouched
    assert len(list((out / "data").rglob("*.parquet"))) == len(before) + 1

    import torch

    from recap_core.data import RecapDataset

    torch.set_num_threads(1)
    dataset = RecapDataset(out, chunk_size=5)
    assert dataset.num_episodes == 3 and len(dataset) == 100 + 80 + 30
    item = dataset[25]
    assert item["action"].shape == (5, 14) and bool(item["is_intervention"])
    assert item["observation.images.base"].shape == (3, 8, 8)
    aborted = dataset.episodes[2]
    assert not aborted["success"] and aborted["extra"]["label"] == "aborted"


def test_damaged_bags_are_reported_and_skipped_with_the_repair_hint(station_bags, tmp_path, capsys):
    root = station_bags["root"] / "bags"
    out = tmp_path / "dataset"
    code = recap(
        [
            "convert",
            str(station_bags["truncated"]),
            str(station_bags["killed"]),
            str(root / "sim-0002"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # unreadable bags need attention
    assert "failed" in captured.err and captured.err.count("recap bag repair") == 2
    assert "1 episode(s)" in captured.out and "2 unreadable" in captured.out
    repaired = repair_bag(station_bags["killed"], tmp_path / "killed_repaired")
    assert repaired.label == "failure"  # the terminal status was in a complete chunk
    outcomes = convert_bags([tmp_path / "killed_repaired"], out, progress=False)
    assert outcomes[0].status == "skipped" and "already in" in outcomes[0].reason  # same episode id


def test_the_start_snapshot_is_no_observation_of_the_episode(helpers, synth, tmp_path):
    """A sim reset teleports the arm: the joint state and images recorded in the start snapshot
    show the world before it. A command sent before the first fresh joint state makes no frame."""
    from recap_core.data import load_episodes, load_frames_table

    recorder = helpers.make_recorder(tmp_path / "bags")
    t0 = 10**18
    before_reset = np.full(14, 1.5)
    recorder.on_message("joint_states", synth.joints(before_reset, t0 - 200_000_000), t0 - 200_000_000)
    for cam in ("base", "left_wrist", "right_wrist"):
        recorder.on_message(f"camera/{cam}/image_raw", synth.image(999, t0 - 200_000_000), t0 - 200_000_000)
    values, data = synth.status("sim-0100", "running")
    recorder.on_episode_status(values, data, t0)
    reset_pose = np.zeros(14)
    recorder.on_message("joint_command", synth.joints(before_reset, t0 + 1_000_000), t0 + 1_000_000)  # a hold
    for k in range(1, 11):
        t = t0 + k * 20_000_000
        for cam in ("base", "left_wrist", "right_wrist"):
            recorder.on_message(f"camera/{cam}/image_raw", synth.image(k, t), t - 2_000_000)
        recorder.on_message("joint_states", synth.joints(reset_pose, t), t - 1_000_000)
        recorder.on_message("joint_command", synth.joints(reset_pose + 0.01 * k, t), t)
    values, data = synth.status("sim-0100", "success", steps=11)
    recorder.on_episode_status(values, data, t0 + 300_000_000)
    assert recorder.drain(20)
    recorder.close()
    outcomes = convert_bags([tmp_path / "bags" / "sim-0100"], tmp_path / "dataset", image_format="png", progress=False)
    assert [o.status for o in outcomes] == ["converted"], outcomes
    states = np.array(load_frames_table(tmp_path / "dataset")["observation.state"].to_pylist())
    assert len(states) == 10 and np.allclose(states, 0.0), states[:2]
    assert load_episodes(tmp_path / "dataset")[0]["extra"]["dropped_leading_ticks"] == 1
