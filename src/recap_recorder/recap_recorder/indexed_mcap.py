"""Reading a closed MCAP file through its indexes (:class:`IndexedMcap`), and checking its CRCs.

:meth:`IndexedMcap.verify` checks the summary, data section and chunk CRCs the recorder writes
(a CRC of 0 means "not computed") and names each corrupt chunk (:class:`Integrity`,
:class:`ChunkDamage`); :class:`CorruptBag` is the error of a bag that fails. The chunk record and
file tail checks here are also what :mod:`recap_recorder.bag_repair` keeps chunks by.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from recap_recorder.bag_files import BagError
from recap_recorder.mcap_layout import (
    CHUNK_HEAD,
    FOOTER_SIZE,
    MCAP_MAGIC,
    OP_CHUNK,
    OP_DATA_END,
    OP_FOOTER,
    OP_MESSAGE,
    OP_MESSAGE_INDEX,
    U32,
    U64,
)


@dataclasses.dataclass(frozen=True)
class ChunkDamage:
    """A chunk whose records cannot be trusted, and what it held."""

    number: int  # in file order, from 0
    offset: int  # file offset of the chunk record
    start_ns: int  # log times of its first and last message
    end_ns: int
    topics: Mapping[str, int]  # messages per topic it held (its message index; empty: unknown)
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
    crc_chunks: int  # chunks that carry a CRC, all checked
    data_crc: bool  # the DataEnd record carries a data section CRC, checked
    summary_crc: bool  # the Footer carries a summary CRC, checked
    damaged: tuple[ChunkDamage, ...] = ()
    problems: tuple[str, ...] = ()  # damage outside the chunks' records
    start_ns: int | None = None  # log time of the bag's first message

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
            return (
                "not verified: the bag carries no CRCs (written before the recorder recorded them, or by a "
                "writer that leaves them 0)"
            )
        checked = ["the data section CRC"] * self.data_crc + ["the summary CRC"] * self.summary_crc
        if not self.data_crc:
            checked.insert(0, f"{self.crc_chunks} of {self.chunks} chunk CRCs")
        line = "verified: " + ", ".join(checked) + " match"
        if self.data_crc:  # it covers every chunk; theirs name the chunk when it fails
            line += f" ({self.crc_chunks} of {self.chunks} chunks carry their own CRC too)"
        return line

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "checksummed": self.checksummed,
            "chunks": self.chunks,
            "crc_chunks": self.crc_chunks,
            "data_crc": self.data_crc,
            "summary_crc": self.summary_crc,
            "damaged_chunks": [dict(dataclasses.asdict(d), topics=dict(d.topics)) for d in self.damaged],
            "problems": list(self.problems),
        }


class CorruptBag(BagError):
    """A closed bag whose CRCs say some of its bytes changed after they were written."""

    def __init__(self, path: Path, integrity: Integrity):
        self.integrity = integrity
        corrupt = len(integrity.damaged)
        what = f"{corrupt} of {integrity.chunks} chunk(s) corrupt" if corrupt else "damaged outside its message data"
        hint = (
            "drops the corrupt chunk(s), keeps the rest and says what was lost"
            if corrupt
            else "rebuilds it from its verified chunks, losing nothing"
        )
        super().__init__(f"{path} is corrupt ({what}): {integrity.describe()}. `recap bag repair {path}` {hint}")


@dataclasses.dataclass(frozen=True)
class ChunkRecord:
    """One chunk record read back: its header and, if readable, its records (uncompressed)."""

    start_ns: int
    end_ns: int
    crc: int  # stored CRC, 0 = none
    records: bytes | None  # None when unreadable; not to be used when there is a problem
    problem: str = ""  # why its records cannot be trusted
    header_problem: str = ""  # header disagrees with the chunk index


def read_chunk_record(record: bytes, index=None) -> ChunkRecord:
    """Check one chunk record (opcode to end) against its own CRC and, if given, its chunk index entry."""
    if len(record) < CHUNK_HEAD.size + 12:
        return ChunkRecord(0, 0, 0, None, f"only {len(record)} bytes, less than a chunk header")
    opcode, length, start, end, size, crc = CHUNK_HEAD.unpack_from(record)
    if opcode != OP_CHUNK:
        return ChunkRecord(start, end, 0, None, f"no chunk record there (opcode {opcode:#04x})")
    at = CHUNK_HEAD.size
    name_size = U32.unpack_from(record, at)[0]
    compression = bytes(record[at + 4 : at + 4 + name_size]).decode("utf-8", "replace")
    at += 4 + name_size
    data_size = U64.unpack_from(record, at)[0] if at + 8 <= len(record) else -1
    data = record[at + 8 : at + 8 + data_size]
    header = []
    if 9 + length != len(record):
        header.append(f"record length {9 + length}, index {len(record)}")
    if index is not None:
        for name, value in (
            ("message_start_time", start),
            ("message_end_time", end),
            ("uncompressed_size", size),
            ("compression", compression),
            ("compressed_size", data_size),
        ):
            if getattr(index, name) != value:
                header.append(f"{name} {value!r}, index {getattr(index, name)!r}")
    header_problem = "header disagrees with the chunk index (" + "; ".join(header) + ")" if header else ""
    if data_size < 0 or at + 8 + data_size > len(record):
        return ChunkRecord(start, end, crc, None, f"data runs past the record ({data_size} bytes)", header_problem)
    try:
        records = _decompress(compression, data, size)
    except Exception as exc:  # whatever the decompressor makes of damaged bytes
        return ChunkRecord(start, end, crc, None, f"{compression} data does not decompress ({exc})", header_problem)
    if len(records) != size:
        return ChunkRecord(
            start, end, crc, None, f"{len(records)} bytes of records, header says {size}", header_problem
        )
    if crc:
        actual = zlib.crc32(records)
        if actual != crc:
            return ChunkRecord(
                start, end, crc, records, f"CRC mismatch (stored {crc:#010x}, computed {actual:#010x})", header_problem
            )
    elif header_problem:  # without a CRC nothing says the records survived what hit the header
        return ChunkRecord(start, end, crc, None, header_problem + " and no CRC to check its records")
    return ChunkRecord(start, end, crc, records, "", header_problem)


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


def chunk_topics(fd: int, index, topics: Mapping[int, str], file_size: int) -> dict[str, int]:
    """Messages per topic of one chunk, from its message index records (empty where those are damaged)."""
    counts = {}
    for channel, position in index.message_index_offsets.items():
        if position + 15 > file_size:
            continue
        opcode, _, channel_id, size = struct.unpack("<BQHI", os.pread(fd, 15, position))
        if opcode == OP_MESSAGE_INDEX and channel_id == channel and channel in topics:
            counts[topics[channel]] = size // 16
    return counts


def loose_topics(records: bytes | None, channels: Mapping[int, object]) -> dict[str, int]:
    """Messages per topic in a chunk's records as far as they parse (for what a damaged chunk held)."""
    counts: collections.Counter[str] = collections.Counter()
    position = 0
    while records is not None and position + 11 <= len(records):
        opcode, length = records[position], U64.unpack_from(records, position + 1)[0]
        if opcode == OP_MESSAGE:
            channel = channels.get(struct.unpack_from("<H", records, position + 9)[0])
            counts[getattr(channel, "topic", "?")] += 1
        position += 9 + length
    return dict(counts)


