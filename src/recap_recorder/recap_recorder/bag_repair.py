"""Repairing a bag: every message of every complete chunk whose CRC matches, rewritten as a valid bag.

For a bag whose recorder died (no ``metadata.yaml``, an MCAP cut off in its last chunk) or whose chunks fail
their CRC: :func:`recover_mcap` reads what survives, :func:`repair_bag` writes it into a new bag
(``BAG_repaired``, the original never touched) and says what was lost (docs/recording.md, "Crash safety").
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import struct
from pathlib import Path
from typing import Iterator, Mapping

import yaml

from recap_recorder.bag_files import BagError, bag_directory, storage_file
from recap_recorder.bag_info import BagInfo, read_info
from recap_recorder.bag_metadata import (
    EPISODE_STATUS,
    METADATA_KEYS,
    TERMINAL_STATES,
    UNKNOWN_LABEL,
    bag_cameras,
    guess_namespace,
)
from recap_recorder.bag_writer import checksummed_writer
from recap_recorder.indexed_mcap import ChunkDamage, chunk_topics, loose_topics, read_chunk_record, read_tail
from recap_recorder.mcap_layout import MCAP_MAGIC, OP_CHUNK, OP_DATA_END, OP_FOOTER, OP_MESSAGE, U64

#: A repaired bag is written next to its original by default, named after it with this suffix.
REPAIRED_SUFFIX = "_repaired"


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

    tail = read_tail(handle.fileno(), size)
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
        read = read_chunk_record(os.pread(fd, chunk.chunk_length, start), chunk)
        items = None
        if not read.problem:
            try:
                items = _parse_records(read.records)
            except Exception as exc:  # records that match their CRC but do not parse: written so
                read = dataclasses.replace(read, problem=f"records do not parse ({type(exc).__name__}: {exc})")
        if items is None:
            held = chunk_topics(fd, chunk, topics, size) or loose_topics(read.records, out.channels)
            out.dropped.append(
                ChunkDamage(number, start, chunk.message_start_time, chunk.message_end_time, held, read.problem)
            )
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
            opcode, length = head[0], U64.unpack_from(head, 1)[0]
            if position + 9 + length > size:
                what = "last chunk" if opcode == OP_CHUNK else f"record (opcode {opcode:#04x})"
                out.problem = f"{what} at byte {position} cut off ({size - position - 9} of {length} bytes)"
                break
            body = os.pread(fd, length, position + 9)
            if opcode == OP_CHUNK:
                read = read_chunk_record(head + body)
                items = None
                if not read.problem:
                    try:
                        items = _parse_records(read.records)
                    except Exception as exc:
                        read = dataclasses.replace(read, problem=f"records do not parse ({type(exc).__name__})")
                if items is None:
                    out.dropped.append(
                        ChunkDamage(
                            number,
                            position,
                            read.start_ns,
                            read.end_ns,
                            loose_topics(read.records, out.channels),
                            read.problem,
                        )
                    )
                else:
                    _keep(out, items)
                number, chunked = number + 1, True
            elif opcode == OP_MESSAGE and chunked:  # chunked writers put every message in a chunk
                out.problem = f"message record outside a chunk at byte {position}: the records' framing is damaged"
                break
            elif opcode in (0x03, 0x04, OP_MESSAGE):
                _keep(out, _parse_records(head + body), replace=False)
            elif not 0x01 <= opcode <= 0x0F:
                out.problem = f"no MCAP record at byte {position} (opcode {opcode:#04x}): the framing is damaged"
                break
            elif opcode in (OP_DATA_END, OP_FOOTER):  # the rest is the summary, which the rebuild writes anew
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
        elif opcode == OP_MESSAGE:
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
    start_ns: int | None = None  # log time of the first message kept
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


def repair_output(path: Path, out: Path | None, several: bool) -> Path | None:
    """Where ``recap bag repair`` writes the repair of ``path``: ``out`` for one bag, ``out/<bag>_repaired`` for
    one of ``several``, None (:func:`default_repair_output`) without ``out``."""
    if out is not None and several:
        return Path(out) / (bag_directory(path).name + REPAIRED_SUFFIX)
    return out


def intact_bag_info(path: Path) -> BagInfo | None:
    """The info of a bag there is nothing to repair in (closed, readable, CRCs match or absent), else None."""
    try:
        return read_info(path)
    except BagError:
        return None


def repair_bag(path: Path, out: Path | None = None) -> RepairReport:
    """Rebuild a valid bag from what survives of ``path``'s MCAP; the original is left untouched.

    Survives: every message of every complete chunk whose records match their CRC (or carry none).
    A chunk that fails its CRC is left out as a whole, since nothing says which of its bytes changed;
    the report lists each one with its time range and what it held. The new bag's ``custom_data`` comes from
    the last ``episode/status`` recorded in it, with ``repaired: true``.
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
        raise BagError(
            f"{source}: nothing recoverable ({why}): no channel definition survived (the recorder "
            "died before its first chunk reached the disk, or that chunk is corrupt)"
        )
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
                channel.topic,
                schema.name,
                typestore=typestore,
                offered_qos_profiles=parse_qos(qos_text) if qos_text else [],
            )
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
    return RepairReport(
        source=path,
        output=out,
        messages=sum(per_topic.values()),
        per_topic=per_topic,
        lost_bytes=recovered.file_bytes - recovered.good_bytes,
        label=custom["label"],
        problem=recovered.problem,
        dropped=tuple(recovered.dropped),
        orphans=orphans,
        start_ns=min(
            (t for t in [recovered.start_ns, *(d.start_ns for d in recovered.dropped)] if t is not None), default=None
        ),
    )


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
    status_channels = {cid for cid, ch in recovered.channels.items() if ch.topic.endswith("/" + EPISODE_STATUS)}
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
            previous = dict(
                (yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"].get("custom_data") or {})
            )
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
    data.update(
        {
            "label": label,
            "repaired": "true",
            "namespace": namespace,
            "cameras": cameras,
            "partial_start": previous.get("partial_start", "false"),
            "stop_reason": f"repaired from {path.name}: "
            + ("recorder did not close the bag" if not recovered.complete else "bag was complete")
            + (f"; {len(recovered.dropped)} corrupt chunk(s) dropped" if recovered.dropped else ""),
            "repair_lost_bytes": str(recovered.file_bytes - recovered.good_bytes),
            "repair_dropped_chunks": str(len(recovered.dropped)),
            "repair_lost_messages": json.dumps(recovered.dropped_topics, sort_keys=True),
            "recorder_received": previous.get("recorder_received", json.dumps({})),
        }
    )
    return data
