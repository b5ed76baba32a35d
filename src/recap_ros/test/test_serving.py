"""What a model-serving node checks before it runs a checkpoint on a station (recap_ros.serving)."""

from __future__ import annotations

import dataclasses
import json

from recap_core.models.configuration import PolicyConfig, ValueConfig
from recap_ros.serving import checkpoint_problem, model_problem
from recap_core.station import JOINT_NAMES, StationConfig

STATION = StationConfig.sim_aloha()


def test_a_model_that_fits_the_station_has_no_problem():
    assert model_problem("policy", PolicyConfig(), {"joint_names": list(JOINT_NAMES)}, STATION) == ""
    assert model_problem("value", ValueConfig(), {}, STATION) == ""


def test_each_mismatch_is_named():
    assert "'top'" in model_problem("policy", PolicyConfig(cameras=("base", "top")), {}, STATION)
    assert "state of 7" in model_problem("value", ValueConfig(state_dim=7), {}, STATION)
    assert "commands 16" in model_problem("policy", PolicyConfig(action_dim=16), {}, STATION)
    swapped = list(JOINT_NAMES[7:]) + list(JOINT_NAMES[:7])
    assert "order differ" in model_problem("policy", PolicyConfig(), {"joint_names": swapped}, STATION)
    renamed = dataclasses.replace(STATION, joint_names=tuple(f"j{i}" for i in range(14)), gripper_joints=("j6", "j13"))
    assert "order differ" in model_problem("value", ValueConfig(), {"joint_names": list(JOINT_NAMES)}, renamed)


def test_checkpoint_problem_reads_the_config_only(tmp_path):
    assert "not a checkpoint directory" in checkpoint_problem(str(tmp_path / "missing"), "policy", STATION)


def test_training_records_the_datasets_joint_names(tiny_checkpoints):
    for name in ("policy_a", "value"):
        config = json.loads((tiny_checkpoints[name] / "config.json").read_text())
        assert config["training"]["joint_names"] == list(JOINT_NAMES)
        assert checkpoint_problem(str(tiny_checkpoints[name]), "policy" if name != "value" else "value", STATION) == ""
