"""The environment every ROS process of this project runs with (DESIGN.md §10).

No rclpy here: this only computes environment variables, so it can be applied
before rclpy is imported, and handed to child processes by tests and benchmarks.
"""

from __future__ import annotations

import os

import pathlib

#: The Fast DDS profile for loss-free images on one machine (shared memory + loopback UDP): tests and the sim.
FASTDDS_LOCALHOST_PROFILE = pathlib.Path(__file__).resolve().parent / "fastdds_localhost.xml"


def ros_environment(base: dict | None = None) -> dict:
    """``base`` (default: os.environ) plus localhost-only discovery and the Fast DDS profile."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_LOCALHOST_PROFILE))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    return env


def apply_ros_environment() -> None:
    """Set the variables in this process; call before ``import rclpy``."""
    os.environ.update(ros_environment())
