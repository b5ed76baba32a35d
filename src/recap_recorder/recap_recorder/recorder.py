"""Episode recording without ROS: which topics, when a bag opens and closes, and the writer thread.

The node (``recorder_node.py``) hands every received message to
:meth:`Recorder.on_message` as the raw CDR bytes with its receive time, and
every ``episode/status`` to :meth:`Recorder.on_episode_status`. Those calls
only append to a bounded queue (a full queue drops the message and counts it),
so subscription callbacks never wait for the disk; one writer thread writes
the queue into one MCAP rosbag2 directory per episode with ``rosbags``.

Images: with ``image_compression`` ``jpeg`` (the default) every
``sensor_msgs/Image`` topic is stored as ``<topic>/compressed``
(``sensor_msgs/CompressedImage``), encoded in the writer thread with the
dataset's JPEG settings (:mod:`recap_recorder.images`): bags are ~10x smaller
and the converter copies the bytes instead of encoding. An image that cannot be
compressed is written as received on the raw topic and counted.

Crash safety: the MCAP chunk is closed and handed to the OS every
``chunk_size_bytes`` or ``chunk_max_duration_s``, whichever comes first, so a
SIGKILL loses at most that much (``recap bag repair`` rebuilds the rest).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from recap_recorder.bags import (EPISODE_STATUS, TERMINAL_STATES, UNKNOWN_LABEL, BagError, episode_custom_data,
                                 resolve_topic)
from recap_core.data.schema import JPEG_QUALITY, JPEG_SUBSAMPLING
from recap_recorder.images import COMPRESSED_SUFFIX, COMPRESSED_TYPE, IMAGE_COMPRESSIONS, IMAGE_TYPE, compress_image

log = logging.getLogger(__name__)

#: The label of an episode whose recording was stopped before it ended (the converter skips it unless asked).
ABORTED_LABEL = "aborted"

SENSOR, COMMAND, LATCHED = "sensor", "command", "latched"
QOS_KINDS = (SENSOR, COMMAND, LATCHED)

#: DESIGN.md §3: relative topic -> (message type, QoS kind). Cameras are ``camera/<cam>/image_raw``.
KNOWN_TOPICS: dict[str, tuple[str, str]] = {
    "joint_states": ("sensor_msgs/msg/JointState", SENSOR),
    "joint_command": ("sensor_msgs/msg/JointState", COMMAND),
    "policy/joint_command": ("sensor_msgs/msg/JointState", COMMAND),
    "teleop/joint_command": ("sensor_msgs/msg/JointState", COMMAND),
    "policy/action_chunk": ("trajectory_msgs/msg/JointTrajectory", COMMAND),
    "policy/status": ("diagnostic_msgs/msg/DiagnosticStatus", LATCHED),
    "teleop/engage": ("std_msgs/msg/Bool", COMMAND),
    "intervention": ("std_msgs/msg/Bool", LATCHED),
    "command_source": ("std_msgs/msg/String", LATCHED),
    "value/estimate": ("std_msgs/msg/Float32", SENSOR),
    "value/distribution": ("std_msgs/msg/Float32MultiArray", COMMAND),
    "episode/status": ("diagnostic_msgs/msg/DiagnosticStatus", LATCHED),
    "sim/status": ("diagnostic_msgs/msg/DiagnosticStatus", SENSOR),
}
CAMERA_TOPIC = re.compile(r"^camera/(?P<camera>[^/]+)/image_raw$")
DEFAULT_TOPICS_AFTER_CAMERAS = ("joint_states", "joint_command", "policy/action_chunk", "policy/status",
                                "intervention", "command_source", "value/estimate", "episode/status")


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: its name relative to the station namespace, type and QoS kind."""

    name: str
    msgtype: str
    kind: str

    def __post_init__(self):
        if not self.name or self.name.endswith("/") or "//" in self.name:
            raise ValueError(f"topic name {self.name!r} is not a valid ROS name")
        if not re.fullmatch(r"[A-Za-z0-9_]+/msg/[A-Za-z0-9_]+", self.msgtype):
            raise ValueError(f"topic {self.name}: type {self.msgtype!r} is not 'package/msg/Type'")
        if self.kind not in QOS_KINDS:
            raise ValueError(f"topic {self.name}: QoS kind {self.kind!r} is not one of {list(QOS_KINDS)}")

    @property
    def snapshot(self) -> bool:
        """State-like topics: the newest message before an episode starts is written at its start."""
        return self.kind in (SENSOR, LATCHED) and self.name != EPISODE_STATUS

    @classmethod
    def parse(cls, entry: str) -> "TopicSpec":
        """``name``, ``name:pkg/msg/Type`` or ``name:pkg/msg/Type:kind``; known names need no type."""
        name, _, rest = entry.strip().partition(":")
        msgtype, _, kind = rest.partition(":")
        known = KNOWN_TOPICS.get(name.lstrip("/"))
        if known is None and CAMERA_TOPIC.match(name.lstrip("/")):
            known = (IMAGE_TYPE, SENSOR)
        if not msgtype:
            if known is None:
                raise ValueError(f"topic '{name}' is not a station topic of DESIGN.md §3: give its type as "
                                 f"'{name}:package/msg/Type[:{'|'.join(QOS_KINDS)}]'")
            msgtype = known[0]
        if not kind:
            kind = known[1] if known is not None and known[0] == msgtype else SENSOR
        return cls(name, msgtype, kind)