@dataclasses.dataclass(frozen=True)
class McapTail:
    """The end of a closed MCAP file: footer fields and where the DataEnd record is."""

    summary_start: int
    summary_crc: int
    summary_crc_ok: bool | None  # None: no CRC stored
    data_end: int | None  # offset of the DataEnd record (None: not where the layout puts it)
    data_crc: int


def read_tail(fd: int, size: int) -> McapTail | None:
    footer = size - len(MCAP_MAGIC) - FOOTER_SIZE
    if footer < len(MCAP_MAGIC):
        return None
    tail = os.pread(fd, FOOTER_SIZE + len(MCAP_MAGIC), footer)
    if tail[0] != OP_FOOTER or U64.unpack_from(tail, 1)[0] != 20 or tail[-len(MCAP_MAGIC) :] != MCAP_MAGIC:
        return None
    summary_start, _, summary_crc = struct.unpack_from("<QQI", tail, 9)
    crc_ok = None
    start = summary_start or footer
    if summary_crc:
        crc_ok = start <= footer and crc_range(fd, start, footer + 25) == summary_crc
    data_end, data_crc = start - 13, 0
    if data_end >= len(MCAP_MAGIC):
        record = os.pread(fd, 13, data_end)
        if record[0] == OP_DATA_END and U64.unpack_from(record, 1)[0] == 4:
            data_crc = U32.unpack_from(record, 9)[0]
        else:
            data_end = None
    else:
        data_end = None
    return McapTail(summary_start, summary_crc, crc_ok, data_end, data_crc)


