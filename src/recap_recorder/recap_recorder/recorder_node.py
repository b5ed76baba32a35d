"""The recorder node: one MCAP rosbag2 per episode, started and stopped by ``episode/status``.

A thin shell around :class:`recap_recorder.episode_recorder.Recorder`; see :class:`RecorderNode` and
docs/recording.md, "The recorder node".
"""

from __future__ import annotations

import importlib
import logging
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message

from recap_core.data.schema import JPEG_QUALITY
from recap_ros import qos
from recap_ros.conversions import diagnostic, diagnostic_values
from recap_ros.diagnostics import Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station
from recap_recorder.bag_metadata import EPISODE_STATUS
from recap_recorder.episode_recorder import Recorder
from recap_recorder.images import IMAGE_COMPRESSIONS
from recap_recorder.recorder_config import LATCHED, SENSOR, RecorderConfig, TopicSpec, default_topics

OK, WARN, ERROR = 0, 1, 2


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ParameterError(
            f"cannot import message type {msgtype} ({exc}); install its ROS package "
            f"(e.g. pip install ros-{package.replace('_', '-')})"
        ) from exc


class _RosLogHandler(logging.Handler):
    """The pure recorder logs with ``logging``; show it in the node's ROS log."""

    def __init__(self, logger):
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


class RecorderNode(Node):
    """Every recorded topic is subscribed with ``raw=True`` (the CDR bytes go to the bag as they came: no
    deserialise + serialise) and the QoS its producer uses (latched topics with TRANSIENT_LOCAL); a callback
    only stamps the receive time and enqueues. ``recorder/status`` (latched DiagnosticStatus) reports the
    state, queue, drops, write errors and refused episodes.
    """

    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.station = declare_station(self)
        output_dir = declare(self, "output_dir", "~/recap_bags", "directory that gets one bag per episode")
        topics = declare(
            self,
            "topics",
            [t.name for t in default_topics(self.station.cameras)],
            "topics to record, relative to the station namespace; 'name' for DESIGN.md §3 "
            "topics, else 'name:package/msg/Type[:sensor|command|latched]'",
        )
        min_free_mb = declare(
            self,
            "min_free_disk_mb",
            1024.0,
            "refuse to start an episode with less free disk than this (MB)",
            min_value=0.0,
            max_value=1e9,
        )
        queue_mb = declare(
            self,
            "max_queue_mb",
            256.0,
            "messages waiting for the disk, at most (MB); more are dropped and counted",
            min_value=1.0,
            max_value=65536.0,
        )
        chunk_kb = declare(
            self,
            "chunk_size_kb",
            1024,
            "MCAP chunk size: at most this much is lost if the recorder is killed (KB)",
            min_value=4,
            max_value=1024,
        )
        chunk_s = declare(
            self,
            "chunk_max_duration_s",
            0.5,
            "a chunk is also closed after this long: at most this much time is lost if the recorder is killed (s)",
            min_value=0.01,
            max_value=60.0,
        )
        queue_depth = declare(
            self,
            "subscription_depth",
            50,
            "subscription history of every recorded topic (absorbs bursts while the executor is busy)",
            min_value=1,
            max_value=1000,
        )
        silent_s = declare(
            self,
            "silent_after_s",
            2.0,
            "a recorded topic without a message for this long is "
            "listed in recorder/status; a sensor stream that stops while recording is a WARN "
            "(s)",
            min_value=0.1,
            max_value=3600.0,
        )
        status_rate = declare(
            self, "status_rate_hz", 1.0, "rate of recorder/status (Hz)", min_value=0.1, max_value=50.0
        )
        compression = declare(
            self,
            "image_compression",
            "jpeg",
            "sensor_msgs/Image topics are stored as "
            "<topic>/compressed JPEG (CompressedImage; ~10x smaller bags, and the converter "
            "copies them as they are) or 'none' (as received)",
            choices=IMAGE_COMPRESSIONS,
        )
        jpeg_quality = declare(
            self,
            "jpeg_quality",
            JPEG_QUALITY,
            "JPEG quality of recorded images (the dataset's own by default)",
            min_value=1,
            max_value=100,
        )
        try:
            specs = tuple(TopicSpec.parse(entry) for entry in topics)
            config = RecorderConfig(
                output_dir=_expand(output_dir),
                topics=specs,
                namespace=self.get_namespace(),
                station=self.station.station_name,
                cameras=tuple(self.station.cameras),
                joint_names=tuple(self.station.joint_names),
                gripper_joints=tuple(self.station.gripper_joints),
                max_queue_bytes=int(queue_mb * 2**20),
                chunk_size_bytes=int(chunk_kb) * 1024,
                chunk_max_duration_s=float(chunk_s),
                min_free_disk_bytes=int(min_free_mb * 2**20),
                silent_after_s=float(silent_s),
                image_compression=compression,
                jpeg_quality=int(jpeg_quality),
            )
            classes = {spec.name: message_class(spec.msgtype) for spec in specs}
            self.recorder = Recorder(config)
        except (ValueError, OSError) as exc:
            raise ParameterError(f"recorder parameters: {exc}") from exc
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("recap_recorder").addHandler(self._log_handler)
        logging.getLogger("recap_recorder").setLevel(logging.INFO)
        self._refused_seen = 0

        # Publishers and subscriptions only after every parameter is valid.
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(
            self.create_publisher(DiagnosticStatus, "recorder/status", qos.LATCHED)
        )
        # Sensor topics request what their publishers offer (docs/recording.md, "QoS").
        self._sensor_qos = qos.AdaptedSubscriptions(self, int(queue_depth))
        for spec in specs:
            profile = _profile(spec.kind, int(queue_depth))
            if spec.name == EPISODE_STATUS:
                self.create_subscription(classes[spec.name], spec.name, self._on_episode_status, profile, raw=True)
            elif spec.kind == SENSOR:
                self._sensor_qos.add(classes[spec.name], spec.name, self._callback(spec.name), raw=True)
            else:
                self.create_subscription(classes[spec.name], spec.name, self._callback(spec.name), profile, raw=True)
        self.create_timer(1.0 / status_rate, self._publish_status)
        self._publish_status()
        # "up" is logged from the executor's first tick, not here: messages that reach a subscription
        # before the executor spins are handed out per subscription, not in arrival order, so data
        # published before the first episode/status could be taken after it. Once spinning, callbacks
        # run in arrival order and episode membership is exact.
        self._up_message = (
            f"recorder up: {len(specs)} topics into {config.output_dir}, chunks of "
            f"{chunk_kb} KB / {chunk_s} s, queue {queue_mb:.0f} MB, min free disk "
            f"{min_free_mb:.0f} MB, images " + (f"JPEG q{jpeg_quality}" if compression == "jpeg" else "as received")
        )
        self._up_timer = self.create_timer(0.0, self._announce_up)

    def _announce_up(self) -> None:
        self._up_timer.cancel()
        self.destroy_timer(self._up_timer)
        self.get_logger().info(self._up_message)

    def _callback(self, topic: str):
        on_message = self.recorder.on_message
        clock = time.time_ns

        def receive(data: bytes) -> None:
            on_message(topic, data, clock())

        return receive

    def _on_episode_status(self, data: bytes) -> None:
        receive_ns = time.time_ns()
        values = diagnostic_values(deserialize_message(data, DiagnosticStatus))
        self.recorder.on_episode_status(values, data, receive_ns)
        if self.recorder.totals["episodes_refused"] != self._refused_seen:
            self._publish_status()

    def _publish_status(self) -> None:
        values = {**self.recorder.status(), **self._sensor_qos.status()}
        self._refused_seen = self.recorder.totals["episodes_refused"]
        level, message = OK, str(values["state"])
        if values["state"] == "recording" and values["stalled_sensors"]:
            level, message = (
                WARN,
                (
                    f"recording: no data on {values['stalled_sensors']} for over "
                    f"{self.recorder.config.silent_after_s:g} s"
                ),
            )
        if values["episode_dropped"]:
            level, message = WARN, f"{values['state']}: {values['episode_dropped']} message(s) dropped this episode"
        if values["last_error"]:
            level, message = ERROR, str(values["last_error"])
        self._status_pub.publish(
            diagnostic("recorder", values, level=level, message=message, hardware_id=self.station.station_name)
        )

    def close(self) -> None:
        self.recorder.close()
        logging.getLogger("recap_recorder").removeHandler(self._log_handler)


def _profile(kind: str, depth: int) -> QoSProfile:
    """The producer's reliability and durability, with a deeper history than a controller needs: a
    recorder must not lose a command (depth 1 at the gate) while its executor is busy for a moment."""
    base = qos.LATCHED if kind == LATCHED else qos.COMMAND
    return QoSProfile(
        history=base.history, depth=max(depth, base.depth), reliability=base.reliability, durability=base.durability
    )


def _expand(path: str):
    import os
    from pathlib import Path

    if not path.strip():
        raise ParameterError("parameter 'output_dir' is empty: give the directory for the episode bags")
    return Path(os.path.expandvars(os.path.expanduser(path)))


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
