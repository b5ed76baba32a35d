"""Shared by the benchmarks (not one itself: scripts/bench_smoke.sh skips ``bench/_*.py``): the spread of repeats.

Every benchmark repeats its measurement ``--repeats N`` times (default 3, 2 with ``--quick``), interleaved with
its same-run baseline where it has one, and reports each headline figure as ``{"median": x, "worst": y}`` over
the repeats: worst is the unfavourable side (the highest latency, jitter, drops or CPU; the lowest rate or
throughput). A target counts as met only when the worst repeat meets it (:func:`met`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping

HIGH = "high"  # a higher value is worse: latency, jitter, drops, CPU, ratios with an upper bound
LOW = "low"  # a lower value is worse: rates, throughput, ratios with a lower bound

DEFAULT_REPEATS = 3
QUICK_REPEATS = 2


def add_repeats_argument(parser: argparse.ArgumentParser, what: str = "the measurement") -> None:
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"repeats of {what}, reported as median and worst (default {DEFAULT_REPEATS}; {QUICK_REPEATS} quick)",
    )


def repeat_count(args: argparse.Namespace) -> int:
    """``--repeats``, else the default for a full or a ``--quick`` run."""
    n = args.repeats or (QUICK_REPEATS if getattr(args, "quick", False) else DEFAULT_REPEATS)
    if n < 1:
        raise SystemExit("--repeats must be at least 1")
    return n


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spread(values: Iterable[float], worse: str, digits: int = 3) -> dict:
    """``{"median": x, "worst": y}`` of one figure's repeats; ``worse`` is :data:`HIGH` or :data:`LOW`.

    A repeat without a finite value (NaN, None: the figure could not be taken that time) leaves the median to
    the others and makes the worst ``None``: a target cannot be met on an unknown repeat.
    """
    if worse not in (HIGH, LOW):
        raise ValueError(f"worse must be {HIGH!r} or {LOW!r}, not {worse!r}")
    values = list(values)
    if not values:
        raise ValueError("no repeats")
    finite = [float(v) for v in values if _finite(v)]
    median = round(statistics.median(finite), digits) if finite else None
    if len(finite) < len(values):
        worst = None
    else:
        worst = round(max(finite) if worse == HIGH else min(finite), digits)
    return {"median": median, "worst": worst}


def summarise(repeats: list[Mapping], worse: Mapping[str, str], digits: int = 3) -> dict:
    """:func:`spread` of each key of ``worse`` over ``repeats`` (one dict of figures per repeat)."""
    return {key: spread([r[key] for r in repeats], side, digits) for key, side in worse.items()}


def met(figure: Mapping, bound: float, worse: str) -> bool:
    """Whether the worst repeat of ``figure`` (a :func:`spread`) meets ``bound``: <= for HIGH, >= for LOW."""
    worst = figure["worst"]
    if worst is None:
        return False
    return worst <= bound if worse == HIGH else worst >= bound


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, label: str = "") -> dict[str, list]:
    """Run each variant (measurement and baseline) in turn, ``repeats`` rounds: each variant's list of results.

    Taking them in turn lets load from other processes hit every variant alike. Progress goes to stderr.
    """
    results: dict[str, list] = {name: [] for name in variants}
    for i in range(repeats):
        for name, call in variants.items():
            results[name].append(call())
            print(f"[{label or 'bench'}] repeat {i + 1}/{repeats} {name}: {results[name][-1]}", file=sys.stderr)
    return results
