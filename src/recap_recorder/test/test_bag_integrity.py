"""Bit rot in a bag is found, reported by chunk, never converted, and repaired away.

The recorder writes every MCAP CRC (chunk ``uncompressed_crc``, DataEnd ``data_section_crc``, Footer
``summary_crc``); ``recap bag info``, ``recap convert`` and ``recap bag repair`` check them. Bags written
before (CRC 0, "not computed") still read, with a note. Also: a bag's ``.mcap`` file names its bag, and
``recap convert`` refuses an ``--out`` that is a file or a damaged dataset in one line.
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recap_core.cli import main as recap
from recap_recorder.bag_files import BagError, storage_file
from recap_recorder.bag_info import read_info
from recap_recorder.bag_repair import recover_mcap, repair_bag
from recap_recorder.bag_to_dataset import convert_bags, load_episode
from recap_recorder.bag_writer import checksummed_writer
from recap_recorder.indexed_mcap import CorruptBag, IndexedMcap


@dataclasses.dataclass(frozen=True)
class Chunk:
    start: int  # file offset of the chunk record
    data: int  # file offset of its (compressed) records
    data_end: int
    compression: str
    messages: tuple  # (topic, log_time, data) in the chunk's order


def chunks_of(path: Path) -> list[Chunk]:
    """Every chunk record of an MCAP file (closed or cut off), found by walking the records' framing."""
    import io

    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Message
    from mcap.records import Chunk as McapChunk
    from mcap.stream_reader import breakup_chunk

    raw = path.read_bytes()
    position, topics, found = 8, {}, []
    while position + 9 <= len(raw):
        opcode, length = raw[position], struct.unpack_from("<Q", raw, position + 1)[0]
        if position + 9 + length > len(raw):
            break
        if opcode == 0x06:
            record = McapChunk.read(ReadDataStream(io.BytesIO(raw[position + 9 : position + 9 + length])))
            messages = []
            for item in breakup_chunk(record):
                if isinstance(item, Channel):
                    topics[item.id] = item.topic
                elif isinstance(item, Message):
                    messages.append((topics[item.channel_id], item.log_time, bytes(item.data)))
            data = position + 9 + 8 + 8 + 8 + 4 + 4 + len(record.compression) + 8
            found.append(Chunk(position, data, data + len(record.data), record.compression, tuple(messages)))
        position += 9 + length
    return found


def messages_of(bag: Path) -> list[tuple]:
    recovered = recover_mcap(storage_file(bag))
    return [(recovered.channels[m.channel_id].topic, m.log_time, bytes(m.data)) for m in recovered.messages]


def xor_bytes(bag: Path, offset: int, mask: bytes) -> None:
    mcap = storage_file(bag)
    data = bytearray(mcap.read_bytes())
    for i, m in enumerate(mask):
        data[offset + i] ^= m
    mcap.write_bytes(bytes(data))


def payload_offset(bag: Path, topic: str, number: int) -> tuple[int, int]:
    """(file offset of the CDR payload of message ``number`` of ``topic``, chunk number) in a closed bag."""
    with IndexedMcap(storage_file(bag)) as mcap:
        index = mcap.index(topic)
        chunk_number = int(index.chunk[number])
        chunk = mcap._chunks[chunk_number]
        assert chunk.compression == ""  # the recorder's chunks: the payload lies in the file as is
        return chunk.chunk_start_offset + 49 + int(index.offset[number]) + 31, chunk_number


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, helpers):
    """A closed bag (ep-0001, success, 40 steps, small chunks) and a copy of one the recorder was still writing."""
    root = tmp_path_factory.mktemp("integrity")
    recorder = helpers.make_recorder(root / "bags", chunk_size_bytes=4096)
    episode = helpers.feed(recorder, "ep-0001", "success", steps=40, t0_ns=10**18, seed=4)
    helpers.feed(recorder, "ep-0002", "failure", steps=60, t0_ns=2 * 10**18, seed=5, end=False)
    assert recorder.drain(20)
    killed = root / "killed" / "ep-0002"
    shutil.copytree(root / "bags" / "ep-0002", killed)
    recorder.close()
    return {"bag": root / "bags" / "ep-0001", "episode": episode, "killed": killed}


