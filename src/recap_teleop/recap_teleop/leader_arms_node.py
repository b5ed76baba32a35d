"""ALOHA-style leader arms: the leader's JointState -> ``teleop/joint_command``.

The mapping to the station's joints is :class:`LeaderMapping`; engaging is in :class:`LeaderArmsNode` and
docs/teleop.md, "Leader arms".
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool

from recap_ros import qos
from recap_ros.conversions import diagnostic, joint_state
from recap_ros.diagnostics import OK, WARN, Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station
from recap_core.station import StationConfig

ENGAGE_SOURCES = ("parameter", "joy")


class LeaderMapping:
    """Leader joint names/positions -> ``[J]`` station command (pure; no ROS).

    Each leader message is re-ordered into the station's joint order (the leader may name its joints
    differently and report extra ones), validated, and the station's gripper joints mapped linearly from the
    leader's closed/open readings to the station's 0 (closed) .. 1 (open). ``station`` (the simulated one by
    default) gives the joint count and the gripper joints.
    """

    def __init__(
        self,
        leader_names: Sequence[str],
        gripper_closed: float,
        gripper_open: float,
        station: StationConfig | None = None,
    ):
        station = station or StationConfig.sim_aloha()
        joints = station.num_joints
        if len(leader_names) != joints:
            raise ValueError(
                f"leader_joint_names has {len(leader_names)} names, expected {joints}: the "
                "leader's name for each station joint, in station order"
            )
        if len(set(leader_names)) != joints:
            raise ValueError(f"leader_joint_names has duplicates: {list(leader_names)}")
        if not (math.isfinite(gripper_closed) and math.isfinite(gripper_open)) or gripper_closed == gripper_open:
            raise ValueError(
                f"leader gripper closed ({gripper_closed}) and open ({gripper_open}) readings must be "
                "finite and different: read them off the leader with the gripper closed and open"
            )
        self.leader_names = list(leader_names)
        self.gripper_closed, self.gripper_open = float(gripper_closed), float(gripper_open)
        self.gripper_indices = list(station.gripper_indices)

    def __call__(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        """``[J]`` station command; ValueError saying what is wrong with the leader message."""
        pos = np.asarray(positions, dtype=np.float64)
        if len(names) == 0:
            joints = len(self.leader_names)
            if pos.shape != (joints,):
                raise ValueError(f"leader message without names has {pos.size} positions, expected {joints}")
            command = pos.copy()
        else:
            if len(names) != pos.size:
                raise ValueError(f"leader message has {len(names)} names but {pos.size} positions")
            index = {n: i for i, n in enumerate(names)}
            missing = [n for n in self.leader_names if n not in index]
            if missing:
                raise ValueError(f"leader message lacks joints {missing}")
            command = pos[[index[n] for n in self.leader_names]]
        if not np.all(np.isfinite(command)):
            raise ValueError(
                f"leader message has non-finite values at station joints "
                f"{[int(i) for i in np.flatnonzero(~np.isfinite(command))]}"
            )
        g = self.gripper_indices
        command[g] = np.clip((command[g] - self.gripper_closed) / (self.gripper_open - self.gripper_closed), 0.0, 1.0)
        return command


class LeaderArmsNode(Node):
    """A leader message is passed through at once; the gate limits rate and velocity. Engage comes from the
    ``engaged`` parameter (``engage_source: parameter``; e.g. a foot pedal script sets it) or from a Joy
    deadman button (``engage_source: joy``). While engaged the node re-asserts ``teleop/engage`` true at 2 Hz
    (so a gate that starts later learns it) and publishes false once on the release.
    """

    def __init__(self, **kwargs):
        super().__init__("leader_arms", **kwargs)
        self.station = declare_station(self)
        leader_topic = declare(self, "leader_topic", "leader/joint_states", "the leader arms' JointState")
        leader_names = declare(
            self,
            "leader_joint_names",
            list(self.station.joint_names),
            "the leader's name for each station joint, in station order",
        )
        closed = declare(self, "gripper_closed", 0.0, "leader gripper reading when closed (maps to 0)")
        opened = declare(self, "gripper_open", 1.0, "leader gripper reading when open (maps to 1)")
        self.engage_source = declare(
            self, "engage_source", "parameter", "where engage comes from", choices=ENGAGE_SOURCES
        )
        self.engaged = declare(
            self,
            "engaged",
            False,
            "engage (engage_source: parameter); settable at runtime",
            on_change=self._set_engaged,
            validate=self._check_engage_by_parameter,
        )
        joy_topic = declare(self, "joy_topic", "joy", "sensor_msgs/Joy for engage_source: joy")
        self.deadman_button = declare(
            self, "joy_deadman_button", 4, "Joy button held to engage", min_value=0, max_value=63
        )
        try:
            self.mapping = LeaderMapping(leader_names, closed, opened, self.station)
        except ValueError as exc:
            raise ParameterError(f"leader arms: {exc}") from exc
        self.received = 0
        self.rejected = 0
        if self.engage_source == "joy":
            self.engaged = False  # only the deadman engages

        self._engage_pub = self.create_publisher(Bool, "teleop/engage", qos.COMMAND)
        self._command_pub = self.create_publisher(JointState, "teleop/joint_command", qos.COMMAND)
        qos.subscribe_sensor(self, JointState, leader_topic, self._on_leader)
        if self.engage_source == "joy":
            qos.subscribe_sensor(self, Joy, joy_topic, self._on_joy)
        self.create_timer(0.5, self._reassert_engage)
        self._rejected_reported = 0
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self.diagnostics.add("status", self._status)
        self.get_logger().info(
            f"leader arms up: {leader_topic} -> teleop/joint_command, engage from {self.engage_source}"
        )

    def _check_engage_by_parameter(self, engaged) -> None:
        if self.engage_source != "parameter":
            raise ParameterError("engage_source is 'joy': the deadman button engages")

    def _on_joy(self, msg: Joy) -> None:
        b = self.deadman_button
        self._set_engaged(b < len(msg.buttons) and bool(msg.buttons[b]))

    def _set_engaged(self, engaged: bool) -> None:
        if engaged != self.engaged:
            self.engaged = engaged
            self._engage_pub.publish(Bool(data=engaged))
            self.get_logger().info("engaged" if engaged else "released")

    def _reassert_engage(self) -> None:
        if self.engaged:
            self._engage_pub.publish(Bool(data=True))

    def _on_leader(self, msg: JointState) -> None:
        self.received += 1
        try:
            command = self.mapping(list(msg.name), msg.position)
        except ValueError as exc:
            self.rejected += 1
            self.get_logger().warning(
                f"rejected leader message ({self.rejected} of {self.received}): {exc}", throttle_duration_sec=1.0
            )
            return
        self._command_pub.publish(joint_state(command, stamp=msg.header.stamp, names=self.station.joint_names))

    def _status(self):
        """WARN when leader messages were rejected since the last report (the log says why)."""
        new_rejections, self._rejected_reported = self.rejected - self._rejected_reported, self.rejected
        values = {
            "engaged": self.engaged,
            "engage_source": self.engage_source,
            "received": self.received,
            "rejected": self.rejected,
        }
        if new_rejections:
            message = f"{new_rejections} leader message(s) rejected since the last report"
        else:
            message = "engaged" if self.engaged else "released"
        return diagnostic("leader_arms", values, level=WARN if new_rejections else OK, message=message)


def main(args=None) -> int:
    return run_node(LeaderArmsNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