def default_topics(cameras: Sequence[str]) -> tuple[TopicSpec, ...]:
    names = [f"camera/{cam}/image_raw" for cam in cameras] + list(DEFAULT_TOPICS_AFTER_CAMERAS)
    return tuple(TopicSpec.parse(n) for n in names)


def _qos_profile(kind: str) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1 if kind != SENSOR else 10, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if kind == LATCHED else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    """What and where to record. Sizes in bytes; the node converts its MB/KB parameters."""

    output_dir: Path
    topics: tuple[TopicSpec, ...]
    namespace: str = "/"
    station: str = "station"
    cameras: tuple[str, ...] = ()
    max_queue_bytes: int = 256 * 2**20
    max_queue_messages: int = 100_000
    chunk_size_bytes: int = 2**20
    chunk_max_duration_s: float = 0.5
    min_free_disk_bytes: int = 1024 * 2**20
    snapshot_max_age_s: float = 1.0
    silent_after_s: float = 2.0
    image_compression: str = "jpeg"   # or "none": images stored as received
    jpeg_quality: int = JPEG_QUALITY  # the dataset's own setting: the converter stores the bytes as they are

    def __post_init__(self):
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        if self.image_compression not in IMAGE_COMPRESSIONS:
            raise ValueError(f"image_compression {self.image_compression!r} is not one of {list(IMAGE_COMPRESSIONS)}")
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality!r} is outside [1, 100]")
        names = [t.name for t in self.topics]
        if not names:
            raise ValueError("no topics to record: give at least the station topics (see DESIGN.md §3)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"topics listed twice: {duplicates}; list each topic once")
        if EPISODE_STATUS not in names:
            raise ValueError(f"'{EPISODE_STATUS}' must be recorded: it starts and stops the bags "
                             "and carries the episode metadata")
        if self.max_queue_bytes < 2**20 or self.max_queue_messages < 10:
            raise ValueError(f"queue too small ({self.max_queue_bytes} bytes, {self.max_queue_messages} "
                             "messages): allow at least 1 MB and 10 messages")
        if not 4096 <= self.chunk_size_bytes <= 2**20:
            # rosbags closes a chunk past 1 MiB on its own; larger would be ignored.
            raise ValueError(f"chunk size {self.chunk_size_bytes} bytes is outside [4 KiB, 1 MiB]")
        if not 0.01 <= self.chunk_max_duration_s <= 60:
            raise ValueError(f"chunk_max_duration_s {self.chunk_max_duration_s} is outside [0.01, 60] s")
        if self.min_free_disk_bytes < 0:
            raise ValueError(f"min_free_disk must be >= 0, got {self.min_free_disk_bytes}")
        if not 0.1 <= self.silent_after_s <= 3600:
            raise ValueError(f"silent_after_s {self.silent_after_s} is outside [0.1, 3600] s")

    def resolved(self, topic: TopicSpec) -> str:
        return resolve_topic(topic.name, self.namespace)


# --------------------------------------------------------------------------- episode boundaries

@dataclasses.dataclass(frozen=True)
class StartBag:
    episode_id: str
    status: Mapping[str, str]
    partial_start: bool  # the recorder joined an episode already under way


@dataclasses.dataclass(frozen=True)
class StopBag:
    episode_id: str
    status: Mapping[str, str]
    label: str   # success | failure | aborted | unknown
    reason: str


class EpisodeTracker:
    """Turns the stream of ``episode/status`` key-values into bag starts and stops (pure)."""

    def __init__(self, remember: int = 1000):
        self.recording: str | None = None
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self._seen_any = False

    def _finish(self, episode_id: str) -> None:
        self._done[episode_id] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)

    def refuse(self, episode_id: str) -> None:
        """The episode was not recorded (disk full): never start it later half-way."""
        if self.recording == episode_id:
            self.recording = None
        self._finish(episode_id)

    def update(self, status: Mapping[str, str]) -> list[StartBag | StopBag]:
        first = not self._seen_any
        self._seen_any = True
        state, episode_id = status.get("state", ""), status.get("episode_id", "")
        actions: list[StartBag | StopBag] = []
        current = self.recording
        if current is not None:
            if state in TERMINAL_STATES and episode_id == current:
                actions.append(StopBag(current, status, state, f"episode ended: {state}"))
            elif state == "running" and episode_id != current:
                actions.append(StopBag(current, status, UNKNOWN_LABEL,
                                       f"episode {episode_id} started before {current} ended"))
            elif state == "idle" or (state in TERMINAL_STATES and episode_id != current):
                last_label = status.get("last_label", "")
                if status.get("last_episode_id") == current and last_label in TERMINAL_STATES:
                    actions.append(StopBag(current, status, last_label, f"episode ended: {last_label}"))
                else:
                    actions.append(StopBag(current, status, UNKNOWN_LABEL,
                                           f"episode manager went {state} without a label for {current}"))
            if actions:
                self.recording = None
                self._finish(current)
        if state == "running" and episode_id and self.recording is None and episode_id not in self._done:
            partial = first and _int(status.get("steps")) > 0
            actions.append(StartBag(episode_id, status, partial))
            self.recording = episode_id
        return actions


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- bounded queue

