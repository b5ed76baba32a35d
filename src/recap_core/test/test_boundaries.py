"""Package boundaries of DESIGN.md §2 that imports alone can check."""
from __future__ import annotations

import subprocess
import sys

import pytest

LEARNING_MODULES = ["recap_core", "recap_core.station", "recap_core.cli", "recap_core.rosenv",
                    "recap_core.rl", "recap_core.data", "recap_core.models", "recap_core.train",
                    "recap_core.checkpoint"]
NO_TORCH_MODULES = ["recap_sim.station_node", "recap_sim.expert_node", "recap_teleop.gate_node",
                    "recap_teleop.episode_manager_node", "recap_teleop.joy_node", "recap_teleop.leader_arms_node",
                    "recap_recorder.recorder_node", "recap_recorder.convert"]


def _imported(module: str) -> set[str]:
    code = f"import importlib, sys; importlib.import_module({module!r}); print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("module", LEARNING_MODULES)
def test_learning_side_never_imports_rclpy(module):
    assert "rclpy" not in _imported(module), f"{module} pulls in rclpy"


@pytest.mark.parametrize("module", NO_TORCH_MODULES)
def test_station_side_nodes_never_import_torch(module):
    assert "torch" not in _imported(module), f"{module} pulls in torch"
