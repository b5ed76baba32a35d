"""What the recorder records and how: topics (:class:`TopicSpec`, :func:`default_topics`), :class:`RecorderConfig`.

A recorded topic is named relative to the station namespace, with its message type and QoS kind
(``sensor``, ``command`` or ``latched``); the DESIGN.md §3 topics need no type. The configuration
adds where bags go, the queue and chunk limits, the disk reserve and how images are stored, and
refuses values that cannot work.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

from recap_core.data.schema import JPEG_QUALITY
from recap_recorder.bag_metadata import EPISODE_STATUS, resolve_topic
from recap_recorder.images import IMAGE_COMPRESSIONS, IMAGE_TYPE

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
DEFAULT_TOPICS_AFTER_CAMERAS = (
    "joint_states",
    "joint_command",
    "policy/action_chunk",
    "policy/status",
    "intervention",
    "command_source",
    "value/estimate",
    "episode/status",
)


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
                raise ValueError(
                    f"topic '{name}' is not a station topic of DESIGN.md §3: give its type as "
                    f"'{name}:package/msg/Type[:{'|'.join(QOS_KINDS)}]'"
                )
            msgtype = known[0]
        if not kind:
            kind = known[1] if known is not None and known[0] == msgtype else SENSOR
        return cls(name, msgtype, kind)


def default_topics(cameras: Sequence[str]) -> tuple[TopicSpec, ...]:
    names = [f"camera/{cam}/image_raw" for cam in cameras] + list(DEFAULT_TOPICS_AFTER_CAMERAS)
    return tuple(TopicSpec.parse(n) for n in names)


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    """What and where to record. Sizes in bytes; the node converts its MB/KB parameters."""

    output_dir: Path
    topics: tuple[TopicSpec, ...]
    namespace: str = "/"
    station: str = "station"
    cameras: tuple[str, ...] = ()
    #: the station's joint order and gripper joints, recorded so the converter needs no station file
    joint_names: tuple[str, ...] = ()
    gripper_joints: tuple[str, ...] = ()
    max_queue_bytes: int = 256 * 2**20
    max_queue_messages: int = 100_000
    chunk_size_bytes: int = 2**20
    chunk_max_duration_s: float = 0.5
    min_free_disk_bytes: int = 1024 * 2**20
    snapshot_max_age_s: float = 1.0
    silent_after_s: float = 2.0
    image_compression: str = "jpeg"  # or "none": images stored as received
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
            raise ValueError(
                f"'{EPISODE_STATUS}' must be recorded: it starts and stops the bags and carries the episode metadata"
            )
        if self.max_queue_bytes < 2**20 or self.max_queue_messages < 10:
            raise ValueError(
                f"queue too small ({self.max_queue_bytes} bytes, {self.max_queue_messages} "
                "messages): allow at least 1 MB and 10 messages"
            )
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
