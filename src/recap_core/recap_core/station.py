"""Robot description shared by every package: joint order, limits, cameras.

Pure Python (numpy + yaml), importable without ROS or torch. The same station YAML
is read by `ros2 launch` (``--params-file``) and by ``recap station``; this module
reads the ``/**`` section that every node shares.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Sequence

import numpy as np
import yaml

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
JOINT_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM_JOINTS)
NUM_JOINTS = len(JOINT_NAMES)  # 14
GRIPPER_INDICES = (6, 13)
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
    """Joint order, position limits and velocity limits of one station."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    max_velocity: tuple[float, ...] = ()
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    control_rate_hz: float = CONTROL_RATE_HZ
    station_name: str = "station"

    def __post_init__(self):
        n = len(self.joint_names)
        if n != NUM_JOINTS:
            raise ValueError(f"station has {n} joints, expected {NUM_JOINTS} in the order {JOINT_NAMES}")
        for name, values in (
            ("joint_lower_limits", self.lower),
            ("joint_upper_limits", self.upper),
            ("joint_max_velocity", self.max_velocity),
        ):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} values, expected {n}")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be finite, got {list(values)}")
        bad = [self.joint_names[i] for i in range(n) if not self.lower[i] < self.upper[i]]
        if bad:
            raise ValueError(f"lower limit must be below upper limit for joints {bad}")
        if any(v <= 0 for v in self.max_velocity):
            raise ValueError(f"joint_max_velocity must be > 0, got {list(self.max_velocity)}")
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")

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
        return cls(
            joint_names=tuple(params.get("joint_names", JOINT_NAMES)),
            lower=tuple(float(v) for v in params["joint_lower_limits"]),
            upper=tuple(float(v) for v in params["joint_upper_limits"]),
            max_velocity=tuple(float(v) for v in params["joint_max_velocity"]),
            cameras=tuple(params.get("cameras", DEFAULT_CAMERAS)),
            control_rate_hz=float(params.get("control_rate_hz", CONTROL_RATE_HZ)),
            station_name=str(params.get("station_name", "station")),
        )

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


def check_joint_vector(values: Sequence[float], what: str = "joint vector") -> np.ndarray:
    """A finite float64 vector of 14 joint values, or ValueError saying what is wrong."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (NUM_JOINTS,):
        raise ValueError(f"{what} has shape {arr.shape}, expected ({NUM_JOINTS},)")
    if not np.all(np.isfinite(arr)):
        bad = [JOINT_NAMES[i] for i in np.flatnonzero(~np.isfinite(arr))]
        raise ValueError(f"{what} has non-finite values for joints {bad}")
    return arr
