"""The simulated bimanual ALOHA station without ROS: gym-aloha's tasks driven on MuJoCo directly.

:class:`AlohaSim` reproduces gym-aloha's task semantics exactly but steps physics alone and renders
only the cameras asked for, so a station runs in real time on CPU cores. docs/operator.md describes it.
"""

from __future__ import annotations

import dataclasses
import numbers
import queue
import threading
import os
from typing import Mapping, Sequence

os.environ.setdefault("MUJOCO_GL", "egl")  # stations are headless; set MUJOCO_GL=glfw for a window

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gym_aloha.constants import (
    ASSETS_DIR,
    DT,
    START_ARM_POSE,
    normalize_puppet_gripper_position,  # noqa: E402
    normalize_puppet_gripper_velocity,
    unnormalize_puppet_gripper_position,
)
from gym_aloha.utils import sample_box_pose, sample_insertion_pose  # noqa: E402

from recap_core.station import NUM_JOINTS  # noqa: E402
from recap_sim.render_mesh import render_model  # noqa: E402

#: task name -> gym-aloha MJCF file.
TASK_XML = {"transfer_cube": "bimanual_viperx_transfer_cube.xml", "insertion": "bimanual_viperx_insertion.xml"}
TASKS = tuple(TASK_XML)
#: station camera -> MuJoCo camera, as on the real ALOHA (one overhead, one per wrist).
DEFAULT_RENDER_MESH_CELL = 0.002  # m: mesh detail finer than this is not drawn (about 2x faster, same images)
DEFAULT_CAMERAS: Mapping[str, str] = {"base": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
MAX_REWARD = 4

# qpos layout of the arm model: per arm 6 joints then the two finger slides (the second mirrors the
# first), then the free joint(s) of the object(s).
_ARM_QPOS = (slice(0, 6), slice(8, 14))
_FINGER_QPOS = (6, 14)
_OBJECT_QPOS = 16


def model_path(task: str):
    """Path of gym-aloha's MJCF for ``task``, or ValueError listing the tasks."""
    if task not in TASK_XML:
        raise ValueError(f"unknown task {task!r}: choose one of {list(TASKS)}")
    return ASSETS_DIR / TASK_XML[task]


@dataclasses.dataclass(frozen=True)
class StepResult:
    """Outcome of one control step."""

    reward: float  # 0..4, gym-aloha's staged reward for the state after the step
    success: bool  # reward == 4
    step: int  # control steps since reset, this one included
    truncated: bool  # step >= max_episode_steps


class _ContactReward:
    """gym-aloha's staged contact reward, with geom ids looked up once instead of per contact.

    transfer_cube: 1 right finger touches the cube, 2 ... and the cube is off the table, 3 the left
    finger touches it, 4 ... and it is off the table. insertion: 1 both grippers touch their object,
    2 ... both off the table, 3 peg touches the socket off the table, 4 peg touches the pin.
    """

    def __init__(self, model: mujoco.MjModel, task: str):
        def gid(name: str) -> int:
            i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if i < 0:
                raise ValueError(f"geom {name!r} missing from the {task} model")
            return i

        self.task = task
        self.table = gid("table")
        self.left_finger = gid("vx300s_left/10_left_gripper_finger")
        self.right_finger = gid("vx300s_right/10_right_gripper_finger")
        if task == "transfer_cube":
            self.cube = gid("red_box")
        else:
            self.peg = gid("red_peg")
            self.pin = gid("pin")
            self.socket = frozenset(gid(f"socket-{k}") for k in range(1, 5))

    def __call__(self, data: mujoco.MjData) -> int:
        n = data.ncon
        pairs = set(zip(data.contact.geom1[:n].tolist(), data.contact.geom2[:n].tolist()))
        # gym-aloha matches ordered (geom1, geom2) pairs; MuJoCo orders them by body, so keep the order.
        if self.task == "transfer_cube":
            right = (self.cube, self.right_finger) in pairs
            left = (self.cube, self.left_finger) in pairs
            on_table = (self.cube, self.table) in pairs
            reward = 0
            if right:
                reward = 1
            if right and not on_table:
                reward = 2
            if left:
                reward = 3
            if left and not on_table:
                reward = 4
            return reward
        right = (self.peg, self.right_finger) in pairs
        left = any((s, self.left_finger) in pairs for s in self.socket)
        peg_on_table = (self.peg, self.table) in pairs
        socket_on_table = any((s, self.table) in pairs for s in self.socket)
        peg_in_socket = any((self.peg, s) in pairs for s in self.socket)
        reward = 0
        if left and right:
            reward = 1
        if left and right and not peg_on_table and not socket_on_table:
            reward = 2
        if peg_in_socket and not peg_on_table and not socket_on_table:
            reward = 3
        if (self.peg, self.pin) in pairs:
            reward = 4
        return reward


def initial_object_qpos(task: str, seed: int) -> np.ndarray:
    """``[7]`` (cube) or ``[14]`` (peg, socket) free-joint poses gym-aloha places for ``seed``."""
    if task == "transfer_cube":
        return np.asarray(sample_box_pose(seed), dtype=np.float64)
    return np.concatenate(sample_insertion_pose(seed)).astype(np.float64)


class AlohaSim:
    """One simulated bimanual station: physics at 50 Hz, rendering on demand.

    Loads gym-aloha's MJCF (two ViperX 300s arms, a table, the cube or the peg and socket) and
    reproduces its task semantics -- start pose, seeded object placement (``gym_aloha.utils.sample_*_pose``),
    14-dim absolute joint-position action with grippers normalised 0 (closed) .. 1 (open), 10 physics
    substeps per 50 Hz control step, reward 0..4 from contacts and success at reward 4 -- but drives
    MuJoCo directly: gym-aloha's env renders three 480x640 images with shadows on every step (6-8
    steps/s), while here physics runs alone (thousands of steps/s) and :meth:`render` draws only the
    cameras asked for, at the station's size, without shadows, from meshes simplified for the cameras
    only (``render_mesh``: same images, half the software-GL time). The object placement is a pure
    function of the seed, so unlike gym-aloha (module-level ``BOX_POSE``) several sims can live in one
    process.
    """

    def __init__(
        self,
        task: str = "transfer_cube",
        cameras: Mapping[str, str] = DEFAULT_CAMERAS,
        width: int = 224,
        height: int = 224,
        max_episode_steps: int = 400,
        render_mesh_cell: float = DEFAULT_RENDER_MESH_CELL,
        render_threads: int = 1,
    ):
        self.model = mujoco.MjModel.from_xml_path(str(model_path(task)))
        self.data = mujoco.MjData(self.model)
        self.task = task
        if not (
            isinstance(width, numbers.Integral) and isinstance(height, numbers.Integral) and width > 0 and height > 0
        ):
            raise ValueError(f"image size must be positive integers, got width={width!r} height={height!r}")
        width, height = int(width), int(height)
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        model_cameras = [self.model.camera(i).name for i in range(self.model.ncam)]
        unknown = {s: m for s, m in cameras.items() if m not in model_cameras}
        if unknown:
            raise ValueError(f"cameras {unknown} name no camera of the model: choose among {model_cameras}")
        if not cameras:
            raise ValueError("give at least one camera (station name -> model camera)")
        self.cameras = dict(cameras)
        self.camera_names: tuple[str, ...] = tuple(self.cameras)
        self.width, self.height = width, height
        self.max_episode_steps = int(max_episode_steps)
        if not (isinstance(render_mesh_cell, numbers.Real) and 0 <= render_mesh_cell < 0.05):
            raise ValueError(f"render_mesh_cell must be in [0, 0.05) m (0 = full meshes), got {render_mesh_cell!r}")
        self.render_mesh_cell = float(render_mesh_cell)
        if not (isinstance(render_threads, numbers.Integral) and render_threads >= 1):
            raise ValueError(f"render_threads must be an integer >= 1, got {render_threads!r}")
        # more threads than cameras would have nothing to draw
        self.render_threads = min(int(render_threads), len(self.camera_names))
        self._pool: _RenderPool | None = None
        self.dt: float = DT
        self.n_substeps = int(round(DT / self.model.opt.timestep))  # 10 at MuJoCo's 2 ms
        self._reward_fn = _ContactReward(self.model, task)
        self._renderer: mujoco.Renderer | None = None
        self.render_model: mujoco.MjModel | None = None  # what the cameras draw, made with the renderer
        self.step_count = 0
        self.reward = 0.0
        self.success = False
        self.seed: int | None = None
        self.reset(0)

    # -- episode ----------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Arms to gym-aloha's start pose, object(s) where gym-aloha puts them for ``seed``."""
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy RandomState), got {seed}")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:_OBJECT_QPOS] = START_ARM_POSE
        self.data.ctrl[:] = START_ARM_POSE
        objects = initial_object_qpos(self.task, seed)
        self.data.qpos[_OBJECT_QPOS : _OBJECT_QPOS + objects.size] = objects
        # Same ordering as dm_control's Physics.step: positions, contacts and sensors are computed
        # for the state the caller sees, so reward, poses and images agree with each other.
        mujoco.mj_forward(self.model, self.data)
        self.seed = seed
        self.step_count = 0
        self.reward = 0.0
        self.success = False

    def step(self, action: np.ndarray) -> StepResult:
        """Apply ``action`` [14] (arm joints in rad, grippers 0 closed .. 1 open) for one 20 ms step."""
        target = np.asarray(action, dtype=np.float64)
        if target.shape != (NUM_JOINTS,):
            raise ValueError(
                f"action has shape {target.shape}, expected ({NUM_JOINTS},): "
                "6 left arm joints, left gripper, 6 right arm joints, right gripper"
            )
        if not np.all(np.isfinite(target)):
            bad = np.flatnonzero(~np.isfinite(target)).tolist()
            raise ValueError(f"action has non-finite entries at indices {bad}: send 14 finite joint targets")
        ctrl = self.data.ctrl
        for arm, (arm_qpos, finger) in enumerate(zip(_ARM_QPOS, _FINGER_QPOS)):
            ctrl[arm_qpos] = target[7 * arm : 7 * arm + 6]
            finger_target = unnormalize_puppet_gripper_position(target[7 * arm + 6])
            ctrl[finger], ctrl[finger + 1] = finger_target, -finger_target
        # dm_control's split step: mj_step2 finishes the step whose positions the last mj_step1
        # computed, then whole steps, then mj_step1 so contacts match the final state.
        mujoco.mj_step2(self.model, self.data)
        if self.n_substeps > 1:
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps - 1)
        mujoco.mj_step1(self.model, self.data)
        self.step_count += 1
        self.reward = float(self._reward_fn(self.data))
        self.success = self.reward >= MAX_REWARD
        return StepResult(self.reward, self.success, self.step_count, self.step_count >= self.max_episode_steps)

    # -- state ------------------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        """``[14]`` float64 in the action convention (grippers normalised 0 closed .. 1 open)."""
        q = self.data.qpos
        out = np.empty(NUM_JOINTS)
        for arm, (arm_qpos, finger) in enumerate(zip(_ARM_QPOS, _FINGER_QPOS)):
            out[7 * arm : 7 * arm + 6] = q[arm_qpos]
            out[7 * arm + 6] = normalize_puppet_gripper_position(q[finger])
        return out

    def joint_velocities(self) -> np.ndarray:
        """``[14]`` float64: rad/s for arm joints, normalised gripper units/s."""
        v = self.data.qvel
        out = np.empty(NUM_JOINTS)
        for arm, (arm_qpos, finger) in enumerate(zip(_ARM_QPOS, _FINGER_QPOS)):
            out[7 * arm : 7 * arm + 6] = v[arm_qpos]  # hinge joints: qvel index == qpos index here
            out[7 * arm + 6] = normalize_puppet_gripper_velocity(v[finger])
        return out

    def object_pose(self) -> np.ndarray:
        """``[7]`` xyz (m, world) + quaternion wxyz of the cube (insertion: the peg)."""
        return self.data.qpos[_OBJECT_QPOS : _OBJECT_QPOS + 7].copy()

    def socket_pose(self) -> np.ndarray:
        """``[7]`` pose of the socket (insertion only)."""
        if self.task != "insertion":
            raise ValueError(f"socket_pose exists only for the insertion task, this sim runs {self.task!r}")
        return self.data.qpos[_OBJECT_QPOS + 7 : _OBJECT_QPOS + 14].copy()

    # -- images -----------------------------------------------------------------------------
    def render(self, cameras: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{station camera: [H, W, 3] uint8}`` of the current state, for ``cameras`` (default all)."""
        names = self.camera_names if cameras is None else tuple(cameras)
        unknown = [c for c in names if c not in self.cameras]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}: this sim renders {list(self.camera_names)}")
        if self.render_threads > 1:
            if self._pool is None:
                self._get_renderer()  # the render model, made once
                self._pool = _RenderPool(self, self.render_threads)
            return self._pool.render(names)
        renderer = self._get_renderer()
        images = {}
        for name in names:
            renderer.update_scene(self.data, camera=self.cameras[name])
            images[name] = np.ascontiguousarray(renderer.render())
        return images

    def new_renderer(self) -> mujoco.Renderer:
        """A renderer of the cameras' model at the image size, shadows and reflections off (its GL context is
        current on the calling thread)."""
        renderer = mujoco.Renderer(self.render_model, height=self.height, width=self.width)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return renderer

    def _get_renderer(self) -> mujoco.Renderer:
        # Created on first use so physics-only users (tests, evaluation) never need an OpenGL context.
        if self._renderer is None:
            vis = self.model.vis
            vis.quality.offsamples = 0  # no multisampling: ~2x faster, small images gain nothing
            vis.global_.offwidth = max(vis.global_.offwidth, self.width)
            vis.global_.offheight = max(vis.global_.offheight, self.height)
            # lighter meshes for the GL context only (see render_mesh); physics stays on self.model
            self.render_model = render_model(self.model, self.render_mesh_cell)
            self._renderer = self.new_renderer()
        return self._renderer

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __del__(self):  # the GL context is a process resource; free it with the sim
        try:
            self.close()
        except Exception:
            pass


class _RenderPool:
    """Cameras drawn on ``threads`` threads at once, each with a renderer (and GL context) of its own, created,
    used and closed on that thread. Camera i is always drawn by thread i mod ``threads``. With llvmpipe a
    frame's vertex work runs on the thread that draws it, so two threads on two cores draw three 224x224
    cameras in about 3 ms instead of 4.5 (docs/benchmarks.md, ``station``). :meth:`render` returns when every
    camera is drawn: the caller does not step the physics meanwhile, so every image shows the same state."""

    def __init__(self, sim: AlohaSim, threads: int):
        self.sim = sim
        self.jobs = [queue.SimpleQueue() for _ in range(threads)]
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, args=(jobs,), name=f"sim_render_{i}", daemon=True)
            for i, jobs in enumerate(self.jobs)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self, jobs: queue.SimpleQueue) -> None:
        renderer = None
        try:
            while True:
                names = jobs.get()
                if names is None:
                    return
                try:
                    if renderer is None:
                        renderer = self.sim.new_renderer()
                    images = {}
                    for name in names:
                        renderer.update_scene(self.sim.data, camera=self.sim.cameras[name])
                        images[name] = np.ascontiguousarray(renderer.render())
                    self.done.put(images)
                except Exception as exc:  # the caller raises it
                    self.done.put(exc)
        finally:
            if renderer is not None:
                renderer.close()

    def render(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        order = {name: self.sim.camera_names.index(name) for name in names}
        shares = [[n for n in names if order[n] % len(self.jobs) == i] for i in range(len(self.jobs))]
        busy = 0
        for jobs, share in zip(self.jobs, shares):
            if share:
                jobs.put(share)
                busy += 1
        images, error = {}, None
        for _ in range(busy):
            result = self.done.get()
            if isinstance(result, Exception):
                error = error or result
            else:
                images.update(result)
        if error is not None:
            raise error
        return {name: images[name] for name in names}

    def close(self) -> None:
        for jobs in self.jobs:
            jobs.put(None)
        for thread in self.threads:
            thread.join(timeout=5.0)
