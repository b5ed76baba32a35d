"""Small synthetic RECAP datasets written through the real DatasetWriter, for learning-side tests.

Two generators, described in their docstrings and in docs/dataset.md ("Synthetic datasets"):
:func:`make_synthetic_dataset` ("reach") and :func:`make_bimodal_dataset` (two action modes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recap_core.data.writer import DatasetWriter
from recap_core.station import DEFAULT_CAMERAS, GRIPPER_JOINTS, JOINT_NAMES

SUCCESS_RADIUS = 0.08
DEMONSTRATOR_SPEED = 0.06
STEP = 0.05
GOAL_X = 0.95
ACTION_NOISE = 0.005


def _tints(cameras: Sequence[str]) -> np.ndarray:
    palette = np.array([[20, 20, 40], [20, 40, 20], [40, 20, 20], [30, 30, 30]], dtype=np.uint8)
    return palette[np.arange(len(cameras)) % len(palette)]


def _pixel(coordinate: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.rint((coordinate + 1.0) / 2.0 * (size - 1)), 0, size - 1).astype(int)


def render_reach(points: np.ndarray, goal: np.ndarray, size: int, tint: np.ndarray) -> np.ndarray:
    """Frames ``[T, S, S, 3]`` uint8 of the point ``[T, 2]`` and goal ``[2]`` (x right, y up)."""
    frames = np.empty((len(points), size, size, 3), dtype=np.uint8)
    frames[:] = tint
    radius = max(1, size // 16)
    gx, gy = _pixel(goal[0], size), _pixel(-goal[1], size)
    frames[:, max(0, gy - radius) : gy + radius + 1, max(0, gx - radius) : gx + radius + 1] = (220, 30, 30)
    for t, (px, py) in enumerate(zip(_pixel(points[:, 0], size), _pixel(-points[:, 1], size))):
        frames[t, max(0, py - radius) : py + radius + 1, max(0, px - radius) : px + radius + 1] = (240, 240, 240)
    return frames


def render_line(positions: np.ndarray, size: int, tint: np.ndarray) -> np.ndarray:
    """Frames ``[T, S, S, 3]`` of a position on [-1, 1] as a white bar; the goal zone is green."""
    frames = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    frames[:] = tint
    frames[:, :, _pixel(np.array(GOAL_X), size) :] = (30, 160, 30)
    half = max(1, size // 32)
    for t, column in enumerate(_pixel(positions, size)):
        frames[t, :, max(0, column - half) : column + half + 1] = (240, 240, 240)
    return frames


def _reach_episode(rng: np.random.Generator, kind: str, max_length: int):
    """Point trajectory ``[T+1, 2]``, goal ``[2]``, intervention flags ``[T]``, success."""
    start, goal = rng.uniform(-0.9, 0.9, size=2), rng.uniform(-0.9, 0.9, size=2)
    while np.linalg.norm(goal - start) < 0.8:
        goal = rng.uniform(-0.9, 0.9, size=2)
    # Mean progress of the noisy policy is speed * exp(-noise^2 / 2): from ~0.7x to ~0.1x the speed,
    # so some rollouts reach the goal in time and some do not.
    speed = rng.uniform(0.02, 0.045)
    heading_noise = rng.uniform(0.8, 2.0)
    # Corrected rollouts: the demonstrator takes over for a while, somewhere in the first half.
    takeover = range(0)
    if kind == "corrected":
        takeover_at = int(rng.integers(10, max(11, max_length // 2)))
        takeover = range(takeover_at, takeover_at + int(rng.integers(10, 25)))
    points, flags = [start], []
    for t in range(max_length):
        position = points[-1]
        to_goal = goal - position
        distance = np.linalg.norm(to_goal)
        if distance < SUCCESS_RADIUS:
            return np.array(points), goal, np.array(flags, dtype=bool), True
        demonstrator = kind == "demo" or t in takeover
        if demonstrator:
            step = to_goal / distance * min(DEMONSTRATOR_SPEED, distance)
        else:
            angle = np.arctan2(to_goal[1], to_goal[0]) + rng.normal(0.0, heading_noise)
            step = speed * np.array([np.cos(angle), np.sin(angle)])
        points.append(np.clip(position + step + rng.normal(0.0, 0.003, size=2), -1.0, 1.0))
        flags.append(kind == "corrected" and demonstrator)
    return np.array(points), goal, np.array(flags, dtype=bool), False


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_episodes: int,
    task: str = "reach",
    image_size: int = 32,
    seed: int = 0,
    max_episode_length: int = 80,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    fps: int = 50,
    demo_fraction: float = 0.4,
    corrected_fraction: float = 0.2,
    joint_names: Sequence[str] = JOINT_NAMES,
    gripper_joints: Sequence[str] = GRIPPER_JOINTS,
) -> Path:
    """Write (or append) ``num_episodes`` "reach" episodes to ``root``; returns ``root``.

    A point moves in the plane towards a goal. ``observation.state`` dims 0-1 are the point, dims 2-3 the goal,
    the rest 0; ``action`` is the next position target (absolute, like joint targets). Each camera renders the
    point (white) and goal (red) on a dark background with a per-camera tint. Episodes end in success when the
    point is within ``SUCCESS_RADIUS`` of the goal, and in failure at ``max_episode_length``. Three kinds of
    episode: ``demo`` (an expert heads straight at the goal, always succeeds), ``rollout`` (a noisy policy;
    some time out) and corrected ``rollout`` (the noisy policy, then an ``is_intervention`` segment in which
    the expert steers). Steps-to-go of expert behaviour is distance / speed, so a value model can learn it
    from the observation. The layout (``joint_names``, ``gripper_joints``, ``cameras``) is the simulated
    station's unless given; the reach needs at least 4 joints.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if len(joint_names) < 4:
        raise ValueError(f"the reach puts the point and the goal in 4 state dims; give >= 4 joints, got {joint_names}")
    if not (0 <= demo_fraction and 0 <= corrected_fraction and demo_fraction + corrected_fraction <= 1):
        raise ValueError(
            f"demo_fraction {demo_fraction} and corrected_fraction {corrected_fraction} must be "
            f">= 0 and sum to at most 1"
        )
    rng = np.random.default_rng(seed)
    tints = _tints(cameras)
    with DatasetWriter(
        root,
        fps=fps,
        cameras=cameras,
        joint_names=joint_names,
        gripper_joints=gripper_joints,
        image_shape=(image_size, image_size),
        robot="synthetic",
        c_fail=float(max_episode_length),
        max_episode_length={task: max_episode_length},
    ) as writer:
        for number in range(num_episodes):
            draw = rng.random()
            kind = (
                "demo"
                if draw < demo_fraction
                else ("corrected" if draw < demo_fraction + corrected_fraction else "rollout")
            )
            points, goal, flags, success = _reach_episode(rng, kind, max_episode_length)
            length = len(points) - 1  # >= 1: the goal starts at least 0.8 away
            states = np.zeros((length, len(joint_names)), dtype=np.float32)
            states[:, 0:2], states[:, 2:4] = points[:-1], goal
            actions = states.copy()
            actions[:, 0:2] = points[1:]
            writer.add_episode(
                states=states,
                actions=actions,
                is_intervention=flags,
                success=success,
                task=task,
                images={cam: render_reach(points[:-1], goal, image_size, tints[i]) for i, cam in enumerate(cameras)},
                metadata={
                    "source": "demo" if kind == "demo" else "rollout",
                    "station": "synthetic",
                    "generator": "reach",
                    "kind": kind,
                    "seed": seed,
                    "number": number,
                },
            )
    return Path(root)


