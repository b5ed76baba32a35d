"""Episode bags on disk: write with CRCs, open with clear errors, verify, summarise (``recap bag info``), repair.

A bag is a rosbag2 directory with one MCAP file and ``metadata.yaml``. Bags
are written by :func:`checksummed_writer`: ``rosbags``' MCAP writer plus the
CRCs it leaves 0 (each chunk's ``uncompressed_crc``, the DataEnd record's
``data_section_crc``, the Footer's ``summary_crc``), so that bit rot is found
instead of converted (:meth:`IndexedMcap.verify`). A bag whose recorder died
has no ``metadata.yaml`` and an MCAP cut off in its last chunk;
:func:`repair_bag` keeps every message of every complete chunk whose CRC
matches and writes a new, valid bag whose ``custom_data`` comes from the last
``episode/status`` recorded in it (``repaired: true``).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import functools
import io
import json
import os
import re
import struct
import threading
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import yaml


REPAIRED_SUFFIX = "_repaired"
EPISODE_STATUS = "episode/status"
TERMINAL_STATES = ("success", "failure", "aborted")
UNKNOWN_LABEL = "unknown"  # the episode did not reach a terminal state while recorded
#: custom_data keys copied from ``episode/status`` (DESIGN.md §6).
METADATA_KEYS = ("episode_id", "task", "source", "policy_checkpoint", "beta", "station", "operator", "seed",
                 "start_time", "stop_time", "steps", "interventions", "intervention_steps")


def resolve_topic(name: str, namespace: str) -> str:
    """The absolute name a relative topic has in ``namespace`` (what `ros2 bag record` stores)."""
    if name.startswith("/"):
        return name
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{namespace}/{name}"


def episode_custom_data(start: Mapping[str, str], end: Mapping[str, str], *, label: str, reason: str,
                        station: str, namespace: str, cameras, partial_start: bool,
                        received: Mapping[str, int], overflows: Mapping[str, int]) -> dict[str, str]:
    """DESIGN.md §6 episode metadata for ``metadata.yaml`` ``custom_data`` (all strings).

    Values come from the final ``episode/status`` when it is about this episode,
    else from the one that started it; ``received``/``overflows`` are the recorder's
    per-topic counters for the episode.
    """
    same = end.get("episode_id") == start.get("episode_id") and end.get("state") in TERMINAL_STATES
    source = end if same else start
    data = {key: str(source.get(key, "") or start.get(key, "")) for key in METADATA_KEYS}
    data["station"] = data["station"] or station
    if not data["stop_time"]:
        data["stop_time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    data.update({
        "label": label, "stop_reason": reason, "partial_start": str(partial_start).lower(),
        "repaired": "false", "namespace": namespace, "cameras": ",".join(cameras),
        "recorder_received": json.dumps(dict(received), sort_keys=True),
        "recorder_dropped": str(sum(overflows.values())),
        "recorder_queue_overflows": json.dumps(dict(overflows), sort_keys=True),
    })
    return data


class BagError(Exception):
    """A bag that cannot be used as it is; the text says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int
    rate_hz: float


@dataclasses.dataclass(frozen=True)
class BagInfo:
    path: Path
    storage_file: Path
    size_bytes: int
    topics: tuple[TopicSummary, ...]
    message_count: int
    start_ns: int
    duration_s: float
    custom_data: Mapping[str, str]
    integrity: "Integrity | None" = None  # None: not verified (opened with verify=False)

    @property
    def label(self) -> str:
        return self.custom_data.get("label", "") or UNKNOWN_LABEL

    @property
    def namespace(self) -> str:
        return self.custom_data.get("namespace", "") or guess_namespace(t.name for t in self.topics)

    def topic(self, relative: str) -> TopicSummary | None:
        """The topic recorded under ``relative`` (e.g. ``joint_command``) in the bag's namespace."""
        wanted = relative_topic_name(relative, self.namespace)
        return next((t for t in self.topics if t.name == wanted), None)


def relative_topic_name(relative: str, namespace: str) -> str:
    return resolve_topic(relative, namespace)


_CAMERA_TOPIC = re.compile(r"(?:^|/)camera/(?P<camera>[^/]+)/image_raw(?:/compressed)?$")


def bag_cameras(topics) -> tuple[str, ...]:
    """Camera names of the ``camera/<cam>/image_raw`` topics (raw or ``/compressed``), in first-seen order."""
    found = (_CAMERA_TOPIC.search(t) for t in topics)
    return tuple(dict.fromkeys(m["camera"] for m in found if m))


def guess_namespace(names) -> str:
    """The namespace of a bag recorded without one in its metadata: where episode/status lives."""
    for name in names:
        if name.endswith("/" + EPISODE_STATUS):
            return name[: -len(EPISODE_STATUS) - 1] or "/"
    return "/"


def bag_directory(path: Path) -> Path:
    """The bag ``path`` names: a bag directory stays, and so does any other path; the ``.mcap`` file of a
    bag directory (the one its ``metadata.yaml`` sits next to, or the only one there) means that directory."""
    path = Path(path)
    if path.suffix == ".mcap" and path.is_file():
        parent = path.parent
        if (parent / "metadata.yaml").is_file() or [p.name for p in parent.glob("*.mcap")] == [path.name]:
            return parent
    return path


