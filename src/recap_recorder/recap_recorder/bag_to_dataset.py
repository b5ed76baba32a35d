"""Episode bags -> RECAP dataset (DESIGN.md §7), without ROS or torch: what ``recap convert`` runs.

The resampling onto the control clock is :func:`resample`, reading one bag :func:`load_episode` (with the
station layout it was recorded with: :func:`episode_layout`), the conversion :func:`convert_bags`; the rules
are in docs/recording.md, "Converter".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import struct
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from recap_core.data.schema import EncodedImage
from recap_core.layout import StationLayout
from recap_core.station import GRIPPER_JOINTS, JOINT_NAMES
from recap_recorder.bag_files import BagError, bag_directory
from recap_recorder.bag_info import BagInfo, bag_info, open_bag
from recap_recorder.bag_metadata import bag_cameras, relative_topic_name
from recap_recorder.bag_repair import REPAIRED_SUFFIX
from recap_recorder.cdr import joint_state
from recap_recorder.indexed_mcap import CorruptBag, IndexedMcap, Integrity, MessageIndex
from recap_recorder.images import (
    COMPRESSED_SUFFIX,
    colours_swapped,
    compressed_payload,
    compressed_payload_at,
    compressed_shape,
    compression_of,
    decode_compressed,
    image_layout,
    image_pixels,
)

SOURCES = ("demo", "rollout", "eval")
FLAG_TOLERANCE_NS = 5_000_000  # well under the 20 ms control period


# --------------------------------------------------------------------------- the resampling rule (pure)


def latest_at_or_before(sample_ns: np.ndarray, tick_ns: np.ndarray) -> np.ndarray:
    """Index of the newest sample at or before each tick, -1 where there is none. ``[N]``, ``[T]`` -> ``[T]``."""
    return np.searchsorted(np.asarray(sample_ns), np.asarray(tick_ns), side="right") - 1


@dataclasses.dataclass
class Timeline:
    """One episode on the control clock; ``T`` frames after dropping leading incomplete ticks."""

    tick_ns: np.ndarray  # [T] int64 receive times of the commands
    actions: np.ndarray  # [T, J]
    states: np.ndarray  # [T, J]
    is_intervention: np.ndarray  # [T] bool
    image_index: dict[str, np.ndarray]  # camera -> [T] index into that camera's images (time order)
    dropped_leading_ticks: int


def resample(
    *,
    command_ns: np.ndarray,
    commands: np.ndarray,
    state_ns: np.ndarray,
    states: np.ndarray,
    image_ns: Mapping[str, np.ndarray],
    intervention_ns: np.ndarray,
    intervention: np.ndarray,
    source_ns: np.ndarray,
    source_is_teleop: np.ndarray,
    flag_tolerance_ns: int = 0,
    observed_after_ns: int | None = None,
) -> Timeline:
    """Apply the DESIGN.md §7 rule; every ``*_ns`` array is sorted receive times of its values.

    The ticks are the receive times of the ``joint_command`` messages the gate actually sent to the robot. At
    tick t:

    * observation = the newest image of every camera and the newest ``joint_states`` received at or before t,
      and after the episode began: joint states and images received at or before ``observed_after_ns`` (the
      episode start, where the recorder's snapshot is stamped) make no observation, since after a reset the
      snapshot can show the world before it (a simulator teleports the arm between two joint states);
    * action = that ``joint_command``;
    * ``is_intervention`` = the newest ``intervention`` at or before t, or the newest ``command_source`` at or
      before t being ``teleop`` -- where "at or before" allows ``flag_tolerance_ns`` after t: the gate
      publishes both flags just before each command, but delivery across topics may swap them.

    Ticks before the first complete observation are dropped (counted in the episode's metadata).
    """
    order = np.argsort(command_ns, kind="stable")
    ticks, actions = np.asarray(command_ns)[order], np.asarray(commands)[order]

    def first_usable(times) -> int:
        return (
            0 if observed_after_ns is None else int(np.searchsorted(np.asarray(times), observed_after_ns, side="right"))
        )

    state_at = latest_at_or_before(state_ns, ticks)
    image_at = {cam: latest_at_or_before(times, ticks) for cam, times in image_ns.items()}
    complete = state_at >= first_usable(state_ns)  # also false where there is no sample (-1)
    for cam, index in image_at.items():
        complete &= index >= first_usable(image_ns[cam])
    first = int(np.argmax(complete)) if complete.any() else len(ticks)
    keep = slice(first, None)
    flag_at = latest_at_or_before(intervention_ns, ticks[keep] + flag_tolerance_ns)
    flags = (
        np.where(flag_at >= 0, np.asarray(intervention, bool)[np.maximum(flag_at, 0)], False)
        if len(intervention)
        else np.zeros(len(flag_at), bool)
    )
    source_at = latest_at_or_before(source_ns, ticks[keep] + flag_tolerance_ns)
    if len(source_is_teleop):
        flags = flags | np.where(source_at >= 0, np.asarray(source_is_teleop, bool)[np.maximum(source_at, 0)], False)
    return Timeline(
        tick_ns=ticks[keep],
        actions=actions[keep],
        states=np.asarray(states)[state_at[keep]] if len(states) else np.zeros((0, np.shape(actions)[-1])),
        is_intervention=flags.astype(bool),
        image_index={cam: index[keep] for cam, index in image_at.items()},
        dropped_leading_ticks=first,
    )


# --------------------------------------------------------------------------- messages


def station_order(names: Sequence[str], positions: np.ndarray, joint_names: Sequence[str]) -> np.ndarray:
    """JointState positions in the station's order ``joint_names`` (names may be empty = already in order)."""
    positions = np.asarray(positions, np.float64)
    if positions.shape != (len(joint_names),):
        raise BagError(f"joint message has {positions.size} positions, expected {len(joint_names)}")
    if len(names) and list(names) != list(joint_names):
        if sorted(names) != sorted(joint_names):
            raise BagError(f"joint names {list(names)} are not the station's {list(joint_names)}")
        index = {name: i for i, name in enumerate(names)}
        positions = positions[[index[name] for name in joint_names]]
    return positions


def _recorded_names(meta: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    """A comma-separated list of names the bag's custom_data records under ``key`` (None if it does not)."""
    if key not in meta:
        return None
    return tuple(name.strip() for name in str(meta[key]).split(",") if name.strip())


def episode_layout(
    path: Path,
    meta: Mapping[str, str],
    cameras: Sequence[str],
    message_names: Sequence[str],
    *,
    station: StationLayout | None = None,
    fallback: StationLayout | None = None,
) -> StationLayout:
    """The station layout one bag was recorded with; BagError (one line) when it cannot be known.

    Joint order and gripper joints come from ``station`` (``recap convert --station``), else the bag's
    custom_data (``joint_names``, ``gripper_joints``), else ``fallback`` (the dataset appended to) where the
    recorded joint messages name the same joints, else the names in those messages (``message_names``) with
    the gripper joints of the simulated station when those are its joints: the one station whose bags
    recorded no layout.
    """
    if station is not None:
        return StationLayout(station.joint_names, station.gripper_joints, cameras)
    names = _recorded_names(meta, "joint_names")
    grippers = _recorded_names(meta, "gripper_joints")
    if (
        names is None
        and fallback is not None
        and sorted(message_names or fallback.joint_names) == sorted(fallback.joint_names)
    ):
        names = fallback.joint_names
        grippers = fallback.gripper_joints if grippers is None else grippers
    if names is None and message_names:
        names = tuple(message_names)
    if names is None:
        raise BagError(
            f"{path}: its joint messages carry no names and it records no joint_names; give the station's "
            "parameter file with --station"
        )
    if grippers is None:
        if tuple(names) != JOINT_NAMES:
            raise BagError(f"{path}: it records no gripper_joints; give the station's parameter file with --station")
        grippers = GRIPPER_JOINTS
    try:
        return StationLayout(names, grippers, cameras)
    except ValueError as exc:
        raise BagError(f"{path}: station layout: {exc}") from None


# --------------------------------------------------------------------------- one bag


@dataclasses.dataclass(frozen=True)
class CameraStream:
    """One camera's images in receive order, from its raw topic, its ``/compressed`` topic or both
    (the recorder writes an image it could not compress on the raw topic)."""

    raw: MessageIndex
    compressed: MessageIndex
    log_ns: np.ndarray  # [N] receive times, sorted
    is_compressed: np.ndarray  # [N] bool: image n is on the compressed topic
    number: np.ndarray  # [N] its index in that topic's MessageIndex
    shape: tuple[int, int] | None = None  # (height, width) of every image

    @classmethod
    def of(cls, raw: MessageIndex, compressed: MessageIndex) -> "CameraStream":
        log_ns = np.concatenate([raw.log_ns, compressed.log_ns])
        order = np.argsort(log_ns, kind="stable")
        numbers = np.concatenate([np.arange(len(raw)), np.arange(len(compressed))])
        flags = np.concatenate([np.zeros(len(raw), bool), np.ones(len(compressed), bool)])
        return cls(raw, compressed, log_ns[order], flags[order], numbers[order])

    def __len__(self) -> int:
        return len(self.log_ns)


@dataclasses.dataclass
class BagEpisode:
    """A bag's episode: timeline, metadata and a way to stream each camera's frames."""

    info: BagInfo
    mcap: IndexedMcap  # open until close()
    timeline: Timeline
    layout: StationLayout  # joint order of the timeline's states and actions, gripper joints, cameras
    image_shape: tuple[int, int]
    task: str
    success: bool
    metadata: dict
    streams: dict[str, CameraStream] = dataclasses.field(default_factory=dict)
    message_names: tuple[str, ...] = ()  # the joint names the joint messages carry (see episode_layout)

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.layout.cameras

    def frames(self, camera: str, shape: tuple[int, int] | None = None) -> Iterator[np.ndarray | EncodedImage]:
        """One frame per tick (an image repeats while no newer one arrived), read one by one.

        A raw image comes as an ``[H, W, 3]`` uint8 array (resized to ``shape``). A compressed
        one of that size comes as :class:`EncodedImage`, the recorded bytes untouched (the
        dataset writer stores them as they are when the formats agree); at another size it
        is decoded and resized.
        """
        return self._frames(camera, shape, in_file=False)

    def _frames(self, camera: str, shape: tuple[int, int] | None, in_file: bool) -> Iterator:
        """:meth:`frames`; with ``in_file`` a compressed image stored as recorded comes as a :class:`FileFrame`
        where the bag's chunk is uncompressed (checked as :meth:`frames` checks it, but not copied)."""
        stream = self.streams[camera]
        want = tuple(shape) if shape is not None else stream.shape
        numbers, compressed = stream.number.tolist(), stream.is_compressed.tolist()
        kinds, swapped = _Memo(compression_of), _Memo(colours_swapped)  # one format string per camera, normally
        number, frame = -1, None
        for target in self.timeline.image_index[camera].tolist():
            if target != number:
                number = target
                k = numbers[number]
                if not compressed[number]:
                    frame = _fit(image_pixels(self.mcap.read_view(stream.raw, k)[0]), shape)
                else:
                    raw = self.mcap.read_view(stream.compressed, k)[0]
                    fmt, start, length = compressed_payload_at(raw)
                    data = memoryview(raw)[start : start + length]
                    kind = kinds(fmt)
                    size = compressed_shape(data, kind)
                    if size != stream.shape:
                        raise BagError(
                            f"{self.mcap.path}: camera {camera} changes image size from "
                            f"{stream.shape} to {size} at compressed image {k}"
                        )
                    if size != want or swapped(fmt):  # decoded in true colours
                        frame = _fit(decode_compressed(data, kind, fmt), shape)
                    else:
                        position = self.mcap.file_position(stream.compressed, k) if in_file else None
                        frame = (
                            EncodedImage(bytes(data), kind, size)
                            if position is None
                            else FileFrame(position + start, length, kind, size)
                        )
            yield frame

    def diagnostics(self, relative: str) -> tuple[np.ndarray, list[dict[str, str]]]:
        """Receive times and key/value dicts of a recorded DiagnosticStatus topic (e.g. ``sim/status``),
        relative to the bag's namespace; empty when the bag does not hold it."""
        return _read_series(self.mcap, _typestore(), relative, relative_topic_name(relative, self.info.namespace))

    def close(self) -> None:
        self.mcap.close()

    def __enter__(self) -> "BagEpisode":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class FileFrame:
    """A recorded compressed image stored as it is, by where its bytes lie in the bag's MCAP file."""

    position: int
    size: int
    kind: str  # jpeg | png
    shape: tuple[int, int]


class _Memo:
    """``function(fmt)`` remembered per format string (errors are raised again each time)."""

    def __init__(self, function):
        self.function, self.known = function, {}

    def __call__(self, fmt: str):
        if fmt not in self.known:
            self.known[fmt] = self.function(fmt)
        return self.known[fmt]


def _fit(frame: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    if shape is None or frame.shape[:2] == tuple(shape):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((shape[1], shape[0]), Image.BILINEAR))


class SkipBag(Exception):
    """A bag that is readable but not converted (aborted, no label, no task); the text says why."""


def load_episode(
    path: Path,
    *,
    include_aborted: bool = False,
    station: StationLayout | None = None,
    fallback: StationLayout | None = None,
    fast: bool = True,
) -> BagEpisode:
    """Read everything but the pixels of one bag; SkipBag or BagError says why it cannot be used.

    The bag's CRCs are checked first (:class:`~recap_recorder.indexed_mcap.CorruptBag` when they fail); the
    returned episode keeps the bag open for :meth:`BagEpisode.frames`: close it (``with``). ``station`` and
    ``fallback``: see :func:`episode_layout`; with ``station`` its cameras are the ones read.

    ``fast`` (the default) checks the CRCs on a thread of their own while the timeline is read (zlib and the
    reads release the GIL), reads the message indexes a chunk at a time and JointStates straight from their
    CDR bytes; nothing read counts before the check passed, and a bag that fails it raises exactly what the
    check raises first, whatever reading it raised meanwhile. ``fast=False`` is the reference it is tested
    against: check, then read each topic's index, rosbags deserialising every message.
    """
    path = bag_directory(path)
    if not fast:
        meta, mcap = open_bag(path)
        try:
            return _load_episode(path, meta, mcap, include_aborted, station, fallback, fast)
        except BaseException:
            mcap.close()
            raise
    meta, mcap = open_bag(path, verify=False)  # what open_bag does before its check, in its order
    check = _Verification(path, mcap)
    try:
        try:
            mcap.index_all()
            episode = _load_episode(path, meta, mcap, include_aborted, station, fallback, fast)
        finally:
            integrity = check.result()  # a failed check wins over whatever reading the bag raised
        episode.info = dataclasses.replace(episode.info, integrity=integrity)
        return episode
    except BaseException:
        check.wait()
        mcap.close()
        raise


class _Verification:
    """:func:`~recap_recorder.bag_info.open_bag`'s CRC check of a bag (``IndexedMcap.verify``) on a thread of its
    own; :meth:`result` is what ``open_bag`` returns or raises."""

    def __init__(self, path: Path, mcap: IndexedMcap):
        self.path, self.mcap = path, mcap
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recap-verify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.mcap.verify()
        except BaseException as exc:  # handed to the thread that reads the bag
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Integrity:
        self.wait()
        exc = self._error
        if isinstance(exc, (OSError, struct.error, ValueError)):
            raise BagError(
                f"{self.mcap.path} is damaged ({type(exc).__name__}: {exc}); `recap bag repair {self.path}` "
                "recovers the complete chunks"
            ) from exc
        if exc is not None:
            raise exc
        if not self.mcap.integrity.ok:
            raise CorruptBag(self.path, self.mcap.integrity)
        return self.mcap.integrity


def _load_episode(
    path: Path,
    bag_meta,
    mcap: IndexedMcap,
    include_aborted: bool,
    station: StationLayout | None,
    fallback: StationLayout | None,
    fast: bool = True,
) -> BagEpisode:
    info = bag_info(path, bag_meta, mcap)
    meta = dict(info.custom_data)
    label = info.label
    if label == "aborted" and not include_aborted:
        raise SkipBag("episode was aborted (use --include-aborted to convert it as a failure)")
    if label not in ("success", "failure", "aborted"):
        raise SkipBag(f"label '{label}': the episode did not end while recorded, so there is no outcome")
    namespace = info.namespace
    names = {t.name: t for t in info.topics}
    if station is not None:
        cameras = station.cameras
    else:
        cameras = tuple(c for c in meta.get("cameras", "").split(",") if c) or bag_cameras(t.name for t in info.topics)
    topic = {
        key: relative_topic_name(key, namespace)
        for key in ("joint_command", "joint_states", "intervention", "command_source", "episode/status")
    }
    for key in ("joint_command", "joint_states"):
        if topic[key] not in names or names[topic[key]].count == 0:
            raise BagError(f"{path}: no messages on {topic[key]}; cannot build frames without it")

    typestore = _typestore()
    series: dict[str, tuple[np.ndarray, list]] = {}
    streams: dict[str, CameraStream] = {}
    try:
        for cam in cameras:
            raw = relative_topic_name(f"camera/{cam}/image_raw", namespace)
            streams[cam] = _camera_stream(mcap, raw)
            if not len(streams[cam]):
                raise BagError(
                    f"{path}: no messages on {raw} or {raw}{COMPRESSED_SUFFIX}; cannot build frames without it"
                )
        for key, name in topic.items():
            series[key] = _read_series(mcap, typestore, key, name, fast)
    except (KeyError, struct.error, ValueError, OSError) as exc:
        raise BagError(f"{path} is damaged ({type(exc).__name__}: {exc}); run `recap bag repair {path}`") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("rosbags", "mcap")):
            raise BagError(f"{path} is damaged ({exc}); run `recap bag repair {path}`") from exc
        raise
    image_shape = streams[cameras[0]].shape if cameras else None
    if not cameras:
        raise BagError(f"{path}: no camera topics (camera/<name>/image_raw) and no cameras in its metadata")
    message_names = next((names for names, _ in series["joint_command"][1] + series["joint_states"][1] if names), ())
    layout = episode_layout(path, meta, cameras, message_names, station=station, fallback=fallback)

    def times(key):
        return series[key][0]

    def values(key, dtype=None):
        return np.array(series[key][1], dtype)

    def joints(key) -> np.ndarray:
        ordered = [station_order(names, positions, layout.joint_names) for names, positions in series[key][1]]
        return np.array(ordered, np.float64).reshape(-1, layout.num_joints)

    status_ns = times("episode/status")  # the first is the start, where the recorder stamps its snapshot
    timeline = resample(
        command_ns=times("joint_command"),
        commands=joints("joint_command"),
        state_ns=times("joint_states"),
        states=joints("joint_states"),
        image_ns={cam: streams[cam].log_ns for cam in cameras},
        intervention_ns=times("intervention"),
        intervention=values("intervention", bool),
        source_ns=times("command_source"),
        source_is_teleop=values("command_source", bool),
        flag_tolerance_ns=FLAG_TOLERANCE_NS,
        observed_after_ns=int(status_ns[0]) if len(status_ns) else None,
    )
    if len(timeline.tick_ns) == 0:
        raise BagError(
            f"{path}: no joint_command after the first complete observation (all cameras and "
            "joint_states); nothing to convert"
        )
    statuses = series["episode/status"][1]
    last_status = statuses[-1] if statuses else {}
    task = meta.get("task") or last_status.get("task", "")
    if not task.strip():
        raise SkipBag("no task prompt in the bag's metadata or episode/status")
    return BagEpisode(
        info=info,
        mcap=mcap,
        timeline=timeline,
        layout=layout,
        image_shape=image_shape,
        task=task,
        success=label == "success",
        metadata=_episode_metadata(info, meta, timeline, label),
        streams=streams,
        message_names=tuple(message_names),
    )


def _read_series(mcap: IndexedMcap, typestore, key: str, name: str, fast: bool = True) -> tuple[np.ndarray, list]:
    """Receive times and decoded messages (see ``_decode``) of topic ``name``; empty when not recorded.

    JointState names and positions are read straight from the CDR bytes (:func:`recap_recorder.cdr.joint_state`),
    anything else, or a JointState it leaves to rosbags, is deserialised by rosbags.
    """
    index = mcap.index(name)
    msgtype = mcap.topics[name][1] if name in mcap.topics else ""
    if fast and key in ("joint_command", "joint_states") and msgtype == "sensor_msgs/msg/JointState":
        values = []
        for i in range(len(index)):
            raw = mcap.read_view(index, i)[0]
            fields = joint_state(raw)
            if fields is None:
                fields = _decode(key, typestore.deserialize_cdr(bytes(raw), msgtype))
            values.append(fields)
        return index.log_ns, values
    return index.log_ns, [
        _decode(key, typestore.deserialize_cdr(mcap.read(index, i)[0], msgtype)) for i in range(len(index))
    ]


def _decode(key: str, msg):
    if key in ("joint_command", "joint_states"):  # put in the station's order once the layout is known
        return tuple(msg.name), np.asarray(msg.position, np.float64)
    if key == "intervention":
        return bool(msg.data)
    if key == "command_source":
        return msg.data == "teleop"
    return {kv.key: kv.value for kv in msg.values}  # episode/status and other DiagnosticStatus topics


def _camera_stream(mcap: IndexedMcap, topic: str) -> CameraStream:
    """A camera's raw and compressed images; all rgb8/bgr8 (raw) or JPEG/PNG (compressed) of one size.

    Raw images are checked from the first bytes of each message. Compressed ones are checked
    on the first here and on each as it is streamed (reading one costs as much as checking it).
    """
    raw, compressed = mcap.index(topic), mcap.index(topic + COMPRESSED_SUFFIX)
    shape = None
    for i in range(len(raw)):
        head, size = mcap.read(raw, i, limit=512)
        try:
            layout = image_layout(head, size)
        except struct.error:  # a very long frame_id: parse the whole message
            layout = image_layout(mcap.read(raw, i)[0])
        if layout[2] not in ("rgb8", "bgr8"):
            raise BagError(f"{mcap.path}: {topic} has encoding '{layout[2]}'; record rgb8")
        if layout[3] < layout[1] * 3:
            raise BagError(f"{mcap.path}: {topic} image {i} has step {layout[3]} < 3 x width {layout[1]}")
        shape = shape or layout[:2]
        if layout[:2] != shape:
            raise BagError(f"{mcap.path}: {topic} changes image size from {shape} to {layout[:2]} at image {i}")
    if len(compressed):
        fmt, data = compressed_payload(mcap.read(compressed, 0)[0])
        first = compressed_shape(data, compression_of(fmt))
        if shape is not None and first != shape:
            raise BagError(f"{mcap.path}: {topic}{COMPRESSED_SUFFIX} is {first}, its raw images {shape}")
        shape = first
    return dataclasses.replace(CameraStream.of(raw, compressed), shape=shape)


@functools.lru_cache(maxsize=1)
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _episode_metadata(info: BagInfo, meta: Mapping[str, str], timeline: Timeline, label: str) -> dict:
    try:
        beta = float(meta.get("beta", "")) if meta.get("beta", "") not in ("", None) else None
    except ValueError:
        beta = None
    source = meta.get("source", "")
    return {
        "source": source if source in SOURCES else "rollout",
        "policy_checkpoint": meta.get("policy_checkpoint", ""),
        "beta": beta,
        "station": meta.get("station", ""),
        "operator": meta.get("operator", ""),
        "bag_path": str(Path(info.path).resolve()),
        "start_time": meta.get("start_time") or None,
        # everything else lands in the episode's `extra`
        "episode_id": meta.get("episode_id", ""),
        "label": label,
        "seed": meta.get("seed", ""),
        "stop_time": meta.get("stop_time", ""),
        "repaired": meta.get("repaired", "false") == "true",
        "partial_start": meta.get("partial_start", "false") == "true",
        "recorder_dropped": meta.get("recorder_dropped", ""),
        "dropped_leading_ticks": timeline.dropped_leading_ticks,
        "recorded_interventions": meta.get("interventions", ""),
    }


# --------------------------------------------------------------------------- many bags -> dataset


@dataclasses.dataclass(frozen=True)
class BagOutcome:
    bag: Path
    status: str  # converted | skipped | corrupt (fails its CRCs) | failed (unreadable, not closed, ...)
    reason: str = ""  # why not converted; for a converted bag, a note (e.g. it carries no CRCs)
    episode_index: int | None = None
    frames: int = 0


def converted_bags(dataset: Path) -> tuple[set[str], set[str]]:
    """(episode ids, resolved bag paths) already in ``dataset`` (pyarrow only: no torch)."""
    import pyarrow.parquet as pq

    from recap_core.data import schema

    ids, paths = set(), set()
    for file in sorted((Path(dataset) / schema.EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        table = pq.read_table(file, columns=["bag_path", "extra"])
        for bag_path, extra in zip(table["bag_path"].to_pylist(), table["extra"].to_pylist()):
            if bag_path:
                paths.add(bag_path)
            episode_id = json.loads(extra).get("episode_id", "") if extra else ""
            if episode_id:
                ids.add(episode_id)
    return ids, paths


def convert_bags(
    bags: Sequence[Path],
    dataset: Path,
    *,
    include_aborted: bool = False,
    image_format: str | None = None,
    robot: str | None = None,
    fps: int = 50,
    progress: bool = True,
    station: StationLayout | None = None,
    workers: int | None = None,
    fast: bool = True,
) -> list[BagOutcome]:
    """Append the usable bags to ``dataset`` (created if new); one outcome per bag, in order.

    Each bag's station layout (joint order, gripper joints, cameras) is ``station`` where given (``recap
    convert --station``), else what the bag records (:func:`episode_layout`); a new dataset takes the first
    converted bag's, and a bag whose layout differs from the dataset's is not converted (outcome ``failed``).

    Refuses (ValueError, one line) an output that is not a directory, or an existing dataset that
    does not pass :func:`recap_core.data.meta.check_dataset`, before reading any bag. A bag that
    fails its CRCs is not converted (outcome ``corrupt``, naming the chunks).

    Bags are read through their MCAP indexes: the small topics and every image header build the timeline,
    then each camera's frames are read one message at a time straight into
    :class:`recap_core.data.DatasetWriter`, so an episode's images are never all in memory. A camera's images
    are those of ``camera/<cam>/image_raw`` and of ``camera/<cam>/image_raw/compressed`` together (the
    recorder stores them compressed, see :mod:`recap_recorder.images`): raw images are encoded by the writer,
    JPEG images go into a JPEG dataset as recorded, byte for byte.

    ``workers`` > 0 reads the bags ahead in that many worker processes
    (:mod:`recap_recorder.convert_workers`) while this process writes them in order: the same dataset and
    outcomes as one at a time. Default: :func:`~recap_recorder.convert_workers.default_workers`. ``fast=False``
    is the reference path the fast one is tested against (see :func:`load_episode`; one bag at a time).
    """
    from recap_core.data import DatasetWriter, schema

    dataset = Path(dataset)
    appending = check_output(dataset)
    known_ids, known_paths = converted_bags(dataset) if appending else (set(), set())
    info = schema.load_info(dataset) if appending else None
    fallback = schema.info_layout(info) if appending else None
    outcomes: list[BagOutcome] = []
    writer = None
    prefetch = None
    bar = _progress(bags, progress)
    try:
        prefetch = _prefetch(bags, workers, fast, include_aborted, station, fallback, info, image_format)
        for path in bar:
            path = bag_directory(path)
            loaded = None
            if prefetch is not None:
                shape = writer.image_shape if writer is not None else prefetch.shape
                loaded = prefetch.take(path, writer.layout if writer is not None else fallback, shape, station)
            if loaded is None:
                try:
                    loaded = load_episode(
                        path,
                        include_aborted=include_aborted,
                        station=station,
                        fallback=writer.layout if writer is not None else fallback,
                        fast=fast,
                    )
                except SkipBag as exc:
                    loaded = _Unreadable("skipped", str(exc))
                except BagError as exc:
                    loaded = _Unreadable("corrupt" if isinstance(exc, CorruptBag) else "failed", str(exc))
            if not hasattr(loaded, "timeline"):  # skipped, corrupt or failed
                repaired = path.with_name(path.name + REPAIRED_SUFFIX)
                if loaded.status != "skipped" and repaired.is_dir():  # handled: convert the repaired copy instead
                    outcomes.append(
                        BagOutcome(path, "skipped", f"{loaded.reason} -- convert its repaired copy {repaired}")
                    )
                else:
                    outcomes.append(BagOutcome(path, loaded.status, loaded.reason))
                continue
            episode = loaded
            with episode:
                episode_id = episode.metadata["episode_id"]
                if episode_id in known_ids or episode.metadata["bag_path"] in known_paths:
                    outcomes.append(BagOutcome(path, "skipped", f"already in {dataset} (episode {episode_id})"))
                    continue
                if writer is None:
                    writer = _open_writer(DatasetWriter, schema, dataset, episode, image_format, robot, fps)
                differs = _layout_difference(episode.layout, writer.layout, dataset)
                if differs:
                    outcomes.append(BagOutcome(path, "failed", differs))
                    continue
                missing = sorted(set(writer.cameras) - set(episode.cameras))
                if missing:
                    outcomes.append(BagOutcome(path, "failed", f"bag has no camera(s) {missing} that {dataset} has"))
                    continue
                t = episode.timeline
                seconds = (t.tick_ns - t.tick_ns[0]) / 1e9
                try:  # a frame that cannot be read fails this episode only; earlier ones stay
                    index = writer.add_episode(
                        states=t.states,
                        actions=t.actions,
                        is_intervention=t.is_intervention,
                        images={cam: episode.frames(cam, writer.image_shape) for cam in writer.cameras},
                        success=episode.success,
                        task=episode.task,
                        receive_times=seconds,
                        metadata=episode.metadata,
                    )
                except (BagError, OSError) as exc:
                    outcomes.append(
                        BagOutcome(path, "failed", f"reading its images failed: {exc}; run `recap bag repair {path}`")
                    )
                    continue
            known_ids.add(episode_id)
            known_paths.add(episode.metadata["bag_path"])
            outcomes.append(
                BagOutcome(path, "converted", _converted_note(episode.info), episode_index=index, frames=len(t.tick_ns))
            )
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"episode {index}: {len(t.tick_ns)} frames")
    finally:
        if prefetch is not None:
            prefetch.close()
        if writer is not None:
            writer.close()
    return outcomes


@dataclasses.dataclass(frozen=True)
class _Unreadable:
    status: str  # skipped | corrupt | failed
    reason: str


def _prefetch(bags, workers, fast, include_aborted, station, fallback, info, image_format):
    """The worker processes reading ``bags`` ahead (None: one bag at a time, in this process)."""
    from recap_recorder import convert_workers

    workers = convert_workers.default_workers(len(bags)) if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"--workers must be 0 (no worker processes) or more, got {workers}")
    if workers == 0 or not fast or len(bags) < 2:
        return None
    from recap_core.data import schema

    paths = []
    for bag in bags:
        try:
            paths.append(bag_directory(bag))
        except BagError:  # raised again where the bag's turn comes, as without workers
            continue
    return convert_workers.Prefetch(
        paths,
        workers,
        include_aborted=include_aborted,
        station=station,
        fallback=fallback,
        image_format=info["recap"]["image_format"] if info else image_format or schema.DEFAULT_IMAGE_FORMAT,
        shape=schema.info_image_shape(info) if info else None,
    )


def check_output(dataset: Path) -> bool:
    """Whether ``dataset`` is an existing dataset to append to (False: a new one); ValueError, one line saying
    what to do, when it is a file or a dataset that does not pass ``check_dataset``."""
    from recap_core.data import schema
    from recap_core.data.meta import check_dataset

    if dataset.exists() and not dataset.is_dir():
        raise ValueError(
            f"--out {dataset} is a file, not a dataset directory; give a new directory or an existing RECAP dataset"
        )
    for parent in dataset.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {dataset}: {parent} is a file, not a directory; give a dataset directory")
            break
    if not (dataset / schema.INFO_PATH).is_file():
        if dataset.is_dir() and any(dataset.iterdir()):
            raise ValueError(
                f"--out {dataset} exists, is not empty and is not a RECAP dataset (no "
                f"{schema.INFO_PATH}); give a new directory or an existing RECAP dataset"
            )
        return False
    try:
        check_dataset(dataset)
    except Exception as exc:  # whatever the check raises, appending would build on a damaged dataset
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
        raise ValueError(f"not appending to {dataset}: {message}") from exc
    return True


def _converted_note(info: BagInfo) -> str:
    notes = []
    if info.integrity is not None and not info.integrity.checksummed:
        notes.append("not verified: the bag carries no CRCs")
    lost = info.custom_data.get("repair_lost_messages", "")
    if lost not in ("", "{}"):
        notes.append(f"repaired bag, messages lost in corrupt chunks: {lost}")
    return "; ".join(notes)


def _layout_difference(bag: StationLayout, layout: StationLayout, dataset: Path) -> str:
    """How a bag's joints differ from the dataset's ('' if they do not)."""
    if bag.joint_names != layout.joint_names:
        return f"its joints {list(bag.joint_names)} differ from {dataset}'s {list(layout.joint_names)}"
    if sorted(bag.gripper_joints) != sorted(layout.gripper_joints):
        return f"its gripper joints {list(bag.gripper_joints)} differ from {dataset}'s {list(layout.gripper_joints)}"
    return ""


def _open_writer(DatasetWriter, schema, dataset: Path, episode: BagEpisode, image_format, robot, fps):
    """Append with the dataset's own settings, or create one shaped like the first bag.

    Cameras are encoded concurrently (each streams its own frames from the bag; IndexedMcap is thread-safe),
    one thread per camera as soon as there are two cores: with fewer cores than cameras the OS interleaves
    the threads (the encoder releases the GIL), where a pool of one thread per core would leave one core
    encoding two cameras while the other idles after its one.
    """
    threads = len(episode.cameras) if (os.cpu_count() or 1) > 1 else 1
    if (dataset / schema.INFO_PATH).is_file():
        info = schema.load_info(dataset)
        return DatasetWriter(
            dataset,
            fps=int(info["fps"]),
            cameras=schema.info_cameras(info),
            image_shape=schema.info_image_shape(info),
            robot=info["robot_type"],
            image_format=info["recap"]["image_format"],
            encode_threads=threads,
        )
    return DatasetWriter(
        dataset,
        fps=fps,
        cameras=episode.cameras,
        joint_names=episode.layout.joint_names,
        gripper_joints=episode.layout.gripper_joints,
        image_shape=episode.image_shape,
        robot=robot or schema.DEFAULT_ROBOT,
        image_format=image_format or schema.DEFAULT_IMAGE_FORMAT,
        encode_threads=threads,
    )


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="converting bags", unit="bag")