@pytest.fixture
def copy(recorded, tmp_path):
    def make(name: str = "ep-0001", source: str = "bag") -> Path:
        target = tmp_path / "copies" / name
        shutil.copytree(recorded[source], target)
        return target

    return make


# --------------------------------------------------------------------------- CRCs are written


def test_new_bags_carry_chunk_data_section_and_summary_crcs(recorded):
    from mcap.records import DataEnd, Footer
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2 import Reader

    mcap = storage_file(recorded["bag"])
    chunks = chunks_of(mcap)
    raw = mcap.read_bytes()
    assert len(chunks) > 5
    for chunk in chunks:
        crc = struct.unpack_from("<I", raw, chunk.start + 33)[0]
        assert crc != 0 and crc == zlib.crc32(raw[chunk.data : chunk.data_end])  # uncompressed: the records as stored
    records = list(StreamReader(mcap.open("rb"), emit_chunks=True, validate_crcs=True).records)  # raises on mismatch
    data_end = next(r for r in records if isinstance(r, DataEnd))
    footer = next(r for r in records if isinstance(r, Footer))
    assert raw[footer.summary_start - 13] == 0x0F  # DataEnd, right before the summary
    assert data_end.data_section_crc == zlib.crc32(raw[: footer.summary_start - 13])
    assert footer.summary_crc == zlib.crc32(raw[footer.summary_start : len(raw) - 8 - 4])
    with Reader(recorded["bag"]) as reader:  # rosbags checks chunk CRCs too
        assert sum(1 for _ in reader.messages()) == len(messages_of(recorded["bag"]))
    info = read_info(recorded["bag"])
    assert info.integrity.ok and info.integrity.checksummed and info.integrity.crc_chunks == len(chunks)


def test_bag_info_says_what_was_verified(recorded, capsys):
    assert recap(["bag", "info", str(recorded["bag"])]) == 0
    out = capsys.readouterr().out
    chunks = len(chunks_of(storage_file(recorded["bag"])))
    assert "integrity:  verified: the data section CRC, the summary CRC match" in out
    assert f"({chunks} of {chunks} chunks carry their own CRC too)" in out


# --------------------------------------------------------------------------- a changed command or image


