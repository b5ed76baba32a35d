"""The scripted operator: solves the transfer, stays within the station's limits, takes over from
disturbed states, degrades with quality, is deterministic; and the IK it stands on."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede any mujoco import

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from recap_core.station import StationConfig  # noqa: E402
from recap_sim.operator import OperatorStyle, ScriptedOperator  # noqa: E402
from recap_sim.kinematics import (
    ArmKinematics,
    box_side_yaws,
    closest_symmetric_yaw,  # noqa: E402
    horizontal_rotation,
    top_down_rotation,
)
from recap_sim.sim import AlohaSim  # noqa: E402

STATION = StationConfig.sim_aloha()
MAX_STEPS = 400


@pytest.fixture(scope="module")
def sim():
    return AlohaSim(max_episode_steps=MAX_STEPS)


def run(sim, operator, seed, steps=MAX_STEPS, record=None, reset=True):
    """Control steps until the first success (None if none); ``record`` collects (measured, command)."""
    if reset:
        sim.reset(seed)
        operator.reset(seed)
    for _ in range(steps):
        measured = sim.joint_positions()
        command = operator.act(measured, sim.object_pose())
        if record is not None:
            record.append((measured, command))
        if sim.step(command).success:
            return sim.step_count
    return None


def wander(sim, rng, steps):
    """A bad policy: rate-limited drift towards random joint targets, grippers random."""
    command = sim.joint_positions()
    for i in range(steps):
        if i % 25 == 0:
            goal = np.clip(command + rng.normal(0, 0.5, 14), STATION.lower_array, STATION.upper_array)
            goal[[6, 13]] = rng.random(2)
        command = command + np.clip(goal - command, -STATION.max_step / 2, STATION.max_step / 2)
        sim.step(command)


def test_clean_operator_transfers_the_cube(sim):
    operator = ScriptedOperator(quality=1.0, seed=0, station=STATION)
    lengths = [run(sim, operator, seed) for seed in range(5)]
    assert sum(n is not None for n in lengths) >= 4, lengths
    assert max(n for n in lengths if n is not None) < 250, lengths
    # after the first success it finishes the handover: right hand open and away, left holds
    for _ in range(60):
        sim.step(operator.act(sim.joint_positions(), sim.object_pose()))
    assert sim.success and operator.phase == "done"


@pytest.mark.parametrize("quality", [1.0, 0.2])
def test_commands_respect_joint_and_velocity_limits(sim, quality):
    operator = ScriptedOperator(quality=quality, seed=3, station=STATION)
    record = []
    run(sim, operator, 3, steps=300, record=record)
    take_over = len(record)
    wander(sim, np.random.default_rng(1), 40)  # then a take-over from wherever the arms are
    operator.reset(4)
    run(sim, operator, 4, steps=100, record=record, reset=False)
    assert len(record) > take_over + 50
    measured = np.array([m for m, _ in record])
    commands = np.array([c for _, c in record])
    assert np.all(commands >= STATION.lower_array) and np.all(commands <= STATION.upper_array)
    steps = np.abs(np.diff(commands, axis=0))
    resets = {0, take_over}  # first command of an episode and of the take-over: from the measured joints
    for i in range(1, len(commands)):
        if i in resets:
            continue
        assert np.all(steps[i - 1] <= STATION.max_step), (i, steps[i - 1] / STATION.max_step)
    for i in resets:
        assert np.all(
            np.abs(commands[i] - np.clip(measured[i], STATION.lower_array, STATION.upper_array)) <= STATION.max_step
        )


def test_takes_over_after_a_bad_policy(sim):
    operator = ScriptedOperator(quality=1.0, station=STATION)
    successes = 0
    for seed in range(3):
        sim.reset(seed)
        wander(sim, np.random.default_rng(100 + seed), 80)
        operator.reset(seed)
        successes += run(sim, operator, seed, reset=False) is not None
    assert successes >= 2


def test_takes_over_after_arms_are_scrambled_mid_episode(sim):
    """Operator lifts the cube, someone shoves the arms (the cube may drop), the operator carries on."""
    operator = ScriptedOperator(quality=1.0, station=STATION)
    successes, disturbed = 0, 0
    for seed in range(3):
        rng = np.random.default_rng(200 + seed)
        run(sim, operator, seed, steps=60)
        lifted = sim.object_pose()[2]
        command = sim.joint_positions()
        goal = np.clip(command + rng.normal(0, 0.25, 14), STATION.lower_array, STATION.upper_array)
        goal[13] = 1.0  # the shove opens the right hand: the cube falls
        for _ in range(30):
            command = command + np.clip(goal - command, -STATION.max_step / 2, STATION.max_step / 2)
            sim.step(command)
        disturbed += sim.object_pose()[2] < lifted - 0.05
        start = sim.step_count
        successes += run(sim, operator, seed, reset=False) is not None  # same operator, stale memory
        assert sim.step_count - start <= MAX_STEPS
    assert disturbed >= 2, "the scramble should knock the cube out of the hand"
    assert successes >= 2


def test_lower_quality_takes_longer_and_fumbles(sim):
    def mean_length_and_fumbles(quality):
        operator = ScriptedOperator(quality=quality, station=STATION)
        lengths, fumbles = [], 0
        for seed in range(3):
            lengths.append(run(sim, operator, seed) or MAX_STEPS)  # a failure counts as the time limit
            fumbles += operator.fumbles
        return np.mean(lengths), fumbles

    clean, clean_fumbles = mean_length_and_fumbles(1.0)
    sloppy, sloppy_fumbles = mean_length_and_fumbles(0.2)
    assert sloppy > clean + 50, (clean, sloppy)
    assert clean_fumbles == 0 and sloppy_fumbles > 0


def test_deterministic_for_quality_and_seed(sim):
    def commands(seed):
        operator = ScriptedOperator(quality=0.5, seed=seed, station=STATION)
        record = []
        sim.reset(11)
        operator.reset(seed)
        for _ in range(120):
            command = operator.act(sim.joint_positions(), sim.object_pose())
            record.append(command)
            sim.step(command)
        return np.array(record)

    np.testing.assert_array_equal(commands(5), commands(5))
    assert not np.allclose(commands(5), commands(6))


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="quality"):
        ScriptedOperator(quality=1.5)
    with pytest.raises(ValueError, match="transfer_cube"):
        ScriptedOperator(task="fold_laundry")
    operator = ScriptedOperator()
    with pytest.raises(ValueError, match="joint_positions"):
        operator.act(np.zeros(13), np.zeros(7))
    with pytest.raises(ValueError, match="object_pose"):
        operator.act(np.zeros(14), np.array([0.0, 0.5, 0.02, np.nan, 0, 0, 0]))


@settings(max_examples=30, deadline=None)
@given(low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_style_gets_sloppier_as_quality_falls(low, high):
    low, high = sorted((low, high))
    worse, better = OperatorStyle.from_quality(low), OperatorStyle.from_quality(high)
    assert worse.speed <= better.speed
    assert worse.pause_probability >= better.pause_probability
    assert worse.tremor_rad >= better.tremor_rad
    assert worse.miss_probability >= better.miss_probability
    assert worse.drop_probability >= better.drop_probability
    clean = OperatorStyle.from_quality(1.0)
    assert clean.tremor_rad == clean.miss_probability == clean.drop_probability == clean.pause_probability == 0


# -- kinematics -----------------------------------------------------------------------------------
KINEMATICS = ArmKinematics()


@settings(max_examples=25, deadline=None)
@given(x=st.floats(-0.02, 0.2), y=st.floats(0.4, 0.6), z=st.floats(0.03, 0.25), yaw=st.floats(-np.pi, np.pi))
def test_ik_reaches_top_down_poses_over_the_table(x, y, z, yaw):
    target, rotation = np.array([x, y, z]), top_down_rotation(yaw)
    result = KINEMATICS.solve("right", target, rotation, np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0]))
    assert result.position_error < 2e-3 and result.rotation_error < 2e-2, result
    position, reached = KINEMATICS.grasp_frame("right", result.joints)
    np.testing.assert_allclose(position, target, atol=2e-3)
    assert np.all(result.joints >= KINEMATICS.lower["right"]) and np.all(result.joints <= KINEMATICS.upper["right"])


def test_ik_with_a_locked_joint_keeps_it_and_still_places_the_hand():
    target, rotation = np.array([-0.1, 0.5, 0.22]), horizontal_rotation(0.0, np.pi / 2)
    start = np.array([0.0, -0.3, 1.1, 0.15, -0.8, 1.5])  # forearm roll sagged to 0.15
    result = KINEMATICS.solve("left", target, rotation, start, locked=(3,), rotation_weight=0.05)
    assert result.joints[3] == pytest.approx(0.15)
    assert result.position_error < 1e-3 and result.rotation_error < 0.1
    free = KINEMATICS.solve("left", target, rotation, start)
    assert free.position_error < 1e-3 and free.rotation_error < 1e-2


def test_orientation_helpers():
    rotation = top_down_rotation(0.3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation[:, 0], [0, 0, -1])
    side = horizontal_rotation(0.0, np.pi / 2)
    np.testing.assert_allclose(side[:, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(side[:, 1], [0, 0, 1], atol=1e-12)  # fingers close vertically
    yaws, upright = box_side_yaws(np.array([np.cos(0.2), 0, 0, np.sin(0.2)]))  # cube turned 0.4 rad
    assert upright == pytest.approx(1.0)
    assert closest_symmetric_yaw(yaws, np.pi / 2, period=np.pi / 2) == pytest.approx(np.pi / 2 + 0.4)
    assert closest_symmetric_yaw(np.array([3.0]), 0.0) == pytest.approx(3.0 - np.pi)
