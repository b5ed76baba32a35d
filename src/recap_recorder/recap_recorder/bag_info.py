"""Opening a closed bag (metadata + verified MCAP index) and summarising it: ``recap bag info``.

:func:`open_bag` refuses, with a :class:`~recap_recorder.bag_files.BagError` saying what to do, a
bag that was not closed or fails its CRCs; :func:`read_info` gives its :class:`BagInfo` (topics,
types, counts, rates, duration, episode metadata, integrity) and :func:`format_info` the text.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Mapping

from recap_recorder.bag_files import BagError, bag_directory, read_metadata, storage_file
from recap_recorder.bag_metadata import UNKNOWN_LABEL, guess_namespace, relative_topic_name
from recap_recorder.indexed_mcap import CorruptBag, IndexedMcap, Integrity


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

    def to_json(self) -> dict:
        """What ``recap bag info --json`` prints for the bag."""
        return {
            "path": str(self.path),
            "duration_s": self.duration_s,
            "label": self.label,
            "message_count": self.message_count,
            "custom_data": dict(self.custom_data),
            "topics": [vars(t) for t in self.topics],
            "integrity": self.integrity.to_json() if self.integrity else None,
        }


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
            raise BagError(
                f"{mcap} is damaged ({type(exc).__name__}: {exc}); `recap bag repair {path}` "
                "recovers the complete chunks"
            ) from exc
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
    listed = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in meta.get("topics_with_message_count") or []
    }
    types = {**listed, **{topic: msgtype for topic, (_, msgtype) in mcap.topics.items()}}
    topics = tuple(
        TopicSummary(
            name,
            types[name],
            counts.get(name, 0),
            (counts.get(name, 0) - 1) / seconds if seconds > 0 and counts.get(name, 0) > 1 else 0.0,
        )
        for name in sorted(types)
    )
    return BagInfo(
        path=path,
        storage_file=mcap.path,
        size_bytes=mcap.path.stat().st_size,
        topics=topics,
        message_count=sum(counts.values()),
        start_ns=int(meta["starting_time"]["nanoseconds_since_epoch"]),
        duration_s=seconds,
        custom_data={str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()},
        integrity=mcap.integrity,
    )


def format_info(info: BagInfo) -> str:
    """What ``recap bag info`` prints for the bag."""
    lines = [
        f"bag:        {info.path}",
        f"storage:    {info.storage_file.name} ({info.size_bytes / 2**20:.1f} MB)",
        f"duration:   {info.duration_s:.3f} s",
        f"messages:   {info.message_count}",
        f"label:      {info.label}",
    ]
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
