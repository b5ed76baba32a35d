"""The scripted operator of the simulated station: a closed-loop teleoperator for the cube transfer.

Every call reads the measured joints and the cube pose, works out where the cube is and plans from
there, so it can take over from any state a policy left behind; ``quality`` sets how clean and fast it
is. docs/operator.md has its phases, recoveries, motion and quality levels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recap_core.station import StationConfig, check_joint_vector
from recap_sim.kinematics import (
    ArmKinematics,
    box_side_yaws,
    closest_symmetric_yaw,
    horizontal_rotation,
    top_down_rotation,
)

TASKS = ("transfer_cube",)
HANDOVER_POINT = np.array([0.0, 0.5, 0.22])  # cube centre during the handover (m, world)
HOVER_HEIGHT = 0.08  # grasp point above the cube centre before descending (tips 3 cm above the top)
GRASP_HEIGHT = 0.012  # grasp point above the cube centre when closing (tips clear the table)
LEFT_BACKOFF = 0.10  # left grasp point this far behind (-x) the cube before sliding in
LEFT_WAIT_BACKOFF = 0.20  # ... and while the right arm picks, clear of its work space
LEFT_PICKS_BELOW_X = -0.06  # m: a cube further left is out of the right arm's top-down reach
POSITION_TOLERANCE = 0.012  # m: close enough to a grasp pose to close the fingers
OPEN_ENOUGH = 0.85  # measured opening (0..1) above which fingers clear the cube
HOLDING = (0.3, 0.72)  # measured opening while closed on the 4 cm cube (about 0.61)
HOLDING_TILTED = 0.9  # ... up to this across a tilted cube, once the fingers stopped closing
TRACKING_TOLERANCE = 0.1  # rad: a previous command further than this from the arm is stale
LIFTED_HEIGHT = 0.05  # cube centre above this (m) is off the table (it rests at 0.02)
STILL_SPEED = 0.001  # m per step (5 cm/s): the cube or a hand is still below this
STRAIGHT_LOOKAHEAD = 0.02  # m: carrot distance along straight-line moves
GRASP_PATIENCE = 40  # steps closing without a hold before letting go and retrying
HOME_ARM = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])  # gym-aloha's start pose of one arm
_ARM_SLICE = {"left": slice(0, 6), "right": slice(7, 13)}
_GRIPPER_INDEX = {"left": 6, "right": 13}
FOREARM_ROLL = 3  # index in an arm's 6 joints
FOREARM_SLACK = 0.02  # rad the forearm roll may lag before the other joints make up for it
_GRASP_PHASES = {"left": ("handover_grasp", "catch", "left_grasp"), "right": ("grasp",)}
AIRBORNE_PATIENCE = 15  # steps a free cube may stay above the table before it counts as stuck on an arm


@dataclasses.dataclass(frozen=True)
class OperatorStyle:
    """How a teleoperator of a given quality moves; see ``from_quality``."""

    speed: float  # cruise speed as a fraction of the station's max joint step
    speed_spread: float  # each move runs at speed * U(1 - spread, 1)
    pause_probability: float  # chance of hesitating when the phase changes
    pause_steps: tuple[int, int]
    pause_hazard: float  # chance per step of freezing mid-move
    tremor_rad: float  # stationary std of the low-pass noise on the arm targets
    miss_probability: float  # a grasp closes too early, on air
    drop_probability: float  # the carried cube is let go before the handover

    def __post_init__(self):
        if not 0 < self.speed <= 1:
            raise ValueError(f"OperatorStyle.speed must be in (0, 1] (fraction of max_step), got {self.speed}")
        for name in ("speed_spread", "pause_probability", "pause_hazard", "miss_probability", "drop_probability"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"OperatorStyle.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.tremor_rad < 0:
            raise ValueError(f"OperatorStyle.tremor_rad must be >= 0, got {self.tremor_rad}")
        low, high = self.pause_steps
        if not 0 <= low <= high:
            raise ValueError(
                f"OperatorStyle.pause_steps must be (low, high) with 0 <= low <= high, got {self.pause_steps}"
            )

    @classmethod
    def from_quality(cls, quality: float) -> "OperatorStyle":
        """1.0: clean and fast. Every sloppiness grows linearly as quality falls to 0."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1] (1 = cleanest operator, 0 = sloppiest), got {quality}")
        sloppiness = 1.0 - quality
        return cls(
            speed=0.7 - 0.25 * sloppiness,
            speed_spread=0.4 * sloppiness,
            pause_probability=0.4 * sloppiness,
            pause_steps=(3, 3 + int(round(20 * sloppiness))),
            pause_hazard=0.004 * sloppiness,
            tremor_rad=0.015 * sloppiness,
            miss_probability=0.5 * sloppiness,
            drop_probability=0.45 * sloppiness,
        )


