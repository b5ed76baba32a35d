"""The robot contract: how one station's drivers map onto the model's joints and cameras.

A station is described once, in a YAML file (``robot_contract: 1``; docs/real_station.md has the format and
the bringup package's ``config/robots/`` the examples). The robot bridge node reads it to merge the
drivers' joint states into the model's joint order, to convert grippers between robot units and the model's
0 (closed) .. 1 (open), to split the gate's commands into each arm's controller, and to take each camera in
its own transport, encoding and QoS. Every other node gets the station parameters it already understands
(``station_params()``: joint names, limits, gripper joints, cameras), so the model's state/action layout and
its camera names come from this file.

Pure Python (yaml only): the offline tools read it too. A malformed contract raises ``ContractError`` with one
line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from typing import Any, Mapping

import yaml

from recap_core.errors import UserError, one_line
from recap_core.layout import CAMERA_NAME

CONTRACT_VERSION = 1
COMMAND_TYPES = ("joint_state", "forward_command_controller", "joint_trajectory_controller")
TRANSPORTS = ("raw", "compressed")
QOS_NAMES = ("sensor_data", "reliable", "best_effort", "system_default")
STAMP_POLICIES = ("header", "receive")
#: encodings a camera may declare; ``any`` takes whatever the driver sends (refused per frame if unsupported)
CAMERA_ENCODINGS = ("any", "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "jpeg", "png")
_NAME = CAMERA_NAME  # station, arm, joint and camera names: one ROS name token each
_TOPIC = re.compile(r"^/?[A-Za-z~][A-Za-z0-9_/~{}]*$")


class ContractError(UserError):
    """The robot contract is malformed; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Gripper:
    """Linear map between the robot's gripper units and the model's 0 (closed) .. 1 (open)."""

    closed: float
    open: float

    def to_model(self, robot_value: float) -> float:
        return (robot_value - self.closed) / (self.open - self.closed)

    def to_robot(self, model_value: float) -> float:
        return self.closed + model_value * (self.open - self.closed)


@dataclasses.dataclass(frozen=True)
class Joint:
    """One model joint: its model name, the robot's name for it, limits in model units."""

    name: str
    robot_name: str
    lower: float
    upper: float
    max_velocity: float
    gripper: Gripper | None = None

    def to_model(self, robot_value: float) -> float:
        return self.gripper.to_model(robot_value) if self.gripper else robot_value

    def to_robot(self, model_value: float) -> float:
        return self.gripper.to_robot(model_value) if self.gripper else model_value


@dataclasses.dataclass(frozen=True)
class Command:
    """Where some of an arm's joints are commanded and in what message: ``joint_state``
    (sensor_msgs/JointState), ``forward_command_controller`` (std_msgs/Float64MultiArray in ``joints``
    order) or ``joint_trajectory_controller`` (trajectory_msgs/JointTrajectory, one point
    ``time_from_start_s`` ahead). An arm whose gripper has its own controller lists two."""

    type: str
    topic: str
    joints: tuple[str, ...]  # robot names, in the order the controller expects
    time_from_start_s: float


@dataclasses.dataclass(frozen=True)
class StateTopic:
    topic: str
    qos: str


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: its joints in model order, where its state comes from, where its commands go.

    ``joint_states`` is the arm's own state topic (per-arm drivers such as Interbotix); when empty the arm's
    joints are looked up in the contract's shared ``joint_states`` topics (a joint_state_broadcaster)."""

    name: str
    joints: tuple[Joint, ...]
    commands: tuple[Command, ...]
    joint_states: StateTopic | None = None


@dataclasses.dataclass(frozen=True)
class Camera:
    name: str  # model side: camera/<name>/image_raw, observation.images.<name>
    topic: str  # the driver's topic (for compressed: the .../compressed topic itself)
    transport: str
    encoding: str
    qos: str


