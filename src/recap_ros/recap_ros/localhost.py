"""Localhost-only DDS settings for the simulation, tests and benchmarks (docs/design.md §10).

Nodes never apply them by themselves: a real station's drivers and rviz may run on other hosts. They are set
by the sim and test entry points (``recap station``, sim.launch.py, scripts/ros_env.sh, the test fixtures),
or for one node by ``--localhost`` or ``RECAP_LOCALHOST=1`` (:func:`localhost_requested`).

No rclpy here: this only computes environment variables, so it can be applied before rclpy is imported, and
handed to child processes by tests and benchmarks.
"""

from __future__ import annotations

import os
import pathlib

#: The Fast DDS profile for loss-free images on one machine (shared memory + loopback UDP): tests and the sim.
FASTDDS_LOCALHOST_PROFILE = pathlib.Path(__file__).resolve().parent / "fastdds_localhost.xml"

#: The node flag (before ``--ros-args``) and the environment variable that ask a node for localhost settings.
LOCALHOST_FLAG = "--localhost"
LOCALHOST_ENV = "RECAP_LOCALHOST"

#: The variables that decide whom a ROS process discovers and how (what a node reports at startup).
DDS_VARIABLES = (
    "RMW_IMPLEMENTATION",
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "ROS_DOMAIN_ID",
    "FASTDDS_DEFAULT_PROFILES_FILE",
)


def localhost_environment() -> dict[str, str]:
    """The DDS variables of a process that talks to this machine only: localhost discovery, and Fast DDS
    with the shared-memory profile (what sim.launch.py sets with SetEnvironmentVariable)."""
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_LOCALHOST_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


def ros_environment(base: dict | None = None) -> dict:
    """``base`` (default: os.environ) with localhost discovery, and the Fast DDS profile, the rmw and headless
    MuJoCo rendering where ``base`` names none."""
    env = dict(os.environ if base is None else base)
    local = localhost_environment()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = local.pop("ROS_AUTOMATIC_DISCOVERY_RANGE")
    for key, value in local.items():
        env.setdefault(key, value)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    return env


def apply_ros_environment() -> None:
    """Set the variables in this process; call before rclpy creates its first context."""
    os.environ.update(ros_environment())


def localhost_requested(args: list[str] | None = None) -> bool:
    """Whether ``--localhost`` is among ``args`` before ``--ros-args`` or ``RECAP_LOCALHOST`` is 1/true."""
    if os.environ.get(LOCALHOST_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    args = list(args or [])
    own = args[: args.index("--ros-args")] if "--ros-args" in args else args
    return LOCALHOST_FLAG in own


def without_localhost_flag(args: list[str]) -> list[str]:
    """``args`` without the ``--localhost`` flags before ``--ros-args`` (rclpy need not see them)."""
    end = args.index("--ros-args") if "--ros-args" in args else len(args)
    return [a for a in args[:end] if a != LOCALHOST_FLAG] + args[end:]


def dds_settings(env: dict | None = None) -> str:
    """The DDS variables as ``env`` (default: os.environ) has them, one line (``unset`` for those it lacks)."""
    env = os.environ if env is None else env
    return ", ".join(f"{key}={env.get(key, 'unset')}" for key in DDS_VARIABLES)