def crc_range(fd: int, start: int, stop: int, crc: int = 0, block: int = 1 << 25) -> int:
    """CRC-32 of bytes ``start``..``stop`` of the file (fewer where it ends first), continuing ``crc``.

    Read in large blocks into one buffer: the check runs on a thread of its own while the converter reads the
    bag (:func:`recap_recorder.bag_to_dataset.load_episode`), and each return from a read or from zlib waits for
    the GIL, up to the interpreter's switch interval (5 ms) while the other thread runs Python. The buffer is
    kept for the next check (:class:`_Buffers`): a fresh one costs a page fault per 4 kB, as long as the CRC.
    """
    with _BUFFERS.get(min(block, max(0, stop - start))) as buffer:
        while start < stop:
            view = buffer[: min(block, stop - start)]
            got = os.preadv(fd, [view], start)
            if not got:
                break
            crc = zlib.crc32(view[:got], crc)
            start += got
    return crc


class _Buffers:
    """Read buffers kept between CRC checks, one per check running at once (a converting process runs one)."""

    def __init__(self):
        self._free: list[memoryview] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def get(self, size: int) -> Iterator[memoryview]:
        with self._lock:
            fits = [b for b in self._free if len(b) >= size]
            buffer = min(fits, key=len) if fits else None
            if buffer is not None:
                self._free.remove(buffer)
        if buffer is None:
            buffer = memoryview(bytearray(size))
        try:
            yield buffer
        finally:
            with self._lock:
                self._free.append(buffer)
                self._free = sorted(self._free, key=len)[-2:]  # at most two kept, the largest


_BUFFERS = _Buffers()


@dataclasses.dataclass(frozen=True)
class MessageIndex:
    """Where one topic's messages are, in receive-time order: ``[N]`` arrays."""

    log_ns: np.ndarray  # int64 log (receive) times
    chunk: np.ndarray  # int64 chunk number
    offset: np.ndarray  # int64 offset of the message record in the chunk's records
    #: int64 where the chunk's next indexed record starts (or its records end): the record ends there or
    #: before, so one read gets all of it (None: not known, the record's head is read first)
    bound: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.log_ns)


def _empty_index() -> MessageIndex:
    return MessageIndex(*(np.zeros(0, np.int64) for _ in range(3)))


_INDEX_HEAD = struct.Struct("<BQHI")  # message index record: opcode, length, channel, records length


