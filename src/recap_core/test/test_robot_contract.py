"""The robot contract: the examples load, and every malformed contract is refused with one line naming the key."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from recap_core.robot_contract import ContractError, load_contract, parse_contract

ROBOTS = pathlib.Path(__file__).resolve().parents[2] / "recap_bringup" / "config" / "robots"
EXAMPLES = sorted(ROBOTS.glob("*.yaml"))


def doc() -> dict:
    return {
        "robot_contract": 1,
        "station_name": "one_arm",
        "stamps": "receive",
        "joint_states": [{"topic": "/joint_states", "qos": "system_default"}],
        "arms": [
            {
                "name": "arm",
                "joints": [
                    {"name": "j1", "robot": "joint_1", "lower": -1.0, "upper": 1.0, "max_velocity": 2.0},
                    {"name": "j2", "robot": "joint_2", "lower": -2.0, "upper": 2.0, "max_velocity": 2.0},
                    {"name": "grip", "robot": "finger", "gripper": {"closed": 0.0, "open": 0.04}, "max_velocity": 5},
                ],
                "commands": [
                    {
                        "type": "joint_trajectory_controller",
                        "topic": "/arm/joint_trajectory",
                        "joints": ["joint_2", "joint_1"],
                    },
                    {"type": "forward_command_controller", "topic": "/gripper/commands", "joints": ["finger"]},
                ],
            }
        ],
        "cameras": [{"name": "top", "topic": "/top/image_raw/compressed", "transport": "compressed"}],
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_example_contracts_load_and_yield_a_station(path):
    contract = load_contract(path)
    station = contract.station_config()
    assert station.joint_names == contract.joint_names and len(station.joint_names) == 14
    assert contract.gripper_joints == ("left_gripper", "right_gripper")
    for joint in contract.joints:  # grippers are 0..1 on the model side, whatever the robot's units
        if joint.gripper:
            assert (joint.lower, joint.upper) == (0.0, 1.0)
            assert joint.to_model(joint.gripper.open) == pytest.approx(1.0)
            assert joint.to_model(joint.gripper.closed) == pytest.approx(0.0)


def test_a_contract_of_another_shape_gives_its_own_layout():
    contract = parse_contract(doc())
    assert contract.joint_names == ("j1", "j2", "grip")
    assert contract.station_params()["joint_lower_limits"] == [-1.0, -2.0, 0.0]
    assert contract.camera_names == ("top",)
    assert contract.arms[0].commands[0].time_from_start_s == pytest.approx(0.04)  # two control periods
    grip = contract.joints[2]
    assert grip.to_robot(0.5) == pytest.approx(0.02) and grip.to_model(0.01) == pytest.approx(0.25)


def _set(d: dict, path: str, value):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if k.isdigit() else d[k]
    last = keys[-1]
    if value is _DROP:
        del d[int(last) if last.isdigit() else last]
    else:
        d[int(last) if last.isdigit() else last] = value


_DROP = object()
BROKEN = [
    ("robot_contract", 2, "version 2"),
    ("station_name", "my station", "station_name"),
    ("stamps", "device", "stamps"),
    ("joint_states", _DROP, "joint_states: missing"),
    ("arms.0.joints.0.lower", 5.0, "lower (5.0) must be below upper"),
    ("arms.0.joints.0.max_velocity", 0.0, "max_velocity"),
    ("arms.0.joints.1.name", "j1", "repeated: ['j1']"),
    ("arms.0.joints.2.gripper", {"closed": 0.1, "open": 0.1}, "closed and open"),
    ("arms.0.commands.1", _DROP, "exactly once"),
    ("arms.0.commands.0.type", "position_controller", "type"),
    ("arms.0.commands.0.joints", ["joint_2", "elbow"], "['elbow'] are not robot joints"),
    ("arms.0.commands.0.topic", "arm//cmd", "not a valid ROS topic"),
    ("cameras.0.transport", "theora", "transport"),
    ("cameras.0.qos", "fast", "qos"),
    ("cameras.0.name", "top-cam", "name"),
    ("cameras", [], "at least one"),
    ("cameras.0.fps", 30, "unknown keys ['fps']"),
    ("arms.0.joints.0.lower", "low", "expected float"),
]


@pytest.mark.parametrize("path,value,expect", BROKEN, ids=[b[0] + ":" + b[2][:20] for b in BROKEN])
def test_a_malformed_contract_is_refused_with_one_line_naming_the_key(tmp_path, path, value, expect):
    d = copy.deepcopy(doc())
    _set(d, path, value)
    f = tmp_path / "robot.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ContractError) as exc:
        load_contract(f)
    message = str(exc.value)
    assert "\n" not in message and str(f) in message and expect in message, message


def test_an_unreadable_or_invalid_file_is_one_line(tmp_path):
    with pytest.raises(ContractError, match="cannot read robot contract"):
        load_contract(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms: [\n")
    with pytest.raises(ContractError, match="not valid YAML") as exc:
        load_contract(bad)
    assert "\n" not in str(exc.value)