@dataclasses.dataclass
class ArmGoal:
    """What one arm should do this step: a grasp-frame pose, joint angles, or stay put."""

    position: np.ndarray | None = None  # [3] grasp point (m, world)
    rotation: np.ndarray | None = None  # [3, 3] grasp frame
    joints: np.ndarray | None = None  # [6] used when position is None
    gripper: float = 1.0  # 0 closed .. 1 open
    fine: bool = False  # near contact: half speed
    straight: bool = False  # along a straight line (descend, slide in, lift)
    loaded: bool = False  # carrying the cube: gently, the fingers hold it by friction

    @classmethod
    def stay(cls, gripper: float) -> "ArmGoal":
        return cls(gripper=gripper)


@dataclasses.dataclass
class Scene:
    """What the operator perceives in one call."""

    cube: np.ndarray  # [3] cube centre
    cube_quat: np.ndarray  # [4] wxyz
    grasp_point: dict[str, np.ndarray]  # arm -> [3]
    grasp_rotation: dict[str, np.ndarray]  # arm -> [3, 3]
    opening: dict[str, float]  # arm -> measured gripper opening 0..1
    offset: dict[str, np.ndarray]  # arm -> [3] cube centre in the grasp frame
    in_hand: dict[str, bool]  # arm -> the cube sits closed between these fingers
    cube_speed: float  # m the cube moved since the previous call
    hand_speed: dict[str, float]  # arm -> m the grasp point moved since the previous call

    @property
    def lifted(self) -> bool:
        return bool(self.cube[2] > LIFTED_HEIGHT)


def cube_in_hand(offset: np.ndarray, opening: float, stopped_closed: bool = False) -> bool:
    """The cube centre lies between the pads (it may hang a little below) and the fingers press on it.

    ``offset`` [3]: cube centre in the grasp frame (along the gripper, along the fingers, sideways);
    ``stopped_closed``: the fingers are commanded shut and have stopped moving, so a wider opening
    also counts as a hold (a cube lying tilted, gripped across an edge).
    """
    along, across, side = offset
    pressed = HOLDING[0] < opening < HOLDING[1] or (HOLDING[0] < opening < HOLDING_TILTED and stopped_closed)
    return bool(-0.03 < along < 0.045 and abs(across) < 0.02 and abs(side) < 0.03 and pressed)


def cube_catchable(offset: np.ndarray) -> bool:
    """The cube sits between open pads (inner faces 35 mm from the axis, cube half width 20 mm)."""
    along, across, side = offset
    return bool(-0.025 < along < 0.03 and abs(across) < 0.015 and abs(side) < 0.015)


