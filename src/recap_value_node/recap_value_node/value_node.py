"""Live value node: observations -> the value stream operators watch in rviz.

At ``rate_hz`` it evaluates the value model on the newest observation (on a
worker thread) and publishes ``value/estimate`` (normalised value in [-1, 0]),
``value/distribution`` (201 bin probabilities), ``value/markers`` (a bar, a text
label and the recent history, for rviz's MarkerArray display) and
``value/plot`` (the value over the last ``history_s`` seconds as an image, for
rviz's Image display). ``value/status`` carries an alert when the value falls
by more than ``alert_drop`` within ``alert_window_s``. Stale observations or a
bad checkpoint: nothing is published except the status saying why (a stamp
from the future cannot keep an observation fresh, see
``recap_core.ros.observation``). A runtime ``checkpoint`` that does not fit the
station is refused; one that fails to load leaves the old model running with
the status at ERROR. Parameters are applied at runtime or refused.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import ColorRGBA, Float32, Float32MultiArray, MultiArrayDimension
from visualization_msgs.msg import Marker, MarkerArray

from recap_core.ros import qos
from recap_core.ros.convert import MessageError, diagnostic, diagnostic_values, numpy_to_image
from recap_core.ros.node_main import run_node
from recap_core.ros.observation import FutureStampError, ObservationBuffer
from recap_core.ros.params import ParameterError, declare, declare_station
from recap_core.ros.serving import checkpoint_problem, model_problem
from recap_value_node.monitor import AlertConfig, ValueHistory, render_plot
from recap_value_node.runtime import load_value


class ValueNode(Node):
    def __init__(self, **kwargs):
        super().__init__("value_node", **kwargs)
        self.station = declare_station(self)
        self.checkpoint = declare(self, "checkpoint", "", "value checkpoint directory (empty: none); a change "
                                  "hot-reloads", on_change=self._set_checkpoint, validate=self._check_checkpoint)
        self.rate_hz = declare(self, "rate_hz", 10.0, "value evaluations per second (a change applies from the "
                               "next evaluation)", min_value=0.1, max_value=50.0,
                               on_change=lambda v: setattr(self, "rate_hz", float(v)))
        self.plot_rate_hz = declare(self, "plot_rate_hz", 5.0, "value/plot images per second",
                                    min_value=0.1, max_value=30.0)
        history_s = declare(self, "history_s", 20.0, "seconds of history in markers and plot",
                            min_value=1.0, max_value=600.0)
        alert = AlertConfig(
            drop=declare(self, "alert_drop", 0.15, "alert when the value falls by more than this",
                         min_value=0.001, max_value=1.0),
            window_s=declare(self, "alert_window_s", 2.0, "...within this many seconds", min_value=0.05,
                             max_value=60.0))
        self.max_age = declare(self, "max_observation_age_ms", 500.0, "skip observations older than this",
                               min_value=1.0, max_value=10000.0,
                               on_change=lambda v: setattr(self, "max_age", v / 1e3)) / 1e3
        future_ms = declare(self, "future_stamp_tolerance_ms", 50.0, "refuse observations stamped further ahead "
                            "of the node clock than this (ms)", min_value=0.0, max_value=10000.0)
        self.plot_width = declare(self, "plot_width", 480, "value/plot width (px)", min_value=64, max_value=1920,
                                  on_change=lambda v: setattr(self, "plot_width", int(v)))
        self.plot_height = declare(self, "plot_height", 240, "value/plot height (px)", min_value=48,
                                   max_value=1080, on_change=lambda v: setattr(self, "plot_height", int(v)))
        self.default_task = declare(self, "task", "", "task prompt until episode/status gives one (a change "
                                    "applies at once)", on_change=self._set_task)
        self.frame_id = declare(self, "marker_frame", "world", "frame of value/markers",
                                on_change=lambda v: setattr(self, "frame_id", v))
        threads = declare(self, "inference_threads", 1, "torch threads", min_value=1, max_value=64)

        self.history = ValueHistory(history_s, alert)
        self._observations = ObservationBuffer(self.station.cameras, self.station.joint_names,
                                               clock=lambda: self.get_clock().now().nanoseconds * 1e-9,
                                               future_tolerance_s=future_ms / 1e3)
        self._task = self.default_task
        self._episode_id = None
        self._runner = None
        self._checkpoint_id = ""
        self._error = ""
        self._latest: tuple[float, np.ndarray] | None = None
        self.latency_ms = float("nan")
        self.counters = {"estimates": 0, "skipped_stale": 0, "rejected_inputs": 0, "future_stamps": 0,
                         "errors": 0, "discarded_previous_episode": 0, "refused_checkpoints": 0}
        self._generation = 0
        self._episode_lock = threading.Lock()
        self._threads = threads
        self._load(self.checkpoint)

        self._estimate_pub = self.create_publisher(Float32, "value/estimate", qos.SENSOR)
        self._dist_pub = self.create_publisher(Float32MultiArray, "value/distribution", qos.COMMAND)
        self._marker_pub = self.create_publisher(MarkerArray, "value/markers", qos.COMMAND)
        self._plot_pub = self.create_publisher(Image, "value/plot", qos.COMMAND)
        self._status_pub = self.create_publisher(DiagnosticStatus, "value/status", qos.LATCHED)
        for cam in self.station.cameras:
            self.create_subscription(Image, f"camera/{cam}/image_raw",
                                     lambda m, c=cam: self._on_image(c, m), qos.SENSOR)
        self.create_subscription(JointState, "joint_states", self._on_joints, qos.SENSOR)
        self.create_subscription(DiagnosticStatus, "episode/status", self._on_episode, qos.LATCHED)
        self.create_timer(1.0 / self.plot_rate_hz, self._publish_plot)
        self.create_timer(1.0, self._publish_status)

        self._running = True
        self._worker = threading.Thread(target=self._loop, name="value_inference", daemon=True)
        self._worker.start()

    def _load(self, path: str) -> None:
        if not path:
            self._error = "parameter `checkpoint` is empty"
            return
        try:
            runner = load_value(path, threads=self._threads)
            problem = model_problem("value", runner.config, runner.checkpoint.training_config, self.station)
            if problem:
                raise ValueError(problem)
        except Exception as exc:
            self._error = f"cannot load value checkpoint {path}: {exc}" + (
                f"; still running {self._checkpoint_id}" if self._runner is not None else "")
            self.get_logger().error(self._error)
            return
        self._runner, self._checkpoint_id, self._error = runner, runner.checkpoint_id, ""
        self.get_logger().info(f"loaded value checkpoint {runner.checkpoint_id} from {path}")

    @property
    def model_error(self) -> str:
        """Why no value model runs ('' while one does)."""
        return "" if self._runner is not None else (self._error or "no value checkpoint loaded")

    def _check_checkpoint(self, path: str) -> None:
        """Refuse a runtime ``checkpoint`` that cannot run on this station (reads its config.json only)."""
        problem = checkpoint_problem(path, "value", self.station) if path else ""
        if problem:
            self.counters["refused_checkpoints"] += 1
            self._error = f"refused checkpoint {path}: {problem}; still running {self._checkpoint_id or 'none'}"
            self.get_logger().error(self._error)
            raise ParameterError(self._error)

    def _set_checkpoint(self, path: str) -> None:
        if path != self.checkpoint:
            self.checkpoint = path
            threading.Thread(target=self._load, args=(path,), daemon=True).start()

    def _set_task(self, task: str) -> None:
        self.default_task = task
        self._task = task

    def _on_image(self, cam: str, msg: Image) -> None:
        try:
            self._observations.on_image(cam, msg)
        except FutureStampError as exc:
            self.counters["future_stamps"] += 1
            self.get_logger().warning(f"rejected image on camera/{cam}: {exc}", throttle_duration_sec=2.0)
        except MessageError as exc:
            self.counters["rejected_inputs"] += 1
            self.get_logger().warning(f"rejected image on camera/{cam}: {exc}", throttle_duration_sec=2.0)

    def _on_joints(self, msg: JointState) -> None:
        try:
            self._observations.on_joints(msg)
        except FutureStampError as exc:
            self.counters["future_stamps"] += 1
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=2.0)
        except MessageError as exc:
            self.counters["rejected_inputs"] += 1
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=2.0)

    def _on_episode(self, msg: DiagnosticStatus) -> None:
        values = diagnostic_values(msg)
        if values.get("task"):
            self._task = values["task"]
        if values.get("episode_id") != self._episode_id and values.get("state") == "running":
            with self._episode_lock:
                self._episode_id = values.get("episode_id")
                self._generation += 1  # an estimate of the episode before, still being inferred, is dropped
                self._latest = None
                self.history.clear()  # a new episode starts a new curve
                # ...from what is observed in it: the world was reset, the last images show the one before.
                self._observations.restart(self.get_clock().now().nanoseconds * 1e-9,
                                           f"waiting for the first observation of episode {self._episode_id}")

    def _observation(self):
        obs, why = self._observations.latest(self.get_clock().now().nanoseconds * 1e-9, self.max_age, self._task)
        if obs is None and why.startswith("stale"):
            self.counters["skipped_stale"] += 1
        return obs

    def _loop(self) -> None:
        next_t = time.monotonic()
        while self._running:
            next_t += 1.0 / self.rate_hz  # read every period: a runtime change applies from the next one
            self._evaluate()
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def _evaluate(self) -> None:
        runner = self._runner
        generation = self._generation  # before the observation: it may be of the episode before
        obs = self._observation() if runner is not None else None
        if obs is None:
            return
        try:
            t0 = time.perf_counter()
            out = runner.infer(obs)
            self.latency_ms = (time.perf_counter() - t0) * 1e3
            value = float(out["value"])
            dist = np.asarray(out["distribution"], dtype=np.float32)
            with self._episode_lock:
                if generation != self._generation:  # the episode changed during the inference: not its value
                    self.counters["discarded_previous_episode"] += 1
                    return
                alert = self.history.add(time.monotonic(), value)  # raises on a non-finite value
                self.counters["estimates"] += 1
                self._latest = (value, dist)
                self._estimate_pub.publish(Float32(data=value))
        except Exception as exc:
            self.counters["errors"] += 1
            self.get_logger().error(f"value inference failed: {exc}", throttle_duration_sec=2.0)
            return
        if alert:
            self.get_logger().warning(
                f"value dropped by {self.history.drop_within_window():.2f} within "
                f"{self.history.alert_config.window_s:.1f} s (now {value:+.3f})")
            self._publish_status()
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="bins", size=int(dist.size), stride=int(dist.size))]
        msg.data = dist.tolist()
        self._dist_pub.publish(msg)
        self._marker_pub.publish(self._markers(value))

    def _markers(self, value: float) -> MarkerArray:
        stamp = self.get_clock().now().to_msg()
        alert = self.history.alerting
        colour = ColorRGBA(r=0.92, g=0.27, b=0.24, a=1.0) if alert else ColorRGBA(r=0.31, g=0.78, b=0.47, a=1.0)
        height = max(0.005, 1.0 + value)  # a bar 0..1 m tall: 1 m = about to succeed

        bar = Marker(type=Marker.CUBE, action=Marker.ADD, ns="value", id=0)
        bar.header.stamp, bar.header.frame_id = stamp, self.frame_id
        bar.pose.position.x, bar.pose.position.y, bar.pose.position.z = 0.0, -0.6, height / 2
        bar.pose.orientation.w = 1.0
        bar.scale.x, bar.scale.y, bar.scale.z = 0.05, 0.05, height
        bar.color = colour

        text = Marker(type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, ns="value", id=1)
        text.header = bar.header
        text.pose.position.x, text.pose.position.y, text.pose.position.z = 0.0, -0.6, height + 0.08
        text.pose.orientation.w = 1.0
        text.scale.z = 0.06
        text.color = colour
        text.text = f"V = {value:+.3f}" + ("  DROP!" if alert else "")

        line = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, ns="value", id=2)
        line.header = bar.header
        line.pose.orientation.w = 1.0
        line.scale.x = 0.01
        line.color = colour
        times, values = self.history.arrays()
        if len(times):
            span = self.history.horizon_s
            line.points = [Point(x=0.0, y=float(-0.6 - 0.5 * (times[-1] - t) / span), z=float(1.0 + v))
                           for t, v in zip(times, values)]
        return MarkerArray(markers=[bar, text, line])

    def _publish_plot(self) -> None:
        times, values = self.history.arrays()
        rgb = render_plot(times, values, width=self.plot_width, height=self.plot_height,
                          horizon_s=self.history.horizon_s, alerting=self.history.alerting,
                          title=f"value  {self._task[:40]}")
        self._plot_pub.publish(numpy_to_image(rgb, self.get_clock().now().to_msg(), frame_id="value_plot"))

    def _publish_status(self) -> None:
        latest = self._latest[0] if self._latest else float("nan")
        alert = self.history.alerting
        self._status_pub.publish(diagnostic("value_node", {
            "checkpoint_id": self._checkpoint_id, "value": f"{latest:.4f}", "alert": alert,
            "alerts": self.history.alerts, "drop": f"{self.history.drop_within_window():.3f}",
            "latency_ms": f"{self.latency_ms:.1f}", "task": self._task, "error": self._error,
            "rate_hz": self.rate_hz, "max_observation_age_ms": self.max_age * 1e3,
            **self.counters}, level=2 if self._error else 1 if alert else 0,
            message="value drop" if alert else self._error))

    def close(self) -> None:
        self._running = False
        if self._worker.is_alive():
            self._worker.join(timeout=2.0)


def main(args=None) -> int:
    return run_node(ValueNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
