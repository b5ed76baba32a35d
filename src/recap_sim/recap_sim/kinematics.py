"""Forward and inverse kinematics of the two ViperX arms on a private copy of the model.

The scripted operator plans on its own ``MjModel``/``MjData`` (``mj_kinematics`` and ``mj_jac`` only),
so it never touches the simulator's state and the same code runs on measured joints from a real
station. Grasp frame of an arm: ``gripper_link``'s orientation (x towards the fingertips, y the
direction the fingers close) at the point ``GRASP_OFFSET`` m along x, between the finger pads.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from recap_sim.sim import model_path  # first: it picks the headless GL backend before mujoco loads

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

ARMS = ("left", "right")
GRASP_OFFSET = 0.13  # m along the gripper axis from gripper_link to the middle of the finger pads
_ARM_DOFS = {"left": np.arange(0, 6), "right": np.arange(8, 14)}  # qpos == dof index for the hinges


@dataclasses.dataclass(frozen=True)
class IKConfig:
    """Damped least squares settings; errors are in metres and radians."""

    iterations: int = 40
    damping: float = 0.02  # lambda of (J J^T + lambda^2 I)^-1, keeps steps finite near singularities
    rotation_weight: float = 0.25  # metres of position error one radian of orientation error is worth
    max_joint_step: float = 0.25  # rad per iteration, so a far target does not flip the elbow
    position_tolerance: float = 5e-4
    rotation_tolerance: float = 5e-3

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"IKConfig.iterations must be >= 1, got {self.iterations}")
        for name in ("damping", "rotation_weight", "max_joint_step", "position_tolerance", "rotation_tolerance"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IKConfig.{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class IKResult:
    joints: np.ndarray  # [6] arm joint angles (rad)
    position_error: float  # m, at the returned joints
    rotation_error: float  # rad


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``[3]`` axis * angle (world frame) that rotates ``current`` onto ``target`` (both [3, 3])."""
    quat_target, quat_current, quat_diff = np.empty(4), np.empty(4), np.empty(4)
    mujoco.mju_mat2Quat(quat_target, np.ascontiguousarray(target).ravel())
    mujoco.mju_mat2Quat(quat_current, np.ascontiguousarray(current).ravel())
    mujoco.mju_negQuat(quat_current, quat_current)
    mujoco.mju_mulQuat(quat_diff, quat_target, quat_current)
    velocity = np.empty(3)
    mujoco.mju_quat2Vel(velocity, quat_diff, 1.0)
    return velocity


