"""The recorder without ROS: thread-safe entry points for the node and the writer thread (:class:`Recorder`).

Queueing, images and crash safety: :class:`Recorder` and docs/recording.md.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from recap_recorder.bag_metadata import ABORTED_LABEL, EPISODE_STATUS, episode_custom_data
from recap_recorder.bag_writer import EpisodeBagWriter
from recap_recorder.episode_tracker import EpisodeTracker, StartBag, StopBag
from recap_recorder.images import IMAGE_TYPE
from recap_recorder.recorder_config import LATCHED, SENSOR, RecorderConfig
from recap_recorder.write_queue import BoundedQueue

log = logging.getLogger(__name__)


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
    """Thread-safe entry points for the node, a writer thread, counters for ``recorder/status``.

    The node (``recorder_node.py``) hands every received message to :meth:`on_message` as the raw CDR bytes
    with its receive time, and every ``episode/status`` to :meth:`on_episode_status`. Those calls only append
    to a bounded queue (:mod:`recap_recorder.write_queue`; a full queue drops the message and counts it), so
    subscription callbacks never wait for the disk; episode boundaries come from
    :mod:`recap_recorder.episode_tracker`, and one writer thread writes the queue into one bag per episode
    (:class:`~recap_recorder.bag_writer.EpisodeBagWriter`).

    Images: with ``image_compression`` ``jpeg`` (the default) every ``sensor_msgs/Image`` topic is stored as
    ``<topic>/compressed`` (``sensor_msgs/CompressedImage``), encoded in the writer thread with the dataset's
    JPEG settings (:mod:`recap_recorder.images`): bags are ~10x smaller and the converter copies the bytes
    instead of encoding. An image that cannot be compressed is written as received on the raw topic and
    counted.

    Crash safety: the MCAP chunk is closed and handed to the OS every ``chunk_size_bytes`` or
    ``chunk_max_duration_s``, whichever comes first, so a SIGKILL loses at most that much (``recap bag
    repair`` rebuilds the rest).
    """

    def __init__(self, config: RecorderConfig, *, typestore=None, disk_free: Callable[[Path], int] | None = None):
        if typestore is None:
            from rosbags.typesys import Stores, get_typestore

            typestore = get_typestore(Stores.ROS2_KILTED)
        unknown = [t.msgtype for t in config.topics if t.msgtype not in typestore.types]
        if unknown:
            raise ValueError(
                f"message types {unknown} are unknown to rosbags' ROS 2 typestore; "
                "record standard message types (DESIGN.md §3)"
            )
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
            self.last_error = (
                f"episode {action.episode_id} NOT recorded: {free / 2**20:.0f} MB free in "
                f"{self.config.output_dir}, min_free_disk_mb is "
                f"{self.config.min_free_disk_bytes / 2**20:.0f}; free disk space or point "
                f"output_dir elsewhere"
            )
            log.error(self.last_error)
            return
        max_age_ns = int(self.config.snapshot_max_age_s * 1e9)
        snapshot = [
            topic
            for topic, (t, _) in self._latest.items()
            if self._topics[topic].kind == LATCHED or receive_ns - t <= max_age_ns
        ]
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
            self._episode_start,
            action.status,
            label=action.label,
            reason=action.reason,
            station=self.config.station,
            namespace=self.config.namespace,
            cameras=self.config.cameras,
            joint_names=self.config.joint_names,
            gripper_joints=self.config.gripper_joints,
            partial_start=self._partial_start,
            received=counters.received,
            overflows=counters.queue_overflows,
        )
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
        silent = [
            t.name
            for t in self.config.topics
            if t.kind != LATCHED and (t.name not in heard or now_ns - heard[t.name] > limit)
        ]
        return silent, [name for name in silent if name in heard and self._topics[name].kind == SENSOR]

    def status(self) -> dict[str, object]:
        depth, nbytes = self._queue.depth()
        silent, stalled = self.silent_topics()
        with self._lock:
            recording = self._tracker.recording or ""
            episode_drops = sum(self._episode.queue_overflows.values()) if self._episode else 0
        return {
            "state": "recording" if recording else "idle",
            "episode_id": recording,
            "silent_topics": ",".join(silent),
            "stalled_sensors": ",".join(stalled),
            "queue_messages": depth,
            "queue_mb": round(nbytes / 2**20, 1),
            "episode_dropped": episode_drops,
            "queue_overflows": self.totals["queue_overflows"],
            "write_errors": self.totals["write_errors"],
            "bags_closed": self.totals["bags_closed"],
            "episodes_refused": self.totals["episodes_refused"],
            "last_bag": self.last_bag,
            "last_error": self.last_error,
            "output_dir": str(self.config.output_dir),
        }

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
                self._stop_locked(StopBag(episode_id, {}, ABORTED_LABEL, "recorder stopped before the episode ended"))
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
                log.info(
                    "closed bag %s: %s, %d messages", bag.path, item.custom_data["label"], sum(bag.written.values())
                )
                if bag.uncompressed:
                    log.warning(
                        "bag %s: %d image(s) stored uncompressed (%s)",
                        bag.path,
                        sum(bag.uncompressed.values()),
                        bag.uncompressed_reason,
                    )
        elif self._bag is not None and not self._bag_failed:
            self._bag_failed = not self._guard(self._bag, self._bag.write, *item)

    def _open_bag(self, item: _Open) -> EpisodeBagWriter | None:
        path = self.config.output_dir / _safe_dirname(item.episode_id)
        if path.exists():  # never overwrite: a second recording of the same id gets a suffix
            path = path.with_name(f"{path.name}_{dt.datetime.now(dt.timezone.utc):%H%M%S%f}")
        topics = [(self._resolved[t.name], t) for t in self.config.topics]
        try:
            compress = [
                resolved
                for resolved, t in topics
                if t.msgtype == IMAGE_TYPE and self.config.image_compression == "jpeg"
            ]
            bag = EpisodeBagWriter(
                path,
                topics,
                typestore=self._typestore,
                chunk_size_bytes=self.config.chunk_size_bytes,
                chunk_max_duration_s=self.config.chunk_max_duration_s,
                compress=compress,
                jpeg_quality=self.config.jpeg_quality,
            )
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
            self.last_error = (
                f"writing {bag.path} failed ({exc}); the rest of this episode is not recorded. "
                f"`recap bag repair {bag.path}` recovers what was written"
            )
            log.error(self.last_error)
            try:
                bag.abort()
            except Exception:
                pass
            return False


def _safe_dirname(episode_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", episode_id) or "episode"
