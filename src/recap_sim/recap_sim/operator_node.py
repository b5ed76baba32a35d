"""The ``scripted_operator`` node: the scripted operator drives the simulated station through the gate.

It answers ``joint_states`` and the object pose with ``teleop/joint_command`` and holds the deadman
``teleop/engage`` as its ``mode`` says: always (demonstrations), when the simulated human decides
(interventions on a policy), or never. docs/nodes.md lists its parameters.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32

from recap_ros import qos
from recap_ros.conversions import MessageError, diagnostic, diagnostic_values, joint_positions, joint_state
from recap_ros.diagnostics import OK, WARN, Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import declare, declare_station
from recap_sim.human import RELEASE_RULES, VALUE_DROP_RANGE, HumanConfig, SimulatedHuman
from recap_sim.operator import TASKS as OPERATOR_TASKS
from recap_sim.operator import ScriptedOperator

MODES = ("drive", "intervene", "off")


class ScriptedOperatorNode(Node):
    """Answers every ``joint_states`` message with the next target (so it runs at the station's 50 Hz).

    ``mode`` (runtime): ``drive`` holds the deadman the whole time; ``intervene`` lets a
    :class:`~recap_sim.human.SimulatedHuman` watching progress and ``value/estimate`` engage when the
    policy goes wrong and release after correcting (human-gated DAgger); ``off`` is silent. It re-seeds
    its human-like variability when the station starts a new episode (the seed in ``sim/status``
    changes); closed loop, it picks its phase from the current state, so it can take over mid-episode.
    """

    def __init__(self, **kwargs):
        super().__init__("scripted_operator", **kwargs)
        self.station = declare_station(self)
        task = declare(
            self,
            "task_name",
            "transfer_cube",
            "task the operator solves (the scripted operator knows transfer_cube only)",
            choices=OPERATOR_TASKS,
        )
        self.quality = declare(
            self, "quality", 1.0, "1 = cleanest operator, 0 = sloppiest", min_value=0.0, max_value=1.0
        )
        self.seed_offset = declare(
            self,
            "seed",
            0,
            "added to the episode seed for the operator's variability",
            min_value=0,
            max_value=2**31 - 1,
        )
        self.mode = declare(
            self,
            "mode",
            "drive",
            "drive: always engaged; intervene: simulated human; off",
            choices=MODES,
            on_change=self._set_mode,
        )
        human = HumanConfig(
            patience_s=declare(
                self,
                "human_patience_s",
                3.0,
                "take over after this long without progress",
                min_value=0.1,
                max_value=600.0,
            ),
            regress_s=declare(
                self,
                "human_regress_s",
                0.3,
                "take over when the reward stays below its best "
                "this long (the cube was dropped; shorter falls are contact flicker)",
                min_value=0.0,
                max_value=60.0,
            ),
            value_drop=declare(
                self,
                "human_value_drop",
                0.2,
                "take over when the value falls this much",
                min_value=VALUE_DROP_RANGE[0],
                max_value=VALUE_DROP_RANGE[1],
            ),
            value_window_s=declare(
                self, "human_value_window_s", 1.5, "...within this window", min_value=0.05, max_value=60.0
            ),
            value_settle_s=declare(
                self,
                "human_value_settle_s",
                1.0,
                "ignore the value this long after a reset (the stream still carries the episode before)",
                min_value=0.0,
                max_value=60.0,
            ),
            attention=declare(
                self, "human_attention", 1.0, "probability of noticing a trigger", min_value=0.0, max_value=1.0
            ),
            min_correction_s=declare(
                self, "human_min_correction_s", 1.0, "shortest correction", min_value=0.05, max_value=60.0
            ),
            max_correction_s=declare(
                self, "human_max_correction_s", 6.0, "longest correction", min_value=0.05, max_value=600.0
            ),
            cooldown_s=declare(
                self, "human_cooldown_s", 2.0, "hands off after releasing", min_value=0.0, max_value=600.0
            ),
            max_interventions=declare(
                self, "human_max_interventions", 3, "corrections per episode", min_value=0, max_value=1000
            ),
            release=declare(
                self,
                "human_release",
                "next_stage",
                "where a correction ends: next_stage (one "
                "stage past where it engaged) or past_best (one stage past the best the episode "
                "reached: the operator also does the step the policy failed)",
                choices=RELEASE_RULES,
            ),
        )
        self.operator = ScriptedOperator(task, quality=self.quality, seed=self.seed_offset, station=self.station)
        self.human = SimulatedHuman(human, seed=self.seed_offset)
        self._object_pose: np.ndarray | None = None
        self._episode_seed: str | None = None
        self._reward = 0.0
        self._value: float | None = None
        self.commands_sent = 0

        self._pub = self.create_publisher(JointState, "teleop/joint_command", qos.COMMAND)
        self._engage_pub = self.create_publisher(Bool, "teleop/engage", qos.COMMAND)
        qos.subscribe_sensor(self, Float32, "value/estimate", self._on_value)
        self.create_subscription(PoseStamped, "sim/object_pose", self._on_pose, qos.SENSOR)
        self.create_subscription(DiagnosticStatus, "sim/status", self._on_status, qos.SENSOR)
        qos.subscribe_sensor(self, JointState, "joint_states", self._on_joints)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self.diagnostics.add("status", self._status)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self.human.reset()

    def _on_value(self, msg: Float32) -> None:
        self._value = float(msg.data)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self._object_pose = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z])

    def _on_status(self, msg: DiagnosticStatus) -> None:
        values = diagnostic_values(msg)
        seed = values.get("seed")
        self._reward = float(values.get("reward", 0.0))
        if seed is not None and seed != self._episode_seed:
            self._episode_seed = seed
            self.operator.reset(int(seed) + self.seed_offset)
            self.human.reset(int(seed) + self.seed_offset)
            self._value = None

    def _on_joints(self, msg: JointState) -> None:
        if self.mode == "off" or self._object_pose is None:
            return
        if self.mode == "drive":
            engaged = True
        else:
            now = self.get_clock().now().nanoseconds * 1e-9
            was = self.human.engaged
            engaged = self.human.update(now, self._reward, self._value)
            if engaged != was:
                self.get_logger().info(
                    f"simulated human {'takes over' if engaged else 'gives back'}: {self.human.reason}"
                )
        self._engage_pub.publish(Bool(data=engaged))
        try:
            q = joint_positions(msg, self.station.joint_names)
        except MessageError as exc:
            self.get_logger().warning(f"ignoring joint_states: {exc}", throttle_duration_sec=2.0)
            return
        target = self.operator.act(q, self._object_pose)
        self._pub.publish(joint_state(target, stamp=msg.header.stamp, names=self.station.joint_names))
        self.commands_sent += 1

    def _status(self) -> DiagnosticStatus:
        waiting = self.mode != "off" and self._object_pose is None
        values = {
            "mode": self.mode,
            "engaged": self.human.engaged if self.mode == "intervene" else self.mode == "drive",
            "episode_seed": self._episode_seed or "",
            "commands_sent": self.commands_sent,
        }
        message = "waiting for sim/object_pose" if waiting else f"mode {self.mode}"
        return diagnostic("scripted_operator", values, level=WARN if waiting else OK, message=message)


def main(args=None) -> int:
    return run_node(ScriptedOperatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
