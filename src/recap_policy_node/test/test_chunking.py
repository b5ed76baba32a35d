"""Chunk execution and boundary smoothing, without ROS."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_policy_node.chunking import ChunkExecutor, blend_weights, jerk

DT = 0.02


def plan(start_tick: int, h: int, offset: float, speed: float = 0.5) -> np.ndarray:
    """A smooth plan [h, 14]: a sine trajectory, shifted by ``offset`` (a replanning error)."""
    t = (start_tick + np.arange(h))[:, None] * DT
    return np.sin(speed * t + np.linspace(0, 1, 14)[None]) + offset


def run(blend_steps: int, replan_every: int = 25, delay: int = 5, h: int = 50, ticks: int = 400, seed=0):
    rng = np.random.default_rng(seed)
    ex = ChunkExecutor(blend_steps)
    ex.add_chunk(plan(0, h, 0.0), 0, 0)
    out, boundaries = [], []
    pending = None
    for tick in range(ticks):
        if tick % replan_every == 0 and tick > 0:
            pending = (tick, plan(tick, h, rng.normal(0, 0.05)))  # obs at tick, new offset
        if pending is not None and tick == pending[0] + delay:
            ex.add_chunk(pending[1], pending[0], tick)
            boundaries.append(tick)
            pending = None
        a = ex.action(tick)
        assert a is not None
        out.append(a)
    return np.array(out), boundaries


def boundary_jerk(commands, boundaries, window=3):
    j = jerk(commands, DT)
    idx = [b - 3 + k for b in boundaries for k in range(window + 3) if 0 <= b - 3 + k < len(j)]
    return float(np.mean(j[idx]))


def test_aligned_by_tick_and_skips_the_past():
    ex = ChunkExecutor(0)
    chunk = np.arange(50)[:, None] * np.ones((1, 14))
    assert ex.add_chunk(chunk, start_tick=100, now_tick=104)
    np.testing.assert_array_equal(ex.action(104), chunk[4])
    assert ex.action(150) is None  # past the end: hold
    assert ex.remaining(140) == 10


def test_chunk_entirely_in_the_past_is_discarded():
    ex = ChunkExecutor(4)
    assert not ex.add_chunk(np.zeros((10, 14)), start_tick=0, now_tick=10)
    assert ex.chunks_discarded == 1 and ex.action(10) is None


def test_reset_drops_the_plan():
    ex = ChunkExecutor(4)
    ex.add_chunk(np.zeros((50, 14)), 0, 0)
    ex.reset()
    assert ex.action(1) is None


def test_rejects_bad_chunks():
    ex = ChunkExecutor(4)
    with pytest.raises(ValueError):
        ex.add_chunk(np.full((50, 14), np.nan), 0, 0)
    with pytest.raises(ValueError):
        ex.add_chunk(np.zeros((0, 14)), 0, 0)


def test_blending_cuts_boundary_jerk_at_least_in_half():
    naive, b1 = run(blend_steps=0)
    smooth, b2 = run(blend_steps=10)
    assert b1 == b2 and len(b1) >= 10
    ratio = boundary_jerk(smooth, b2) / boundary_jerk(naive, b1)
    assert ratio <= 0.5, ratio


def test_blend_weights_are_monotone_and_strictly_inside():
    w = blend_weights(8)
    assert np.all(np.diff(w) > 0) and w[0] > 0 and w[-1] < 1


@settings(max_examples=50, deadline=None)
@given(blend=st.integers(1, 20), delay=st.integers(0, 10), seed=st.integers(0, 1000))
def test_blended_commands_stay_between_the_two_plans(blend, delay, seed):
    """Every blended command lies between the old and the new plan for that tick."""
    rng = np.random.default_rng(seed)
    old = rng.normal(size=(50, 14))
    new = rng.normal(size=(50, 14))
    ex = ChunkExecutor(blend)
    ex.add_chunk(old, 0, 0)
    ex.add_chunk(new, 20, 20 + delay)
    for tick in range(20 + delay, 50):
        a = ex.action(tick)
        lo = np.minimum(old[tick], new[tick - 20]) - 1e-12
        hi = np.maximum(old[tick], new[tick - 20]) + 1e-12
        assert np.all(a >= lo) and np.all(a <= hi)
    # after the crossfade the new plan is followed exactly
    t = 20 + delay + blend
    if t < 50:
        np.testing.assert_allclose(ex.action(t), new[t - 20])
