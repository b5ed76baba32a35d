"""Robot bridge: a real station's drivers and controllers onto the RECAP topics, by its robot contract.

    robot joint_states topics (any order, subsets/supersets, per arm)  ──► joint_states (model order, grippers 0..1)
    robot cameras (raw or compressed, any QoS, any supported encoding) ──► camera/<name>/image_raw (rgb8)
    joint_command (from the gate, model units) ──► each controller: JointState | Float64MultiArray | JointTrajectory

The bridge adds no motion of its own: it forwards the gate's commands, converts units, and refuses (and
counts) a command that names other joints, is not finite, or leaves the joint limits. Everything else that
does not fit the contract (a malformed state, a frame in an unsupported encoding) is logged, counted in
``bridge/status`` and dropped; the node keeps running. docs/real_station.md describes the contract.
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from recap_bridge.mapping import CommandSplitter, MappingError, StateMerger
from recap_core.robot_contract import ContractError, RobotContract, load_contract
from recap_ros import qos
from recap_ros.conversions import MessageError, diagnostic, seconds_to_stamp, stamp_to_seconds
from recap_ros.diagnostics import OK, WARN, Diagnostics
from recap_ros.images import image_to_rgb, numpy_to_image, parse_compressed_format
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station

#: the contract's QoS names -> (reliability, depth) of the subscription; a best-effort subscription also
#: takes reliable publishers, and every one can be overridden by its qos_overrides.* parameters
SUBSCRIPTION_QOS = {
    "sensor_data": (ReliabilityPolicy.BEST_EFFORT, 5),
    "best_effort": (ReliabilityPolicy.BEST_EFFORT, 10),
    "reliable": (ReliabilityPolicy.RELIABLE, 10),
    "system_default": (ReliabilityPolicy.RELIABLE, 10),
}


class RobotBridgeNode(Node):
    def __init__(self, **kwargs):
        super().__init__("robot_bridge", **kwargs)
        path = declare(self, "contract", "", "the station's robot contract YAML (docs/real_station.md)")
        status_rate = declare(self, "status_rate_hz", 1.0, "bridge/status rate", min_value=0.1, max_value=50.0)
        if not path:
            raise ParameterError("robot_bridge: parameter 'contract' is required (the station's robot contract YAML)")
        try:
            self.contract: RobotContract = load_contract(path)
        except ContractError as exc:
            raise ParameterError(str(exc)) from exc
        station = declare_station(self)
        want = self.contract.station_config()
        for field in ("joint_names", "gripper_joints", "lower", "upper", "max_velocity", "cameras", "control_rate_hz"):
            if getattr(station, field) != getattr(want, field):
                raise ParameterError(
                    f"robot_bridge: station parameter '{field}' differs from the robot contract's ({path}): start "
                    "every node with the contract's station parameters (the launch files do)"
                )
        self.stamp_on_arrival = self.contract.stamps == "receive"
        self.merger = StateMerger(self.contract)
        self.splitter = CommandSplitter(self.contract)
        self.counts = {
            "joint_state_msgs": 0,
            "joint_states_rejected": 0,
            "commands": 0,
            "commands_rejected": 0,
            "frames": 0,
            "frames_rejected": 0,
        }
        self.last_error = ""

        self._state_pub = self.create_publisher(JointState, "joint_states", qos.SENSOR)
        self._camera_pubs = {}
        for cam in self.contract.cameras:
            self._camera_pubs[cam.name] = self.create_publisher(Image, f"camera/{cam.name}/image_raw", qos.SENSOR)
        self._command_pubs = []
        for arm in self.contract.arms:
            for command in arm.commands:
                kind = {
                    "joint_state": JointState,
                    "forward_command_controller": Float64MultiArray,
                    "joint_trajectory_controller": JointTrajectory,
                }[command.type]
                self._command_pubs.append(self.create_publisher(kind, command.topic, 10))
        self.diagnostics = Diagnostics(self, hardware_id=station.station_name)
        self._status_pub = self.diagnostics.mirror(
            self.create_publisher(DiagnosticStatus, "bridge/status", qos.LATCHED)
        )

        for topic in self.merger.topics:
            profile = self._state_qos(topic)
            reliability, depth = SUBSCRIPTION_QOS[profile]
            qos.subscribe_sensor(
                self,
                JointState,
                topic,
                lambda msg, t=topic: self._on_state(t, msg),
                depth=depth,
                reliability=reliability,
            )
        for cam in self.contract.cameras:
            reliability, depth = SUBSCRIPTION_QOS[cam.qos]
            qos.subscribe_sensor(
                self,
                CompressedImage if cam.transport == "compressed" else Image,
                cam.topic,
                lambda msg, c=cam: self._on_frame(c, msg),
                depth=depth,
                reliability=reliability,
            )
        self.create_subscription(JointState, "joint_command", self._on_command, qos.COMMAND)
        self.create_timer(1.0 / status_rate, self._publish_status)
        self.get_logger().info(
            f"robot bridge up: {self.contract.station_name}, {len(self.contract.joint_names)} joints from "
            f"{sorted(self.merger.topics)}, {len(self._command_pubs)} controllers, cameras "
            f"{list(self.contract.camera_names)}, stamps: {self.contract.stamps}"
        )

    def _state_qos(self, topic: str) -> str:
        for arm in self.contract.arms:
            if arm.joint_states is not None and arm.joint_states.topic == topic:
                return arm.joint_states.qos
        return next(s.qos for s in self.contract.joint_states if s.topic == topic)

    def _stamp(self, header):
        return self.get_clock().now().to_msg() if self.stamp_on_arrival else header.stamp

    def _reject(self, counter: str, message: str) -> None:
        self.counts[counter] += 1
        self.last_error = message
        # a flood of bad input must not flood the log: one line per second, the counters say the rest
        self.get_logger().warning(f"{message} ({counter}: {self.counts[counter]})", throttle_duration_sec=1.0)

    # -- robot -> model -----------------------------------------------------------------------
    def _on_state(self, topic: str, msg: JointState) -> None:
        self.counts["joint_state_msgs"] += 1
        stamp = self._stamp(msg.header)
        try:
            self.merger.update(topic, list(msg.name), list(msg.position), stamp_to_seconds(stamp))
        except MappingError as exc:
            self._reject("joint_states_rejected", str(exc))
            return
        merged = self.merger.state()
        if merged is None:
            return
        positions, oldest = merged
        out = JointState()
        out.header.stamp = seconds_to_stamp(oldest)
        out.name = list(self.contract.joint_names)
        out.position = positions.tolist()
        self._state_pub.publish(out)

    def _on_frame(self, cam, msg) -> None:
        self.counts["frames"] += 1
        try:
            if cam.encoding != "any":
                got = msg.encoding if isinstance(msg, Image) else parse_compressed_format(msg.format).kind
                if got != cam.encoding:
                    raise MessageError(f"encoding '{got}', the contract says {cam.encoding}")
            rgb = image_to_rgb(msg)
        except MessageError as exc:
            self._reject("frames_rejected", f"camera {cam.name}: {exc}")
            return
        self._camera_pubs[cam.name].publish(numpy_to_image(rgb, self._stamp(msg.header), msg.header.frame_id))

    # -- model -> robot -----------------------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        try:
            commands = self.splitter.split(list(msg.name), list(msg.position))
        except MappingError as exc:
            self._reject("commands_rejected", str(exc))
            return
        self.counts["commands"] += 1
        for pub, out in zip(self._command_pubs, commands):
            c = out.command
            if c.type == "forward_command_controller":
                pub.publish(Float64MultiArray(data=list(out.values)))
            elif c.type == "joint_state":
                pub.publish(JointState(header=msg.header, name=list(c.joints), position=list(out.values)))
            else:
                seconds = c.time_from_start_s
                point = JointTrajectoryPoint(
                    positions=list(out.values),
                    time_from_start=Duration(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9))),
                )
                # header stamp zero: the controller starts the trajectory on receipt
                pub.publish(JointTrajectory(joint_names=list(c.joints), points=[point]))

    def _publish_status(self) -> None:
        missing = self.merger.missing()
        level = OK
        message = "ok"
        if missing:
            level, message = WARN, f"no state yet for {missing}"
        elif self.last_error:
            level, message = WARN, self.last_error
        values = {k: str(v) for k, v in self.counts.items()}
        values.update(station=self.contract.station_name, missing_joints=",".join(missing), last_error=self.last_error)
        self._status_pub.publish(diagnostic("robot_bridge", values, level=level, message=message))


def main(args=None) -> int:
    return run_node(RobotBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
