"""Fixtures shared by every package's tests.

ROS tests start real nodes as processes (``node_process``) and talk to them
through an in-process probe node (``probe``); both are torn down even when the
test fails, processes by PID.
"""

from __future__ import annotations

import os

import pytest

from recap_ros.localhost import apply_ros_environment
from recap_ros.testing.procs import NodeProcess, session_domain_id

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
    from recap_ros.testing.probe import Probe

    p = Probe()
    yield p
    p.close()


@pytest.fixture
def feeder(probe):
    """A fake station on the probe: the three cameras and joint_states at 50 Hz (``StationFeeder``)."""
    from recap_ros.testing.probe import StationFeeder

    station = StationFeeder(probe)
    yield station
    station.stop()


def pytest_sessionfinish(session, exitstatus):
    """Fast DDS segments of the processes this session killed (and of any other dead process) would stay in
    /dev/shm, 32 MB each with the localhost profile: removed, those of live processes kept."""
    from recap_ros.testing.shm import remove_stale_segments

    remove_stale_segments()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI") and not os.environ.get("RECAP_RUN_GPU_TESTS"):
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device; CI has none")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny policy checkpoints and a tiny value checkpoint, trained 2 steps through the CLI."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    recap = [sys.executable, "-m", "recap_core.cli"]
    common = ["--config", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress", "--threads", "1"]
    commands = [
        [*recap, "dataset", "synth", str(root / "data"), "--kind", "reach", "--episodes", "3"],
        [*recap, "train-policy", str(root / "data"), "--mode", "sft", "--out", str(root / "policy_a"), *common],
        [
            *recap,
            "train-policy",
            str(root / "data"),
            "--mode",
            "sft",
            "--seed",
            "1",
            "--out",
            str(root / "policy_b"),
            *common,
        ],
        [*recap, "train-value", str(root / "data"), "--out", str(root / "value"), *common],
    ]
    for cmd in commands:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return {
        "policy_a": root / "policy_a",
        "policy_b": root / "policy_b",
        "value": root / "value",
        "dataset": root / "data",
    }


@pytest.fixture(scope="session")
def family_checkpoint(tiny_checkpoints, tmp_path_factory):
    """A pi0 policy for the simulated station's layout: a tiny random pi0 in LeRobot 0.4's layout (14 joints,
    chunks of 50), trained one step under RECAP on the tiny dataset (``train-policy --init``)."""
    import subprocess
    import sys

    from recap_core.testing import TINY_PI0, word_tokenizer, write_lerobot_checkpoint

    root = tmp_path_factory.mktemp("family_checkpoint")
    write_lerobot_checkpoint(root / "pi0_lerobot", joints=14, sizes={**TINY_PI0, "chunk_size": 50})
    word_tokenizer(["reach", "transfer", "the", "cube", "Advantage", ":", "positive", "negative"], root / "tokenizer")
    cmd = [
        sys.executable, "-m", "recap_core.cli", "train-policy", str(tiny_checkpoints["dataset"]), "--mode", "sft",
        "--init", str(root / "pi0_lerobot"), "--tokenizer", str(root / "tokenizer"), "--out", str(root / "policy"),
        "--steps", "1", "--batch-size", "2", "--no-progress", "--threads", "1",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return root / "policy"
