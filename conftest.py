"""Fixtures shared by every package's tests.

ROS tests start real nodes as processes (``node_process``) and talk to them
through an in-process probe node (``probe``); both are torn down even when the
test fails, processes by PID.
"""
from __future__ import annotations

import os

import pytest

from recap_core.rosenv import apply_ros_environment
from recap_core.testing.procs import NodeProcess, session_domain_id

# Before anything imports rclpy: localhost discovery, the Fast DDS profile, a private domain.
apply_ros_environment()
os.environ["ROS_DOMAIN_ID"] = str(session_domain_id())
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def node_process(tmp_path):
    """Factory: ``node_process("recap_sim.station_node", params={...})`` -> NodeProcess."""
    started: list[NodeProcess] = []

    def start(module: str, **kwargs) -> NodeProcess:
        kwargs.setdefault("log_dir", tmp_path / "logs")
        proc = NodeProcess(module, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def probe():
    from recap_core.ros.probe import Probe

    p = Probe()
    yield p
    p.close()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI") and not os.environ.get("RECAP_RUN_GPU_TESTS"):
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device; CI has none")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
