"""Episode bags on disk: open with clear errors, summarise (``recap bag info``), repair.

A bag is a rosbag2 directory with one MCAP file and ``metadata.yaml``. A bag
whose recorder died has no ``metadata.yaml`` and an MCAP cut off in its last
chunk; :func:`repair_bag` reads the MCAP record by record with ``mcap``'s
stream reader, keeps every message of every complete chunk, and writes a new,
valid bag with ``rosbags`` whose ``custom_data`` comes from the last
``episode/status`` recorded in it (``repaired: true``).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import json
import os
import re
import struct
import threading
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
        self._cached_chunk: tuple[int, bytes] | None = None
        self._indexes: dict[str, MessageIndex] = {}
        self._lock = threading.Lock()

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


def open_bag(path: Path) -> tuple[dict, IndexedMcap]:
    """(metadata.yaml, indexed MCAP) of a closed bag, or BagError saying what is wrong and what to do."""
    path = Path(path)
    mcap = storage_file(path)
    meta = read_metadata(path)
    return meta, IndexedMcap(mcap)


def read_info(path: Path) -> BagInfo:
    """Topics, types, counts, rates, duration and episode metadata of a closed bag."""
    meta, mcap = open_bag(path)
    with mcap:
        return bag_info(Path(path), meta, mcap)


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
                   custom_data={str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()})


def format_info(info: BagInfo) -> str:
    lines = [f"bag:        {info.path}",
             f"storage:    {info.storage_file.name} ({info.size_bytes / 2**20:.1f} MB)",
             f"duration:   {info.duration_s:.3f} s",
             f"messages:   {info.message_count}",
             f"label:      {info.label}"]
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
    """What survives in an MCAP file: schemas, channels, messages of complete chunks."""

    schemas: dict[int, object]
    channels: dict[int, object]
    messages: list  # mcap Message records, file order
    complete: bool  # footer reached: the file was closed properly
    good_bytes: int  # file offset after the last record that was read whole
    file_bytes: int
    problem: str = ""


def recover_mcap(mcap_path: Path) -> Recovered:
    """Read an MCAP file record by record and stop at the first damaged or missing byte."""
    from mcap.exceptions import McapError
    from mcap.records import Chunk, DataEnd, Footer, Message, Schema, Channel
    from mcap.stream_reader import StreamReader, breakup_chunk

    size = mcap_path.stat().st_size
    out = Recovered({}, {}, [], False, 0, size)
    with open(mcap_path, "rb") as handle:
        reader = StreamReader(handle, emit_chunks=True, record_size_limit=2**31)
        try:
            for record in reader.records:
                if isinstance(record, Chunk):
                    if record.compression == "" and len(record.data) != record.uncompressed_size:
                        raise EOFError(f"last chunk cut off ({len(record.data)} of {record.uncompressed_size} "
                                       "bytes)")
                    inner = breakup_chunk(record)
                else:
                    inner = [record]
                for item in inner:
                    if isinstance(item, Schema):
                        out.schemas[item.id] = item
                    elif isinstance(item, Channel):
                        out.channels[item.id] = item
                    elif isinstance(item, Message):
                        out.messages.append(item)
                out.good_bytes = handle.tell()
                if isinstance(record, (DataEnd, Footer)):
                    out.complete = True
        except (McapError, EOFError, struct.error, ValueError, UnicodeDecodeError, KeyError) as exc:
            out.problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return out


@dataclasses.dataclass(frozen=True)
class RepairReport:
    source: Path
    output: Path
    messages: int
    per_topic: Mapping[str, int]
    lost_bytes: int
    label: str
    problem: str


def default_repair_output(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + REPAIRED_SUFFIX)


def repair_bag(path: Path, out: Path | None = None) -> RepairReport:
    """Rebuild a valid bag from what survives of ``path``'s MCAP; the original is left untouched."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.metadata import parse_qos

    path = Path(path)
    source = storage_file(path)
    out = Path(out) if out is not None else default_repair_output(path)
    if out.exists():
        raise BagError(f"{out} exists already; remove it or give another --out")
    recovered = recover_mcap(source)
    if not recovered.channels:
        raise BagError(f"{source}: nothing recoverable ({recovered.problem or 'no channels'}): the recorder "
                       "died before its first chunk reached the disk")
    typestore = _typestore_for(recovered)
    by_channel = collections.Counter(m.channel_id for m in recovered.messages)
    custom = recovered_custom_data(path, recovered, typestore)

    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
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
        for message in recovered.messages:
            if message.channel_id in connections:
                writer.write(connections[message.channel_id], message.log_time, message.data)
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    per_topic = {recovered.channels[c].topic: n for c, n in sorted(by_channel.items()) if c in recovered.channels}
    return RepairReport(source=path, output=out, messages=sum(per_topic.values()), per_topic=per_topic,
                        lost_bytes=recovered.file_bytes - recovered.good_bytes, label=custom["label"],
                        problem=recovered.problem)


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
            "recorder did not close the bag" if not recovered.complete else "bag was complete"),
        "repair_lost_bytes": str(recovered.file_bytes - recovered.good_bytes),
        "recorder_received": previous.get("recorder_received", json.dumps({})),
    })
    return data
