"""Executing action chunks at the control rate, with smooth chunk boundaries (:class:`ChunkExecutor`).

Pure numpy; the policy node calls it from its 50 Hz loop.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Chunk:
    actions: np.ndarray  # [H, 14] absolute joint targets; actions[i] is for tick start_tick + i
    start_tick: int

    @property
    def end_tick(self) -> int:  # first tick not covered
        return self.start_tick + len(self.actions)

    def at(self, tick: int) -> np.ndarray | None:
        i = tick - self.start_tick
        return self.actions[i] if 0 <= i < len(self.actions) else None


def blend_weights(blend_steps: int) -> np.ndarray:
    """Weights of the NEW chunk over the crossfade, smooth at both ends ([blend_steps]).

    A raised-cosine ramp from ~0 to ~1: its derivative is zero at both ends, so
    blending two smooth plans adds no velocity kink at the start or end of the
    crossfade.
    """
    if blend_steps <= 0:
        return np.ones(0)
    x = (np.arange(blend_steps) + 1.0) / (blend_steps + 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


class ChunkExecutor:
    """Current plan of the robot, one control tick at a time.

    A chunk ``[H, 14]`` is planned from the observation at control tick ``t0``; inference takes ``d`` ticks,
    so by the time it arrives its first ``d`` actions are already in the past. The executor aligns every chunk
    by tick, skips what is stale, and -- unless ``blend_steps == 0`` (naive switching) -- crossfades from the
    previous chunk to the new one over ``blend_steps`` ticks: the previous chunk's plan for the overlapping
    ticks is what the robot was about to do, so the command stays continuous in position and velocity instead
    of jumping to the new plan (the same idea as real-time chunking's "freeze what is already being executed,
    guide the rest", done on the output side so any sampler works).
    """

    def __init__(self, blend_steps: int = 8):
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        self.blend_steps = blend_steps
        self._current: Chunk | None = None
        self._previous: Chunk | None = None
        self._switch_tick: int | None = None
        self.chunks_received = 0
        self.chunks_discarded = 0

    def reset(self) -> None:
        """Forget every plan (``policy/reset``): the next command comes from a new chunk."""
        self._current = self._previous = None
        self._switch_tick = None

    def has_plan(self, tick: int) -> bool:
        return self._current is not None and self._current.at(tick) is not None

    def remaining(self, tick: int) -> int:
        """Ticks of the current plan left from ``tick`` on (0 without a plan)."""
        return max(0, self._current.end_tick - tick) if self._current is not None else 0

    def add_chunk(self, actions: np.ndarray, start_tick: int, now_tick: int) -> bool:
        """Take a new chunk planned for ``start_tick``, arriving at ``now_tick``.

        Returns False (and counts it) when the chunk is already entirely in the past.
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"chunk must be [H, J] with H > 0, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("chunk has non-finite actions")
        self.chunks_received += 1
        chunk = Chunk(actions, start_tick)
        if chunk.end_tick <= now_tick:
            self.chunks_discarded += 1
            return False
        if self._current is not None and self.blend_steps > 0 and self._current.at(now_tick) is not None:
            self._previous = self._current
            self._switch_tick = now_tick
        else:
            self._previous, self._switch_tick = None, None
        self._current = chunk
        return True

    def action(self, tick: int) -> np.ndarray | None:
        """The command for ``tick``, or None when there is no plan for it (hold)."""
        if self._current is None:
            return None
        new = self._current.at(tick)
        if new is None:
            return None
        if self._previous is not None:
            k = tick - self._switch_tick
            old = self._previous.at(tick)
            if 0 <= k < self.blend_steps and old is not None:
                w = blend_weights(self.blend_steps)[k]
                return (1.0 - w) * old + w * new
            if k >= self.blend_steps:
                self._previous, self._switch_tick = None, None
        return new.copy()


def jerk(commands: np.ndarray, dt: float) -> np.ndarray:
    """Per-tick jerk magnitude of a command sequence [T, J] -> [T-3] (third difference / dt^3)."""
    commands = np.asarray(commands, dtype=np.float64)
    if len(commands) < 4:
        return np.zeros(0)
    return np.linalg.norm(np.diff(commands, n=3, axis=0), axis=1) / dt**3
