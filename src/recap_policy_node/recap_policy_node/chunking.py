"""Executing action chunks at the control rate, with smooth chunk boundaries (:class:`ChunkExecutor`).

Pure numpy; the policy node calls it from its 50 Hz loop.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

#: How a new chunk takes over (``ChunkExecutor.mode``): ``naive`` switches at its arrival tick; ``crossfade``
#: blends from the old plan over ``blend_steps`` ticks; ``rtc`` switches at once too, the chunk having been sampled
#: to continue the old plan (real-time chunking: the runner's ``guide``, from :meth:`ChunkExecutor.planned`).
CHUNK_MODES = ("naive", "crossfade", "rtc")


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

    ``mode`` (:data:`CHUNK_MODES`; default ``crossfade``, which is naive switching when ``blend_steps == 0``):
    ``naive`` and ``rtc`` switch to the new chunk at its arrival tick, ``rtc`` being for chunks sampled with real-time
    chunking's guidance towards :meth:`planned` (the inpainting is done on the input side). ``switch_ticks`` records
    the ticks where a new chunk took over a running plan (for :func:`boundary_jerk`).
    """

    def __init__(self, blend_steps: int = 8, mode: str = "crossfade"):
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        self.blend_steps = blend_steps
        self.mode = "crossfade"
        self.set_mode(mode)
        self._current: Chunk | None = None
        self._previous: Chunk | None = None
        self._switch_tick: int | None = None
        self._switch_blend = 0
        self.chunks_received = 0
        self.chunks_discarded = 0
        self.switch_ticks: collections.deque[int] = collections.deque(maxlen=10_000)

    def set_mode(self, mode: str) -> None:
        """Change how the next chunks take over (a crossfade under way finishes as it began)."""
        if mode not in CHUNK_MODES:
            raise ValueError(f"chunk mode must be one of {list(CHUNK_MODES)}, got {mode!r}")
        self.mode = mode

    @property
    def effective_blend_steps(self) -> int:
        """The crossfade a new chunk gets: ``blend_steps`` in ``crossfade`` mode, else 0."""
        return self.blend_steps if self.mode == "crossfade" else 0

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
        running = self._current is not None and self._current.at(now_tick) is not None
        if running:
            self.switch_ticks.append(int(now_tick))
        blend = self.effective_blend_steps
        if running and blend > 0:
            self._previous = self._current
            self._switch_tick = now_tick
            self._switch_blend = blend
        else:
            self._previous, self._switch_tick = None, None
        self._current = chunk
        return True

    def planned(self, start_tick: int, count: int | None = None) -> np.ndarray:
        """The commands planned for ``start_tick, start_tick + 1, ...`` ``[P, J]``, up to the first tick without a
        plan (at most ``count``): what the robot executes from there on unless a new chunk takes over. ``[0, 0]``
        without a plan. Changes nothing."""
        rows = []
        tick = int(start_tick)
        while count is None or len(rows) < count:
            command = self._command(tick)
            if command is None:
                break
            rows.append(command)
            tick += 1
        return np.array(rows) if rows else np.zeros((0, 0))

    def action(self, tick: int) -> np.ndarray | None:
        """The command for ``tick``, or None when there is no plan for it (hold)."""
        command = self._command(tick)
        if command is not None and self._previous is not None and tick - self._switch_tick >= self._switch_blend:
            self._previous, self._switch_tick = None, None
        return command

    def _command(self, tick: int) -> np.ndarray | None:
        if self._current is None:
            return None
        new = self._current.at(tick)
        if new is None:
            return None
        if self._previous is not None:
            k = tick - self._switch_tick
            old = self._previous.at(tick)
            if 0 <= k < self._switch_blend and old is not None:
                w = blend_weights(self._switch_blend)[k]
                return (1.0 - w) * old + w * new
        return new.copy()


def jerk(commands: np.ndarray, dt: float) -> np.ndarray:
    """Per-tick jerk magnitude of a command sequence [T, J] -> [T-3] (third difference / dt^3)."""
    commands = np.asarray(commands, dtype=np.float64)
    if len(commands) < 4:
        return np.zeros(0)
    return np.linalg.norm(np.diff(commands, n=3, axis=0), axis=1) / dt**3


def boundary_jerk(commands: np.ndarray, switch_ticks, dt: float, window: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The jerk of a command sequence ``[T, J]`` (``commands[i]``: tick ``i``) split into ``(boundary, elsewhere)``.

    A chunk switch at tick ``k`` (its first command) touches the third differences ``j`` in ``[k - 3, k - 1]``;
    the boundary takes ``[k - 3, k - 1 + window]``, so a crossfade of ``window`` ticks counts as part of it (use the
    same ``window`` for every mode you compare).
    """
    values = jerk(commands, dt)
    near = np.zeros(len(values), dtype=bool)
    for k in switch_ticks:
        near[max(0, int(k) - 3) : max(0, min(len(values), int(k) + int(window)))] = True
    return values[near], values[~near]


def jerk_summary(boundary: np.ndarray, elsewhere: np.ndarray, switches: int) -> dict:
    """Mean and p95 of the boundary and the other jerk values (NaN where there are none) and their mean ratio."""

    def stats(values):
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return float("nan"), float("nan")
        return float(values.mean()), float(np.percentile(values, 95))

    b_mean, b_p95 = stats(boundary)
    e_mean, e_p95 = stats(elsewhere)
    return {
        "switches": int(switches),
        "boundary_mean": b_mean,
        "boundary_p95": b_p95,
        "elsewhere_mean": e_mean,
        "elsewhere_p95": e_p95,
        "boundary_to_elsewhere": b_mean / e_mean if e_mean > 0 else float("nan"),
    }


class DelayEstimator:
    """The inference delay in control ticks, estimated online: a high ``quantile`` of the last ``window`` measured
    delays (plan tick to arrival tick), rounded up; ``initial`` before any measurement.

    Real-time chunking freezes that many of a new chunk's first actions; an estimate too low leaves actions the
    robot already executed free in the new chunk, one too high freezes more than needed (the paper uses the
    maximum of its recent delays: ``quantile`` 1).
    """

    def __init__(self, window: int = 20, quantile: float = 0.95, initial: int = 0):
        if window < 1 or not 0.0 <= quantile <= 1.0 or initial < 0:
            raise ValueError(
                f"delay estimator: window >= 1, quantile in [0, 1], initial >= 0; got {window}, {quantile}, {initial}"
            )
        self.quantile = float(quantile)
        self.initial = int(initial)
        self._ticks: collections.deque[int] = collections.deque(maxlen=int(window))

    def add(self, ticks: int) -> None:
        if ticks >= 0:
            self._ticks.append(int(ticks))

    def reset(self) -> None:
        self._ticks.clear()

    @property
    def measurements(self) -> int:
        return len(self._ticks)

    def estimate(self) -> int:
        if not self._ticks:
            return self.initial
        return int(math.ceil(np.quantile(np.asarray(self._ticks, dtype=np.float64), self.quantile) - 1e-9))
