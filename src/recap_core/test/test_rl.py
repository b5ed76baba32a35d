"""Invariants of the RECAP math in recap_core.rl (pure numpy, no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recap_core import rl

lengths = st.integers(min_value=1, max_value=300)
c_fails = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)
unit_values = st.floats(min_value=-1.0, max_value=0.0, allow_nan=False)
finite = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)


def _episode(length, success, c_fail):
    rewards = rl.episode_rewards(length, success, c_fail)
    return rewards, rl.returns_to_go(rewards)


# ----------------------------------------------------------------- rewards and returns


def test_episode_rewards_match_the_paper_definition():
    np.testing.assert_array_equal(rl.episode_rewards(4, True, 100.0), [-1, -1, -1, 0])
    np.testing.assert_array_equal(rl.episode_rewards(3, False, 100.0), [-1, -1, -100])
    np.testing.assert_array_equal(rl.episode_rewards(1, False, 7.0), [-7])


@given(lengths, c_fails)
def test_success_returns_count_the_steps_still_to_go(length, c_fail):
    _, returns = _episode(length, True, c_fail)
    np.testing.assert_array_equal(returns, -np.arange(length - 1, -1, -1))
    assert np.all(np.diff(returns) > 0), "value of a successful episode must rise every step"


@given(lengths, c_fails)
def test_failure_is_worse_than_success_of_the_same_length(length, c_fail):
    _, success = _episode(length, True, c_fail)
    _, failure = _episode(length, False, c_fail)
    np.testing.assert_allclose(success - failure, c_fail, atol=1e-9)


@given(st.integers(1, 500), st.integers(1, 500), c_fails, st.booleans())
def test_normalised_returns_lie_in_minus_one_zero(max_length, length, c_fail, success):
    length = min(length, max_length)
    _, returns = _episode(length, success, c_fail)
    normalised = rl.normalise_returns(returns, max_length, c_fail)
    assert np.all(normalised <= 0.0)
    assert np.all(normalised > -1.0), "returns within the length limit must stay above -1"


@given(st.integers(1, 500), c_fails, hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(-1.0, 0.0)))
def test_denormalise_inverts_normalise(max_length, c_fail, normalised):
    back = rl.normalise_returns(rl.denormalise_returns(normalised, max_length, c_fail), max_length, c_fail)
    np.testing.assert_allclose(back, normalised, atol=1e-12)


@given(lengths, c_fails, st.booleans())
def test_normalised_rewards_sum_to_normalised_returns(length, c_fail, success):
    rewards, returns = _episode(length, success, c_fail)
    max_length = length + 5
    np.testing.assert_allclose(
        rl.returns_to_go(rl.normalise_returns(rewards, max_length, c_fail)),
        rl.normalise_returns(returns, max_length, c_fail),
        atol=1e-12,
    )


def test_overlong_episodes_clip_at_minus_one():
    assert rl.normalise_returns([-1000.0], 10, 10.0)[0] == -1.0


@pytest.mark.parametrize(
    "bad",
    [
        dict(length=0, success=True, c_fail=1.0),
        dict(length=3, success=True, c_fail=-1.0),
        dict(length=2.5, success=True, c_fail=1.0),
    ],
)
def test_episode_rewards_reject_bad_arguments(bad):
    with pytest.raises(ValueError):
        rl.episode_rewards(**bad)


# ----------------------------------------------------------------- value bins


def test_bin_centers_span_minus_one_to_zero():
    centers = rl.bin_centers()
    assert centers.shape == (rl.NUM_BINS,) == (201,)
    assert centers[0] == -1.0 and centers[-1] == 0.0
    np.testing.assert_allclose(np.diff(centers), 1.0 / 200)


@given(hnp.arrays(np.float64, st.integers(0, 30), elements=unit_values), st.integers(2, 301))
def test_two_hot_round_trips_through_expected_value(values, num_bins):
    targets = rl.two_hot(values, num_bins)
    assert targets.shape == values.shape + (num_bins,)
    np.testing.assert_allclose(targets.sum(-1), 1.0)
    assert np.all(targets >= 0) and np.all((targets > 0).sum(-1) <= 2)
    np.testing.assert_allclose(rl.expected_value(targets), values, atol=1e-12)


@given(hnp.arrays(np.float64, st.integers(1, 30), elements=unit_values))
def test_discretise_picks_the_nearest_bin(values):
    centers = rl.bin_centers()
    index = rl.discretise(values)
    distance = np.abs(centers[index] - values)
    assert np.all(distance <= 0.5 / 200 + 1e-12)
    np.testing.assert_array_equal(rl.discretise(centers), np.arange(rl.NUM_BINS))


def test_values_outside_the_range_go_to_the_end_bins():
    np.testing.assert_array_equal(rl.discretise([-3.0, 2.0]), [0, 200])
    np.testing.assert_allclose(rl.expected_value(rl.two_hot([-3.0, 2.0])), [-1.0, 0.0])


@given(hnp.arrays(np.float64, (4, 11), elements=finite))
def test_expected_value_from_logits_is_a_convex_combination(logits):
    values = rl.expected_value_from_logits(logits)
    assert values.shape == (4,)
    assert np.all(values >= -1.0 - 1e-12) and np.all(values <= 1e-12)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(values, rl.expected_value(probs))


# ----------------------------------------------------------------- advantages


def _brute_force_n_step(rewards, values, n):
    length = len(rewards)
    out = np.zeros(length)
    for t in range(length):
        end = min(t + n, length)
        bootstrap = values[t + n] if t + n < length else 0.0
        out[t] = rewards[t:end].sum() + bootstrap - values[t]
    return out


episode_arrays = st.integers(1, 60).flatmap(
    lambda length: st.tuples(
        hnp.arrays(np.float64, length, elements=st.floats(-0.1, 0.0)),
        hnp.arrays(np.float64, length, elements=unit_values),
    )
)


@given(episode_arrays, st.integers(1, 80))
def test_n_step_advantage_matches_the_definition(episode, n):
    rewards, values = episode
    np.testing.assert_allclose(
        rl.n_step_advantage(rewards, values, n), _brute_force_n_step(rewards, values, n), atol=1e-12
    )


@given(episode_arrays, st.integers(0, 20))
def test_n_step_with_n_at_least_T_is_the_full_episode_advantage(episode, extra):
    rewards, values = episode
    n = len(rewards) + extra
    np.testing.assert_allclose(
        rl.n_step_advantage(rewards, values, n),
        rl.full_episode_advantage(rl.returns_to_go(rewards), values),
        atol=1e-12,
    )


@given(st.lists(episode_arrays, min_size=1, max_size=5), st.integers(1, 30))
def test_multi_episode_advantage_equals_per_episode(episodes, n):
    rewards = np.concatenate([r for r, _ in episodes])
    values = np.concatenate([v for _, v in episodes])
    episode_index = np.concatenate([np.full(len(r), 10 + i) for i, (r, _) in enumerate(episodes)])
    expected = np.concatenate([rl.n_step_advantage(r, v, n) for r, v in episodes])
    np.testing.assert_allclose(rl.n_step_advantage_by_episode(rewards, values, episode_index, n), expected, atol=1e-12)


def test_exact_value_function_gives_zero_advantage_on_its_own_episode():
    rewards = rl.normalise_returns(rl.episode_rewards(30, True, 30.0), 50, 30.0)
    values = rl.returns_to_go(rewards)
    np.testing.assert_allclose(rl.n_step_advantage(rewards, values, 7), 0.0, atol=1e-12)


def test_interleaved_episodes_are_rejected():
    with pytest.raises(ValueError, match="contiguous"):
        rl.n_step_advantage_by_episode(np.zeros(4), np.zeros(4), [0, 1, 0, 1], 2)


def test_advantage_rejects_mismatched_lengths_and_nan():
    with pytest.raises(ValueError, match="one entry per frame"):
        rl.n_step_advantage_by_episode(np.zeros(3), np.zeros(4), np.zeros(4), 2)
    with pytest.raises(ValueError, match="finite"):
        rl.n_step_advantage([0.0, np.nan], [0.0, 0.0], 1)


# ----------------------------------------------------------------- thresholds and indicator


@given(hnp.arrays(np.float64, st.integers(1, 400), elements=finite, unique=True), st.floats(0.0, 1.0))
def test_threshold_gives_the_requested_positive_fraction(advantages, fraction):
    epsilon = rl.advantage_threshold(advantages, fraction)
    achieved = np.mean(advantages > epsilon)
    assert abs(achieved - fraction) <= 0.5 / len(advantages) + 1e-12


def test_threshold_from_a_sample_is_close():
    advantages = np.random.default_rng(0).normal(size=50_000)
    epsilon = rl.advantage_threshold(advantages, 0.3, sample_size=10_000, rng=np.random.default_rng(1))
    assert abs(np.mean(advantages > epsilon) - 0.3) < 0.02


@given(
    st.lists(st.tuples(st.integers(0, 3), finite), min_size=1, max_size=200, unique_by=lambda p: p[1]),
    st.floats(0.05, 0.95),
)
def test_per_task_thresholds_give_the_fraction_in_every_task(pairs, fraction):
    task_index = np.array([t for t, _ in pairs])
    advantages = np.array([a for _, a in pairs])
    thresholds = rl.per_task_thresholds(advantages, task_index, fraction)
    assert set(thresholds) == set(task_index.tolist())
    for task, epsilon in thresholds.items():
        in_task = advantages[task_index == task]
        assert abs(np.mean(in_task > epsilon) - fraction) <= 0.5 / len(in_task) + 1e-12


def test_per_task_fraction_mapping_must_cover_every_task():
    thresholds = rl.per_task_thresholds(np.arange(10.0), np.repeat([0, 1], 5), {0: 0.4, 1: 0.2})
    assert thresholds[0] == 2.5 and thresholds[1] == 8.5
    with pytest.raises(KeyError, match="task_index 1"):
        rl.per_task_thresholds(np.arange(10.0), np.repeat([0, 1], 5), {0: 0.4})


@given(
    hnp.arrays(np.float64, 50, elements=finite),
    hnp.arrays(bool, 50),
    hnp.arrays(np.int64, 50, elements=st.integers(0, 2)),
    st.floats(-5, 5),
)
def test_interventions_are_always_positive(advantages, is_intervention, task_index, epsilon):
    thresholds = {0: epsilon, 1: epsilon - 1.0, 2: epsilon + 1.0}
    indicator = rl.improvement_indicator(advantages, task_index, thresholds, is_intervention)
    assert indicator.dtype == bool and indicator.shape == (50,)
    assert np.all(indicator[is_intervention])
    autonomous = ~is_intervention
    expected = advantages > np.array([thresholds[t] for t in task_index])
    np.testing.assert_array_equal(indicator[autonomous], expected[autonomous])


def test_indicator_needs_a_threshold_for_every_task():
    with pytest.raises(KeyError, match="task_index \\[2\\]"):
        rl.improvement_indicator([0.0, 1.0], [0, 2], {0: 0.0}, [False, False])


def test_drop_indicator_rate_and_edges():
    mask = rl.drop_indicator(20_000, 0.3, np.random.default_rng(0))
    assert mask.dtype == bool and mask.shape == (20_000,)
    assert abs(mask.mean() - 0.3) < 0.015
    assert not rl.drop_indicator(100, 0.0).any()
    assert rl.drop_indicator(100, 1.0).all()
    with pytest.raises(ValueError):
        rl.drop_indicator(4, 1.5)


@settings(max_examples=50)
@given(
    hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)),
    st.floats(0.01, 10.0),
    st.floats(1.0, 100.0),
)
def test_awr_weights_are_positive_monotone_and_capped(advantages, temperature, max_weight):
    weights = rl.awr_weights(advantages, temperature, max_weight)
    assert np.all(np.isfinite(weights)) and np.all(weights >= 0) and np.all(weights <= max_weight * (1 + 1e-12))
    order = np.argsort(advantages, kind="stable")
    assert np.all(np.diff(weights[order]) >= 0)


def test_awr_weight_of_zero_advantage_is_one():
    np.testing.assert_allclose(rl.awr_weights([0.0, 1.0], 1.0, 100.0), [1.0, np.e])


def test_before_takeover_marks_the_policy_frames_leading_into_each_correction():
    #            episode 0: auto x5, correction x2, auto x3 | episode 1: correction at its first frame, auto x3
    correction = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    episodes = np.array([0] * 10 + [1] * 4)
    marked = rl.before_takeover(correction, episodes, window=3)
    assert np.flatnonzero(marked).tolist() == [2, 3, 4]  # never across the episode boundary (frame 10)
    assert not rl.before_takeover(correction, episodes, window=0).any()
    assert np.flatnonzero(rl.before_takeover(correction, episodes, window=50)).tolist() == [0, 1, 2, 3, 4]
    # a second take-over in the same episode marks its own lead-in, corrections themselves never
    again = np.array([0, 0, 1, 0, 0, 1, 0], dtype=bool)
    assert np.flatnonzero(rl.before_takeover(again, np.zeros(7, int), window=2)).tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="window must be >= 0"):
        rl.before_takeover(correction, episodes, window=-1)
    with pytest.raises(ValueError, match="same shape"):
        rl.before_takeover(correction[:-1], episodes, window=2)