def storage_file(path: Path) -> Path:
    """The MCAP file of a bag directory (or the file itself)."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (expected a rosbag2 directory written by the recorder)")
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(f"{path} is not an MCAP file or a rosbag2 directory")
        return path
    files = sorted(path.glob("*.mcap"))
    if not files:
        hint = " (sqlite3 bags are not supported: record with MCAP)" if list(path.glob("*.db3")) else ""
        raise BagError(f"{path} holds no .mcap file{hint}; is it a bag directory?")
    if len(files) > 1:
        raise BagError(f"{path} holds {len(files)} .mcap files ({[f.name for f in files]}); one bag per "
                       "episode has exactly one")
    return files[0]


def read_metadata(path: Path) -> dict:
    """``rosbag2_bagfile_information`` of ``metadata.yaml``; BagError if missing (recorder killed)."""
    meta = Path(path) / "metadata.yaml"
    if Path(path).is_file():
        raise BagError(f"{path} is an MCAP file outside a bag directory (no metadata.yaml next to it); "
                       f"`recap bag repair {path}` rebuilds a bag from it")
    if not meta.is_file():
        raise BagError(f"{path} has no metadata.yaml: it was not closed (recorder killed or crashed). "
                       f"Run `recap bag repair {path}` to rebuild it from its MCAP chunks")
    try:
        info = (yaml.load(meta.read_text(), Loader=_YAML_LOADER) or {})["rosbag2_bagfile_information"]
        info["duration"]["nanoseconds"], info["starting_time"]["nanoseconds_since_epoch"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"{meta} is not rosbag2 metadata ({exc}); run `recap bag repair {path}`") from exc
    return info


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- CRCs: writing and checking

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_CHUNK, _OP_MESSAGE, _OP_MESSAGE_INDEX, _OP_DATA_END = 0x02, 0x06, 0x05, 0x07, 0x0F
_FOOTER_SIZE = 9 + 20  # opcode, length, summary_start, summary_offset_start, summary_crc
_CHUNK_HEAD = struct.Struct("<BQQQQI")  # opcode, length, message_start_time, message_end_time, size, crc
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _CrcFile:
    """The MCAP file being written; keeps the CRC-32 of every byte written so far (the data section CRC)."""

    def __init__(self, raw, crc: int):
        self.raw, self.crc = raw, crc

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


class _Held(io.BytesIO):
    """Records rosbags writes for one chunk, or for the file's end, held back until their CRC fields are
    filled in; ``tell`` answers in file offsets, since rosbags stores them in its indexes."""

    def __init__(self, base: int):
        super().__init__()
        self.base = base

    def tell(self) -> int:
        return self.base + super().tell()

    def close(self) -> None:  # rosbags closes the file after the footer; the bytes are still to be written
        pass


@functools.cache
def _checksummed_writer_class():
    """rosbags' rosbag2 ``Writer`` whose MCAP storage fills in the CRCs rosbags writes as 0.

    The records are rosbags' own, byte for byte, except the CRC fields, which are filled in before the
    records reach the file: nothing is patched after the fact. A chunk with its message indexes (and
    the file's end) goes to the file in one ``write``, so a crash leaves complete chunks followed by
    at most one cut-off record, which :func:`repair_bag` handles as before.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import McapWriter

    class ChecksummedMcapStorage(McapWriter):
        def __init__(self, path, compression):
            super().__init__(path, compression)
            self.bio.flush()
            self.bio = _CrcFile(self.bio, zlib.crc32(self.path.read_bytes()))  # the magic and header so far

        def _held(self, write, *args) -> bytearray:
            real, self.bio = self.bio, _Held(self.bio.tell())
            try:
                write(*args)
                return bytearray(self.bio.getvalue())
            finally:
                self.bio = real

        def close_chunk(self) -> None:
            size = self.chunk.bio.tell()
            with self.chunk.bio.getbuffer() as records:
                crc = zlib.crc32(records)
            out = self._held(super().close_chunk)
            opcode, _, _, _, written_size, _ = _CHUNK_HEAD.unpack_from(out)
            if opcode == _OP_CHUNK and written_size == size:  # else rosbags changed its layout: CRC stays 0
                _U32.pack_into(out, _CHUNK_HEAD.size - 4, crc)
            self.bio.write(out)

        def close(self, version: int, metadata: str) -> None:
            if self.chunk.bio.tell():
                self.close_chunk()
            base, crc = self.bio.tell(), self.bio.crc
            out = self._held(super().close, version, metadata)
            _fill_end_crcs(out, base, crc)
            self.bio.write(out)
            self.bio.flush()
            self.bio.close()

    class ChecksummedWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: ChecksummedMcapStorage}

    return ChecksummedWriter, StoragePlugin


def checksummed_writer(path: Path):
    """A rosbags ``Writer`` (rosbag2 version 9, MCAP) for a new bag at ``path`` that writes every MCAP CRC."""
    writer_class, plugins = _checksummed_writer_class()
    return writer_class(path, version=writer_class.VERSION_LATEST, storage_plugin=plugins.MCAP)


def _fill_end_crcs(out: bytearray, base: int, crc: int) -> None:
    """Fill in the data section CRC (DataEnd) and the summary CRC (Footer) of the end of an MCAP file.

    ``out`` holds the records from file offset ``base`` to the end; ``crc`` is the CRC-32 of the bytes
    before ``base``. A record that is not where the MCAP layout puts it keeps its CRC 0 ("not computed").
    """
    position = 0
    while position + 9 <= len(out) and out[position] != _OP_DATA_END:
        position += 9 + _U64.unpack_from(out, position + 1)[0]
    if position + 13 <= len(out) and _U64.unpack_from(out, position + 1)[0] == 4:
        _U32.pack_into(out, position + 9, zlib.crc32(memoryview(out)[:position], crc))
    footer = len(out) - len(MCAP_MAGIC) - _FOOTER_SIZE
    if footer < 0 or out[footer] != _OP_FOOTER or bytes(out[-len(MCAP_MAGIC):]) != MCAP_MAGIC:
        return
    summary_start = _U64.unpack_from(out, footer + 9)[0]
    start = summary_start - base if summary_start else footer
    if 0 <= start <= footer:
        _U32.pack_into(out, footer + 25, zlib.crc32(memoryview(out)[start:footer + 25]))