class BoundedQueue:
    """FIFO bounded in bytes and messages; control items (size None) are always accepted."""

    def __init__(self, max_bytes: int, max_messages: int):
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self._items: collections.deque = collections.deque()
        self._bytes = 0
        self._in_flight = 0
        self._cond = threading.Condition()

    def put(self, item, size: int | None) -> bool:
        with self._cond:
            if size is not None and (self._bytes + size > self.max_bytes
                                     or len(self._items) >= self.max_messages):
                return False
            self._items.append((item, size or 0))
            self._bytes += size or 0
            self._cond.notify()
            return True

    def get(self, timeout: float):
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items and not self._cond.wait(timeout):
                return None
            if not self._items:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            self._in_flight += 1
            return item

    def done(self) -> None:
        """The consumer finished the item it got last."""
        with self._cond:
            self._in_flight -= 1

    def idle(self) -> bool:
        """Nothing queued and nothing being worked on."""
        with self._cond:
            return not self._items and not self._in_flight

    def depth(self) -> tuple[int, int]:
        with self._cond:
            return len(self._items), self._bytes


# --------------------------------------------------------------------------- one bag on disk

class EpisodeBagWriter:
    """One rosbag2 MCAP directory, chunks closed and flushed often so a crash loses little.

    Written with :func:`recap_recorder.bags.checksummed_writer`: every chunk carries the CRC of its
    records, and the file's end the data section and summary CRCs, so bit rot is found when the bag
    is read instead of being converted.

    ``compress`` names the (resolved) image topics stored JPEG-compressed under ``<topic>/compressed``;
    an image that cannot be compressed goes to the raw topic, whose connection is added when first
    needed, and is counted in ``uncompressed``.
    """

    def __init__(self, path: Path, topics: Sequence[tuple[str, TopicSpec]], *, typestore,
                 chunk_size_bytes: int, chunk_max_duration_s: float, compress: Sequence[str] = (),
                 jpeg_quality: int = JPEG_QUALITY, clock: Callable[[], float] = time.monotonic):
        from recap_recorder.bags import checksummed_writer

        self.path = path
        self._writer = checksummed_writer(path)
        self._chunk_size, self._chunk_age = chunk_size_bytes, chunk_max_duration_s
        self._clock = clock
        self._typestore = typestore
        self._specs = dict(topics)
        self._compress = set(compress)
        self._jpeg = (jpeg_quality, JPEG_SUBSAMPLING)
        self.written: collections.Counter[str] = collections.Counter()
        self.uncompressed: collections.Counter[str] = collections.Counter()
        self.uncompressed_reason = ""
        self._writer.open()
        try:
            self._connections, self._compressed_connections = {}, {}
            for resolved, spec in topics:
                if resolved in self._compress:
                    self._compressed_connections[resolved] = self._add(resolved + COMPRESSED_SUFFIX,
                                                                       COMPRESSED_TYPE, spec)
                else:
                    self._connections[resolved] = self._add(resolved, spec.msgtype, spec)
        except BaseException:
            self._writer.abort()
            raise
        self._chunk_opened = clock()

    def _add(self, topic: str, msgtype: str, spec: TopicSpec):
        return self._writer.add_connection(topic, msgtype, typestore=self._typestore,
                                           offered_qos_profiles=[_qos_profile(spec.kind)])

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        if topic in self._compress:
            try:
                data = compress_image(data, *self._jpeg)
                connection = self._compressed_connections[topic]
            except BagError as exc:  # kept as received: nothing recorded is lost
                self.uncompressed[topic] += 1
                self.uncompressed_reason = str(exc)
                if topic not in self._connections:
                    self._connections[topic] = self._add(topic, self._specs[topic].msgtype, self._specs[topic])
                connection = self._connections[topic]
        else:
            connection = self._connections[topic]
        self._writer.write(connection, log_time_ns, data)
        self.written[connection.topic] += 1
        storage = self._writer.storage
        if storage.chunk.bio.tell() >= self._chunk_size or self._clock() - self._chunk_opened >= self._chunk_age:
            self.flush_chunk()

    def image_metadata(self) -> dict[str, str]:
        """custom_data keys on how the images were stored."""
        if not self._compress:
            return {"image_compression": "none"}
        quality, subsampling = self._jpeg
        data = {"image_compression": f"jpeg quality {quality} subsampling {subsampling}",
                "recorder_uncompressed": json.dumps(dict(self.uncompressed), sort_keys=True)}
        if self.uncompressed_reason:
            data["recorder_uncompressed_reason"] = self.uncompressed_reason
        return data

    def flush_chunk(self) -> None:
        """Close the pending MCAP chunk and hand it to the OS (survives a SIGKILL of this process)."""
        storage = self._writer.storage
        if storage is not None and storage.chunk.msgs:
            storage.close_chunk()
            storage.bio.flush()
        self._chunk_opened = self._clock()

    def flush_if_due(self) -> None:
        if self._clock() - self._chunk_opened >= self._chunk_age:
            self.flush_chunk()

    def close(self, custom_data: Mapping[str, str]) -> None:
        for key, value in custom_data.items():
            self._writer.set_custom_data(str(key), str(value))
        self._writer.close()
        for name in (self.path / f"{self.path.name}.mcap", self.path / "metadata.yaml"):
            with open(name, "rb") as handle:  # durable before anyone converts it
                os.fsync(handle.fileno())

    def abort(self) -> None:
        """Stop writing without an index: ``recap bag repair`` recovers the complete chunks."""
        try:
            self.flush_chunk()
        except Exception:  # the disk failed: keep what the OS already has
            pass
        finally:
            self._writer.abort()


