"""The converter's fast path gives exactly the dataset its reference path gives, and worker processes exactly
the dataset one process gives.

The reference (``convert_bags(fast=False)``): CRC check first, each topic's message index read on its own,
rosbags deserialising every joint message. The fast path: CRC check on its own thread, message indexes a chunk
at a time, JointState fields read straight from the CDR bytes, recorded JPEGs read ahead. Workers
(``workers=N``): bags read in other processes, recorded images handed back as file positions. Compared: every
file of the dataset, byte for byte (frames, image bytes, joints, timestamps, episode metadata, stats, info),
and every bag's outcome.
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_recorder.bag_files import storage_file
from recap_recorder.bag_repair import repair_bag
from recap_recorder.bag_to_dataset import convert_bags, load_episode
from recap_recorder.cdr import joint_state
from recap_recorder.indexed_mcap import CorruptBag, IndexedMcap


def dataset_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def outcomes_of(outcomes, out: Path) -> list[tuple]:
    """The outcomes, the dataset's own path in their reasons ("already in DATASET") left out."""
    return [(o.bag, o.status, o.reason.replace(str(out), "DATASET"), o.episode_index, o.frames) for o in outcomes]


def assert_same_conversion(bags, tmp_path, first: dict, second: dict, **options):
    """Converting ``bags`` with ``first`` and with ``second`` options gives the same files and outcomes."""
    results = []
    for name, variant in (("first", first), ("second", second)):
        out = tmp_path / name
        outcomes = convert_bags(bags, out, progress=False, **options, **variant)
        results.append((outcomes_of(outcomes, out), dataset_files(out) if out.exists() else {}))
    (outcomes_a, files_a), (outcomes_b, files_b) = results
    assert outcomes_a == outcomes_b
    assert sorted(files_a) == sorted(files_b)
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"
    return outcomes_a


FAST, REFERENCE = {"fast": True, "workers": 0}, {"fast": False}
SERIAL, PARALLEL = {"workers": 0}, {"workers": 2}


# --------------------------------------------------------------------------- JointState from the CDR bytes

names = st.lists(st.text(max_size=12), max_size=16)
floats = st.lists(st.floats(allow_nan=False, width=64), max_size=16)