@dataclasses.dataclass(frozen=True)
class ChunkDamage:
    """A chunk whose records cannot be trusted, and what it held."""

    number: int                 # in file order, from 0
    offset: int                 # file offset of the chunk record
    start_ns: int               # log times of its first and last message
    end_ns: int
    topics: Mapping[str, int]   # messages per topic it held (its message index; empty: unknown)
    problem: str

    def describe(self, t0_ns: int | None = None) -> str:
        if t0_ns is not None:
            when = f"+{(self.start_ns - t0_ns) / 1e9:.3f}..+{(self.end_ns - t0_ns) / 1e9:.3f} s into the bag"
        else:
            when = f"log time {self.start_ns}..{self.end_ns} ns"
        held = ", ".join(f"{topic} {count}" for topic, count in sorted(self.topics.items())) or "contents unknown"
        return f"chunk {self.number} at byte {self.offset} ({when}; {held}): {self.problem}"

    @property
    def messages(self) -> int:
        return sum(self.topics.values())


@dataclasses.dataclass(frozen=True)
class Integrity:
    """What :meth:`IndexedMcap.verify` found. A CRC of 0 means "not computed" (MCAP spec): bags written
    before the recorder filled them in carry none, and only their structure can be checked."""

    chunks: int
    crc_chunks: int             # chunks that carry a CRC, all checked
    data_crc: bool              # the DataEnd record carries a data section CRC, checked
    summary_crc: bool           # the Footer carries a summary CRC, checked
    damaged: tuple[ChunkDamage, ...] = ()
    problems: tuple[str, ...] = ()  # damage outside the chunks' records
    start_ns: int | None = None     # log time of the bag's first message

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.problems

    @property
    def checksummed(self) -> bool:
        return bool(self.crc_chunks or self.data_crc)

    def describe(self) -> str:
        """One line: what was verified, or what is wrong."""
        if not self.ok:
            found = [d.describe(self.start_ns) for d in self.damaged[:3]]
            if len(self.damaged) > 3:
                found.append(f"and {len(self.damaged) - 3} more corrupt chunk(s)")
            return "; ".join(found + list(self.problems))
        if not self.checksummed:
            return ("not verified: the bag carries no CRCs (written before the recorder recorded them, or by a "
                    "writer that leaves them 0)")
        checked = ["the data section CRC"] * self.data_crc + ["the summary CRC"] * self.summary_crc
        if not self.data_crc:
            checked.insert(0, f"{self.crc_chunks} of {self.chunks} chunk CRCs")
        line = "verified: " + ", ".join(checked) + " match"
        if self.data_crc:  # it covers every chunk; theirs name the chunk when it fails
            line += f" ({self.crc_chunks} of {self.chunks} chunks carry their own CRC too)"
        return line

    def to_json(self) -> dict:
        return {"ok": self.ok, "checksummed": self.checksummed, "chunks": self.chunks,
                "crc_chunks": self.crc_chunks, "data_crc": self.data_crc, "summary_crc": self.summary_crc,
                "damaged_chunks": [dict(dataclasses.asdict(d), topics=dict(d.topics)) for d in self.damaged],
                "problems": list(self.problems)}


class CorruptBag(BagError):
    """A closed bag whose CRCs say some of its bytes changed after they were written."""

    def __init__(self, path: Path, integrity: Integrity):
        self.integrity = integrity
        corrupt = len(integrity.damaged)
        what = (f"{corrupt} of {integrity.chunks} chunk(s) corrupt" if corrupt
                else "damaged outside its message data")
        hint = ("drops the corrupt chunk(s), keeps the rest and says what was lost" if corrupt
                else "rebuilds it from its verified chunks, losing nothing")
        super().__init__(f"{path} is corrupt ({what}): {integrity.describe()}. `recap bag repair {path}` {hint}")


@dataclasses.dataclass(frozen=True)
class _ChunkRecord:
    """One chunk record read back: its header and, if readable, its records (uncompressed)."""

    start_ns: int
    end_ns: int
    crc: int              # stored CRC, 0 = none
    records: bytes | None  # None when unreadable; not to be used when there is a problem
    problem: str = ""      # why its records cannot be trusted
    header_problem: str = ""  # header disagrees with the chunk index


def _read_chunk_record(record: bytes, index=None) -> _ChunkRecord:
    """Check one chunk record (opcode to end) against its own CRC and, if given, its chunk index entry."""
    if len(record) < _CHUNK_HEAD.size + 12:
        return _ChunkRecord(0, 0, 0, None, f"only {len(record)} bytes, less than a chunk header")
    opcode, length, start, end, size, crc = _CHUNK_HEAD.unpack_from(record)
    if opcode != _OP_CHUNK:
        return _ChunkRecord(start, end, 0, None, f"no chunk record there (opcode {opcode:#04x})")
    at = _CHUNK_HEAD.size
    name_size = _U32.unpack_from(record, at)[0]
    compression = bytes(record[at + 4: at + 4 + name_size]).decode("utf-8", "replace")
    at += 4 + name_size
    data_size = _U64.unpack_from(record, at)[0] if at + 8 <= len(record) else -1
    data = record[at + 8: at + 8 + data_size]
    header = []
    if 9 + length != len(record):
        header.append(f"record length {9 + length}, index {len(record)}")
    if index is not None:
        for name, value in (("message_start_time", start), ("message_end_time", end), ("uncompressed_size", size),
                            ("compression", compression), ("compressed_size", data_size)):
            if getattr(index, name) != value:
                header.append(f"{name} {value!r}, index {getattr(index, name)!r}")
    header_problem = "header disagrees with the chunk index (" + "; ".join(header) + ")" if header else ""
    if data_size < 0 or at + 8 + data_size > len(record):
        return _ChunkRecord(start, end, crc, None, f"data runs past the record ({data_size} bytes)", header_problem)
    try:
        records = _decompress(compression, data, size)
    except Exception as exc:  # whatever the decompressor makes of damaged bytes
        return _ChunkRecord(start, end, crc, None, f"{compression} data does not decompress ({exc})", header_problem)
    if len(records) != size:
        return _ChunkRecord(start, end, crc, None, f"{len(records)} bytes of records, header says {size}",
                            header_problem)
    if crc:
        actual = zlib.crc32(records)
        if actual != crc:
            return _ChunkRecord(start, end, crc, records, f"CRC mismatch (stored {crc:#010x}, computed "
                                f"{actual:#010x})", header_problem)
    elif header_problem:  # without a CRC nothing says the records survived what hit the header
        return _ChunkRecord(start, end, crc, None, header_problem + " and no CRC to check its records")
    return _ChunkRecord(start, end, crc, records, "", header_problem)


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if compression == "":
        return bytes(data)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=min(size, 1 << 31))
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unknown chunk compression {compression!r}")