# --------------------------------------------------------------------------- the recorder

@dataclasses.dataclass
class _Open:
    episode_id: str
    first_messages: list  # [(topic, log_time_ns, data)] snapshot + the running status


@dataclasses.dataclass
class _Close:
    episode_id: str
    custom_data: dict


@dataclasses.dataclass
class EpisodeCounters:
    """What the receiving side saw during one episode (reported in the bag's custom_data)."""

    received: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    queue_overflows: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class Recorder:
    """Thread-safe entry points for the node, a writer thread, counters for ``recorder/status``."""

    def __init__(self, config: RecorderConfig, *, typestore=None,
                 disk_free: Callable[[Path], int] | None = None):
        if typestore is None:
            from rosbags.typesys import Stores, get_typestore

            typestore = get_typestore(Stores.ROS2_KILTED)
        unknown = [t.msgtype for t in config.topics if t.msgtype not in typestore.types]
        if unknown:
            raise ValueError(f"message types {unknown} are unknown to rosbags' ROS 2 typestore; "
                             "record standard message types (DESIGN.md §3)")
        self.config = config
        self._typestore = typestore
        self._disk_free = disk_free or (lambda path: shutil.disk_usage(path).free)
        self._topics = {t.name: t for t in config.topics}
        self._resolved = {t.name: config.resolved(t) for t in config.topics}
        self._lock = threading.Lock()
        self._tracker = EpisodeTracker()
        self._latest: dict[str, tuple[int, bytes]] = {}  # snapshot topics: newest (time, data)
        self._heard: dict[str, int] = {}  # every topic: newest receive time (ns)
        self._episode: EpisodeCounters | None = None
        self._episode_start: Mapping[str, str] = {}
        self._partial_start = False
        self._queue = BoundedQueue(config.max_queue_bytes, config.max_queue_messages)
        self.totals = collections.Counter()  # bags_closed, episodes_refused, queue_overflows, write_errors
        self.last_bag = ""
        self.last_error = ""
        config.output_dir.mkdir(parents=True, exist_ok=True)
        self._running = True
        self._thread = threading.Thread(target=self._write_loop, name="bag_writer", daemon=True)
        self._thread.start()

    # -- called from subscription callbacks: no disk access, no waiting -------------------------
    def on_message(self, topic: str, data: bytes, receive_ns: int) -> None:
        spec = self._topics[topic]
        with self._lock:
            self._heard[topic] = receive_ns
            if spec.snapshot:
                self._latest[topic] = (receive_ns, data)
            if self._episode is None:
                return
            self._enqueue_locked(topic, receive_ns, data)

    def _enqueue_locked(self, topic: str, receive_ns: int, data: bytes) -> None:
        self._episode.received[topic] += 1
        if not self._queue.put((self._resolved[topic], receive_ns, data), len(data)):
            self._episode.queue_overflows[topic] += 1
            self.totals["queue_overflows"] += 1

    def on_episode_status(self, status: Mapping[str, str], data: bytes, receive_ns: int) -> None:
        with self._lock:
            for action in self._tracker.update(status):
                if isinstance(action, StopBag):
                    if status.get("episode_id") in (action.episode_id, ""):
                        self._enqueue_locked(EPISODE_STATUS, receive_ns, data)
                    self._stop_locked(action)
                else:
                    self._start_locked(action, data, receive_ns)
                    return
            if self._episode is not None:
                self._enqueue_locked(EPISODE_STATUS, receive_ns, data)

    def _start_locked(self, action: StartBag, status_data: bytes, receive_ns: int) -> None:
        free = self._disk_free(self.config.output_dir)
        if free < self.config.min_free_disk_bytes:
            self._tracker.refuse(action.episode_id)
            self.totals["episodes_refused"] += 1
            self.last_error = (f"episode {action.episode_id} NOT recorded: {free / 2**20:.0f} MB free in "
                               f"{self.config.output_dir}, min_free_disk_mb is "
                               f"{self.config.min_free_disk_bytes / 2**20:.0f}; free disk space or point "
                               f"output_dir elsewhere")
            log.error(self.last_error)
            return
        max_age_ns = int(self.config.snapshot_max_age_s * 1e9)
        snapshot = [topic for topic, (t, _) in self._latest.items()
                    if self._topics[topic].kind == LATCHED or receive_ns - t <= max_age_ns]
        first = [(self._resolved[topic], receive_ns, self._latest[topic][1]) for topic in snapshot]
        first.append((self._resolved[EPISODE_STATUS], receive_ns, status_data))
        self._episode = EpisodeCounters()
        self._episode.received.update(snapshot + [EPISODE_STATUS])
        self._episode_start = dict(action.status)
        self._partial_start = action.partial_start
        self._queue.put(_Open(action.episode_id, first), None)

    def _stop_locked(self, action: StopBag) -> None:
        counters = self._episode or EpisodeCounters()
        custom = episode_custom_data(
            self._episode_start, action.status, label=action.label, reason=action.reason,
            station=self.config.station, namespace=self.config.namespace, cameras=self.config.cameras,
            partial_start=self._partial_start, received=counters.received, overflows=counters.queue_overflows)
        self._queue.put(_Close(action.episode_id, custom), None)
        self._episode = None

    def silent_topics(self, now_ns: int | None = None) -> tuple[list[str], list[str]]:
        """Recorded non-latched topics with no message in the last ``silent_after_s``: all of them (never
        heard included: a node that is not running), and the sensor streams among them that had been
        heard (a camera or joint stream that stopped, which leaves a hole in an episode's data)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        limit = int(self.config.silent_after_s * 1e9)
        with self._lock:
            heard = dict(self._heard)
        silent = [t.name for t in self.config.topics
                  if t.kind != LATCHED and (t.name not in heard or now_ns - heard[t.name] > limit)]
        return silent, [name for name in silent if name in heard and self._topics[name].kind == SENSOR]

    def status(self) -> dict[str, object]:
        depth, nbytes = self._queue.depth()
        silent, stalled = self.silent_topics()
        with self._lock:
            recording = self._tracker.recording or ""
            episode_drops = sum(self._episode.queue_overflows.values()) if self._episode else 0
        return {"state": "recording" if recording else "idle", "episode_id": recording,
                "silent_topics": ",".join(silent), "stalled_sensors": ",".join(stalled),
                "queue_messages": depth, "queue_mb": round(nbytes / 2**20, 1),
                "episode_dropped": episode_drops, "queue_overflows": self.totals["queue_overflows"],
                "write_errors": self.totals["write_errors"], "bags_closed": self.totals["bags_closed"],
                "episodes_refused": self.totals["episodes_refused"], "last_bag": self.last_bag,
                "last_error": self.last_error, "output_dir": str(self.config.output_dir)}

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the writer has written everything queued so far (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.idle():
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 30.0) -> None:
        """Finish the open bag (labelled aborted: the recording stopped before the episode ended), drain the
        queue, stop the thread."""
        with self._lock:
            if self._tracker.recording is not None:
                episode_id = self._tracker.recording
                self._tracker.refuse(episode_id)
                self._stop_locked(StopBag(episode_id, {}, ABORTED_LABEL, "recorder stopped before the episode "
                                                                         "ended"))
        self._running = False
        self._thread.join(timeout)

    # -- the writer thread -----------------------------------------------------------------------
    def _write_loop(self) -> None:
        poll = min(0.1, self.config.chunk_max_duration_s / 2)
        self._bag: EpisodeBagWriter | None = None
        self._bag_failed = False
        while True:
            item = self._queue.get(poll)
            if item is None:
                if not self._running and self._queue.idle():
                    break
                if self._bag is not None and not self._bag_failed:
                    self._guard(self._bag, self._bag.flush_if_due)
                continue
            try:
                self._write_item(item)
            finally:
                self._queue.done()
        if self._bag is not None and not self._bag_failed:
            self._guard(self._bag, self._bag.abort)

    def _write_item(self, item) -> None:
        if isinstance(item, _Open):
            self._bag = self._open_bag(item)
            self._bag_failed = self._bag is None
            for topic, t, data in item.first_messages:
                self._bag_failed = self._bag_failed or not self._guard(self._bag, self._bag.write, topic, t, data)
            self._bag_failed = self._bag_failed or not self._guard(self._bag, self._bag.flush_chunk)
        elif isinstance(item, _Close):
            bag, self._bag = self._bag, None
            custom = {**item.custom_data, **bag.image_metadata()} if bag is not None else item.custom_data
            if bag is not None and not self._bag_failed and self._guard(bag, bag.close, custom):
                self.totals["bags_closed"] += 1
                self.last_bag = str(bag.path)
                log.info("closed bag %s: %s, %d messages", bag.path, item.custom_data["label"],
                         sum(bag.written.values()))
                if bag.uncompressed:
                    log.warning("bag %s: %d image(s) stored uncompressed (%s)", bag.path,
                                sum(bag.uncompressed.values()), bag.uncompressed_reason)
        elif self._bag is not None and not self._bag_failed:
            self._bag_failed = not self._guard(self._bag, self._bag.write, *item)

    def _open_bag(self, item: _Open) -> EpisodeBagWriter | None:
        path = self.config.output_dir / _safe_dirname(item.episode_id)
        if path.exists():  # never overwrite: a second recording of the same id gets a suffix
            path = path.with_name(f"{path.name}_{dt.datetime.now(dt.timezone.utc):%H%M%S%f}")
        topics = [(self._resolved[t.name], t) for t in self.config.topics]
        try:
            compress = [resolved for resolved, t in topics
                        if t.msgtype == IMAGE_TYPE and self.config.image_compression == "jpeg"]
            bag = EpisodeBagWriter(path, topics, typestore=self._typestore,
                                   chunk_size_bytes=self.config.chunk_size_bytes,
                                   chunk_max_duration_s=self.config.chunk_max_duration_s, compress=compress,
                                   jpeg_quality=self.config.jpeg_quality)
        except Exception as exc:
            self.totals["write_errors"] += 1
            self.last_error = f"cannot create bag {path}: {exc}"
            log.error(self.last_error)
            return None
        self.last_error = ""
        log.info("recording episode %s into %s", item.episode_id, path)
        return bag

    def _guard(self, bag: EpisodeBagWriter, fn, *args) -> bool:
        """Run a disk operation on ``bag``; on failure stop writing it (repairable) and say so."""
        try:
            fn(*args)
            return True
        except Exception as exc:
            self.totals["write_errors"] += 1
            self.last_error = (f"writing {bag.path} failed ({exc}); the rest of this episode is not recorded. "
                               f"`recap bag repair {bag.path}` recovers what was written")
            log.error(self.last_error)
            try:
                bag.abort()
            except Exception:
                pass
            return False


def _safe_dirname(episode_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", episode_id) or "episode"
