"""The statistics the evaluations report: Wilson intervals for success rates, bootstrap intervals,
throughput (successes per robot hour), and paired comparisons of two arms on the same seeds."""

from __future__ import annotations

from typing import Callable

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    samples: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``statistic`` over the rows of ``samples`` (NaN if empty)."""
    samples = np.asarray(samples)
    if len(samples) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = [statistic(samples[rng.integers(0, len(samples), len(samples))]) for _ in range(n_boot)]
    return (float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)))


def throughput(success_seconds: np.ndarray) -> float:
    """Successes per hour of robot time of episodes given as rows (success 0/1, seconds it took)."""
    return float(success_seconds[:, 0].sum() / max(success_seconds[:, 1].sum(), 1e-9) * 3600.0)


def sign_test(only_first: int, only_second: int) -> float:
    """Two-sided exact sign test on the discordant pairs (McNemar's exact test): p-value."""
    from scipy.stats import binomtest

    n = only_first + only_second
    return float(binomtest(only_first, n, 0.5).pvalue) if n else 1.0


def paired_throughput_difference(rows: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Rows ``(success_a, seconds_a, success_b, seconds_b)``, one per seed: ``a``'s throughput minus
    ``b``'s, and its 95 % bootstrap interval resampling the seeds (both arms together)."""

    def difference(r: np.ndarray) -> float:
        return throughput(r[:, :2]) - throughput(r[:, 2:])

    return difference(rows), bootstrap_interval(rows, difference)