def _chunk_topics(fd: int, index, topics: Mapping[int, str], file_size: int) -> dict[str, int]:
    """Messages per topic of one chunk, from its message index records (empty where those are damaged)."""
    counts = {}
    for channel, position in index.message_index_offsets.items():
        if position + 15 > file_size:
            continue
        opcode, _, channel_id, size = struct.unpack("<BQHI", os.pread(fd, 15, position))
        if opcode == _OP_MESSAGE_INDEX and channel_id == channel and channel in topics:
            counts[topics[channel]] = size // 16
    return counts


def _loose_topics(records: bytes | None, channels: Mapping[int, object]) -> dict[str, int]:
    """Messages per topic in a chunk's records as far as they parse (for what a damaged chunk held)."""
    counts: collections.Counter[str] = collections.Counter()
    position = 0
    while records is not None and position + 11 <= len(records):
        opcode, length = records[position], _U64.unpack_from(records, position + 1)[0]
        if opcode == _OP_MESSAGE:
            channel = channels.get(struct.unpack_from("<H", records, position + 9)[0])
            counts[getattr(channel, "topic", "?")] += 1
        position += 9 + length
    return dict(counts)


@dataclasses.dataclass(frozen=True)
class _Tail:
    """The end of a closed MCAP file: footer fields and where the DataEnd record is."""

    summary_start: int
    summary_crc: int
    summary_crc_ok: bool | None  # None: no CRC stored
    data_end: int | None         # offset of the DataEnd record (None: not where the layout puts it)
    data_crc: int


def _read_tail(fd: int, size: int) -> _Tail | None:
    footer = size - len(MCAP_MAGIC) - _FOOTER_SIZE
    if footer < len(MCAP_MAGIC):
        return None
    tail = os.pread(fd, _FOOTER_SIZE + len(MCAP_MAGIC), footer)
    if tail[0] != _OP_FOOTER or _U64.unpack_from(tail, 1)[0] != 20 or tail[-len(MCAP_MAGIC):] != MCAP_MAGIC:
        return None
    summary_start, _, summary_crc = struct.unpack_from("<QQI", tail, 9)
    crc_ok = None
    start = summary_start or footer
    if summary_crc:
        crc_ok = start <= footer and _crc_range(fd, start, footer + 25) == summary_crc
    data_end, data_crc = start - 13, 0
    if data_end >= len(MCAP_MAGIC):
        record = os.pread(fd, 13, data_end)
        if record[0] == _OP_DATA_END and _U64.unpack_from(record, 1)[0] == 4:
            data_crc = _U32.unpack_from(record, 9)[0]
        else:
            data_end = None
    else:
        data_end = None
    return _Tail(summary_start, summary_crc, crc_ok, data_end, data_crc)


def _crc_range(fd: int, start: int, stop: int, crc: int = 0, block: int = 1 << 23) -> int:
    while start < stop:
        data = os.pread(fd, min(block, stop - start), start)
        if not data:
            break
        crc = zlib.crc32(data, crc)
        start += len(data)
    return crc


@dataclasses.dataclass(frozen=True)
class MessageIndex:
    """Where one topic's messages are, in receive-time order: ``[N]`` arrays."""

    log_ns: np.ndarray   # int64 log (receive) times
    chunk: np.ndarray    # int64 chunk number
    offset: np.ndarray   # int64 offset of the message record in the chunk's records

    def __len__(self) -> int:
        return len(self.log_ns)


