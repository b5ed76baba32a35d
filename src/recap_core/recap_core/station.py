"""Robot description shared by every package: joint order, gripper joints, limits, cameras.

Pure Python (numpy + yaml), importable without ROS or torch. The same station YAML
is read by `ros2 launch` (``--params-file``) and by ``recap station``; this module
reads the ``/**`` section that every node shares. A station has any number of joints
and cameras; the constants below describe the simulated bimanual ALOHA station only
(the simulator is that robot, and the node parameters default to it).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Sequence

import numpy as np
import yaml

from recap_core.layout import StationLayout, check_cameras, check_gripper_joints, check_joint_names, gripper_indices

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
#: The simulated ALOHA station's joints (DESIGN.md §4), its grippers and cameras.
JOINT_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM_JOINTS)
NUM_JOINTS = len(JOINT_NAMES)  # 14
GRIPPER_JOINTS = ("left_gripper", "right_gripper")
GRIPPER_INDICES = gripper_indices(JOINT_NAMES, GRIPPER_JOINTS)  # (6, 13)
DEFAULT_CAMERAS = ("base", "left_wrist", "right_wrist")
CONTROL_RATE_HZ = 50.0


def repo_root() -> pathlib.Path | None:
    """The source checkout this module lives in (editable installs), if any."""
    for parent in pathlib.Path(__file__).resolve().parents:
        if (parent / "src").is_dir() and (parent / ".git").exists():
            return parent
    return None


# The simulated bimanual ALOHA station (ViperX 300s): arm limits in radians from the vx300s MJCF, grippers
# normalised 0 (closed) .. 1 (open); velocity limits in rad/s (grippers in normalised units/s). The node
# parameters default to it; the sim station's parameter file states the same values (a test keeps them equal).
_ARM_LOWER = (-3.14158, -1.85005, -1.76278, -3.14158, -1.8675, -3.14158, 0.0)
_ARM_UPPER = (3.14158, 1.25664, 1.6057, 3.14158, 2.23402, 3.14158, 1.0)
_ARM_MAX_VELOCITY = (3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 6.0)
SIM_ALOHA_NAME = "sim_aloha"


@dataclasses.dataclass(frozen=True)
class StationConfig:
    """Joint order, gripper joints, position and velocity limits, cameras and control rate of one station."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    max_velocity: tuple[float, ...] = ()
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    control_rate_hz: float = CONTROL_RATE_HZ
    station_name: str = "station"
    gripper_joints: tuple[str, ...] = GRIPPER_JOINTS

    def __post_init__(self):
        for name in ("joint_names", "lower", "upper", "max_velocity", "cameras", "gripper_joints"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_joint_names(self.joint_names)
        n = len(self.joint_names)
        for name, values in (
            ("joint_lower_limits", self.lower),
            ("joint_upper_limits", self.upper),
            ("joint_max_velocity", self.max_velocity),
        ):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} values, expected {n} (one per joint of joint_names)")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be finite numbers, got {list(values)}")
        bad = [self.joint_names[i] for i in range(n) if not self.lower[i] < self.upper[i]]
        if bad:
            raise ValueError(f"lower limit must be below upper limit for joints {bad}")
        if any(v <= 0 for v in self.max_velocity):
            raise ValueError(f"joint_max_velocity must be > 0, got {list(self.max_velocity)}")
        check_gripper_joints(self.gripper_joints, self.joint_names)
        check_cameras(self.cameras)
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        """Indices of the gripper joints in ``joint_names``, ascending."""
        return gripper_indices(self.joint_names, self.gripper_joints)

    @property
    def layout(self) -> StationLayout:
        """What a model and a dataset must agree on: joint order, gripper joints, cameras."""
        return StationLayout(self.joint_names, self.gripper_joints, self.cameras)

    @property
    def lower_array(self) -> np.ndarray:
        return np.asarray(self.lower, dtype=np.float64)

    @property
    def upper_array(self) -> np.ndarray:
        return np.asarray(self.upper, dtype=np.float64)

    @property
    def max_velocity_array(self) -> np.ndarray:
        return np.asarray(self.max_velocity, dtype=np.float64)

    @property
    def max_step(self) -> np.ndarray:
        """Largest allowed change of each joint target in one control period."""
        return self.max_velocity_array / self.control_rate_hz

    @classmethod
    def from_params(cls, params: dict) -> "StationConfig":
        """From the ``/**`` parameters; one-line ValueError naming what is wrong.

        A missing ``joint_names``, ``gripper_joints`` or ``cameras`` is the simulated station's (the nodes'
        defaults too), so a file for another robot names its own.
        """
        try:
            return cls(
                joint_names=tuple(params.get("joint_names", JOINT_NAMES)),
                lower=tuple(float(v) for v in params["joint_lower_limits"]),
                upper=tuple(float(v) for v in params["joint_upper_limits"]),
                max_velocity=tuple(float(v) for v in params["joint_max_velocity"]),
                cameras=tuple(params.get("cameras", DEFAULT_CAMERAS)),
                control_rate_hz=float(params.get("control_rate_hz", CONTROL_RATE_HZ)),
                station_name=str(params.get("station_name", "station")),
                gripper_joints=tuple(params.get("gripper_joints", GRIPPER_JOINTS) or ()),
            )
        except KeyError as exc:
            raise ValueError(f"station parameter {exc.args[0]} is missing") from None
        except TypeError as exc:
            raise ValueError(f"station parameters: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | pathlib.Path) -> "StationConfig":
        """The ``/**`` section of a station parameter file."""
        return cls.from_params(load_node_params(path, "/**"))

    @classmethod
    def sim_aloha(cls) -> "StationConfig":
        """The simulated bimanual ALOHA station: every node's default robot description."""
        return cls(
            joint_names=JOINT_NAMES,
            lower=_ARM_LOWER * 2,
            upper=_ARM_UPPER * 2,
            max_velocity=_ARM_MAX_VELOCITY * 2,
            cameras=DEFAULT_CAMERAS,
            control_rate_hz=CONTROL_RATE_HZ,
            station_name=SIM_ALOHA_NAME,
            gripper_joints=GRIPPER_JOINTS,
        )


def load_node_params(path: str | pathlib.Path, node: str) -> dict:
    """The parameters a node gets from a ROS 2 params file: ``/**`` merged with its section."""
    path = pathlib.Path(path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    params = dict((doc.get("/**") or {}).get("ros__parameters", {}))
    if node != "/**":
        params.update((doc.get(node) or {}).get("ros__parameters", {}))
    return params


def check_joint_vector(
    values: Sequence[float], what: str = "joint vector", names: Sequence[str] = JOINT_NAMES
) -> np.ndarray:
    """A finite float64 vector with one value per joint of ``names`` (the simulated station's by default), or
    ValueError saying what is wrong."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(names),):
        raise ValueError(f"{what} has shape {arr.shape}, expected ({len(names)},)")
    if not np.all(np.isfinite(arr)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(arr))]
        raise ValueError(f"{what} has non-finite values for joints {bad}")
    return arr
