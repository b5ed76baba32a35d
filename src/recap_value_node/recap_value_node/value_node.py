"""Live value node: observations -> the value stream operators watch in rviz.

What it publishes, and when it publishes nothing: :class:`ValueNode` and docs/nodes.md, "Value node".
"""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Float32, Float32MultiArray, MultiArrayDimension
from visualization_msgs.msg import Marker, MarkerArray

from recap_ros import qos
from recap_ros.conversions import diagnostic
from recap_ros.diagnostics import Diagnostics
from recap_ros.images import numpy_to_image
from recap_ros.node_main import run_node
from recap_ros.params import declare
from recap_ros.serving import ModelServingNode
from recap_value_node.monitor import AlertConfig, ValueHistory, render_plot


class ValueNode(ModelServingNode):
    """At ``rate_hz`` it evaluates the value model on the newest observation (on a worker thread) and publishes
    ``value/estimate`` (normalised value in [-1, 0]), ``value/distribution`` (201 bin probabilities),
    ``value/markers`` (a bar, a text label and the recent history, for rviz's MarkerArray display) and
    ``value/plot`` (the value over the last ``history_s`` seconds as an image, for rviz's Image display).
    ``value/status`` carries an alert when the value falls by more than ``alert_drop`` within
    ``alert_window_s``.

    Stale observations or a bad checkpoint: nothing is published except the status saying why (a stamp from
    the future cannot keep an observation fresh, see ``recap_ros.observation``). A runtime ``checkpoint`` that
    does not fit the station is refused; one that fails to load leaves the old model running with the status
    at ERROR. Parameters are applied at runtime or refused.
    """

    KIND = "value"

    def __init__(self, **kwargs):
        super().__init__("value_node", max_age_ms=500.0, threads=1, **kwargs)
        self.rate_hz = declare(
            self,
            "rate_hz",
            10.0,
            "value evaluations per second (a change applies from the next evaluation)",
            min_value=0.1,
            max_value=50.0,
            on_change=lambda v: setattr(self, "rate_hz", float(v)),
        )
        self.plot_rate_hz = declare(
            self, "plot_rate_hz", 5.0, "value/plot images per second", min_value=0.1, max_value=30.0
        )
        history_s = declare(
            self, "history_s", 20.0, "seconds of history in markers and plot", min_value=1.0, max_value=600.0
        )
        alert = AlertConfig(
            drop=declare(
                self, "alert_drop", 0.15, "alert when the value falls by more than this", min_value=0.001, max_value=1.0
            ),
            window_s=declare(
                self, "alert_window_s", 2.0, "...within this many seconds", min_value=0.05, max_value=60.0
            ),
        )
        self.plot_width = declare(
            self,
            "plot_width",
            480,
            "value/plot width (px)",
            min_value=64,
            max_value=1920,
            on_change=lambda v: setattr(self, "plot_width", int(v)),
        )
        self.plot_height = declare(
            self,
            "plot_height",
            240,
            "value/plot height (px)",
            min_value=48,
            max_value=1080,
            on_change=lambda v: setattr(self, "plot_height", int(v)),
        )
        self.frame_id = declare(
            self, "marker_frame", "world", "frame of value/markers", on_change=lambda v: setattr(self, "frame_id", v)
        )

        self.history = ValueHistory(history_s, alert)
        self._latest: tuple[float, np.ndarray] | None = None
        self.latency_ms = float("nan")
        self.counters.update(estimates=0, skipped_stale=0, errors=0, discarded_previous_episode=0)
        self._generation = 0
        self._episode_lock = threading.Lock()

        self._estimate_pub = self.create_publisher(Float32, "value/estimate", qos.SENSOR)
        self._dist_pub = self.create_publisher(Float32MultiArray, "value/distribution", qos.COMMAND)
        self._marker_pub = self.create_publisher(MarkerArray, "value/markers", qos.COMMAND)
        self._plot_pub = self.create_publisher(Image, "value/plot", qos.COMMAND)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(self.create_publisher(DiagnosticStatus, "value/status", qos.LATCHED))
        self.start_serving()
        self.create_timer(1.0 / self.plot_rate_hz, self._publish_plot)
        self.create_timer(1.0, self._publish_status)

        self.start_thread(self._loop, "value_inference")

    # -- serving hooks ----------------------------------------------------------------------
    def on_model_error(self, message: str) -> None:
        self._publish_status()

    def on_episode(self, episode_id: str) -> None:
        with self._episode_lock:
            self._generation += 1  # an estimate of the episode before, still being inferred, is dropped
            self._latest = None
            self.history.clear()  # a new episode starts a new curve, from what is observed in it

    def _observation(self):
        obs, why = self.observation()
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
                f"{self.history.alert_config.window_s:.1f} s (now {value:+.3f})"
            )
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
            line.points = [
                Point(x=0.0, y=float(-0.6 - 0.5 * (times[-1] - t) / span), z=float(1.0 + v))
                for t, v in zip(times, values)
            ]
        return MarkerArray(markers=[bar, text, line])

    def _publish_plot(self) -> None:
        times, values = self.history.arrays()
        rgb = render_plot(
            times,
            values,
            width=self.plot_width,
            height=self.plot_height,
            horizon_s=self.history.horizon_s,
            alerting=self.history.alerting,
            title=f"value  {self._task[:40]}",
        )
        self._plot_pub.publish(numpy_to_image(rgb, self.get_clock().now().to_msg(), frame_id="value_plot"))

    def _publish_status(self) -> None:
        if not hasattr(self, "_status_pub"):
            return
        latest = self._latest[0] if self._latest else float("nan")
        alert = self.history.alerting
        error = self.load_error or ("" if self.runner is not None else self.model_error)
        self._status_pub.publish(
            diagnostic(
                "value_node",
                {
                    "checkpoint_id": self._checkpoint_id,
                    "value": f"{latest:.4f}",
                    "alert": alert,
                    "alerts": self.history.alerts,
                    "drop": f"{self.history.drop_within_window():.3f}",
                    "latency_ms": f"{self.latency_ms:.1f}",
                    "task": self._task,
                    "error": error,
                    "rate_hz": self.rate_hz,
                    "max_observation_age_ms": self.max_age * 1e3,
                    **self.counters,
                },
                level=2 if self.load_error else 1 if alert or error else 0,
                message="value drop" if alert else error,
            )
        )


def main(args=None) -> int:
    return run_node(ValueNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
