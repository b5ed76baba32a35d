"""On a station a node keeps the DDS settings it is given; the sim and test entry points set localhost ones."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from recap_bringup import station_sim_yaml
from recap_ros.localhost import FASTDDS_LOCALHOST_PROFILE, localhost_environment, ros_environment
from recap_ros.testing.procs import test_environment

pytestmark = pytest.mark.ros

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATION_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "RECAP_LOCALHOST")


def station_environment() -> dict:
    """A lab machine's environment: no discovery range, no Fast DDS profile (still this test's domain)."""
    env = test_environment()
    for key in STATION_VARIABLES:
        env.pop(key, None)
    return env


def dds_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "DDS settings" in line]
    assert lines, f"no DDS settings line in:\n{output[-2000:]}"
    return lines[0]


def start_leader_arms(node_process, env, args=()):
    proc = node_process("recap_teleop.leader_arms_node", params_files=[station_sim_yaml()], env=env, args=args)
    assert proc.wait_for_output("DDS settings", timeout=30.0), proc.output()
    return proc


def test_a_node_keeps_the_discovery_settings_it_is_started_with(node_process):
    proc = start_leader_arms(node_process, station_environment())
    line = dds_line(proc.output())
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=unset" in line and "FASTDDS_DEFAULT_PROFILES_FILE=unset" in line, line
    assert "--localhost" not in line
    assert proc.alive(), proc.output()


def test_a_node_given_its_own_profile_and_range_keeps_them(node_process, tmp_path):
    profile = tmp_path / "lab_profile.xml"
    profile.write_text(FASTDDS_LOCALHOST_PROFILE.read_text())
    env = {
        **station_environment(),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(profile),
    }
    line = dds_line(start_leader_arms(node_process, env).output())
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={profile}" in line, line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_localhost_is_applied_when_asked_and_the_node_is_reachable(node_process, probe, how):
    env = station_environment()
    args = ()
    if how == "flag":
        args = ("--localhost",)
    else:
        env["RECAP_LOCALHOST"] = "1"
    arrays = probe.subscribe(DiagnosticArray, "/diagnostics")
    proc = start_leader_arms(node_process, env, args)
    line = dds_line(proc.output())
    assert "(--localhost)" in line and "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in line, line
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={FASTDDS_LOCALHOST_PROFILE}" in line, line
    # rclpy never saw the flag as a stray argument, and the node talks to this (localhost) probe.
    assert arrays.wait_for(
        1, timeout=20.0, predicate=lambda a: any(s.name == "/leader_arms: status" for s in a.status)
    ), proc.output()


def test_the_localhost_settings_are_one_dict_for_launch_files():
    env = localhost_environment()
    assert env == {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_LOCALHOST_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    assert FASTDDS_LOCALHOST_PROFILE.is_file()
    # a test or sim environment forces the range but keeps a profile and rmw the caller chose
    mixed = ros_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_DEFAULT_PROFILES_FILE": "/lab.xml"})
    assert (
        mixed["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and mixed["FASTDDS_DEFAULT_PROFILES_FILE"] == "/lab.xml"
    )


@pytest.mark.parametrize("command", ["source scripts/ros_env.sh && env", "scripts/netns.sh env"])
def test_the_test_shell_entry_points_set_localhost(command):
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in STATION_VARIABLES},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"
    assert pathlib.Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).resolve() == FASTDDS_LOCALHOST_PROFILE


def test_recap_station_the_simulated_station_sets_localhost_itself(tmp_path):
    pytest.importorskip("gym_aloha")
    cmd = [sys.executable, "-m", "recap_core.cli", "station", "--sim", "--episodes", "1", "--max-steps", "5"]
    cmd += ["--image-size", "32"]
    run = subprocess.run(cmd, env=station_environment(), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = dds_line(run.stdout)
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in line, line
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={FASTDDS_LOCALHOST_PROFILE}" in line, line
