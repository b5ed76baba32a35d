"""A checkpoint made for one station layout is refused, in one line naming the mismatch, by a station with
another (recap_ros.serving.checkpoint_problem, what the policy and value nodes check before loading)."""

from __future__ import annotations

import dataclasses

import pytest

from recap_core.models.configuration import PolicyConfig
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.station import StationConfig
from recap_ros.serving import checkpoint_problem

ARM = ("gripper", "shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
STATION = StationConfig(
    joint_names=ARM,
    gripper_joints=("gripper",),
    lower=(0.0,) + (-3.0,) * 6,
    upper=(1.0,) + (3.0,) * 6,
    max_velocity=(2.0,) + (1.5,) * 6,
    cameras=("scene", "wrist"),
    control_rate_hz=25.0,
    station_name="ur_arm",
)


@pytest.fixture(scope="module")
def arm_policy(tmp_path_factory):
    config = PolicyConfig(cameras=("scene", "wrist"), state_dim=7, action_dim=7, action_horizon=4)
    path = tmp_path_factory.mktemp("arm") / "policy"
    return str(save_untrained_checkpoint(path, config, joint_names=ARM, gripper_joints=("gripper",)))


@pytest.mark.parametrize(
    "station, mismatch",
    [
        (dataclasses.replace(STATION, gripper_joints=("wrist_3",)), "gripper joints ['gripper'], the station's are"),
        (dataclasses.replace(STATION, gripper_joints=()), "gripper joints ['gripper'], the station's are []"),
        (dataclasses.replace(STATION, cameras=("scene", "top")), "reads camera(s) ['wrist']"),
        (
            dataclasses.replace(STATION, joint_names=tuple(reversed(ARM)), gripper_joints=("gripper",)),
            "order differ",
        ),
        (StationConfig.sim_aloha(), "reads camera(s) ['scene', 'wrist']"),
    ],
)
def test_a_station_of_another_layout_refuses_the_checkpoint_in_one_line(arm_policy, station, mismatch):
    assert checkpoint_problem(arm_policy, "policy", STATION) == ""
    problem = checkpoint_problem(arm_policy, "policy", station)
    assert problem.startswith(arm_policy) and mismatch in problem and "\n" not in problem
