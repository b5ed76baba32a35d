"""The evaluation statistics (recap_core.stats) as pure functions."""

from __future__ import annotations

import numpy as np

from recap_core.stats import bootstrap_interval, paired_throughput_difference, sign_test, throughput, wilson_interval


def test_wilson_interval_contains_the_rate_and_narrows_with_n():
    lo, hi = wilson_interval(30, 50)
    assert lo < 0.6 < hi
    lo2, hi2 = wilson_interval(300, 500)
    assert hi2 - lo2 < hi - lo
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_throughput_is_successes_per_robot_hour():
    rows = np.array([[1.0, 10.0], [0.0, 8.0], [1.0, 18.0]])
    assert throughput(rows) == 2 / 36 * 3600


def test_bootstrap_interval_covers_the_statistic_and_is_nan_when_empty():
    samples = np.random.default_rng(0).normal(5.0, 1.0, 400)
    lo, hi = bootstrap_interval(samples, np.mean)
    assert lo < samples.mean() < hi and hi - lo < 0.5
    assert all(np.isnan(bootstrap_interval(np.array([]), np.mean)))


def test_sign_test_and_paired_difference():
    assert sign_test(0, 0) == 1.0
    assert sign_test(20, 2) < 0.001 and sign_test(5, 5) == 1.0
    rows = np.array([[1.0, 5.0, 0.0, 8.0]] * 30 + [[0.0, 8.0, 0.0, 8.0]] * 30)
    difference, (lo, hi) = paired_throughput_difference(rows)
    assert difference > 0 and lo > 0 and lo <= difference <= hi