class ArmKinematics:
    """Grasp-frame FK and 6-DoF IK for both arms, on the task's MJCF (arms are the same in both)."""

    def __init__(self, task: str = "transfer_cube", config: IKConfig = IKConfig()):
        self.model = mujoco.MjModel.from_xml_path(str(model_path(task)))
        self.data = mujoco.MjData(self.model)
        self.config = config
        self._body = {arm: self.model.body(f"vx300s_{arm}/gripper_link").id for arm in ARMS}
        self.lower = {arm: self.model.jnt_range[_ARM_DOFS[arm], 0].copy() for arm in ARMS}
        self.upper = {arm: self.model.jnt_range[_ARM_DOFS[arm], 1].copy() for arm in ARMS}
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def _set(self, arm: str, arm_joints: np.ndarray) -> None:
        self.data.qpos[_ARM_DOFS[arm]] = arm_joints
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # mj_jac reads the com-based dof axes

    def _frame(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        body = self._body[arm]
        rot = self.data.xmat[body].reshape(3, 3).copy()
        return self.data.xpos[body] + GRASP_OFFSET * rot[:, 0], rot

    def grasp_frame(self, arm: str, arm_joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``[3]`` grasp point, ``[3, 3]`` rotation, columns = gripper axes in world) for ``[6]`` joints."""
        self._set(arm, np.asarray(arm_joints, dtype=np.float64))
        return self._frame(arm)

    def solve(
        self,
        arm: str,
        target_position: np.ndarray,
        target_rotation: np.ndarray,
        initial_joints: np.ndarray,
        locked: Sequence[int] = (),
        rotation_weight: float | None = None,
    ) -> IKResult:
        """Joints ``[6]`` within limits that put the grasp frame at the target, from ``initial_joints``.

        ``locked``: indices (0..5) of joints held at their initial value, e.g. a joint that is known
        not to follow its command; the others make up for it as well as they can (with fewer than
        six free joints, a small ``rotation_weight`` favours the position over the orientation).
        Damped least squares keeps the closest reachable pose when the target is out of reach, so
        the caller checks ``position_error`` instead of catching an exception.
        """
        cfg = self.config
        free = np.setdiff1d(np.arange(6), np.asarray(locked, dtype=int))
        dofs = _ARM_DOFS[arm][free]
        lower, upper = self.lower[arm], self.upper[arm]
        joints = np.clip(np.asarray(initial_joints, dtype=np.float64), lower, upper)
        rotation_weight = cfg.rotation_weight if rotation_weight is None else rotation_weight
        weights = np.array([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])
        damping = cfg.damping**2 * np.eye(6)
        for _ in range(cfg.iterations):
            self._set(arm, joints)
            position, rotation = self._frame(arm)
            error_position = target_position - position
            error_rotation = rotation_error(target_rotation, rotation)
            if (
                np.linalg.norm(error_position) < cfg.position_tolerance
                and np.linalg.norm(error_rotation) < cfg.rotation_tolerance
            ):
                break
            mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, position, self._body[arm])
            jac = np.vstack([self._jacp[:, dofs], self._jacr[:, dofs]]) * weights[:, None]
            error = np.concatenate([error_position, error_rotation]) * weights
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping, error)
            largest = np.abs(step).max()
            if largest > cfg.max_joint_step:
                step *= cfg.max_joint_step / largest
            joints[free] = np.clip(joints[free] + step, lower[free], upper[free])
        self._set(arm, joints)
        position, rotation = self._frame(arm)
        return IKResult(
            joints,
            float(np.linalg.norm(target_position - position)),
            float(np.linalg.norm(rotation_error(target_rotation, rotation))),
        )


# -- grasp orientations ---------------------------------------------------------------------------
def top_down_rotation(yaw: float) -> np.ndarray:
    """``[3, 3]`` grasp frame pointing straight down, fingers closing along world ``(cos yaw, sin yaw, 0)``."""
    approach = np.array([0.0, 0.0, -1.0])
    fingers = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    return np.column_stack([approach, fingers, np.cross(approach, fingers)])


def horizontal_rotation(heading: float, roll: float) -> np.ndarray:
    """``[3, 3]`` grasp frame pointing along world ``(cos heading, sin heading, 0)``, rolled by ``roll``.

    roll 0 closes the fingers horizontally, roll +-pi/2 vertically (on the top and bottom faces).
    """
    approach = np.array([np.cos(heading), np.sin(heading), 0.0])
    side = np.array([-np.sin(heading), np.cos(heading), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    fingers = np.cos(roll) * side + np.sin(roll) * up
    return np.column_stack([approach, fingers, np.cross(approach, fingers)])


def quat_to_rotation(quat_wxyz: np.ndarray) -> np.ndarray:
    rot = np.empty(9)
    mujoco.mju_quat2Mat(rot, np.asarray(quat_wxyz, dtype=np.float64) / np.linalg.norm(quat_wxyz))
    return rot.reshape(3, 3)


def box_side_yaws(quat_wxyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Yaws (rad) of the box axes that lie closest to horizontal, and how upright the box is.

    A cube resting on any face has two horizontal axes; fingers closing along either grip two
    opposite faces. The second value is |cos| of the tilt of the most vertical axis (1 = flat).
    """
    rot = quat_to_rotation(quat_wxyz)
    vertical = int(np.argmax(np.abs(rot[2])))
    axes = [rot[:, i] for i in range(3) if i != vertical]
    return np.array([np.arctan2(a[1], a[0]) for a in axes]), float(abs(rot[2, vertical]))


def wrap_angle(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def closest_symmetric_yaw(candidates: np.ndarray, reference: float, period: float = np.pi) -> float:
    """The candidate yaw, shifted by multiples of ``period`` (finger symmetry), nearest ``reference``."""
    best, best_distance = float(reference), np.inf
    for yaw in np.atleast_1d(candidates):
        shifted = reference + ((yaw - reference + period / 2) % period - period / 2)
        distance = abs(shifted - reference)
        if distance < best_distance:
            best, best_distance = float(shifted), distance
    return best