class _NotLaidOut(Exception):
    """The message index records are not where the chunk index puts them: read them topic by topic."""


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
            raise BagError(
                f"{self.path} is damaged ({type(exc).__name__}: {exc}); `recap bag repair "
                f"{self.path.parent}` recovers the complete chunks"
            ) from exc
        if summary is None or (summary.statistics and summary.statistics.message_count and not summary.chunk_indexes):
            self._file.close()
            raise BagError(f"{self.path} has no index; `recap bag repair {self.path.parent}` rewrites it")
        self._fd = self._file.fileno()
        self.schemas = {sid: s.name for sid, s in summary.schemas.items()}
        self.topics = {ch.topic: (cid, self.schemas.get(ch.schema_id, "")) for cid, ch in summary.channels.items()}
        self._chunks = sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
        self._channel_topics = {cid: ch.topic for cid, ch in summary.channels.items()}
        stats = summary.statistics
        self._start_ns = (
            stats.message_start_time
            if stats and stats.message_count
            else min((c.message_start_time for c in self._chunks), default=None)
        )
        self.integrity: Integrity | None = None  # set by verify()
        self._cached_chunk: tuple[int, bytes] | None = None
        self._indexes: dict[str, MessageIndex] = {}
        self._all_indexed = False
        self._lock = threading.Lock()

    def verify(self) -> Integrity:
        """Check the summary CRC, the data section CRC, and every chunk's CRC and header (reads the whole file).

        When the data section CRC matches, every byte of every chunk is as written, and only the chunk
        headers are compared with the index; otherwise each chunk is checked against its own CRC, so
        the damage is named by chunk. CRCs of 0 are "not computed" and are not checked. Chunks are
        numbered in file order.
        """
        fd, size = self._fd, os.fstat(self._fd).st_size
        tail = read_tail(fd, size)
        problems, damaged = [], []
        if tail is None:
            problems.append("no valid MCAP footer")
            tail = McapTail(0, 0, None, None, 0)
        if tail.summary_crc_ok is False:
            problems.append("the summary section (chunk index, channels, statistics) fails its CRC")
        elif tail.data_end is None and problems == []:
            problems.append("no DataEnd record where the footer says the data section ends")
        data_crc = bool(tail.data_end is not None and tail.data_crc)
        if data_crc and not problems and crc_range(fd, 0, tail.data_end) == tail.data_crc:
            crc_chunks = self._check_chunk_headers(fd, tail.data_end, problems)
            self.integrity = Integrity(
                chunks=len(self._chunks),
                crc_chunks=crc_chunks,
                data_crc=True,
                summary_crc=tail.summary_crc_ok is not None,
                problems=tuple(problems),
                start_ns=self._start_ns,
            )
            return self.integrity
        end = tail.data_end if tail.data_end is not None else size
        crc, position, crc_chunks = 0, 0, 0
        for number, chunk in enumerate(self._chunks):
            start, stop = chunk.chunk_start_offset, chunk.chunk_start_offset + chunk.chunk_length
            if start < position or stop > end:
                damaged.append(
                    ChunkDamage(
                        number,
                        start,
                        chunk.message_start_time,
                        chunk.message_end_time,
                        chunk_topics(fd, chunk, self._channel_topics, size),
                        f"the chunk index puts it at bytes {start}..{stop}, outside the data "
                        "section or over the previous chunk",
                    )
                )
                continue
            crc = crc_range(fd, position, start, crc)
            record = os.pread(fd, chunk.chunk_length, start)
            crc = zlib.crc32(record, crc)
            position = stop
            read = read_chunk_record(record, chunk)
            crc_chunks += bool(read.crc)
            if read.problem:
                damaged.append(
                    ChunkDamage(
                        number,
                        start,
                        chunk.message_start_time,
                        chunk.message_end_time,
                        chunk_topics(fd, chunk, self._channel_topics, size),
                        read.problem,
                    )
                )
            elif read.header_problem:
                problems.append(f"chunk {number} at byte {start}: {read.header_problem} (its records match their CRC)")
        if data_crc:
            crc = crc_range(fd, position, tail.data_end, crc)
            if crc != tail.data_crc and not damaged and not problems:
                problems.append(
                    "the data section fails its CRC although every chunk's records match theirs: "
                    "damage in the message indexes or other records between the chunks"
                )
        self.integrity = Integrity(
            chunks=len(self._chunks),
            crc_chunks=crc_chunks,
            data_crc=data_crc,
            summary_crc=tail.summary_crc_ok is not None,
            damaged=tuple(damaged),
            problems=tuple(problems),
            start_ns=self._start_ns,
        )
        return self.integrity

    def _check_chunk_headers(self, fd: int, end: int, problems: list[str]) -> int:
        """Whether the index describes the chunks it points at (appended to ``problems`` where not); the
        number of chunks carrying a CRC."""
        crc_chunks = 0
        for number, chunk in enumerate(self._chunks):
            start = chunk.chunk_start_offset
            head = os.pread(fd, CHUNK_HEAD.size, start) if start + chunk.chunk_length <= end else b""
            if len(head) < CHUNK_HEAD.size:
                problems.append(f"chunk {number}: the chunk index puts it at byte {start}, outside the data section")
                continue
            opcode, length, first, last, size, crc = CHUNK_HEAD.unpack(head)
            crc_chunks += bool(crc)
            if (opcode, 9 + length, first, last, size) != (
                OP_CHUNK,
                chunk.chunk_length,
                chunk.message_start_time,
                chunk.message_end_time,
                chunk.uncompressed_size,
            ):
                problems.append(f"chunk {number} at byte {start}: the chunk index does not describe the chunk there")
        return crc_chunks

    def index(self, topic: str) -> MessageIndex:
        with self._lock:
            if topic not in self._indexes:
                self._indexes[topic] = self._read_index(topic)
            return self._indexes[topic]

    def index_all(self) -> dict[str, MessageIndex]:
        """Every topic's :class:`MessageIndex` (what :meth:`index` returns from then on), read with one read
        per chunk, of all its message index records at once, each with the ``bound`` of its records so that
        :meth:`read` gets a message in one read. The same messages in the same order as :meth:`index`; a
        file whose message indexes are not where the chunk index says is read topic by topic as
        :meth:`index` reads it (and fails the same way)."""
        with self._lock:
            if not self._all_indexed:
                try:
                    indexes = self._read_all_indexes()
                except _NotLaidOut:
                    indexes = {topic: self._read_index(topic) for topic in self.topics}
                self._indexes.update(indexes)
                self._all_indexed = True
            return {topic: self._indexes[topic] for topic in self.topics}

    def _read_all_indexes(self) -> dict[str, MessageIndex]:
        size = os.fstat(self._fd).st_size
        topic_of = {cid: topic for topic, (cid, _) in self.topics.items()}
        parts: dict[int, list[tuple[np.ndarray, int, np.ndarray]]] = {cid: [] for cid in topic_of}
        for number, chunk in enumerate(self._chunks):
            positions = {c: p for c, p in chunk.message_index_offsets.items() if c in topic_of}
            if not positions:
                continue
            start = chunk.chunk_start_offset + chunk.chunk_length
            if not 0 < chunk.message_index_length <= size - start:
                raise _NotLaidOut
            block = os.pread(self._fd, chunk.message_index_length, start)
            entries = {}
            for channel, position in positions.items():
                at = position - start
                if at < 0 or at + 15 > len(block):
                    raise _NotLaidOut
                opcode, _, channel_id, length = _INDEX_HEAD.unpack_from(block, at)
                if opcode != OP_MESSAGE_INDEX or channel_id != channel or length % 16 or at + 15 + length > len(block):
                    raise _NotLaidOut
                entries[channel] = np.frombuffer(block, "<u8", length // 8, at + 15).reshape(-1, 2).astype(np.int64)
            offsets = np.sort(np.concatenate([e[:, 1] for e in entries.values()]))
            following = np.append(offsets[1:], chunk.uncompressed_size)
            for channel, e in entries.items():
                bound = following[np.searchsorted(offsets, e[:, 1], side="right") - 1]
                parts[channel].append((e, number, bound))
        indexes = {}
        for channel, topic in topic_of.items():
            if not parts[channel]:
                indexes[topic] = _empty_index()
                continue
            log_ns = np.concatenate([e[:, 0] for e, _, _ in parts[channel]])
            offset = np.concatenate([e[:, 1] for e, _, _ in parts[channel]])
            chunk = np.concatenate([np.full(len(e), n, np.int64) for e, n, _ in parts[channel]])
            bound = np.concatenate([b for _, _, b in parts[channel]])
            order = np.lexsort((offset, chunk, log_ns))  # as _read_index orders them
            indexes[topic] = MessageIndex(log_ns[order], chunk[order], offset[order], bound[order])
        return indexes

    def _read_index(self, topic: str) -> MessageIndex:
        if topic not in self.topics:
            return _empty_index()
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
            size = min(size, max(0, os.fstat(self._fd).st_size - position - 15))  # what pread can return anyway
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
        data, size = self.read_view(index, i, limit)
        return bytes(data), size

    def read_view(self, index: MessageIndex, i: int, limit: int | None = None) -> tuple[memoryview | bytes, int]:
        """:meth:`read`, the bytes as a view where that saves a copy (one read where the index has ``bound``)."""
        chunk = self._chunks[int(index.chunk[i])]
        offset = int(index.offset[i])
        if index.bound is not None and not chunk.compression:
            start = chunk.chunk_start_offset + 49 + len(chunk.compression) + offset
            want = min(int(index.bound[i]) - offset, chunk.chunk_length)
            record = os.pread(self._fd, want if limit is None else min(want, 31 + limit), start) if want > 0 else b""
            if len(record) >= 31 and record[0] == OP_MESSAGE:
                size = U64.unpack_from(record, 1)[0] - 22
                end = 31 + (size if limit is None else min(size, limit))
                if 0 <= size and end <= len(record):
                    return memoryview(record)[31:end], size
            # not as the index says: read it as without bounds (and fail the same way)
        if chunk.compression:
            with self._lock:
                records = self._decompressed(int(index.chunk[i]))
            _, length, *_ = self._RECORD_HEAD.unpack_from(records, offset)
            size = length - 22
            return records[offset + 31 : offset + 31 + min(size, limit or size)], size
        start = chunk.chunk_start_offset + 49 + len(chunk.compression) + offset
        opcode, length, *_ = self._RECORD_HEAD.unpack(os.pread(self._fd, 31, start))
        if opcode != 0x05:
            raise BagError(f"{self.path}: message record at {start} is damaged; run `recap bag repair`")
        size = length - 22
        readable = max(0, os.fstat(self._fd).st_size - start - 31)  # what pread can return anyway
        return os.pread(self._fd, min(size, limit or size, readable), start + 31), size

    def file_position(self, index: MessageIndex, i: int) -> int | None:
        """Where the CDR bytes of message ``i`` of ``index`` start in the file (None in a compressed chunk)."""
        chunk = self._chunks[int(index.chunk[i])]
        return None if chunk.compression else chunk.chunk_start_offset + 49 + int(index.offset[i]) + 31

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
