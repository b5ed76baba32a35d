"""bench/_spread.py: the median and worst of a benchmark's repeats, and targets judged on the worst."""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def load_spread():
    spec = importlib.util.spec_from_file_location("bench_spread", BENCH / "_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


spread_module = load_spread()


def test_worst_is_the_unfavourable_side():
    s = spread_module
    assert s.spread([3.0, 1.0, 2.0], s.HIGH) == {"median": 2.0, "worst": 3.0}  # latency: the highest
    assert s.spread([3.0, 1.0, 2.0], s.LOW) == {"median": 2.0, "worst": 1.0}  # rate: the lowest
    assert s.spread([1.0, 2.0], s.HIGH) == {"median": 1.5, "worst": 2.0}
    assert s.spread([1.23456], s.LOW, digits=2) == {"median": 1.23, "worst": 1.23}
    with pytest.raises(ValueError):
        s.spread([1.0], "up")
    with pytest.raises(ValueError):
        s.spread([], s.HIGH)


def test_a_repeat_without_a_figure_leaves_the_worst_unknown():
    s = spread_module
    assert s.spread([1.0, math.nan, 3.0], s.HIGH) == {"median": 2.0, "worst": None}
    assert s.spread([None, None], s.LOW) == {"median": None, "worst": None}
    assert not s.met({"median": 1.0, "worst": None}, 5.0, s.HIGH)


def test_summarise_and_met_on_the_worst_repeat():
    s = spread_module
    repeats = [{"ms": 4.0, "hz": 50.0, "other": "x"}, {"ms": 6.0, "hz": 48.0, "other": "y"}]
    figures = s.summarise(repeats, {"ms": s.HIGH, "hz": s.LOW})
    assert figures == {"ms": {"median": 5.0, "worst": 6.0}, "hz": {"median": 49.0, "worst": 48.0}}
    assert not s.met(figures["ms"], 5.0, s.HIGH)  # the median meets it, the worst repeat does not
    assert s.met(figures["ms"], 6.0, s.HIGH)
    assert s.met(figures["hz"], 48.0, s.LOW)
    assert not s.met(figures["hz"], 49.0, s.LOW)


def test_repeat_count_and_interleaving():
    s = spread_module
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    s.add_repeats_argument(parser)
    assert s.repeat_count(parser.parse_args([])) == s.DEFAULT_REPEATS == 3
    assert s.repeat_count(parser.parse_args(["--quick"])) == s.QUICK_REPEATS == 2
    assert s.repeat_count(parser.parse_args(["--quick", "--repeats", "5"])) == 5
    order = []
    results = s.interleaved({"a": lambda: order.append("a") or 1, "b": lambda: order.append("b") or 2}, 2)
    assert order == ["a", "b", "a", "b"]
    assert results == {"a": [1, 1], "b": [2, 2]}
