"""`recap eval` renders the cameras the policies read and refuses, before any episode, a checkpoint made for
another station layout than the simulated station's."""

from __future__ import annotations

from recap_core.models.configuration import PolicyConfig
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.testing import refused
from recap_experiment.evaluate import EvalArm, evaluate

ARM = ("gripper", "shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")


def test_a_checkpoint_of_another_layout_is_refused_in_one_line(tiny_checkpoints, tmp_path, capsys):
    arm = save_untrained_checkpoint(
        tmp_path / "arm",
        PolicyConfig(cameras=("base",), state_dim=7, action_dim=7, action_horizon=4),
        joint_names=ARM,
        gripper_joints=("gripper",),
    )
    err = refused(capsys, "eval", f"arm={arm}", "--seeds", "1", "--no-progress")
    assert "arm arm: " in err and "takes a state of 7 joints, the station has 14" in err
    policy = tiny_checkpoints["policy_a"]
    err = refused(capsys, "eval", f"a={policy}", "--cameras", "base,angle", "--seeds", "1", "--no-progress")
    assert "reads camera(s) ['left_wrist', 'right_wrist']" in err and "['base', 'angle']" in err
    err = refused(capsys, "eval", f"a={policy}", "--cameras", "base,a/b", "--seeds", "1", "--no-progress")
    assert "not valid" in err


def test_the_sim_renders_the_cameras_asked_for_by_their_station_or_model_names(tmp_path):
    """``base`` is the sim station's overhead camera; ``angle`` a camera of the MuJoCo model."""
    config = PolicyConfig(cameras=("angle", "base"), action_horizon=4)
    policy = save_untrained_checkpoint(tmp_path / "p", config)
    report = evaluate(
        [EvalArm("p", policy)],
        [1],
        task="transfer the cube",
        max_steps=3,
        image_size=16,
        threads=1,
        progress=False,
        conditioning_seeds=0,
        cameras=("base", "angle"),
    )
    assert report["arms"]["p"]["episodes"] == 1
