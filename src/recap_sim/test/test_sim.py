"""AlohaSim: shapes, seeding, control, validation, and fidelity to gym-aloha's task semantics."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede any mujoco import

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from recap_core.station import NUM_JOINTS, StationConfig  # noqa: E402
from recap_sim.sim import TASKS, AlohaSim, StepResult  # noqa: E402

CAMERAS = ("base", "left_wrist", "right_wrist")


@pytest.fixture(scope="module")
def sim():
    s = AlohaSim()
    yield s
    s.close()


def test_render_three_cameras_at_default_size(sim):
    sim.reset(0)
    images = sim.render()
    assert tuple(images) == CAMERAS == sim.camera_names
    for name, image in images.items():
        assert image.shape == (224, 224, 3), name
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        assert image.std() > 5, f"{name} looks blank"
    # the overhead view shows the red cube; the wrist views differ from it
    assert not np.array_equal(images["base"], images["left_wrist"])


def test_cameras_drawn_on_several_threads_are_the_images_one_thread_draws(sim):
    parallel = AlohaSim(render_threads=2)
    try:
        target = sim.joint_positions()
        target[1] += 0.3
        for seed in (0, 3):
            sim.reset(seed)
            parallel.reset(seed)
            for _ in range(5):
                sim.step(target)
                parallel.step(target)
            one, two = sim.render(), parallel.render()
            assert list(two) == list(one) == list(CAMERAS)
            for name in CAMERAS:
                assert np.array_equal(one[name], two[name]), name
        subset = parallel.render(["right_wrist", "base"])
        assert list(subset) == ["right_wrist", "base"] and np.array_equal(subset["base"], one["base"])
        with pytest.raises(ValueError, match="unknown cameras"):
            parallel.render(["nose"])
        assert parallel.render_threads == 2 and AlohaSim(cameras={"base": "top"}, render_threads=4).render_threads == 1
        with pytest.raises(ValueError, match="render_threads"):
            AlohaSim(render_threads=0)
        threads = parallel._pool.threads
        assert len(threads) == 2 and all(t.is_alive() for t in threads)
    finally:
        parallel.close()
    assert not any(t.is_alive() for t in threads), "a render thread outlived close()"


def test_render_non_default_size_and_subset():
    s = AlohaSim(cameras={"front": "angle", "base": "top"}, width=160, height=96)
    try:
        images = s.render(["front"])
        assert list(images) == ["front"]
        assert images["front"].shape == (96, 160, 3) and images["front"].dtype == np.uint8
        with pytest.raises(ValueError, match="unknown cameras"):
            s.render(["left_wrist"])
    finally:
        s.close()


def test_render_larger_than_the_model_framebuffer():
    s = AlohaSim(cameras={"base": "top"}, width=800, height=600)  # MJCF offscreen buffer is 640x480
    try:
        assert s.render()["base"].shape == (600, 800, 3)
    finally:
        s.close()


def test_render_tracks_the_state(sim):
    sim.reset(0)
    before = sim.render(["right_wrist"])["right_wrist"]
    target = sim.joint_positions()
    target[7] += 0.4  # right waist
    for _ in range(40):
        sim.step(target)
    after = sim.render(["right_wrist"])["right_wrist"]
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 2


def test_same_seed_same_start_different_seeds_differ(sim):
    sim.reset(7)
    pose_a, joints_a = sim.object_pose(), sim.joint_positions()
    sim.step(joints_a)
    sim.reset(7)
    np.testing.assert_array_equal(sim.object_pose(), pose_a)
    np.testing.assert_array_equal(sim.joint_positions(), joints_a)
    assert sim.step_count == 0 and sim.reward == 0.0 and not sim.success
    sim.reset(8)
    assert not np.allclose(sim.object_pose()[:3], pose_a[:3])


_SHARED: list[AlohaSim] = []


def _shared_sim() -> AlohaSim:
    if not _SHARED:
        _SHARED.append(AlohaSim())
    return _SHARED[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_cube_placed_in_gym_aloha_range(seed):
    sim = _shared_sim()
    sim.reset(seed)
    pose = sim.object_pose()
    assert pose.shape == (7,)
    assert 0.0 <= pose[0] <= 0.2 and 0.4 <= pose[1] <= 0.6
    np.testing.assert_allclose(pose[3:], [1, 0, 0, 0])


def test_same_actions_reproduce_the_trajectory():
    a, b = AlohaSim(), AlohaSim()
    a.reset(3), b.reset(3)
    rng = np.random.default_rng(0)
    start = a.joint_positions()
    for _ in range(30):
        action = start + rng.normal(0, 0.1, NUM_JOINTS)
        a.step(action), b.step(action)
    np.testing.assert_array_equal(a.data.qpos, b.data.qpos)


def test_start_state_in_the_action_convention(sim):
    sim.reset(0)
    q = sim.joint_positions()
    assert q.shape == (NUM_JOINTS,) and q.dtype == np.float64
    np.testing.assert_allclose(q[[0, 1, 2, 7, 8, 9]], [0, -0.96, 1.16, 0, -0.96, 1.16])
    assert 0.0 < q[6] < 0.2 and 0.0 < q[13] < 0.2  # gym-aloha starts with the fingers nearly shut
    assert sim.joint_velocities().shape == (NUM_JOINTS,)
    station = StationConfig.sim_aloha()
    assert np.all(q >= station.lower_array) and np.all(q <= station.upper_array)


def test_stepping_toward_a_target_moves_the_joints_toward_it(sim):
    sim.reset(1)
    start = sim.joint_positions()
    target = start.copy()
    target[[0, 1, 4, 8, 11]] += [0.3, 0.2, -0.3, -0.2, 0.3]
    target[[6, 13]] = 1.0  # open both grippers
    for _ in range(60):
        result = sim.step(target)
    end = sim.joint_positions()
    moved = [0, 1, 4, 6, 8, 11, 13]
    assert np.all(np.abs(end - target)[moved] < 0.2 * np.abs(start - target)[moved])
    np.testing.assert_allclose(end[moved], target[moved], atol=0.05)
    still = [2, 3, 5, 7, 9, 10, 12]
    np.testing.assert_allclose(end[still], start[still], atol=0.02)  # the others hold
    assert end[6] > 0.9 and end[13] > 0.9
    assert np.abs(sim.joint_velocities()[moved]).max() < 0.5  # settled (grippers in normalised units/s)
    assert isinstance(result, StepResult) and result.step == sim.step_count == 60


def test_truncated_at_the_time_limit():
    s = AlohaSim(max_episode_steps=3)
    hold = s.joint_positions()
    assert [s.step(hold).truncated for _ in range(4)] == [False, False, True, True]
    s.reset(0)
    assert not s.step(hold).truncated


@pytest.mark.parametrize(
    "bad", [np.zeros(13), np.zeros(15), np.zeros((2, 14)), [np.nan] + [0.0] * 13, [0.0] * 13 + [np.inf]]
)
def test_invalid_action_raises(sim, bad):
    sim.reset(0)
    with pytest.raises(ValueError, match="action"):
        sim.step(bad)
    assert sim.step_count == 0  # nothing was applied


def test_constructor_errors_say_what_to_do():
    with pytest.raises(ValueError, match="transfer_cube"):
        AlohaSim("pick_banana")
    with pytest.raises(ValueError, match="top"):
        AlohaSim(cameras={"base": "ceiling"})
    with pytest.raises(ValueError, match="seed"):
        AlohaSim().reset(-1)


def test_insertion_constructs_and_steps():
    s = AlohaSim("insertion", cameras={"base": "top"}, width=64, height=48)
    try:
        s.reset(2)
        peg, socket = s.object_pose(), s.socket_pose()
        assert 0.1 <= peg[0] <= 0.2 and -0.2 <= socket[0] <= -0.1
        hold = s.joint_positions()
        for _ in range(10):
            result = s.step(hold)
        assert result.reward == 0.0 and not result.success
        assert s.render()["base"].shape == (48, 64, 3)
    finally:
        s.close()
    assert set(TASKS) == {"transfer_cube", "insertion"}


@pytest.mark.parametrize("task", TASKS)
def test_matches_gym_aloha_physics_and_reward(task):
    """Same start, same actions: identical state and reward to gym-aloha's dm_control task."""
    from dm_control import mujoco as dm_mujoco
    from gym_aloha.tasks import sim as aloha_tasks

    from recap_sim.operator import ScriptedOperator
    from recap_sim.sim import initial_object_qpos, model_path

    ours = AlohaSim(task)
    ours.reset(5)
    physics = dm_mujoco.Physics.from_xml_path(str(model_path(task)))
    aloha_tasks.BOX_POSE[0] = initial_object_qpos(task, 5)
    reference = (aloha_tasks.TransferCubeTask if task == "transfer_cube" else aloha_tasks.InsertionTask)()
    reference.initialize_episode(physics)
    # The operator drives the cube through rewards 0..4; for insertion it just moves the arms.
    operator = ScriptedOperator() if task == "transfer_cube" else None
    rewards = set()
    for step in range(150 if operator else 40):
        q = ours.joint_positions()
        action = operator.act(q, ours.object_pose()) if operator else q + 0.2 * np.sin(step / 10 + np.arange(14))
        ours.step(action)
        reference.before_step(action, physics)
        physics.step(ours.n_substeps)
        np.testing.assert_array_equal(physics.data.qpos, ours.data.qpos)
        assert reference.get_reward(physics) == ours.reward
        rewards.add(ours.reward)
    if operator:
        assert {0, 2, 4} <= rewards, rewards