class IndexedMcap:
    """Random access to a closed MCAP file through its chunk and message indexes.

    Reads only the bytes of the messages asked for (uncompressed chunks are
    never read whole), so each camera of an episode can be streamed on its own,
    from its own thread: uncompressed reads are positional (``os.pread``), and
    the decompressed-chunk cache and the index cache are behind a lock.
    """

    _RECORD_HEAD = struct.Struct("<BQHIQQ")  # opcode, length, channel, sequence, log time, publish time

    def __init__(self, path: Path):
        from mcap.exceptions import McapError
        from mcap.reader import make_reader

        self.path = Path(path)
        self._file = open(self.path, "rb")
        try:
            summary = make_reader(self._file).get_summary()
        except (McapError, struct.error, ValueError, OSError, EOFError) as exc:
            self._file.close()
            raise BagError(f"{self.path} is damaged ({type(exc).__name__}: {exc}); `recap bag repair "
                           f"{self.path.parent}` recovers the complete chunks") from exc
        if summary is None or (summary.statistics and summary.statistics.message_count and not summary.chunk_indexes):
            self._file.close()
            raise BagError(f"{self.path} has no index; `recap bag repair {self.path.parent}` rewrites it")
        self._fd = self._file.fileno()
        self.schemas = {sid: s.name for sid, s in summary.schemas.items()}
        self.topics = {ch.topic: (cid, self.schemas.get(ch.schema_id, "")) for cid, ch in summary.channels.items()}
        self._chunks = sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
        self._channel_topics = {cid: ch.topic for cid, ch in summary.channels.items()}
        stats = summary.statistics
        self._start_ns = (stats.message_start_time if stats and stats.message_count else
                          min((c.message_start_time for c in self._chunks), default=None))
        self.integrity: Integrity | None = None  # set by verify()
        self._cached_chunk: tuple[int, bytes] | None = None
        self._indexes: dict[str, MessageIndex] = {}
        self._lock = threading.Lock()

    def verify(self) -> Integrity:
        """Check the summary CRC, the data section CRC, and every chunk's CRC and header (reads the whole file).

        When the data section CRC matches, every byte of every chunk is as written, and only the chunk
        headers are compared with the index; otherwise each chunk is checked against its own CRC, so
        the damage is named by chunk. CRCs of 0 are "not computed" and are not checked. Chunks are
        numbered in file order.
        """
        fd, size = self._fd, os.fstat(self._fd).st_size
        tail = _read_tail(fd, size)
        problems, damaged = [], []
        if tail is None:
            problems.append("no valid MCAP footer")
            tail = _Tail(0, 0, None, None, 0)
        if tail.summary_crc_ok is False:
            problems.append("the summary section (chunk index, channels, statistics) fails its CRC")
        elif tail.data_end is None and problems == []:
            problems.append("no DataEnd record where the footer says the data section ends")
        data_crc = bool(tail.data_end is not None and tail.data_crc)
        if data_crc and not problems and _crc_range(fd, 0, tail.data_end) == tail.data_crc:
            crc_chunks = self._check_chunk_headers(fd, tail.data_end, problems)
            self.integrity = Integrity(chunks=len(self._chunks), crc_chunks=crc_chunks, data_crc=True,
                                       summary_crc=tail.summary_crc_ok is not None, problems=tuple(problems),
                                       start_ns=self._start_ns)
            return self.integrity
        end = tail.data_end if tail.data_end is not None else size
        crc, position, crc_chunks = 0, 0, 0
        for number, chunk in enumerate(self._chunks):
            start, stop = chunk.chunk_start_offset, chunk.chunk_start_offset + chunk.chunk_length
            if start < position or stop > end:
                damaged.append(ChunkDamage(number, start, chunk.message_start_time, chunk.message_end_time,
                                           _chunk_topics(fd, chunk, self._channel_topics, size),
                                           f"the chunk index puts it at bytes {start}..{stop}, outside the data "
                                           "section or over the previous chunk"))
                continue
            crc = _crc_range(fd, position, start, crc)
            record = os.pread(fd, chunk.chunk_length, start)
            crc = zlib.crc32(record, crc)
            position = stop
            read = _read_chunk_record(record, chunk)
            crc_chunks += bool(read.crc)
            if read.problem:
                damaged.append(ChunkDamage(number, start, chunk.message_start_time, chunk.message_end_time,
                                           _chunk_topics(fd, chunk, self._channel_topics, size), read.problem))
            elif read.header_problem:
                problems.append(f"chunk {number} at byte {start}: {read.header_problem} (its records match "
                                "their CRC)")
        if data_crc:
            crc = _crc_range(fd, position, tail.data_end, crc)
            if crc != tail.data_crc and not damaged and not problems:
                problems.append("the data section fails its CRC although every chunk's records match theirs: "
                                "damage in the message indexes or other records between the chunks")
        self.integrity = Integrity(chunks=len(self._chunks), crc_chunks=crc_chunks, data_crc=data_crc,
                                   summary_crc=tail.summary_crc_ok is not None, damaged=tuple(damaged),
                                   problems=tuple(problems), start_ns=self._start_ns)
        return self.integrity

    def _check_chunk_headers(self, fd: int, end: int, problems: list[str]) -> int:
        """Whether the index describes the chunks it points at (appended to ``problems`` where not); the
        number of chunks carrying a CRC."""
        crc_chunks = 0
        for number, chunk in enumerate(self._chunks):
            start = chunk.chunk_start_offset
            head = os.pread(fd, _CHUNK_HEAD.size, start) if start + chunk.chunk_length <= end else b""
            if len(head) < _CHUNK_HEAD.size:
                problems.append(f"chunk {number}: the chunk index puts it at byte {start}, outside the data section")
                continue
            opcode, length, first, last, size, crc = _CHUNK_HEAD.unpack(head)
            crc_chunks += bool(crc)
            if (opcode, 9 + length, first, last, size) != (_OP_CHUNK, chunk.chunk_length, chunk.message_start_time,
                                                           chunk.message_end_time, chunk.uncompressed_size):
                problems.append(f"chunk {number} at byte {start}: the chunk index does not describe the chunk there")
        return crc_chunks

    def index(self, topic: str) -> MessageIndex:
        with self._lock:
            if topic not in self._indexes:
                self._indexes[topic] = self._read_index(topic)
            return self._indexes[topic]

    def _read_index(self, topic: str) -> MessageIndex:
        if topic not in self.topics:
            return MessageIndex(*(np.zeros(0, np.int64) for _ in range(3)))
        channel = self.topics[topic][0]
        times, chunks, offsets = [], [], []
        for number, chunk in enumerate(self._chunks):
            position = chunk.message_index_offsets.get(channel)
            if position is None:
                continue
            head = os.pread(self._fd, 15, position)
            opcode, _, channel_id, size = struct.unpack("<BQHI", head)
            if opcode != 0x07 or channel_id != channel:
                raise BagError(f"{self.path}: message index of {topic} is damaged; run `recap bag repair`")
            entries = np.frombuffer(os.pread(self._fd, size, position + 15), dtype="<u8").reshape(-1, 2)
            times.append(entries[:, 0].astype(np.int64))
            offsets.append(entries[:, 1].astype(np.int64))
            chunks.append(np.full(len(entries), number, np.int64))
        if not times:
            return MessageIndex(*(np.zeros(0, np.int64) for _ in range(3)))
        log_ns, chunk, offset = np.concatenate(times), np.concatenate(chunks), np.concatenate(offsets)
        order = np.lexsort((offset, chunk, log_ns))  # time order; ties in file order
        return MessageIndex(log_ns[order], chunk[order], offset[order])

    def read(self, index: MessageIndex, i: int, limit: int | None = None) -> tuple[bytes, int]:
        """(CDR bytes, full size) of message ``i`` of ``index``; only the first ``limit`` bytes if given."""
        chunk = self._chunks[int(index.chunk[i])]
        offset = int(index.offset[i])
        if chunk.compression:
            with self._lock:
                records = self._decompressed(int(index.chunk[i]))
            _, length, *_ = self._RECORD_HEAD.unpack_from(records, offset)
            size = length - 22
            return records[offset + 31: offset + 31 + min(size, limit or size)], size
        start = chunk.chunk_start_offset + 49 + len(chunk.compression) + offset
        opcode, length, *_ = self._RECORD_HEAD.unpack(os.pread(self._fd, 31, start))
        if opcode != 0x05:
            raise BagError(f"{self.path}: message record at {start} is damaged; run `recap bag repair`")
        size = length - 22
        return os.pread(self._fd, min(size, limit or size), start + 31), size

    def _decompressed(self, number: int) -> bytes:
        if self._cached_chunk is None or self._cached_chunk[0] != number:
            from mcap.records import Chunk
            from mcap.stream_reader import StreamReader, get_chunk_data_stream

            self._file.seek(self._chunks[number].chunk_start_offset)
            record = next(StreamReader(self._file, skip_magic=True, emit_chunks=True).records)
            if not isinstance(record, Chunk):
                raise BagError(f"{self.path}: chunk {number} is damaged; run `recap bag repair`")
            stream, size = get_chunk_data_stream(record)
            self._cached_chunk = (number, stream.read(size))
        return self._cached_chunk[1]

    def messages(self, topic: str) -> Iterator[tuple[int, bytes]]:
        index = self.index(topic)
        for i in range(len(index)):
            yield int(index.log_ns[i]), self.read(index, i)[0]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "IndexedMcap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bag(path: Path, *, verify: bool = True) -> tuple[dict, IndexedMcap]:
    """(metadata.yaml, indexed MCAP) of a closed bag, or BagError saying what is wrong and what to do.

    ``verify`` checks the MCAP's CRCs first (reads the whole file): a bag that fails raises
    :class:`CorruptBag`; one without CRCs opens with ``mcap.integrity.checksummed`` false.
    """
    path = bag_directory(path)
    mcap = storage_file(path)
    meta = read_metadata(path)
    indexed = IndexedMcap(mcap)
    if verify:
        try:
            integrity = indexed.verify()
        except (OSError, struct.error, ValueError) as exc:
            indexed.close()
            raise BagError(f"{mcap} is damaged ({type(exc).__name__}: {exc}); `recap bag repair {path}` "
                           "recovers the complete chunks") from exc
        if not integrity.ok:
            indexed.close()
            raise CorruptBag(path, integrity)
    return meta, indexed


