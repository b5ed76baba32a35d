"""The experiment report's paired comparison (the full report is test/test_experiment.py)."""

from __future__ import annotations

import pytest

from recap_experiment.experiment_report import paired_comparison, paired_table


def arm(successes):
    return {"outcomes": [{"seed": seed, "success": ok} for seed, ok in successes.items()]}


def test_paired_comparison_counts_the_seeds_only_one_arm_solved_and_tests_them():
    a = arm({s: s < 9 for s in range(12)})  # solves 0-8
    b = arm({s: s in (0, 10) for s in range(12)})  # solves 0 and 10
    c = paired_comparison(a, b)
    assert (c["seeds"], c["only_first"], c["only_second"]) == (12, 8, 1)
    assert c["sign_test_p"] == pytest.approx(0.0390625)  # 2 * P(X <= 1), X ~ Bin(9, 0.5)
    assert paired_comparison(b, a)["sign_test_p"] == pytest.approx(c["sign_test_p"])
    same = paired_comparison(a, a)
    assert same["only_first"] == same["only_second"] == 0 and same["sign_test_p"] == 1.0
    # only shared seeds count
    assert paired_comparison(a, arm({100: True})) is None
    assert paired_comparison(arm({1: True, 2: False}), arm({2: True, 3: True}))["seeds"] == 1


def timed_arm(outcomes):
    return {"outcomes": [{"seed": seed, "success": ok, "steps": steps} for seed, (ok, steps) in outcomes.items()]}


def test_paired_comparison_gives_the_throughput_difference_with_an_interval_over_the_seeds():
    fast = timed_arm({s: (True, 100) for s in range(10)})  # 10 successes in 20 s
    mixed = timed_arm({s: (s < 5, 100 if s < 5 else 400) for s in range(10)})  # 5 in 10 s + 40 s
    c = paired_comparison(fast, mixed, dt=0.02)
    assert c["throughput_difference_per_hour"] == pytest.approx(3600 * (10 / 20 - 5 / 50))
    lo, hi = c["throughput_difference_ci95"]
    assert 0 < lo <= c["throughput_difference_per_hour"] <= hi
    back = paired_comparison(mixed, fast, dt=0.02)
    assert back["throughput_difference_per_hour"] == pytest.approx(-c["throughput_difference_per_hour"])
    assert back["throughput_difference_ci95"][1] < 0
    same = paired_comparison(fast, fast)
    assert same["throughput_difference_per_hour"] == 0 and same["throughput_difference_ci95"] == [0, 0]
    # outcomes without their steps (older eval.json): the sign test only
    assert "throughput_difference_per_hour" not in paired_comparison(arm({1: True}), arm({1: False}))


def test_the_paired_table_has_a_row_per_comparison_and_says_when_the_arms_share_no_seed():
    a = arm({s: s < 9 for s in range(12)})
    b = arm({s: s in (0, 10) for s in range(12)})
    rows = paired_table({"a_vs_b": paired_comparison(a, b), "a_vs_c": paired_comparison(a, arm({99: True}))})
    assert rows[2].startswith("| a vs b | 12 | 8 | 1 | 0.0391 |")
    assert rows[3] == "| a vs c | 0 | | | | no common seeds |" and len(rows) == 4