def test_render_meshes_are_simplified_for_the_cameras_only(sim):
    from recap_sim.render_mesh import render_model

    light = render_model(sim.model, 0.002)
    assert light.nmesh == sim.model.nmesh
    assert light.mesh_facenum.sum() < 0.5 * sim.model.mesh_facenum.sum()
    for mesh in range(light.nmesh):
        faces = light.mesh_face[light.mesh_faceadr[mesh] : light.mesh_faceadr[mesh] + light.mesh_facenum[mesh]]
        assert faces.min() >= 0 and faces.max() < light.mesh_vertnum[mesh]
        assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    # the physics model is untouched: same triangles, same vertices
    assert sim.model.mesh_facenum.sum() == 30296
    np.testing.assert_array_equal(render_model(sim.model, 0).mesh_face, sim.model.mesh_face)
    with pytest.raises(ValueError, match="cell"):
        render_model(sim.model, -1.0)


def test_simplified_meshes_render_the_same_images():
    full, light = AlohaSim(render_mesh_cell=0), AlohaSim()
    try:
        for seed in (0, 7):
            full.reset(seed), light.reset(seed)
            start = full.joint_positions()
            for _ in range(40):  # arms moved off the start pose
                full.step(start + 0.2), light.step(start + 0.2)
            a, b = full.render(), light.render()
            assert light.render_model.mesh_facenum.sum() < 0.5 * full.render_model.mesh_facenum.sum()
            for cam in CAMERAS:
                diff = np.abs(a[cam].astype(np.int16) - b[cam].astype(np.int16))
                assert diff.mean() < 0.5, (seed, cam, diff.mean())
                assert (diff.max(-1) > 32).mean() < 0.005, (seed, cam)
    finally:
        full.close(), light.close()
    with pytest.raises(ValueError, match="render_mesh_cell"):
        AlohaSim(render_mesh_cell=float("nan"))
