"""The gate node: ``policy/joint_command`` or ``teleop/joint_command`` -> ``joint_command``.

A thin shell around :class:`recap_teleop.gate.Gate` (the rules) and :class:`recap_teleop.gate.OutputClock`
(when to publish); what the node adds is in :class:`GateNode` and docs/teleop.md.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from recap_ros import qos
from recap_ros.conversions import (
    MessageError,
    diagnostic,
    diagnostic_values,
    joint_positions,
    joint_state,
    stamp_to_seconds,
)
from recap_ros.diagnostics import Diagnostics
from recap_ros.node_main import run_node
from recap_ros.observation import FutureStampError, refuse_future_stamp
from recap_ros.params import ParameterError, declare, declare_station
from recap_teleop.gate import POLICY, TELEOP, Gate, GateConfig, OutputClock


class GateNode(Node):
    """A command of the active source is forwarded as soon as it arrives, so the gate adds almost no latency;
    when the source is silent the node's own clock thread publishes at the control rate (hold, watchdog,
    ramps). Every published step carries ``intervention`` and ``command_source`` (both latched, published just
    before the command) so the recorder can attribute it. A deadman release calls ``policy/reset``
    asynchronously; the gate holds until the policy sends a command after that. A new episode on
    ``episode/status`` restarts the gate (``Gate.restart``): the arm was reset, so it re-anchors on the next
    measured joint state instead of holding where the last episode ended.

    The gate measures elapsed time (velocity limit, watchdog, output rate) on the monotonic clock of its host,
    never on the node clock: ``use_sim_time`` is refused at startup and at runtime, and a jumping or simulated
    ROS clock cannot change how fast the arm may move. The node clock (wall time) only stamps the outputs and
    places joint states relative to the episode start: after a restart the gate anchors on a joint state
    stamped at or after the episode's ``start_time`` (from ``episode/status``), and joint states stamped more
    than ``future_stamp_tolerance_ms`` ahead of the node clock are refused and counted.
    """

    def __init__(self, **kwargs):
        super().__init__("gate", **kwargs)
        self.station = declare_station(self, on_change={"joint_max_velocity": self._set_max_velocity})
        stale_ms = declare(
            self,
            "stale_timeout_ms",
            200.0,
            "hold when the active source's newest command is older than this (ms)",
            min_value=1.0,
            max_value=10000.0,
            on_change=self._set_stale_timeout,
        )
        velocity_scale = declare(
            self,
            "velocity_scale",
            1.0,
            "fraction of the station's joint_max_velocity the gate allows (tighter at once, wider ramped in)",
            min_value=0.01,
            max_value=1.0,
            on_change=self._set_velocity_scale,
        )
        status_rate = declare(self, "status_rate_hz", 1.0, "rate of gate/status (Hz)", min_value=0.1, max_value=50.0)
        self._future_tolerance_s = (
            declare(
                self,
                "future_stamp_tolerance_ms",
                50.0,
                "refuse joint_states stamped further ahead of the node clock than this (ms)",
                min_value=0.0,
                max_value=10000.0,
            )
            / 1000.0
        )
        if self.get_parameter("use_sim_time").value:
            raise ParameterError(
                "the gate limits velocity per elapsed wall time: run it with "
                "use_sim_time:=false (simulated time advances in jumps)"
            )
        try:
            config = GateConfig.from_station(
                self.station, stale_timeout_s=stale_ms / 1000.0, velocity_scale=velocity_scale
            )
        except ValueError as exc:
            raise ParameterError(f"gate parameters: {exc}") from exc
        self.gate = Gate(config)
        self._output_clock = OutputClock(config.control_period_s)
        self._names = list(self.station.joint_names)
        self._cond = threading.Condition()
        self._t0_ns = time.monotonic_ns()
        self._clock_offset_ns = self.get_clock().now().nanoseconds - self._t0_ns
        self.node_counters = {
            "policy_resets_sent": 0,
            "policy_resets_failed": 0,
            "publish_errors": 0,
            "future_joint_states": 0,
        }

        # Publishers, subscriptions and the clock thread only after every parameter is valid.
        self._command_pub = self.create_publisher(JointState, "joint_command", qos.COMMAND)
        self._intervention_pub = self.create_publisher(Bool, "intervention", qos.LATCHED)
        self._source_pub = self.create_publisher(String, "command_source", qos.LATCHED)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(self.create_publisher(DiagnosticStatus, "gate/status", qos.COMMAND))
        self._reset_client = self.create_client(Trigger, "policy/reset")
        self.create_subscription(JointState, "policy/joint_command", self._on_policy, qos.COMMAND)
        self.create_subscription(JointState, "teleop/joint_command", self._on_teleop, qos.COMMAND)
        self.create_subscription(Bool, "teleop/engage", self._on_engage, qos.COMMAND)
        qos.subscribe_sensor(self, JointState, "joint_states", self._on_joint_states)
        self._episode_id: str | None = None
        self.create_subscription(DiagnosticStatus, "episode/status", self._on_episode, qos.LATCHED)
        self.create_timer(1.0 / status_rate, self._publish_status)
        self._running = True
        self._thread = threading.Thread(target=self._clock_loop, name="gate_clock", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"gate up: {self.station.control_rate_hz:.0f} Hz, stale timeout {stale_ms:.0f} ms, "
            f"velocity scale {velocity_scale}"
        )

    # -- time ---------------------------------------------------------------------------------
    def _now(self):
        """(monotonic seconds since startup, the stamp for an output at that moment).

        The stamp is the monotonic time mapped onto the node clock, so the
        stamps of two outputs differ by exactly the elapsed time the velocity
        limit was applied over; the mapping is re-taken when the node clock
        moves more than 1 ms away from it (a clock step).
        """
        mono_ns = time.monotonic_ns()
        wall_ns = self.get_clock().now().nanoseconds
        stamp_ns = mono_ns + self._clock_offset_ns
        if abs(stamp_ns - wall_ns) > 1_000_000:
            self._clock_offset_ns = wall_ns - mono_ns
            stamp_ns = wall_ns
        # Seconds since startup: an epoch-sized float would lose ~0.2 us, 1e-5 of a period.
        return (mono_ns - self._t0_ns) * 1e-9, Time(nanoseconds=stamp_ns).to_msg()

    # -- runtime parameters (called by the parameter guard, after validation) ---------------------
    def _set_max_velocity(self, value) -> None:
        with self._cond:
            self.gate.set_velocity_limits(self._now()[0], max_velocity=value)
        self.get_logger().info(f"joint_max_velocity set to {list(value)}")

    def _set_velocity_scale(self, value) -> None:
        with self._cond:
            self.gate.set_velocity_limits(self._now()[0], velocity_scale=value)
        self.get_logger().info(f"velocity_scale set to {value}")

    def _set_stale_timeout(self, value) -> None:
        with self._cond:
            self.gate.set_stale_timeout(value / 1000.0)
        self.get_logger().info(f"stale_timeout_ms set to {value}")

    # -- inputs -------------------------------------------------------------------------------
    def _on_policy(self, msg: JointState) -> None:
        self._on_command(msg, POLICY, self.gate.on_policy)

    def _on_teleop(self, msg: JointState) -> None:
        self._on_command(msg, TELEOP, self.gate.on_teleop)

    def _on_command(self, msg: JointState, source: str, accept) -> None:
        try:
            command = joint_positions(msg, self._names)
        except MessageError as exc:
            with self._cond:
                self.gate.reject(source)
            self.get_logger().warning(f"rejected {source}/joint_command: {exc}", throttle_duration_sec=1.0)
            return
        with self._cond:
            now, stamp = self._now()
            if accept(command, now):
                self._arrival(source, now, stamp)

    def _on_engage(self, msg: Bool) -> None:
        with self._cond:
            now, stamp = self._now()
            was_engaged = self.gate.engaged
            released = self.gate.on_engage(msg.data, now)
            if self.gate.engaged != was_engaged:
                # A source switch goes out at once, like a command of the new source.
                self._arrival(self.gate.active_source(now), now, stamp)
        if released:
            self._request_policy_reset()

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            q = joint_positions(msg, self._names)
        except MessageError as exc:
            with self._cond:
                self.gate.reject("joint_states")
            self.get_logger().warning(f"ignoring joint_states: {exc}", throttle_duration_sec=2.0)
            return
        measured = stamp_to_seconds(msg.header.stamp)
        try:
            refuse_future_stamp(
                measured, self.get_clock().now().nanoseconds * 1e-9, self._future_tolerance_s, "joint_states"
            )
        except FutureStampError as exc:
            with self._cond:
                self.node_counters["future_joint_states"] += 1
            self.get_logger().warning(f"ignoring {exc}", throttle_duration_sec=2.0)
            return
        with self._cond:
            now, stamp = self._now()
            fresh_start = self.gate.last_output is None
            if self.gate.on_joint_state(q, now, measured if measured > 0 else None) and fresh_start:
                self._emit(now, stamp, on_arrival=False)  # first reference after startup or a restart: hold now
                self._cond.notify()

    def _on_episode(self, msg: DiagnosticStatus) -> None:
        values = diagnostic_values(msg)
        episode_id = values.get("episode_id")
        if values.get("state") != "running" or not episode_id or episode_id == self._episode_id:
            return
        first = self._episode_id is None
        self._episode_id = episode_id
        not_before = _epoch_seconds(values.get("start_time", ""))
        if not_before is None:  # no start time from the manager: this moment, on the node clock
            not_before = self.get_clock().now().nanoseconds * 1e-9
        with self._cond:
            self.gate.restart(self._now()[0], not_before=not_before)
        if not first:
            self.get_logger().info(f"episode {episode_id}: re-anchoring on the measured joints")

    def _arrival(self, source: str, now: float, stamp) -> None:
        """Called with the lock held: publish now if this source is the active one."""
        if self.gate.active_source(now) == source and self._output_clock.on_arrival(now):
            self._emit(now, stamp, on_arrival=True)
        self._cond.notify()

    # -- outputs ------------------------------------------------------------------------------
    def _emit(self, now: float, stamp, on_arrival: bool) -> None:
        out = self.gate.tick(now)
        if out is None:
            self._output_clock.on_nothing_to_publish(now)
            self.get_logger().info("waiting for joint_states before commanding the robot", throttle_duration_sec=5.0)
            return
        self._output_clock.on_output(now, on_arrival)
        try:
            # The attribution goes out first so the recorder has it when the command arrives.
            self._intervention_pub.publish(Bool(data=out.intervention))
            self._source_pub.publish(String(data=out.source))
            self._command_pub.publish(joint_state(out.command, stamp=stamp, names=self._names))
        except Exception as exc:  # rclpy raises RCLError when a reliable writer is flooded
            self.node_counters["publish_errors"] += 1
            self.get_logger().warning(f"publishing the gate output failed: {exc}", throttle_duration_sec=1.0)

    def _clock_loop(self) -> None:
        with self._cond:
            while self._running:
                now, stamp = self._now()
                wait = self._output_clock.due - now
                if wait > 0:
                    # Re-check at least once per period: arrivals move the due time.
                    self._cond.wait(min(wait, self._output_clock.period))
                    continue
                self._emit(now, stamp, on_arrival=False)

    # -- policy reset on release ----------------------------------------------------------------
    def _request_policy_reset(self) -> None:
        if not self._reset_client.service_is_ready():
            self.node_counters["policy_resets_failed"] += 1
            self.get_logger().warning(
                "deadman released but policy/reset is not available: holding until the policy sends a new command"
            )
            return
        self.node_counters["policy_resets_sent"] += 1
        future = self._reset_client.call_async(Trigger.Request())
        future.add_done_callback(self._on_policy_reset_done)

    def _on_policy_reset_done(self, future) -> None:
        try:
            reply = future.result()
        except Exception as exc:  # the service died mid-call
            reply = None
            detail = str(exc)
        else:
            detail = reply.message if reply is not None else "no reply"
        if reply is None or not reply.success:
            self.node_counters["policy_resets_failed"] += 1
            self.get_logger().warning(f"policy/reset failed ({detail}); holding until the policy sends a command")

    # -- status ---------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        with self._cond:
            now, _ = self._now()
            values = {
                "source": self.gate.active_source(now),
                "engaged": self.gate.engaged,
                "hold_reason": self.gate.hold_reason,
                **self.gate.counters,
                **self.node_counters,
            }
        level = 1 if values["hold_reason"] == "stale" else 0  # WARN while the watchdog holds
        message = f"source {values['source']}" + (
            f", holding ({values['hold_reason']})" if values["source"] == "hold" else ""
        )
        self._status_pub.publish(
            diagnostic("gate", values, level=level, message=message, hardware_id=self.station.station_name)
        )

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


def _epoch_seconds(iso: str) -> float | None:
    """An ISO 8601 time with zone (``episode/status`` ``start_time``) as epoch seconds, or None."""
    try:
        t = dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return t.timestamp() if t.tzinfo is not None else None


def main(args=None) -> int:
    return run_node(GateNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