def read_info(path: Path) -> BagInfo:
    """Topics, types, counts, rates, duration, episode metadata and integrity of a closed, verified bag."""
    path = bag_directory(path)
    meta, mcap = open_bag(path)
    with mcap:
        return bag_info(path, meta, mcap)


def bag_info(path: Path, meta: Mapping, mcap: "IndexedMcap") -> BagInfo:
    seconds = int(meta["duration"]["nanoseconds"]) / 1e9
    counts = {topic: len(mcap.index(topic)) for topic in mcap.topics}
    listed = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
              for t in meta.get("topics_with_message_count") or []}
    types = {**listed, **{topic: msgtype for topic, (_, msgtype) in mcap.topics.items()}}
    topics = tuple(TopicSummary(name, types[name], counts.get(name, 0),
                                (counts.get(name, 0) - 1) / seconds if seconds > 0 and counts.get(name, 0) > 1 else 0.0)
                   for name in sorted(types))
    return BagInfo(path=path, storage_file=mcap.path, size_bytes=mcap.path.stat().st_size, topics=topics,
                   message_count=sum(counts.values()),
                   start_ns=int(meta["starting_time"]["nanoseconds_since_epoch"]), duration_s=seconds,
                   custom_data={str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()},
                   integrity=mcap.integrity)


def format_info(info: BagInfo) -> str:
    lines = [f"bag:        {info.path}",
             f"storage:    {info.storage_file.name} ({info.size_bytes / 2**20:.1f} MB)",
             f"duration:   {info.duration_s:.3f} s",
             f"messages:   {info.message_count}",
             f"label:      {info.label}"]
    if info.integrity is not None:
        lines.append(f"integrity:  {info.integrity.describe()}")
    width = max((len(t.name) for t in info.topics), default=10)
    lines.append("topics:")
    for t in info.topics:
        lines.append(f"  {t.name:<{width}}  {t.count:>7} msgs  {t.rate_hz:7.1f} Hz  {t.msgtype}")
    if info.custom_data:
        lines.append("metadata:")
        key_width = max(len(k) for k in info.custom_data)
        for key, value in sorted(info.custom_data.items()):
            lines.append(f"  {key:<{key_width}}  {value}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- recovery

@dataclasses.dataclass
class Recovered:
    """What survives in an MCAP file: schemas, channels, messages of complete chunks whose CRC matches."""

    schemas: dict[int, object]
    channels: dict[int, object]
    messages: list  # mcap Message records, file order
    complete: bool  # the data section was read to its end: the file was closed properly
    good_bytes: int  # file offset after the last record that was read whole
    file_bytes: int
    problem: str = ""  # why reading stopped before the end
    dropped: list[ChunkDamage] = dataclasses.field(default_factory=list)  # corrupt chunks left out
    start_ns: int | None = None  # log time of the first message (that survived)

    @property
    def dropped_topics(self) -> dict[str, int]:
        """Messages per topic in the dropped chunks (as far as known)."""
        total: collections.Counter[str] = collections.Counter()
        for damage in self.dropped:
            total.update(damage.topics)
        return dict(total)


def recover_mcap(mcap_path: Path) -> Recovered:
    """Every message of every complete chunk of an MCAP file whose records survived (their CRC matches).

    A closed file whose summary passes its CRC is read chunk by chunk through its chunk index, so a
    corrupt chunk, even one whose length field was hit, costs only that chunk. Any other file (cut
    off, summary damaged or without a CRC) is read record by record: a chunk that fails its CRC is
    left out and reading goes on; reading stops at the first record that is cut off or does not parse.
    """
    mcap_path = Path(mcap_path)
    size = mcap_path.stat().st_size
    with open(mcap_path, "rb") as handle:
        summary = _verified_summary(handle, size)
        out = Recovered({}, {}, [], False, 0, size)
        if summary is not None:
            _recover_indexed(handle.fileno(), size, summary, out)
        else:
            _recover_records(handle.fileno(), size, out)
    return out


def _verified_summary(handle, size: int):
    """The file's mcap Summary when the file is closed, has a chunk index and its summary CRC matches."""
    from mcap.reader import make_reader

    tail = _read_tail(handle.fileno(), size)
    if tail is None or not tail.summary_crc_ok:
        return None
    try:
        summary = make_reader(handle).get_summary()
    except Exception:  # a summary that passes its CRC but does not parse: read the records instead
        return None
    return summary if summary is not None and summary.chunk_indexes else None


def _recover_indexed(fd: int, size: int, summary, out: Recovered) -> None:
    out.schemas.update(summary.schemas)
    out.channels.update(summary.channels)
    topics = {cid: ch.topic for cid, ch in summary.channels.items()}
    for number, chunk in enumerate(sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)):
        start = chunk.chunk_start_offset
        read = _read_chunk_record(os.pread(fd, chunk.chunk_length, start), chunk)
        items = None
        if not read.problem:
            try:
                items = _parse_records(read.records)
            except Exception as exc:  # records that match their CRC but do not parse: written so
                read = dataclasses.replace(read, problem=f"records do not parse ({type(exc).__name__}: {exc})")
        if items is None:
            held = _chunk_topics(fd, chunk, topics, size) or _loose_topics(read.records, out.channels)
            out.dropped.append(ChunkDamage(number, start, chunk.message_start_time, chunk.message_end_time, held,
                                           read.problem))
            continue
        _keep(out, items)
    out.complete, out.good_bytes = True, size


