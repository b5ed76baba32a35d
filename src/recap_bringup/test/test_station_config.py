"""Every recap_teleop node starts with the station YAML, and refuses bad parameters clearly."""

from __future__ import annotations

import time

import pytest

from recap_bringup import station_sim_yaml

pytestmark = pytest.mark.ros

STATION_YAML = station_sim_yaml()


@pytest.mark.parametrize(
    "module, banner",
    [
        ("recap_teleop.gate_node", "gate up"),
        ("recap_teleop.episode_manager_node", "episode manager up"),
        ("recap_teleop.joy_node", "joy teleop up"),
        ("recap_teleop.leader_arms_node", "leader arms up"),
    ],
)
def test_node_starts_with_the_station_yaml(node_process, module, banner):
    proc = node_process(module, params_files=[STATION_YAML])
    assert proc.wait_for_output(banner, timeout=30), proc.output()
    assert proc.alive()


@pytest.mark.parametrize(
    "module, params, message",
    [
        ("recap_teleop.gate_node", {"stale_timeout_ms": 0.0}, "stale_timeout_ms"),
        ("recap_teleop.gate_node", {"use_sim_time": True}, "use_sim_time"),
        ("recap_teleop.episode_manager_node", {"source": "teleop"}, "source"),
        ("recap_teleop.joy_node", {"mapping_file": "/nonexistent/pad.yaml"}, "does not exist"),
        ("recap_teleop.leader_arms_node", {"gripper_closed": 1.0, "gripper_open": 1.0}, "different"),
    ],
)
def test_bad_parameters_are_a_clear_startup_error(node_process, module, params, message):
    proc = node_process(module, params=params)
    deadline = time.monotonic() + 30
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.alive() and proc.proc.returncode == 2, proc.output()
    assert "[FATAL]" in proc.output() and message in proc.output(), proc.output()


def test_the_sim_station_yaml_states_the_nodes_default_station():
    from recap_core.station import StationConfig

    assert StationConfig.from_yaml(STATION_YAML) == StationConfig.sim_aloha()