def _bimodal_episode(rng: np.random.Generator, good_probability: float, segment_length: int, max_length: int):
    """Positions ``[T+1]`` and per-step good-mode flags ``[T]``, success."""
    positions, modes = [rng.uniform(-0.6, 0.4)], []
    good = True
    for t in range(max_length):
        if positions[-1] >= GOAL_X:
            return np.array(positions), np.array(modes, dtype=bool), True
        if t % segment_length == 0:
            good = bool(rng.random() < good_probability)
        positions.append(float(np.clip(positions[-1] + (STEP if good else -STEP), -1.0, 1.0)))
        modes.append(good)
    return np.array(positions), np.array(modes, dtype=bool), False


def make_bimodal_dataset(
    root: str | Path,
    *,
    num_episodes: int,
    task: str = "move to the right end",
    image_size: int = 32,
    seed: int = 0,
    max_episode_length: int = 60,
    good_probabilities: Sequence[float] = (1.0, 0.0),
    segment_length: int = 10,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    fps: int = 50,
    joint_names: Sequence[str] = JOINT_NAMES,
    gripper_joints: Sequence[str] = GRIPPER_JOINTS,
) -> Path:
    """Write (or append) ``num_episodes`` two-mode episodes to ``root``; returns ``root``.

    A point on a line, ``x`` in [-1, 1], every state dim equal to ``x``. At every state there are two action
    modes: ``+STEP`` in every dim (towards the goal at ``x = GOAL_X``: "good") or ``-STEP`` (towards a wall
    at -1: "bad"). Each episode's chance of choosing the good mode is drawn uniformly from
    ``good_probabilities``; the mode is redrawn every ``segment_length`` steps. By default episodes are
    all-good (succeed in ~20 steps) or all-bad (pressed against the wall until they fail). A policy
    conditioned on "Advantage: positive" should put more mass on the good mode: :func:`bimodal_good_mode`
    tells them apart.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if not good_probabilities or not all(0.0 <= p <= 1.0 for p in good_probabilities):
        raise ValueError(f"good_probabilities must be probabilities, got {good_probabilities!r}")
    if segment_length < 1:
        raise ValueError(f"segment_length must be >= 1, got {segment_length}")
    rng = np.random.default_rng(seed)
    tints = _tints(cameras)
    with DatasetWriter(
        root,
        fps=fps,
        cameras=cameras,
        joint_names=joint_names,
        gripper_joints=gripper_joints,
        image_shape=(image_size, image_size),
        robot="synthetic",
        c_fail=float(max_episode_length),
        max_episode_length={task: max_episode_length},
    ) as writer:
        for number in range(num_episodes):
            probability = float(rng.choice(np.asarray(good_probabilities, dtype=float)))
            positions, modes, success = _bimodal_episode(rng, probability, segment_length, max_episode_length)
            states = np.repeat(positions[:-1, None], len(joint_names), axis=1).astype(np.float32)
            actions = np.repeat(positions[1:, None], len(joint_names), axis=1)
            # Noise keeps the two modes distributions rather than two points, but far apart (STEP >> noise).
            actions = (actions + rng.normal(0.0, ACTION_NOISE, size=actions.shape)).astype(np.float32)
            writer.add_episode(
                states=states,
                actions=actions,
                is_intervention=np.zeros(len(states), dtype=bool),
                success=success,
                task=task,
                images={cam: render_line(positions[:-1], image_size, tints[i]) for i, cam in enumerate(cameras)},
                metadata={
                    "source": "rollout",
                    "station": "synthetic",
                    "generator": "bimodal",
                    "good_probability": probability,
                    "good_steps": int(modes.sum()),
                    "seed": seed,
                    "number": number,
                },
            )
    return Path(root)


def bimodal_good_mode(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Whether actions follow the good mode (towards the goal): ``[..., J], [..., J] -> bool [...]``.

    ``actions`` may be a chunk ``[..., H, J]`` against ``states`` ``[..., J]``:
    then the verdict is per chunk (mean over the chunk's steps).
    """
    states = np.asarray(states, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim == states.ndim + 1:
        return (actions - states[..., None, :]).mean(axis=(-1, -2)) > 0
    return (actions - states).mean(axis=-1) > 0