def test_a_changed_joint_command_is_reported_skipped_and_repaired_away(recorded, copy, tmp_path, capsys):
    bag = copy()
    fed = recorded["episode"]
    offset, number = payload_offset(bag, "/joint_command", 20)
    xor_bytes(bag, offset + 60, b"\x40" * 8)  # inside the positions: a different action, same length

    assert recap(["bag", "info", str(bag)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"chunk {number} at byte" in err and "/joint_command" in err and "CRC mismatch" in err
    assert "s into the bag" in err and f"recap bag repair {bag}" in err

    dataset = tmp_path / "dataset"
    assert recap(["convert", str(bag), "--out", str(dataset), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"corrupt {bag}: " in captured.err and f"chunk {number}" in captured.err
    assert "0 episode(s)" in captured.out and "1 corrupt" in captured.out
    assert not (dataset / "meta" / "episodes").exists()
    with pytest.raises(CorruptBag):
        load_episode(bag)

    assert recap(["bag", "repair", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "nothing to repair" not in out and "1 corrupt chunk(s) dropped" in out and "/joint_command" in out
    assert f"  dropped chunk {number} at byte" in out
    repaired = bag.with_name(bag.name + "_repaired")
    info = read_info(repaired)
    assert info.integrity.ok and info.integrity.checksummed
    hit = chunks_of(storage_file(recorded["bag"]))[number]
    expected = [m for m in messages_of(recorded["bag"]) if m not in hit.messages]
    assert messages_of(repaired) == expected
    assert (
        info.custom_data["repair_dropped_chunks"] == "1"
        and "/joint_command" in info.custom_data["repair_lost_messages"]
    )

    assert recap(["convert", str(repaired), "--out", str(dataset), "--no-progress"]) == 0
    assert "messages lost in corrupt chunks" in capsys.readouterr().out
    import pyarrow.parquet as pq

    from recap_core.data import load_episodes

    actions = np.array(pq.read_table(next((dataset / "data").rglob("*.parquet")))["action"].to_pylist())
    distance = np.abs(actions[:, None, :] - fed.commands[None, :, :]).max(axis=2).min(axis=1)
    assert np.all(distance < 1e-6)  # every frame's action is a command that was sent
    [episode] = load_episodes(dataset)
    assert (
        episode["length"]
        == len(fed.commands)
        - sum(m[0] == "/joint_command" for m in hit.messages)
        - episode["extra"]["dropped_leading_ticks"]
    )


def test_changed_image_bytes_are_found_by_info_convert_and_repair(recorded, copy, tmp_path, capsys):
    bag = copy()
    offset, number = payload_offset(bag, "/camera/left_wrist/image_raw/compressed", 30)
    xor_bytes(bag, offset + 120, bytes([0x01, 0x80, 0x10]))
    with pytest.raises(CorruptBag, match=f"chunk {number} at byte .*left_wrist"):
        read_info(bag)
    [outcome] = convert_bags([bag], tmp_path / "dataset", progress=False)
    assert outcome.status == "corrupt" and f"chunk {number}" in outcome.reason
    assert recap(["bag", "repair", str(bag), "--out", str(tmp_path / "fixed")]) == 0
    assert "1 corrupt chunk(s) dropped" in capsys.readouterr().out
    assert read_info(tmp_path / "fixed").integrity.ok
    [outcome] = convert_bags([tmp_path / "fixed"], tmp_path / "dataset", progress=False)
    assert outcome.status == "converted"


def test_damage_between_the_chunks_is_found_and_repaired_without_loss(recorded, copy, capsys):
    """A message index or a chunk's length field: the data section CRC fails, every chunk's records are
    intact, so repair (through the verified summary) loses nothing."""
    for name, where in (("index", "message index"), ("length", "chunk length")):
        bag = copy(name)
        chunk = chunks_of(storage_file(bag))[3]
        xor_bytes(bag, chunk.data_end + 20 if where == "message index" else chunk.start + 3, b"\x04")
        with pytest.raises(CorruptBag, match="losing nothing"):
            read_info(bag)
        report = repair_bag(bag)
        assert report.dropped == () and messages_of(report.output) == messages_of(recorded["bag"]), where
        assert read_info(report.output).integrity.ok


# --------------------------------------------------------------------------- properties


class Geometry(dict):
    def __repr__(self) -> str:  # not the whole file in a failure report
        return f"<{len(self['raw'])} bytes, {len(self['chunks'])} chunks>"


@pytest.fixture(scope="module")
def geometry(recorded):
    mcap = storage_file(recorded["bag"])
    return Geometry(raw=mcap.read_bytes(), chunks=chunks_of(mcap), messages=messages_of(recorded["bag"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_of_one_byte_anywhere_in_a_bag_is_reported(recorded, geometry, tmp_path_factory, data):
    """Header, chunks, message indexes, summary, footer: no single changed byte reads as a healthy bag."""
    offset = data.draw(st.integers(0, len(geometry["raw"]) - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor")
    bag = tmp_path_factory.mktemp("flip") / "ep-0001"
    shutil.copytree(recorded["bag"], bag)
    xor_bytes(bag, offset, bytes([mask]))
    with pytest.raises(BagError):
        read_info(bag)
    assert recap(["bag", "info", str(bag)]) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flip_in_a_chunk_costs_that_chunk_and_nothing_else(recorded, geometry, tmp_path_factory, data):
    chunks = geometry["chunks"]
    number = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    offset = data.draw(st.integers(chunks[number].data, chunks[number].data_end - 1), label="offset")
    bag = tmp_path_factory.mktemp("flip") / "ep-0001"
    shutil.copytree(recorded["bag"], bag)
    xor_bytes(bag, offset, bytes([data.draw(st.integers(1, 255), label="xor")]))
    with pytest.raises(CorruptBag, match=f"chunk {number} at byte {chunks[number].start} "):
        load_episode(bag)
    report = repair_bag(bag)
    assert [d.number for d in report.dropped] == [number]
    lost = chunks[number].messages
    assert messages_of(report.output) == [m for m in geometry["messages"] if m not in lost]
    assert sum(report.lost_per_topic.values()) == len(lost)
    assert read_info(report.output).integrity.ok


@pytest.fixture(scope="module")
def compressed_bag(recorded, tmp_path_factory):
    """The recorded bag rewritten with zstd chunks (rosbags' storage compression), a chunk every 25 messages."""
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
    from rosbags.typesys import Stores, get_typestore

    recovered = recover_mcap(storage_file(recorded["bag"]))
    out = tmp_path_factory.mktemp("zstd") / "ep-0001"
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
        if n % 25 == 24:
            writer.storage.close_chunk()
    for key, value in read_info(recorded["bag"]).custom_data.items():
        writer.set_custom_data(key, value)
    writer.close()
    chunks = chunks_of(storage_file(out))
    assert len(chunks) > 5 and {c.compression for c in chunks} == {"zstd"}
    return Geometry(bag=out, chunks=chunks, messages=messages_of(out), raw=b"")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flip_in_compressed_chunk_data_is_reported_and_costs_only_that_chunk(compressed_bag, tmp_path_factory, data):
    chunks = compressed_bag["chunks"]
    number = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    offset = data.draw(st.integers(chunks[number].data, chunks[number].data_end - 1), label="offset")
    bag = tmp_path_factory.mktemp("zflip") / "ep-0001"
    shutil.copytree(compressed_bag["bag"], bag)
    xor_bytes(bag, offset, bytes([data.draw(st.integers(1, 255), label="xor")]))
    with pytest.raises(CorruptBag) as raised:
        load_episode(bag)
    report = repair_bag(bag)
    if report.dropped:
        assert f"chunk {number} at byte" in str(raised.value) and [d.number for d in report.dropped] == [number]
        assert messages_of(report.output) == [m for m in compressed_bag["messages"] if m not in chunks[number].messages]
    else:  # zstd decoded the changed bytes to the same records (e.g. a larger window size): nothing is lost
        assert "losing nothing" in str(raised.value)
        assert messages_of(report.output) == compressed_bag["messages"]


def test_compressed_chunks_verify_and_convert(compressed_bag, tmp_path):
    assert read_info(compressed_bag["bag"]).integrity.crc_chunks == len(compressed_bag["chunks"])
    [outcome] = convert_bags([compressed_bag["bag"]], tmp_path / "dataset", progress=False)
    assert outcome.status == "converted" and outcome.reason == ""


def test_repair_of_a_killed_bag_drops_a_corrupt_chunk_and_keeps_reading(recorded, copy):
    """No footer, so no index: repair reads record by record, leaves out the chunk that fails its CRC and
    goes on to the complete chunks after it."""
    bag = copy("ep-0002", "killed")
    chunks = chunks_of(storage_file(bag))
    hit = chunks[len(chunks) // 2]
    everything = messages_of(bag)
    xor_bytes(bag, hit.data_end - 1, b"\x08")  # the last byte of the chunk's last message
    report = repair_bag(bag)
    assert [d.number for d in report.dropped] == [len(chunks) // 2]
    assert dict(report.lost_per_topic) == {t: sum(m[0] == t for m in hit.messages) for t, *_ in hit.messages}
    assert messages_of(report.output) == [m for m in everything if m not in hit.messages]
    assert len(chunks) // 2 + 1 < len(chunks)  # complete chunks after the corrupt one were kept


# --------------------------------------------------------------------------- bags written before CRCs


def test_bags_without_crcs_still_read_convert_and_say_they_are_unverified(helpers, tmp_path, monkeypatch, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from recap_recorder import bag_writer

    monkeypatch.setattr(
        bag_writer,
        "checksummed_writer",
        lambda path: Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP),
    )  # what the recorder used before
    recorder = helpers.make_recorder(tmp_path / "bags", chunk_size_bytes=4096)
    helpers.feed(recorder, "old-0001", "success", steps=20, t0_ns=10**18)
    assert recorder.drain(20)
    recorder.close()
    bag = tmp_path / "bags" / "old-0001"
    raw = storage_file(bag).read_bytes()
    assert all(struct.unpack_from("<I", raw, c.start + 33)[0] == 0 for c in chunks_of(storage_file(bag)))
    assert struct.unpack_from("<I", raw, len(raw) - 12)[0] == 0  # footer summary CRC

    assert recap(["bag", "info", str(bag)]) == 0
    assert "integrity:  not verified: the bag carries no CRCs" in capsys.readouterr().out
    assert recap(["convert", str(bag), "--out", str(tmp_path / "dataset"), "--no-progress"]) == 0
    assert "frames; not verified: the bag carries no CRCs)" in capsys.readouterr().out
    assert recap(["bag", "repair", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "carries no CRCs" in out and "nothing to repair" in out


# --------------------------------------------------------------------------- paths


def test_the_mcap_file_of_a_bag_means_the_bag(recorded, copy, tmp_path, capsys):
    bag = recorded["bag"]
    mcap = storage_file(bag)
    assert recap(["bag", "info", str(mcap)]) == 0
    assert f"bag:        {bag}\n" in capsys.readouterr().out
    assert read_info(mcap).path == bag
    assert recap(["convert", str(mcap), "--out", str(tmp_path / "dataset"), "--no-progress"]) == 0
    assert f"converted {bag} -> episode 0" in capsys.readouterr().out
    assert recap(["bag", "repair", str(mcap)]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    killed = copy("ep-0002", "killed")
    assert recap(["bag", "repair", str(storage_file(killed))]) == 0
    assert read_info(killed.with_name("ep-0002_repaired")).custom_data["episode_id"] == "ep-0002"


def test_an_mcap_file_outside_a_bag_directory_is_a_clear_error(recorded, tmp_path, capsys):
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("a.mcap", "b.mcap"):
        shutil.copy(storage_file(recorded["bag"]), loose / name)
    assert recap(["bag", "info", str(loose / "a.mcap")]) == 1
    err = capsys.readouterr().err
    assert "outside a bag directory" in err and "recap bag repair" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- convert --out


def test_convert_refuses_an_output_that_is_a_file(recorded, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    for out in (file, file / "dataset"):
        assert recap(["convert", str(recorded["bag"]), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "is a file" in err and "directory" in err
    assert file.read_text() == "x"


def test_convert_refuses_to_append_to_a_damaged_dataset(recorded, helpers, tmp_path, capsys):
    recorder = helpers.make_recorder(tmp_path / "bags")
    helpers.feed(recorder, "ep-0009", "failure", steps=15, t0_ns=10**18 + 10**12)
    assert recorder.drain(20)
    recorder.close()
    good = tmp_path / "good"
    assert recap(["convert", str(recorded["bag"]), "--out", str(good), "--no-progress"]) == 0
    capsys.readouterr()

    def damaged(name, damage):
        root = tmp_path / name
        shutil.copytree(good, root)
        damage(root)
        return root

    cases = [
        damaged("no_episodes", lambda root: shutil.rmtree(root / "meta" / "episodes")),
        damaged("garbage_tasks", lambda root: (root / "meta" / "tasks.parquet").write_bytes(b"garbage")),
    ]
    for root in cases:
        before = sorted(p for p in root.rglob("*") if p.is_file())
        assert recap(["convert", str(tmp_path / "bags" / "ep-0009"), "--out", str(root), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"recap convert: not appending to {root}: ")
        assert sorted(p for p in root.rglob("*") if p.is_file()) == before  # nothing written


def test_crc_range_is_zlibs_crc_over_any_range_with_its_buffers_reused(tmp_path):
    import os
    import threading

    from recap_recorder.indexed_mcap import crc_range

    data = np.random.default_rng(3).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    path = tmp_path / "file"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, stop, block in ((0, 100_000, 1 << 25), (10, 99_000, 4096), (5, 50, 7), (0, 200_000, 30_000)):
            assert crc_range(fd, start, stop, block=block) == zlib.crc32(data[start:stop]), (start, stop, block)
        assert crc_range(fd, 500, 900, crc=zlib.crc32(data[:500])) == zlib.crc32(data[:900])
        results = {}

        def check(number):  # checks running at once each get their own buffer
            results[number] = [crc_range(fd, number, 100_000 - number, block=1000) for _ in range(20)]

        threads = [threading.Thread(target=check, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {n: [zlib.crc32(data[n : 100_000 - n])] * 20 for n in range(4)}
    finally:
        os.close(fd)
