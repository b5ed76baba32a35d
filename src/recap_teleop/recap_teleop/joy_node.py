"""Gamepad teleop: sensor_msgs/Joy -> deadman, episode buttons and jogged joint targets.

What each control does and when the node releases: :class:`JoyTeleopNode` and docs/teleop.md, "Gamepad". The
mapping is read from ``mapping_file`` (default ``joy_default.yaml`` next to this module).
"""

from __future__ import annotations

import time

from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from recap_ros import qos
from recap_ros.conversions import MessageError, diagnostic, joint_positions, joint_state
from recap_ros.diagnostics import OK, WARN, Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station
from recap_teleop.joy_mapping import ACTIONS, DEFAULT_MAPPING_FILE, JointJogger, JoyMapping


class JoyTeleopNode(Node):
    """While the deadman button is held the node publishes ``teleop/engage`` true (on the press and again at
    2 Hz; false once on the release) and, at the control rate, ``teleop/joint_command``: the measured
    ``joint_states`` at the press, moved by the jog velocities of the sticks/buttons. Episode buttons call
    ``episode/start|success|failure|abort`` on the press. If the Joy stream stops for ``joy_timeout_s`` while
    engaged, the node releases (the ``joy`` driver repeats messages at 20 Hz by default, so silence means the
    pad is gone).
    """

    def __init__(self, **kwargs):
        super().__init__("joy_teleop", **kwargs)
        self.station = declare_station(self)
        mapping_file = declare(
            self, "mapping_file", "", "gamepad mapping YAML; empty = the joy_default.yaml shipped with recap_teleop"
        )
        self.joy_timeout_s = declare(
            self,
            "joy_timeout_s",
            1.0,
            "release when no Joy message arrives for this long while engaged (s; 0 = never)",
            min_value=0.0,
            max_value=60.0,
        )
        joy_topic = declare(self, "joy_topic", "joy", "sensor_msgs/Joy input topic")
        path = mapping_file or str(DEFAULT_MAPPING_FILE)
        try:
            self.mapping = JoyMapping.from_yaml(path, self.station.joint_names)
        except ValueError as exc:
            raise ParameterError(f"parameter 'mapping_file': {exc}") from exc
        self.jogger = JointJogger(self.station.lower, self.station.upper)
        self._names = list(self.station.joint_names)
        self._measured = None
        self._buttons: list[int] | None = None  # None until the first Joy message
        self._axes: list[float] = []
        self._last_joy = 0.0
        self._last_step = 0.0
        self._warned_short = False
        self.joy_messages = 0

        self._engage_pub = self.create_publisher(Bool, "teleop/engage", qos.COMMAND)
        self._command_pub = self.create_publisher(JointState, "teleop/joint_command", qos.COMMAND)
        self._episode_clients = {a: self.create_client(Trigger, f"episode/{a}") for a in ACTIONS}
        qos.subscribe_sensor(self, JointState, "joint_states", self._on_joint_states)
        qos.subscribe_sensor(self, Joy, joy_topic, self._on_joy)
        self.create_timer(1.0 / self.station.control_rate_hz, self._tick)
        self.create_timer(0.5, self._reassert_engage)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self.diagnostics.add("status", self._status)
        self.get_logger().info(
            f"joy teleop up: mapping {path}, deadman button {self.mapping.deadman_button}, "
            f"actions {dict(self.mapping.actions)}"
        )

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            self._measured = joint_positions(msg, self._names)
        except MessageError as exc:
            self.get_logger().warning(f"ignoring joint_states: {exc}", throttle_duration_sec=2.0)

    def _on_joy(self, msg: Joy) -> None:
        buttons, axes = list(msg.buttons), list(msg.axes)
        if not self._warned_short and (len(buttons) <= self.mapping.max_button or len(axes) <= self.mapping.max_axis):
            self._warned_short = True
            self.get_logger().warning(
                f"the pad reports {len(buttons)} buttons and {len(axes)} axes but the mapping "
                f"uses button {self.mapping.max_button} and axis {self.mapping.max_axis}: "
                "missing ones read as released / centred"
            )
        previous, self._buttons, self._axes = self._buttons, buttons, axes
        self._last_joy = time.monotonic()
        self.joy_messages += 1
        held = self.mapping.deadman_held(buttons)
        if held and not self.jogger.active:
            self._engage()
        elif not held and self.jogger.active:
            self._release("deadman released")
        if previous is None:
            return  # a button already down when the node starts is not a press
        for action in self.mapping.pressed_actions(previous, buttons):
            self._call(action)

    def _engage(self) -> None:
        if self._measured is None:
            self.get_logger().warning(
                "deadman pressed but no joint_states yet: not engaging", throttle_duration_sec=2.0
            )
            return
        # The first command is where the robot is, and it goes out before the engage.
        self._command_pub.publish(joint_state(self.jogger.engage(self._measured), names=self._names))
        self._last_step = time.monotonic()
        self._engage_pub.publish(Bool(data=True))
        self.get_logger().info("engaged: jogging from the measured position")

    def _release(self, why: str) -> None:
        self.jogger.release()
        self._engage_pub.publish(Bool(data=False))
        self.get_logger().info(f"released ({why})")

    def _reassert_engage(self) -> None:
        # While held, say so again now and then: a gate that started late learns it. Never repeat
        # `false`, which would release another device's engage.
        if self.jogger.active:
            self._engage_pub.publish(Bool(data=True))

    def _tick(self) -> None:
        if not self.jogger.active:
            return
        now = time.monotonic()
        if self.joy_timeout_s > 0 and now - self._last_joy > self.joy_timeout_s:
            self._release(f"no Joy message for {self.joy_timeout_s:.1f} s")
            return
        # Elapsed time, not the nominal period: a late tick must not slow the jog down.
        dt = min(now - self._last_step, 2.0 / self.station.control_rate_hz)
        self._last_step = now
        velocity = self.mapping.joint_velocity(self._axes, self._buttons or [])
        target = self.jogger.step(velocity, dt)
        self._command_pub.publish(joint_state(target, stamp=self.get_clock().now().to_msg(), names=self._names))

    def _call(self, action: str) -> None:
        client = self._episode_clients[action]
        if not client.service_is_ready():
            self.get_logger().warning(
                f"button '{action}': episode/{action} is not available (is the episode manager running?)"
            )
            return
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f, a=action: self._on_reply(a, f))

    def _on_reply(self, action: str, future) -> None:
        try:
            reply = future.result()
        except Exception as exc:  # the manager died mid-call
            self.get_logger().warning(f"episode/{action} failed: {exc}")
            return
        log = self.get_logger().info if reply.success else self.get_logger().warning
        log(f"episode/{action}: {reply.message}")

    def _status(self):
        """WARN while there is no pad (no Joy message yet, or none for ``joy_timeout_s``) or no joint_states."""
        silent_s = time.monotonic() - self._last_joy if self.joy_messages else float("inf")
        if not self.joy_messages:
            problem = "no Joy message yet (is the joy driver running?)"
        elif self.joy_timeout_s > 0 and silent_s > self.joy_timeout_s:
            problem = f"no Joy message for {silent_s:.1f} s"
        elif self._measured is None:
            problem = "no joint_states yet: the deadman cannot engage"
        else:
            problem = ""
        values = {
            "engaged": self.jogger.active,
            "joy_messages": self.joy_messages,
            "last_joy_age_s": f"{silent_s:.2f}",
            "joint_states": self._measured is not None,
        }
        message = problem or ("engaged" if self.jogger.active else "released")
        return diagnostic("joy_teleop", values, level=WARN if problem else OK, message=message)


def main(args=None) -> int:
    return run_node(JoyTeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