class ScriptedOperator:
    """Next absolute joint target ``[14]`` from the measured joints ``[14]`` and the cube pose ``[7]``.

    Targets are grasp-frame poses turned into joint angles by damped least squares on a private
    kinematic model (``kinematics.py``); the command moves towards the solution at a bounded joint
    speed, so every output is within the station's joint limits and one control period's ``max_step``
    of the previous output. Its memory is what an operator keeps: its own last command, the
    sloppiness it drew for the current move, and whether it just fumbled a grasp. Deterministic for a
    given (quality, seed) and the same observations.
    """

    def __init__(
        self, task: str = "transfer_cube", quality: float = 1.0, seed: int = 0, station: StationConfig | None = None
    ):
        if task not in TASKS:
            raise ValueError(
                f"the scripted operator solves {list(TASKS)}, not {task!r}: drive other tasks "
                "by teleoperation or a policy"
            )
        self.task = task
        self.quality = float(quality)
        self.style = OperatorStyle.from_quality(self.quality)
        self.station = station if station is not None else StationConfig.sim_aloha()
        self.kinematics = ArmKinematics(task)
        self._lower, self._upper = self.station.lower_array, self.station.upper_array
        # Strictly inside the limit so float round-off downstream never reads as a violation.
        self._max_step = self.station.max_step * 0.999
        self._seed = int(seed)
        self.reset(seed)

    # -- episode ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Forget the last command and fumbles; ``seed`` (default: the constructor's) fixes the style draws."""
        self._seed = self._seed if seed is None else int(seed)
        self._rng = np.random.default_rng([self._seed, int(round(self.quality * 1_000_000))])
        self._command: np.ndarray | None = None
        self._ik_seed: dict[str, np.ndarray] = {}
        self._tremor = np.zeros(12)
        self._pause_left = 0
        self._move_speed = 1.0
        self._early_close = 0.0  # m above the grasp height at which a fumbled grasp closes
        self._left_short = 0.0  # m short of the cube at which a fumbled left grasp closes
        self._drop_countdown: int | None = None
        self._dropping = False
        self._closing = {"left": False, "right": False}
        self._reopening = {"left": False, "right": False}
        self.phase = "idle"
        self._phase_steps = 0
        self._airborne_steps = 0
        self._last_cube: np.ndarray | None = None
        self._last_opening: dict[str, float] = {}
        self._last_point: dict[str, np.ndarray] = {}
        self.paused = False
        self.fumbles = 0  # deliberate slips so far this episode (missed grasps, early releases)

    # -- one control step -------------------------------------------------------------------
    def act(self, joint_positions: np.ndarray, object_pose: np.ndarray) -> np.ndarray:
        measured = check_joint_vector(joint_positions, "joint_positions")
        pose = np.asarray(object_pose, dtype=np.float64)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)):
            raise ValueError(f"object_pose must be 7 finite values (xyz, quaternion wxyz), got {pose!r}")
        if self._command is None:  # first call of an episode or a take-over: start where the arms are
            self._command = np.clip(measured, self._lower, self._upper)
        scene = self._perceive(measured, pose)
        phase, goals = self._plan(scene)
        if phase != self.phase:
            self._enter(phase)
            self._phase_steps = 0
        self._phase_steps += 1
        self.phase = phase
        self._update_tremor()
        if self._pause_left == 0 and self._rng.random() < self.style.pause_hazard:
            self._pause_left = int(self._rng.integers(*self.style.pause_steps, endpoint=True))
        self.paused = self._pause_left > 0
        if self.paused:  # a hesitating operator holds the leader arms still
            self._pause_left -= 1
            return self._command.copy()
        desired = self._command.copy()
        for arm, goal in goals.items():
            desired[_ARM_SLICE[arm]] = self._arm_step(arm, goal, measured)
            gripper = _GRIPPER_INDEX[arm]
            desired[gripper] = goal.gripper
            self._closing[arm] = goal.gripper < 0.5
        step = np.clip(desired - self._command, -self._max_step, self._max_step)
        self._command = np.clip(self._command + step, self._lower, self._upper)
        return self._command.copy()

    # -- perception -------------------------------------------------------------------------
    def _perceive(self, measured: np.ndarray, pose: np.ndarray) -> Scene:
        points, rotations, opening, offset, in_hand, speeds = {}, {}, {}, {}, {}, {}
        for arm in ("left", "right"):
            points[arm], rotations[arm] = self.kinematics.grasp_frame(arm, measured[_ARM_SLICE[arm]])
            opening[arm] = float(measured[_GRIPPER_INDEX[arm]])
            offset[arm] = rotations[arm].T @ (pose[:3] - points[arm])
            previous = self._last_opening.get(arm, opening[arm])
            stopped_closed = self._command[_GRIPPER_INDEX[arm]] < 0.05 and abs(opening[arm] - previous) < 0.004
            in_hand[arm] = cube_in_hand(offset[arm], opening[arm], stopped_closed)
            self._last_opening[arm] = opening[arm]
            speeds[arm] = float(np.linalg.norm(points[arm] - self._last_point.get(arm, points[arm])))
            self._last_point[arm] = points[arm]
        speed = 0.0 if self._last_cube is None else float(np.linalg.norm(pose[:3] - self._last_cube))
        self._last_cube = pose[:3].copy()
        return Scene(pose[:3].copy(), pose[3:].copy(), points, rotations, opening, offset, in_hand, speed, speeds)

    # -- decisions --------------------------------------------------------------------------
    def _plan(self, s: Scene) -> tuple[str, dict[str, ArmGoal]]:
        for arm in ("left", "right"):
            # Fingers closed on air, or closed for a while without a hold (a pad on an edge): back
            # off and open before trying again, aiming afresh.
            closed_on_air = s.opening[arm] < HOLDING[0]
            stuck = self.phase in _GRASP_PHASES[arm] and self._phase_steps > GRASP_PATIENCE
            if self._closing[arm] and not s.in_hand[arm] and (closed_on_air or stuck):
                self._reopening[arm] = True
                self._early_close, self._left_short = 0.0, 0.0
        if not s.in_hand["right"]:
            self._dropping = False
        if s.in_hand["left"]:
            if not s.lifted and s.cube[0] < LEFT_PICKS_BELOW_X:  # picked where the right cannot reach
                lift = s.grasp_point["left"] + [0.0, 0.0, HANDOVER_POINT[2] - s.cube[2]]
                return "left_lift", {
                    "left": ArmGoal(lift, s.grasp_rotation["left"], gripper=0.0, loaded=True, straight=True),
                    "right": ArmGoal(joints=HOME_ARM),
                }
            if not s.lifted:  # the left arm has it on the table: let go, the right arm picks it
                return "left_release", {"left": ArmGoal.stay(1.0), "right": ArmGoal(joints=HOME_ARM)}
            if s.in_hand["right"]:
                return "release", {"left": ArmGoal.stay(0.0), "right": ArmGoal.stay(1.0)}
            return "done", {"left": ArmGoal.stay(0.0), "right": ArmGoal(joints=HOME_ARM, gripper=1.0)}
        if s.in_hand["right"]:
            self._airborne_steps = 0
            return self._plan_carry(s)
        self._airborne_steps = self._airborne_steps + 1 if s.lifted else 0
        if s.opening["left"] > OPEN_ENOUGH:
            self._reopening["left"] = False
        if s.lifted and cube_catchable(s.offset["left"]) and not self._reopening["left"]:
            # Knocked out of the right hand, it rests between the open left fingers: close on it.
            return "catch", {"left": ArmGoal.stay(0.0), "right": ArmGoal.stay(1.0)}
        if self._airborne_steps > AIRBORNE_PATIENCE:
            # Lying on an arm out of reach: move both arms home so it falls onto the table.
            return "clear", {"left": ArmGoal(joints=HOME_ARM), "right": ArmGoal(joints=HOME_ARM)}
        return self._plan_pick(s)

    def _plan_pick(self, s: Scene) -> tuple[str, dict[str, ArmGoal]]:
        """Pick the cube off the table: the right arm, or the left where the right cannot reach."""
        if s.cube[0] < LEFT_PICKS_BELOW_X:
            # Out of the right arm's reach (it points straight down only to x ~ -0.05): the left
            # arm picks it up itself, which already is a success (left holds it in the air).
            arm, other, prefix = "left", ArmGoal(joints=HOME_ARM), "left_"
        else:
            arm, other, prefix = "right", self._left_ready(LEFT_WAIT_BACKOFF), ""
        gp, opening = s.grasp_point[arm], s.opening[arm]
        yaws, _ = box_side_yaws(s.cube_quat)
        # Fingers across the faces nearest world y (they end up facing the left arm's fingers),
        # turned by the shorter way given the fingers' symmetry.
        face_yaw = closest_symmetric_yaw(yaws, np.pi / 2, period=np.pi / 2)
        yaw = closest_symmetric_yaw(np.array([face_yaw]), _yaw_of(s.grasp_rotation[arm][:, 1]))
        rotation = top_down_rotation(yaw)
        hover = s.cube + [0.0, 0.0, HOVER_HEIGHT]
        grasp = s.cube + [0.0, 0.0, GRASP_HEIGHT]

        def plan(phase: str, goal: ArmGoal) -> tuple[str, dict[str, ArmGoal]]:
            return prefix + phase, {arm: goal, ("right" if arm == "left" else "left"): other}

        if self._reopening[arm]:
            if opening > OPEN_ENOUGH and gp[2] > hover[2] - 0.02:
                self._reopening[arm] = False
            else:
                return plan("regrasp", ArmGoal(hover, rotation, gripper=1.0))
        xy_error = np.linalg.norm(gp[:2] - s.cube[:2])
        tilt = np.linalg.norm(s.grasp_rotation[arm][:, 0] - rotation[:, 0])
        staying = self.phase in (prefix + "descend", prefix + "grasp")
        aligned = xy_error < (0.014 if staying else 0.008) and tilt < (0.25 if staying else 0.15)
        closing = self.phase == prefix + "grasp"
        if aligned and (gp[2] - grasp[2] < POSITION_TOLERANCE + self._early_close or closing):
            return plan("grasp", ArmGoal.stay(0.0))
        if aligned and opening > OPEN_ENOUGH:
            return plan("descend", ArmGoal(grasp, rotation, gripper=1.0, fine=True, straight=True))
        return plan("approach", ArmGoal(hover, rotation, gripper=1.0, fine=_near(gp, hover)))

    def _plan_carry(self, s: Scene) -> tuple[str, dict[str, ArmGoal]]:
        gp = s.grasp_point["right"]
        yaw = closest_symmetric_yaw(np.array([np.pi / 2]), _yaw_of(s.grasp_rotation["right"][:, 1]))
        rotation = top_down_rotation(yaw)
        if self._dropping:
            return "fumble_drop", {"left": self._left_ready(LEFT_WAIT_BACKOFF), "right": ArmGoal.stay(1.0)}
        if self._drop_countdown is not None:
            self._drop_countdown -= 1
            if self._drop_countdown <= 0:
                self._drop_countdown, self._dropping = None, True
        offset = HANDOVER_POINT - s.cube
        at_handover = np.linalg.norm(offset) < (0.04 if self.phase.startswith("handover") else 0.025)
        if not at_handover:
            target = gp + offset
            if s.cube[2] < HANDOVER_POINT[2] - 0.06:  # straight up first, so the cube does not drag
                target[:2] = gp[:2]
                return "lift", {
                    "left": self._left_ready(LEFT_BACKOFF),
                    "right": ArmGoal(target, rotation, gripper=0.0, loaded=True, straight=True),
                }
            return "carry", {
                "left": self._left_ready(LEFT_BACKOFF),
                "right": ArmGoal(target, rotation, gripper=0.0, loaded=True, straight=True),
            }
        right = ArmGoal(gp + offset, rotation, gripper=0.0, fine=True)
        lgp, opening = s.grasp_point["left"], s.opening["left"]
        roll = closest_symmetric_yaw(np.array([np.pi / 2]), _roll_of(s.grasp_rotation["left"]))
        rotation_left = horizontal_rotation(0.0, roll)
        pregrasp = s.cube - [LEFT_BACKOFF, 0.0, 0.0]
        grasp = s.cube - [self._left_short, 0.0, 0.0]
        if self._reopening["left"]:
            if opening > OPEN_ENOUGH and lgp[0] < s.cube[0] - 0.7 * LEFT_BACKOFF:
                self._reopening["left"] = False
            else:
                return "handover_retry", {"left": ArmGoal(pregrasp, rotation_left, gripper=1.0), "right": right}
        # Lined up behind the cube: vertical error (along the fingers) within the 15 mm clearance of
        # the open pads, lateral error small enough to pass the right arm's fingers (8 mm away).
        staying = self.phase in ("handover_insert", "handover_grasp")
        along, vertical, lateral = s.offset["left"]
        in_line = (
            abs(vertical) < (0.012 if staying else 0.008)
            and abs(lateral) < (0.006 if staying else 0.004)
            and along > -0.01
        )
        if self.phase == "handover_grasp" or (in_line and np.linalg.norm(lgp - grasp) < POSITION_TOLERANCE):
            return "handover_grasp", {"left": ArmGoal.stay(0.0), "right": right}
        # Slide in only once the cube hangs still (the right arm has settled it) and the left hand
        # has stopped: its slow waist would otherwise drift sideways into the right fingers.
        still = s.cube_speed < STILL_SPEED and s.hand_speed["left"] < STILL_SPEED
        if in_line and opening > OPEN_ENOUGH and (staying or still):
            return "handover_insert", {
                "left": ArmGoal(grasp, rotation_left, gripper=1.0, fine=True, straight=True),
                "right": right,
            }
        return "handover_approach", {
            "left": ArmGoal(pregrasp, rotation_left, gripper=1.0, fine=_near(lgp, pregrasp)),
            "right": right,
        }

    def _left_ready(self, backoff: float) -> ArmGoal:
        """Left arm waiting ``backoff`` behind the handover point, rolled, fingers open."""
        return ArmGoal(HANDOVER_POINT - [backoff, 0.0, 0.0], horizontal_rotation(0.0, np.pi / 2), gripper=1.0)

    # -- style ------------------------------------------------------------------------------
    def _enter(self, phase: str) -> None:
        """Draw this move's sloppiness: speed, hesitation, fumbles."""
        style, rng = self.style, self._rng
        self._move_speed = 1.0 - style.speed_spread * rng.random()
        if rng.random() < style.pause_probability:
            self._pause_left = int(rng.integers(*style.pause_steps, endpoint=True))
        # An operator who just fumbled is more careful on the next attempts.
        care = 0.5**self.fumbles
        if phase in ("descend", "left_descend"):
            self._early_close = 0.0
            if rng.random() < style.miss_probability * care:
                self._early_close = rng.uniform(0.045, 0.07)
                self.fumbles += 1
        elif phase == "handover_insert":
            self._left_short = 0.0
            if rng.random() < style.miss_probability * care:
                self._left_short = rng.uniform(0.06, 0.08)
                self.fumbles += 1
        elif phase == "carry" and self.phase == "lift" and rng.random() < style.drop_probability * care:
            self._drop_countdown = int(rng.integers(2, 20))
            self.fumbles += 1

    def _update_tremor(self) -> None:
        # Ornstein-Uhlenbeck noise, ~0.5 s correlation: slow wobble of the hands, not per-step jitter.
        decay = 0.04
        self._tremor += -decay * self._tremor + self.style.tremor_rad * np.sqrt(2 * decay) * self._rng.standard_normal(
            12
        )

    # -- motion -----------------------------------------------------------------------------
    def _arm_step(self, arm: str, goal: ArmGoal, measured: np.ndarray) -> np.ndarray:
        """``[6]`` desired arm command: towards the goal's joints along a joint-space line."""
        arm_slice = _ARM_SLICE[arm]
        previous = self._command[arm_slice]
        actual = measured[arm_slice]
        # Move on from the previous command (it carries the offset that holds the arm against
        # gravity) unless the arm is far from it (blocked, or someone else was driving).
        base = actual + np.clip(previous - actual, -TRACKING_TOLERANCE, TRACKING_TOLERANCE)
        if goal.position is not None:
            position = goal.position
            if goal.straight:
                # Aim a short way ahead along the line from where the command points now, so the
                # joint-space step between IK solutions stays close to the Cartesian line.
                here, _ = self.kinematics.grasp_frame(arm, base)
                ahead = position - here
                distance = np.linalg.norm(ahead)
                if distance > STRAIGHT_LOOKAHEAD:
                    position = here + ahead * (STRAIGHT_LOOKAHEAD / distance)
            target = self._solve(arm, position, goal.rotation, base)
            if abs(actual[FOREARM_ROLL] - target[FOREARM_ROLL]) > FOREARM_SLACK:
                # The forearm roll (servo gain 10 against friction 30) can hang far from its
                # command, after a take-over for minutes. Keep commanding its target, but place
                # the hand with the other joints from where the forearm really is.
                start = target.copy()
                start[FOREARM_ROLL] = actual[FOREARM_ROLL]
                around = self.kinematics.solve(
                    arm, position, goal.rotation, start, locked=(FOREARM_ROLL,), rotation_weight=0.05
                )
                around.joints[FOREARM_ROLL] = target[FOREARM_ROLL]
                target = around.joints
        elif goal.joints is not None:
            target = goal.joints
        else:
            return previous.copy()
        # Operators steady their hands for the delicate part of a move.
        tremor = self._tremor[:6] if arm == "left" else self._tremor[6:]
        target = target + (0.3 if goal.fine else 1.0) * tremor
        speed = self.style.speed * self._move_speed * (0.5 if goal.fine else 0.6 if goal.loaded else 1.0)
        limit = self.station.max_step[arm_slice] * speed
        delta = target - base
        scale = min(1.0, float(np.min(limit / np.maximum(np.abs(delta), 1e-9))))
        return base + delta * scale

    def _solve(self, arm: str, position: np.ndarray, rotation: np.ndarray, base: np.ndarray) -> np.ndarray:
        start = self._ik_seed.get(arm, base)
        result = self.kinematics.solve(arm, position, rotation, start)
        if result.position_error > 0.002 or result.rotation_error > 0.03:
            # From an odd start (after a take-over) the solver can end against a joint limit, e.g.
            # the wrist rotation at -pi when the roll wants -pi/2 - a bit: retry from home.
            retry = self.kinematics.solve(arm, position, rotation, HOME_ARM)
            if retry.position_error + 0.1 * retry.rotation_error < (
                result.position_error + 0.1 * result.rotation_error
            ):
                result = retry
        self._ik_seed[arm] = result.joints
        return result.joints


def _near(point: np.ndarray, target: np.ndarray, radius: float = 0.03) -> bool:
    """Within the last few centimetres of a move, where operators slow down and steady their hands."""
    return bool(np.linalg.norm(point - target) < radius)


def _yaw_of(axis: np.ndarray) -> float:
    return float(np.arctan2(axis[1], axis[0]))


def _roll_of(rotation: np.ndarray) -> float:
    """Roll of a roughly +x-pointing grasp frame: angle of the finger axis in the world y-z plane."""
    fingers = rotation[:, 1]
    return float(np.arctan2(fingers[2], fingers[1]))