@settings(max_examples=300, deadline=None)
@given(
    frame_id=st.text(max_size=20),
    joint_names=names,
    position=floats,
    velocity=floats,
    effort=floats,
    stamp=st.integers(0, 2**62),
    cut=st.one_of(st.none(), st.integers(0, 400)),
    flip=st.one_of(st.none(), st.tuples(st.integers(0, 400), st.integers(1, 255))),
)
def test_joint_state_fields_are_rosbags_own_or_left_to_rosbags(
    synth, frame_id, joint_names, position, velocity, effort, stamp, cut, flip
):
    """On any message, intact, cut off or with a changed byte: the names and positions rosbags reads, or None
    (the converter then asks rosbags, whose answer or error it takes)."""
    T = synth.T
    msg = T["sensor_msgs/msg/JointState"](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9 % 2**31, nanosec=stamp % 10**9),
            frame_id=frame_id,
        ),
        name=joint_names,
        position=np.array(position, np.float64),
        velocity=np.array(velocity, np.float64),
        effort=np.array(effort, np.float64),
    )
    raw = bytearray(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    if cut is not None:
        raw = raw[:cut]
    if flip is not None and flip[0] < len(raw):
        raw[flip[0]] ^= flip[1]
    raw = bytes(raw)
    for _ in range(2):  # the second time through the remembered names section
        fields = joint_state(raw)
        try:
            expected = synth.ts.deserialize_cdr(raw, "sensor_msgs/msg/JointState")
        except Exception:
            assert fields is None
            continue
        if fields is not None:
            assert fields[0] == tuple(expected.name)
            assert fields[1].dtype == np.float64
            assert np.array_equal(fields[1], np.asarray(expected.position, np.float64), equal_nan=True)
        elif cut is None and flip is None:
            pytest.fail("an intact JointState was left to rosbags")


def test_joint_state_reads_memoryviews_and_recorded_messages(synth):
    raw = synth.joints(np.linspace(-1, 1, 14), 123)
    names, positions = joint_state(memoryview(raw))
    assert len(names) == 14 and np.array_equal(positions, np.linspace(-1, 1, 14))
    assert joint_state(raw[:1] + b"\x00" + raw[2:]) is None  # big-endian: rosbags decides


# --------------------------------------------------------------------------- the message indexes


@pytest.fixture(scope="module")
def bags(tmp_path_factory, helpers):
    """Four episodes recorded with JPEG images (one aborted), one with raw images and 16 px instead of 8,
    a truncated copy, a copy with a changed byte, one whose metadata.yaml is missing and its repair, one
    the recorder was still writing and its repair (no label: skipped)."""
    root = tmp_path_factory.mktemp("fast")
    recorder = helpers.make_recorder(root / "bags", chunk_size_bytes=8192)
    for n, (label, steps) in enumerate([("success", 60), ("failure", 45), ("aborted", 20), ("success", 33)]):
        helpers.feed(
            recorder, f"ep-{n:04d}", label, steps=steps, t0_ns=10**18 + n * 10**11, seed=n, intervention_steps=[(5, 9)]
        )
    helpers.feed(recorder, "ep-0004", "failure", steps=30, t0_ns=10**18 + 8 * 10**11, seed=8)
    helpers.feed(recorder, "ep-0009", "failure", steps=50, t0_ns=10**18 + 9 * 10**11, seed=9, end=False)
    assert recorder.drain(20)
    unfinished = root / "damaged" / "unfinished"
    shutil.copytree(root / "bags" / "ep-0009", unfinished)
    recorder.close()
    killed = root / "damaged" / "killed"
    shutil.copytree(root / "bags" / "ep-0004", killed)
    (killed / "metadata.yaml").unlink()
    raw_recorder = helpers.make_recorder(root / "raw", chunk_size_bytes=8192, image_compression="none")
    helpers.feed(
        raw_recorder, "raw-0001", "success", steps=40, t0_ns=10**18 + 20 * 10**11, seed=11, image_shape=(16, 16)
    )
    assert raw_recorder.drain(20)
    raw_recorder.close()
    truncated = root / "damaged" / "truncated"
    shutil.copytree(root / "bags" / "ep-0000", truncated)
    mcap = storage_file(truncated)
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    corrupt = root / "damaged" / "corrupt"
    shutil.copytree(root / "bags" / "ep-0001", corrupt)
    with IndexedMcap(storage_file(corrupt)) as indexed:
        index = indexed.index_all()["/joint_command"]
        position = indexed.file_position(index, len(index) // 2)
    data = bytearray(storage_file(corrupt).read_bytes())
    data[position + 20] ^= 0x40  # inside a joint name's length: the message no longer parses either
    storage_file(corrupt).write_bytes(bytes(data))
    repaired = repair_bag(killed, root / "damaged" / "killed_repaired").output
    unfinished_repaired = repair_bag(unfinished, root / "damaged" / "unfinished_repaired").output
    episodes = [root / "bags" / f"ep-{n:04d}" for n in range(4)]
    return {
        "episodes": episodes,
        "raw": root / "raw" / "raw-0001",
        "truncated": truncated,
        "corrupt": corrupt,
        "killed": killed,
        "repaired": repaired,
        "unfinished": unfinished,
        "unfinished_repaired": unfinished_repaired,
    }


@pytest.fixture(scope="module")
def zstd_bag(bags, tmp_path_factory):
    """ep-0001 rewritten with zstd chunks (rosbags' storage compression), a chunk every 40 messages."""
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
    from rosbags.typesys import Stores, get_typestore

    from recap_recorder.bag_info import read_info
    from recap_recorder.bag_repair import recover_mcap
    from recap_recorder.bag_writer import checksummed_writer

    source = bags["episodes"][1]
    recovered = recover_mcap(storage_file(source))
    out = tmp_path_factory.mktemp("zstd") / "ep-0001z"
    writer = checksummed_writer(out)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    typestore = get_typestore(Stores.ROS2_KILTED)
    connections = {
        cid: writer.add_connection(ch.topic, recovered.schemas[ch.schema_id].name, typestore=typestore)
        for cid, ch in sorted(recovered.channels.items())
    }
    for n, message in enumerate(recovered.messages):
        writer.write(connections[message.channel_id], message.log_time, message.data)
        if n % 40 == 39:
            writer.storage.close_chunk()
    for key, value in read_info(source).custom_data.items():
        writer.set_custom_data(key, value if key != "episode_id" else "ep-0001z")
    writer.close()
    return out


def test_all_indexes_at_once_are_each_topics_index(bags, zstd_bag):
    for bag in (bags["episodes"][0], bags["raw"], bags["repaired"], zstd_bag):
        with IndexedMcap(storage_file(bag)) as one, IndexedMcap(storage_file(bag)) as every:
            indexes = every.index_all()
            assert sorted(indexes) == sorted(one.topics)
            for topic, index in indexes.items():
                expected = one.index(topic)
                for field in ("log_ns", "chunk", "offset"):
                    assert np.array_equal(getattr(index, field), getattr(expected, field)), (bag, topic)
                for i in range(len(index)):
                    assert every.read(index, i) == one.read(expected, i)
                    assert every.read(index, i, limit=40) == one.read(expected, i, limit=40)


# --------------------------------------------------------------------------- fast == reference


def test_fast_path_gives_the_reference_dataset(bags, tmp_path):
    outcomes = assert_same_conversion(
        [
            *bags["episodes"],
            bags["truncated"],
            bags["corrupt"],
            bags["killed"],
            bags["repaired"],
            bags["unfinished"],
            bags["unfinished_repaired"],
        ],
        tmp_path,
        FAST,
        REFERENCE,
        include_aborted=True,
    )
    statuses = [status for _, status, *_ in outcomes]
    assert statuses == ["converted"] * 4 + ["failed", "corrupt", "skipped", "converted", "skipped", "skipped"]


@pytest.mark.parametrize("image_format", ["jpeg", "png", "raw"])
def test_fast_path_gives_the_reference_dataset_of_raw_images(bags, tmp_path, image_format):
    outcomes = assert_same_conversion([bags["raw"]], tmp_path, FAST, REFERENCE, image_format=image_format)
    assert [status for _, status, *_ in outcomes] == ["converted"]


def test_fast_path_and_workers_give_the_reference_dataset_of_compressed_chunks(bags, zstd_bag, tmp_path):
    assert_same_conversion([zstd_bag], tmp_path / "fast", FAST, REFERENCE)
    mixed = [bags["episodes"][0], zstd_bag, bags["episodes"][3]]
    outcomes = assert_same_conversion(mixed, tmp_path / "workers", SERIAL, PARALLEL)
    assert [status for _, status, *_ in outcomes] == ["converted"] * 3


def test_a_corrupt_bag_is_reported_as_the_check_reports_it_whatever_reading_it_raised(bags):
    """The fast path reads while the CRCs are checked; the changed byte also breaks a JointState, and still the
    error is the check's, the same as the reference path's."""
    with pytest.raises(CorruptBag) as fast:
        load_episode(bags["corrupt"])
    with pytest.raises(CorruptBag) as reference:
        load_episode(bags["corrupt"], fast=False)
    assert str(fast.value) == str(reference.value) and "CRC mismatch" in str(fast.value)


def test_fast_and_reference_episodes_agree(bags):
    for bag in (*bags["episodes"][:2], bags["raw"], bags["repaired"]):
        with load_episode(bag) as fast, load_episode(bag, fast=False) as reference:
            assert fast.info == reference.info and fast.metadata == reference.metadata
            for field in dataclasses.fields(fast.timeline):
                a, b = getattr(fast.timeline, field.name), getattr(reference.timeline, field.name)
                if isinstance(a, dict):
                    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
                else:
                    assert np.array_equal(a, b), field.name
            for camera in fast.cameras:
                for x, y in zip(fast.frames(camera), reference.frames(camera), strict=True):
                    assert type(x) is type(y)
                    assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y


# --------------------------------------------------------------------------- workers == one process


def test_workers_give_the_serial_dataset(bags, tmp_path):
    everything = [
        bags["episodes"][0],
        bags["truncated"],
        bags["episodes"][1],
        bags["episodes"][2],  # aborted: skipped
        bags["corrupt"],
        bags["episodes"][0],  # again: already in the dataset
        bags["repaired"],
        bags["killed"],  # damaged, its repaired copy next to it: skipped
        bags["unfinished_repaired"],  # no label: skipped
        bags["episodes"][3],
    ]
    outcomes = assert_same_conversion(everything, tmp_path, SERIAL, PARALLEL)
    assert [status for _, status, *_ in outcomes] == [
        "converted",
        "failed",
        "converted",
        "skipped",
        "corrupt",
        "skipped",
        "converted",
        "skipped",
        "skipped",
        "converted",
    ]


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_workers_give_the_serial_dataset_when_frames_are_encoded_resized_or_appended(bags, tmp_path, image_format):
    """Raw images encoded in the workers (but the writer's statistics frames), a 16 px bag resized into an
    8 px dataset (read again in the converting process), and appending to an existing dataset."""
    for name in ("first", "second"):
        convert_bags([bags["episodes"][3]], tmp_path / name, image_format=image_format, progress=False)
    mixed = [bags["episodes"][0], bags["raw"], bags["episodes"][1], bags["repaired"]]
    assert_same_conversion(mixed, tmp_path, SERIAL, PARALLEL)
    shutil.rmtree(tmp_path / "first")
    shutil.rmtree(tmp_path / "second")
    raw_first = [bags["raw"], bags["raw"], bags["episodes"][0], bags["episodes"][1]]
    assert_same_conversion(raw_first, tmp_path, SERIAL, PARALLEL, image_format=image_format)


def test_convert_takes_workers_on_the_command_line(bags, tmp_path, capsys):
    from recap_core.cli import main as recap

    args = [str(b) for b in bags["episodes"]] + ["--include-aborted", "--no-progress"]
    assert recap(["convert", *args, "--out", str(tmp_path / "one"), "--workers", "0"]) == 0
    assert recap(["convert", *args, "--out", str(tmp_path / "many"), "--workers", "2"]) == 0
    assert dataset_files(tmp_path / "one") == dataset_files(tmp_path / "many")
    capsys.readouterr()
    assert recap(["convert", *args, "--out", str(tmp_path / "none"), "--workers", "-1"]) == 2
    assert "--workers must be 0" in capsys.readouterr().err and not (tmp_path / "none" / "meta").exists()


def test_an_image_cut_off_after_the_worker_read_it_fails_that_episode_only(bags, tmp_path, monkeypatch):
    """A worker hands back where an image's bytes lie; should the file change before they are read, the
    episode fails with the repair hint, as a bag whose images cannot be read does, and nothing else."""
    from recap_recorder import convert_workers

    victim = tmp_path / "victim"
    shutil.copytree(bags["episodes"][1], victim)
    take = convert_workers.Prefetch.take

    def take_then_cut(self, path, *args):
        result = take(self, path, *args)
        if path == victim:
            mcap = storage_file(victim)
            mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
        return result

    monkeypatch.setattr(convert_workers.Prefetch, "take", take_then_cut)
    outcomes = convert_bags([bags["episodes"][0], victim, bags["episodes"][3]], tmp_path / "ds", workers=1)
    assert [o.status for o in outcomes] == ["converted", "failed", "converted"]
    assert "cut off" in outcomes[1].reason and "recap bag repair" in outcomes[1].reason
    assert [o.episode_index for o in outcomes] == [0, None, 1]


def test_record_head_layout_is_what_read_view_assumes():
    assert struct.calcsize("<BQHIQQ") == 31  # opcode, length, channel, sequence, log time, publish time


def test_a_worker_that_dies_costs_only_time(bags, tmp_path, monkeypatch):
    """A worker process killed mid-way (out of memory, say) is no verdict on its bag: the converting process
    reads that bag and the rest itself, and the dataset is the serial one."""
    import os

    from recap_recorder import convert_workers

    def submit_death(self, path):
        return self._pool.submit(os._exit, 3)

    # every worker dies; the pool may already know it is broken when the next bag is submitted
    monkeypatch.setattr(convert_workers.Prefetch, "_submit", submit_death)
    outcomes = assert_same_conversion(bags["episodes"], tmp_path, SERIAL, PARALLEL)
    assert [status for _, status, *_ in outcomes] == ["converted", "converted", "skipped", "converted"]
