"""A plain (non-symlink) ``colcon build`` of src/ installs a workspace whose nodes start from the install
space with their installed configuration, as on a lab's ROS machine.

The interpreter that runs the installed code starts without site processing (``-S``), so the
checkout's editable installs are invisible: every project module comes from ``install/``; only
third-party packages are taken from the environment's site-packages.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from recap_ros.testing.colcon import install_environment, source_packages

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = source_packages(ROOT)
NODES = [  # (package, module, banner it logs once up, or "" to require only that it stays up)
    ("recap_teleop", "recap_teleop.gate_node", "gate up"),
    ("recap_teleop", "recap_teleop.episode_manager_node", "episode manager up"),
    ("recap_teleop", "recap_teleop.joy_node", "joy teleop up"),
    ("recap_teleop", "recap_teleop.leader_arms_node", "leader arms up"),
    ("recap_sim", "recap_sim.station_node", "sim station up"),
    ("recap_sim", "recap_sim.operator_node", ""),
    ("recap_policy_node", "recap_policy_node.policy_node", ""),
    ("recap_value_node", "recap_value_node.value_node", ""),
    ("recap_recorder", "recap_recorder.recorder_node", ""),
    ("recap_bridge", "recap_bridge.bridge_node", "robot bridge up"),
]


@pytest.fixture(scope="module")
def workspace(colcon_install):
    return colcon_install


def run_installed(install, code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=install_environment(install),
        cwd=install,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_package_installs_its_code_and_share_files(workspace):
    for package in PACKAGES:
        assert (workspace / package / "share" / package / "package.xml").is_file(), package
    share = workspace / "recap_bringup" / "share" / "recap_bringup"
    for name in (
        "launch/station.launch.py",
        "launch/sim.launch.py",
        "launch/recap.rviz",
        "config/station_sim.yaml",
        "config/station_real.yaml",
        "config/robots/aloha_ros2_control.yaml",
        "config/robots/aloha_interbotix.yaml",
    ):
        assert (share / name).is_file(), name
    found = run_installed(
        workspace,
        "import recap_bringup, recap_core.cli as c; "
        "print(recap_bringup.station_sim_yaml()); print(' '.join(c.commands()))",
    )
    yaml_path, names = found.splitlines()
    assert pathlib.Path(yaml_path).resolve() == (share / "config" / "station_sim.yaml").resolve()
    assert {
        "station",
        "convert",
        "bag",
        "train-value",
        "label",
        "train-policy",
        "iterate",
        "eval",
        "experiment",
    } <= set(names.split())


@pytest.mark.parametrize("package, module, banner", NODES)
def test_each_node_starts_from_the_install_space(workspace, tmp_path, package, module, banner):
    share = workspace / "recap_bringup" / "share" / "recap_bringup"
    where = run_installed(workspace, f"import {module} as m; print(m.__file__)").strip()
    assert pathlib.Path(where).is_relative_to(workspace / package), where
    cmd = [
        sys.executable,
        "-S",
        "-m",
        module,
        "--ros-args",
        "--params-file",
        str(share / "config" / "station_sim.yaml"),
    ]
    if module.endswith("bridge_node"):  # the Interbotix example has the simulated station's layout
        cmd += ["-p", f"contract:={share / 'config' / 'robots' / 'aloha_interbotix.yaml'}"]
    if module.endswith("recorder_node"):
        cmd += ["-p", f"output_dir:={tmp_path / 'bags'}"]
    log = tmp_path / "node.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=install_environment(workspace))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if banner and banner in log.read_text():
                    break
                if not banner and time.monotonic() > deadline - 55:  # up and still running after 5 s
                    break
                time.sleep(0.1)
            assert proc.poll() is None, log.read_text()
            assert not banner or banner in log.read_text(), log.read_text()
        finally:
            proc.terminate()
            code = proc.wait(timeout=10)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()
