"""Chunk modes (naive, crossfade, rtc), the planned commands an RTC guide is built from, the boundary jerk and the
online delay estimate -- without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from recap_policy_node.chunking import (
    CHUNK_MODES,
    ChunkExecutor,
    DelayEstimator,
    blend_weights,
    boundary_jerk,
    jerk,
    jerk_summary,
)

DT = 0.02


def ramp(start: float, h: int = 50, step: float = 0.01) -> np.ndarray:
    return (start + step * np.arange(h))[:, None] * np.ones((1, 14))


def test_modes_take_over_at_the_arrival_tick_or_crossfade():
    old, new = np.zeros((50, 14)), np.ones((50, 14))
    commands = {}
    for mode in CHUNK_MODES:
        ex = ChunkExecutor(4, mode=mode)
        ex.add_chunk(old, 0, 0)
        ex.add_chunk(new, 10, 13)  # planned at 10, arrived at 13: its first 3 actions are stale
        commands[mode] = np.array([ex.action(t)[0] for t in range(13, 20)])
        assert list(ex.switch_ticks) == [13]
    np.testing.assert_array_equal(commands["naive"], 1.0)
    np.testing.assert_array_equal(commands["rtc"], 1.0)
    np.testing.assert_allclose(commands["crossfade"][:4], blend_weights(4))
    np.testing.assert_array_equal(commands["crossfade"][4:], 1.0)
    # crossfade over 0 steps is naive switching (the old meaning of blend_steps 0)
    assert ChunkExecutor(0).effective_blend_steps == 0 and ChunkExecutor(8, mode="rtc").effective_blend_steps == 0
    with pytest.raises(ValueError, match="chunk mode"):
        ChunkExecutor(4, mode="smooth")


def test_a_mode_change_applies_to_the_next_chunk_and_a_crossfade_under_way_finishes():
    ex = ChunkExecutor(4)
    ex.add_chunk(np.zeros((50, 14)), 0, 0)
    ex.add_chunk(np.ones((50, 14)), 10, 10)
    ex.set_mode("rtc")
    np.testing.assert_allclose([ex.action(t)[0] for t in range(10, 14)], blend_weights(4))
    ex.add_chunk(np.full((50, 14), 2.0), 20, 20)
    assert ex.action(20)[0] == 2.0  # no crossfade any more


def test_planned_is_what_the_executor_will_command_and_changes_nothing():
    ex = ChunkExecutor(4)
    assert ex.planned(0).shape == (0, 0)
    ex.add_chunk(ramp(0.0), 0, 0)
    ex.add_chunk(ramp(1.0), 10, 12)
    plan = ex.planned(12)
    assert plan.shape == (48, 14)  # to the end of the new chunk (ticks 12..59)
    assert ex.planned(12, count=5).shape == (5, 14)
    commanded = np.array([ex.action(t) for t in range(12, 60)])
    np.testing.assert_array_equal(plan, commanded)  # the crossfade included
    assert ex.action(60) is None and ex.planned(60).shape == (0, 0)


def test_a_chunk_that_continues_the_plan_has_no_boundary_jerk_a_jump_does():
    """What RTC buys: a new chunk that reproduces the plan it replaces switches without a kink."""
    results = {}
    for name, offset in (("continues", 0.0), ("jumps", 0.05)):
        ex = ChunkExecutor(8, mode="rtc")
        ex.add_chunk(ramp(0.0, 100), 0, 0)
        commands = []
        for tick in range(70):
            if tick == 30:  # planned at 25 with a delay of 5
                ex.add_chunk(ramp(0.25 + offset, 50), 25, 30)
            commands.append(ex.action(tick))
        boundary, elsewhere = boundary_jerk(np.array(commands), ex.switch_ticks, DT, window=8)
        results[name] = jerk_summary(boundary, elsewhere, len(ex.switch_ticks))
    assert results["continues"]["switches"] == results["jumps"]["switches"] == 1
    assert results["continues"]["boundary_mean"] == pytest.approx(0.0, abs=1e-6)
    assert results["jumps"]["boundary_mean"] > 1e3 and results["jumps"]["elsewhere_mean"] == pytest.approx(0, abs=1e-6)


def test_boundary_jerk_splits_the_third_differences_around_each_switch():
    commands = np.zeros((40, 14))
    commands[20:] = 1.0  # a step at tick 20
    boundary, elsewhere = boundary_jerk(commands, [20], DT, window=2)
    values = jerk(commands, DT)
    assert len(boundary) + len(elsewhere) == len(values) == 37
    assert len(boundary) == 5  # third differences 17..21: [k - 3, k - 1 + window]
    assert np.count_nonzero(boundary) == 3 and np.count_nonzero(elsewhere) == 0
    summary = jerk_summary(boundary, elsewhere, 1)
    assert summary["boundary_p95"] >= summary["boundary_mean"] > 0 and np.isnan(summary["boundary_to_elsewhere"])
    assert np.isnan(jerk_summary(np.zeros(0), elsewhere, 0)["boundary_mean"])


def test_delay_estimate_is_a_high_quantile_of_recent_delays_rounded_up():
    est = DelayEstimator(window=5, quantile=0.9, initial=2)
    assert est.estimate() == 2 and est.measurements == 0
    for ticks in (3, 3, 4, 3, 3):
        est.add(ticks)
    assert est.estimate() == 4  # ceil(0.9-quantile of [3, 3, 3, 3, 4] = 3.6)
    for ticks in (1, 1, 1, 1, 1):
        est.add(ticks)
    assert est.estimate() == 1  # the window forgets the old delays
    est.add(-1)  # not a measurement
    assert est.measurements == 5
    assert DelayEstimator(quantile=1.0).estimate() == 0
    with pytest.raises(ValueError):
        DelayEstimator(quantile=1.5)