def _recover_records(fd: int, size: int, out: Recovered) -> None:
    from mcap.exceptions import McapError

    if os.pread(fd, len(MCAP_MAGIC), 0) != MCAP_MAGIC:
        out.problem = "no MCAP magic at the start of the file"
        return
    position = out.good_bytes = len(MCAP_MAGIC)
    number, chunked = 0, False
    try:
        while True:
            head = os.pread(fd, 9, position)
            if len(head) < 9:
                if head:
                    out.problem = f"cut off in a record header at byte {position}"
                break
            opcode, length = head[0], _U64.unpack_from(head, 1)[0]
            if position + 9 + length > size:
                what = "last chunk" if opcode == _OP_CHUNK else f"record (opcode {opcode:#04x})"
                out.problem = f"{what} at byte {position} cut off ({size - position - 9} of {length} bytes)"
                break
            body = os.pread(fd, length, position + 9)
            if opcode == _OP_CHUNK:
                read = _read_chunk_record(head + body)
                items = None
                if not read.problem:
                    try:
                        items = _parse_records(read.records)
                    except Exception as exc:
                        read = dataclasses.replace(read, problem=f"records do not parse ({type(exc).__name__})")
                if items is None:
                    out.dropped.append(ChunkDamage(number, position, read.start_ns, read.end_ns,
                                                   _loose_topics(read.records, out.channels), read.problem))
                else:
                    _keep(out, items)
                number, chunked = number + 1, True
            elif opcode == _OP_MESSAGE and chunked:  # chunked writers put every message in a chunk
                out.problem = f"message record outside a chunk at byte {position}: the records' framing is damaged"
                break
            elif opcode in (0x03, 0x04, _OP_MESSAGE):
                _keep(out, _parse_records(head + body), replace=False)
            elif not 0x01 <= opcode <= 0x0F:
                out.problem = f"no MCAP record at byte {position} (opcode {opcode:#04x}): the framing is damaged"
                break
            elif opcode in (_OP_DATA_END, _OP_FOOTER):  # the rest is the summary, which the rebuild writes anew
                out.complete, out.good_bytes = True, size
                return
            position += 9 + length
            out.good_bytes = position
    except (McapError, EOFError, struct.error, ValueError, UnicodeDecodeError, KeyError) as exc:
        out.problem = f"record at byte {position} does not parse ({type(exc).__name__}: {exc})"