@dataclasses.dataclass(frozen=True)
class RobotContract:
    station_name: str
    control_rate_hz: float
    stamps: str
    joint_states: tuple[StateTopic, ...]
    arms: tuple[Arm, ...]
    cameras: tuple[Camera, ...]
    source: str = ""

    @property
    def joints(self) -> tuple[Joint, ...]:
        return tuple(j for arm in self.arms for j in arm.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def gripper_joints(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints if j.gripper is not None)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def station_params(self) -> dict[str, Any]:
        """The ``/**`` parameters every station node reads (recap_core.station.StationConfig.from_params)."""
        joints = self.joints
        return {
            "station_name": self.station_name,
            "joint_names": [j.name for j in joints],
            "gripper_joints": list(self.gripper_joints),
            "joint_lower_limits": [j.lower for j in joints],
            "joint_upper_limits": [j.upper for j in joints],
            "joint_max_velocity": [j.max_velocity for j in joints],
            "cameras": list(self.camera_names),
            "control_rate_hz": self.control_rate_hz,
        }

    def station_config(self):
        from recap_core.station import StationConfig

        return StationConfig.from_params(self.station_params())


def load_contract(path: str | pathlib.Path) -> RobotContract:
    """Read and check a robot contract file; ``ContractError`` (one line) if anything is wrong."""
    path = pathlib.Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ContractError(f"cannot read robot contract {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ContractError(f"robot contract {path} is not valid YAML: {one_line(e)}") from None
    try:
        return parse_contract(doc, source=str(path))
    except ContractError as e:
        raise ContractError(f"robot contract {path}: {e}") from None


def parse_contract(doc: Any, source: str = "") -> RobotContract:
    r = _Reader(doc, "")
    version = r.get("robot_contract", int)
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"robot_contract: version {version} is not supported (this release reads {CONTRACT_VERSION})"
        )
    station_name = r.get("station_name", str)
    if not _NAME.match(station_name):
        raise ContractError(f"station_name: '{station_name}' must be a ROS name token ([A-Za-z][A-Za-z0-9_]*)")
    rate = r.get("control_rate_hz", float, 50.0)
    if not (math.isfinite(rate) and rate > 0):
        raise ContractError(f"control_rate_hz: must be > 0, got {rate}")
    stamps = r.choice("stamps", STAMP_POLICIES, "header")
    states = ()
    if "joint_states" in r.doc:
        states = tuple(
            StateTopic(topic=s.topic("topic"), qos=s.choice("qos", QOS_NAMES, "sensor_data"))
            for s in r.items("joint_states")
        )
    if len({s.topic for s in states}) != len(states):
        raise ContractError("joint_states: a topic is listed twice")
    arms = tuple(_arm(a, rate) for a in r.items("arms"))
    shared = [a.name for a in arms if a.joint_states is None]
    if shared and not states:
        raise ContractError(f"joint_states: missing (arms {shared} have no joint_states topic of their own)")
    cameras = tuple(_camera(c) for c in r.items("cameras"))
    r.no_other_keys()
    names = [j.name for a in arms for j in a.joints]
    # a robot joint is identified by its name within the topic it comes from: per-arm topics may reuse names
    robot = [(a.joint_states.topic if a.joint_states else "", j.robot_name) for a in arms for j in a.joints]
    for what, values in (("arm", [a.name for a in arms]), ("joint", names), ("robot joint", robot)):
        dupes = sorted({str(v[1] if isinstance(v, tuple) else v) for v in values if values.count(v) > 1})
        if dupes:
            raise ContractError(f"arms: {what} names must be unique, repeated: {dupes}")
    cams = [c.name for c in cameras]
    dupes = sorted({c for c in cams if cams.count(c) > 1})
    if dupes:
        raise ContractError(f"cameras: names must be unique, repeated: {dupes}")
    return RobotContract(
        station_name=station_name,
        control_rate_hz=rate,
        stamps=stamps,
        joint_states=states,
        arms=arms,
        cameras=cameras,
        source=source,
    )


def _arm(r: "_Reader", rate: float) -> Arm:
    name = r.get("name", str)
    if not _NAME.match(name):
        raise ContractError(f"{r.where}name: '{name}' must be a ROS name token")
    joints = tuple(_joint(j) for j in r.items("joints"))
    own_states = None
    if "joint_states" in r.doc:
        s = r.section("joint_states")
        own_states = StateTopic(topic=s.topic("topic"), qos=s.choice("qos", QOS_NAMES, "sensor_data"))
        s.no_other_keys()
    robot_names = [j.robot_name for j in joints]
    commands = []
    for c in r.items("commands"):
        ctype = c.choice("type", COMMAND_TYPES)
        order = tuple(map(str, c.get("joints", list, robot_names)))
        unknown = sorted(set(order) - set(robot_names))
        if unknown:
            raise ContractError(f"{c.where}joints: {unknown} are not robot joints of arm '{name}' {robot_names}")
        tfs = c.get("time_from_start_s", float, 2.0 / rate)
        if not (math.isfinite(tfs) and tfs > 0):
            raise ContractError(f"{c.where}time_from_start_s: must be > 0, got {tfs}")
        commands.append(Command(type=ctype, topic=c.topic("topic"), joints=order, time_from_start_s=tfs))
        c.no_other_keys()
    commanded = [j for c in commands for j in c.joints]
    if sorted(commanded) != sorted(robot_names):
        raise ContractError(
            f"{r.where}commands: together they must command each of the arm's robot joints {robot_names} exactly "
            f"once, got {commanded}"
        )
    r.no_other_keys()
    return Arm(name=name, joints=joints, commands=tuple(commands), joint_states=own_states)


def _joint(r: "_Reader") -> Joint:
    name = r.get("name", str)
    if not _NAME.match(name):
        raise ContractError(f"{r.where}name: '{name}' must be a ROS name token")
    robot_name = r.get("robot", str, name)
    gripper = None
    if "gripper" in r.doc:
        g = r.section("gripper")
        gripper = Gripper(closed=g.get("closed", float), open=g.get("open", float))
        g.no_other_keys()
        if not (math.isfinite(gripper.closed) and math.isfinite(gripper.open)) or gripper.closed == gripper.open:
            raise ContractError(f"{g.where}: closed and open must be finite and differ")
    lower = r.get("lower", float, 0.0 if gripper else None)
    upper = r.get("upper", float, 1.0 if gripper else None)
    vmax = r.get("max_velocity", float)
    r.no_other_keys()
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise ContractError(f"{r.where}: lower ({lower}) must be below upper ({upper}), both finite")
    if not (math.isfinite(vmax) and vmax > 0):
        raise ContractError(f"{r.where}max_velocity: must be > 0, got {vmax}")
    return Joint(name=name, robot_name=robot_name, lower=lower, upper=upper, max_velocity=vmax, gripper=gripper)


def _camera(r: "_Reader") -> Camera:
    name = r.get("name", str)
    if not _NAME.match(name):
        raise ContractError(f"{r.where}name: '{name}' must be a ROS name token (it becomes camera/<name>/image_raw)")
    cam = Camera(
        name=name,
        topic=r.topic("topic"),
        transport=r.choice("transport", TRANSPORTS, "raw"),
        encoding=r.choice("encoding", CAMERA_ENCODINGS, "any"),
        qos=r.choice("qos", QOS_NAMES, "sensor_data"),
    )
    r.no_other_keys()
    return cam


class _Reader:
    """Typed access to one mapping of the contract, with the key path in every error."""

    _MISSING = object()

    def __init__(self, doc: Any, where: str):
        if not isinstance(doc, Mapping):
            raise ContractError(f"{where or 'the file'}: expected a mapping, got {type(doc).__name__}")
        self.doc = doc
        self.where = where
        self._used: set[str] = set()

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        self._used.add(key)
        if key not in self.doc or self.doc[key] is None:
            if default is _Reader._MISSING or default is None:
                raise ContractError(f"{self.where}{key}: missing")
            return default
        value = self.doc[key]
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, list) and isinstance(value, kind):
            return value
        raise ContractError(f"{self.where}{key}: expected {kind.__name__}, got {value!r}")

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise ContractError(f"{self.where}{key}: '{value}' is not one of {list(choices)}")
        return value

    def topic(self, key: str) -> str:
        value = self.get(key, str)
        if not _TOPIC.match(value) or "//" in value or value.endswith("/"):
            raise ContractError(f"{self.where}{key}: '{value}' is not a valid ROS topic name")
        return value

    def section(self, key: str) -> "_Reader":
        self._used.add(key)
        if key not in self.doc:
            raise ContractError(f"{self.where}{key}: missing")
        return _Reader(self.doc[key], f"{self.where}{key}.")

    def items(self, key: str) -> list["_Reader"]:
        values = self.get(key, list)
        if not values:
            raise ContractError(f"{self.where}{key}: must list at least one entry")
        return [_Reader(v, f"{self.where}{key}[{i}].") for i, v in enumerate(values)]

    def no_other_keys(self) -> None:
        extra = sorted(str(k) for k in self.doc if k not in self._used)
        if extra:
            raise ContractError(f"{self.where or ''}unknown keys {extra} (misspelt?)")