def _parse_records(records: bytes) -> list:
    """Schema, Channel and Message records (mcap records) of a run of MCAP records; others are skipped."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Message, Schema

    stream, items = ReadDataStream(io.BytesIO(records)), []
    while stream.count < len(records):
        opcode, length = stream.read1(), stream.read8()
        end = stream.count + length
        if end > len(records):
            raise EOFError(f"record of {length} bytes runs past the end")
        if opcode == 0x03:
            items.append(Schema.read(stream))
        elif opcode == 0x04:
            items.append(Channel.read(stream))
        elif opcode == _OP_MESSAGE:
            items.append(Message.read(stream, length))
        if stream.count < end:
            stream.read(end - stream.count)
        elif stream.count > end:
            raise ValueError(f"record (opcode {opcode:#04x}) longer than its length {length}")
    return items


def _keep(out: Recovered, items, *, replace: bool = True) -> None:
    """Add parsed records; ``replace=False`` keeps the schema or channel already known under an id."""
    from mcap.records import Channel, Message, Schema

    for item in items:
        if isinstance(item, Schema):
            out.schemas[item.id] = item if replace else out.schemas.get(item.id, item)
        elif isinstance(item, Channel):
            out.channels[item.id] = item if replace else out.channels.get(item.id, item)
        elif isinstance(item, Message):
            out.messages.append(item)
            if out.start_ns is None or item.log_time < out.start_ns:
                out.start_ns = item.log_time


@dataclasses.dataclass(frozen=True)
class RepairReport:
    source: Path
    output: Path
    messages: int
    per_topic: Mapping[str, int]
    lost_bytes: int  # cut off after the last complete record
    label: str
    problem: str
    dropped: tuple[ChunkDamage, ...] = ()  # corrupt chunks left out
    start_ns: int | None = None            # log time of the first message kept
    orphans: int = 0  # messages kept out because the chunk defining their channel was dropped

    @property
    def lost_per_topic(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for damage in self.dropped:
            total.update(damage.topics)
        return dict(total)


def default_repair_output(path: Path) -> Path:
    path = bag_directory(path)
    return path.with_name(path.name + REPAIRED_SUFFIX)


def repair_bag(path: Path, out: Path | None = None) -> RepairReport:
    """Rebuild a valid bag from what survives of ``path``'s MCAP; the original is left untouched.

    Survives: every message of every complete chunk whose records match their CRC (or carry none).
    A chunk that fails its CRC is left out as a whole, since nothing says which of its bytes changed;
    the report lists each one with its time range and what it held.
    """
    from rosbags.rosbag2.metadata import parse_qos

    path = bag_directory(path)
    source = storage_file(path)
    out = Path(out) if out is not None else default_repair_output(path)
    if out.exists():
        raise BagError(f"{out} exists already; remove it or give another --out")
    recovered = recover_mcap(source)
    if not recovered.channels:
        why = recovered.problem or ("every chunk is corrupt" if recovered.dropped else "no channels")
        raise BagError(f"{source}: nothing recoverable ({why}): no channel definition survived (the recorder "
                       "died before its first chunk reached the disk, or that chunk is corrupt)")
    typestore = _typestore_for(recovered)
    custom = recovered_custom_data(path, recovered, typestore)

    writer = checksummed_writer(out)
    writer.open()
    try:
        connections = {}
        for channel_id, channel in sorted(recovered.channels.items()):
            schema = recovered.schemas.get(channel.schema_id)
            if schema is None:
                raise BagError(f"{source}: channel {channel.topic} has no schema record; cannot rebuild it")
            qos_text = (channel.metadata or {}).get("offered_qos_profiles", "")
            connections[channel_id] = writer.add_connection(
                channel.topic, schema.name, typestore=typestore,
                offered_qos_profiles=parse_qos(qos_text) if qos_text else [])
        orphans = 0
        for message in recovered.messages:
            if message.channel_id in connections:
                writer.write(connections[message.channel_id], message.log_time, message.data)
            else:
                orphans += 1
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    by_channel = collections.Counter(m.channel_id for m in recovered.messages)
    per_topic = {recovered.channels[c].topic: n for c, n in sorted(by_channel.items()) if c in recovered.channels}
    return RepairReport(source=path, output=out, messages=sum(per_topic.values()), per_topic=per_topic,
                        lost_bytes=recovered.file_bytes - recovered.good_bytes, label=custom["label"],
                        problem=recovered.problem, dropped=tuple(recovered.dropped), orphans=orphans,
                        start_ns=min((t for t in [recovered.start_ns, *(d.start_ns for d in recovered.dropped)]
                                      if t is not None), default=None))


def _typestore_for(recovered: Recovered):
    """The ROS 2 typestore plus any type whose definition only the bag knows."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    typestore = get_typestore(Stores.ROS2_KILTED)
    extra = {}
    for schema in recovered.schemas.values():
        if schema.name not in typestore.types and schema.encoding == "ros2msg":
            extra.update(get_types_from_msg(schema.data.decode(), schema.name))
    if extra:
        typestore.register(extra)
    return typestore


def episode_statuses(recovered: Recovered, typestore) -> Iterator[dict[str, str]]:
    status_channels = {cid for cid, ch in recovered.channels.items()
                       if ch.topic.endswith("/" + EPISODE_STATUS)}
    for message in recovered.messages:
        if message.channel_id in status_channels:
            msg = typestore.deserialize_cdr(message.data, "diagnostic_msgs/msg/DiagnosticStatus")
            yield {kv.key: kv.value for kv in msg.values}


def recovered_custom_data(path: Path, recovered: Recovered, typestore) -> dict[str, str]:
    """Episode metadata from the last recorded ``episode/status`` (label ``unknown`` without a terminal one)."""
    statuses = list(episode_statuses(recovered, typestore))
    previous = {}
    meta_file = path / "metadata.yaml" if path.is_dir() else None
    if meta_file is not None and meta_file.is_file():  # a damaged MCAP with its metadata still there
        try:
            previous = dict((yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
                             .get("custom_data") or {}))
        except Exception:
            previous = {}
    first = statuses[0] if statuses else {}
    episode_id = first.get("episode_id", "") or previous.get("episode_id", "")
    mine = [s for s in statuses if s.get("episode_id") == episode_id] or statuses
    last = mine[-1] if mine else {}
    data = {key: str(previous.get(key, "") or last.get(key, "") or first.get(key, "")) for key in METADATA_KEYS}
    if last.get("state") in TERMINAL_STATES:
        label = last["state"]
    elif previous.get("label") in TERMINAL_STATES:
        label = previous["label"]
    else:
        label = UNKNOWN_LABEL
    topics = [ch.topic for ch in recovered.channels.values()]
    namespace = previous.get("namespace") or guess_namespace(topics)
    cameras = previous.get("cameras") or ",".join(bag_cameras(topics))
    data.update({
        "label": label, "repaired": "true", "namespace": namespace, "cameras": cameras,
        "partial_start": previous.get("partial_start", "false"),
        "stop_reason": f"repaired from {path.name}: " + (
            "recorder did not close the bag" if not recovered.complete else "bag was complete") + (
            f"; {len(recovered.dropped)} corrupt chunk(s) dropped" if recovered.dropped else ""),
        "repair_lost_bytes": str(recovered.file_bytes - recovered.good_bytes),
        "repair_dropped_chunks": str(len(recovered.dropped)),
        "repair_lost_messages": json.dumps(recovered.dropped_topics, sort_keys=True),
        "recorder_received": previous.get("recorder_received", json.dumps({})),
    })
    return data
