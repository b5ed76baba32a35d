"""Pooling pipeline runs: one estimate per arm over several runs of the same profile with different pipeline seeds.

Two runs of the same recipe differ in their recorded episodes, training randomness and fold split (SFT ranged
33-56 % between runs of r2-r5), so an interval over the test seeds of one run covers seed noise only. The pooled
estimate here is every run's test episodes together; its 95 % interval is a **hierarchical bootstrap**: each
replicate draws the runs with replacement, then, within each drawn run, its seeds with replacement, and computes
the statistic on the episodes drawn. With one run, or runs that agree, it is the seed-only interval (seeds
resampled within each run, every run kept); when the runs disagree it is wider. Paired differences (arm A's
throughput minus arm B's) resample the same way, each seed with both arms' episodes on it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Sequence

import numpy as np

from recap_core.errors import UserError
from recap_core.stats import throughput
from recap_experiment.evaluate import DT, number

N_BOOT = 2000


class PipelinePoolError(UserError, ValueError):
    """The runs are not pipeline seeds of one profile evaluated on the same test seeds."""


def success_rate(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean()) if len(rows) else float("nan")


def throughput_difference(rows: np.ndarray) -> float:
    """Rows ``(success_a, seconds_a, success_b, seconds_b)``: ``a``'s throughput minus ``b``'s."""
    return throughput(rows[:, :2]) - throughput(rows[:, 2:])


def hierarchical_interval(
    runs: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray], float],
    *,
    resample_runs: bool = True,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % percentile interval of ``statistic`` over the rows of all ``runs`` (one array of rows per run):
    each replicate draws the runs with replacement (``resample_runs``; otherwise every run once: the seed-only
    interval), then each drawn run's rows with replacement. NaN when there are no rows."""
    runs = [np.asarray(r, dtype=float) for r in runs if len(r)]
    if not runs:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(runs), len(runs)) if resample_runs else range(len(runs))
        stats[b] = statistic(np.concatenate([runs[r][rng.integers(0, len(runs[r]), len(runs[r]))] for r in chosen]))
    return (float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)))


def arm_rows(arm: dict, dt: float = DT) -> np.ndarray:
    """An evaluated arm's episodes as rows ``(success, robot seconds)``, by seed."""
    outcomes = sorted(arm.get("outcomes", []), key=lambda o: int(o["seed"]))
    return np.array([[float(bool(o["success"])), o["steps"] * dt] for o in outcomes], dtype=float).reshape(-1, 2)


def paired_rows(a: dict, b: dict, dt: float = DT) -> np.ndarray:
    """Rows ``(success_a, seconds_a, success_b, seconds_b)`` over the seeds both arms saw."""
    first = {int(o["seed"]): o for o in a.get("outcomes", [])}
    second = {int(o["seed"]): o for o in b.get("outcomes", [])}
    rows = [
        [
            float(bool(first[s]["success"])),
            first[s]["steps"] * dt,
            float(bool(second[s]["success"])),
            second[s]["steps"] * dt,
        ]
        for s in sorted(set(first) & set(second))
    ]
    return np.array(rows, dtype=float).reshape(-1, 4)


def pool_arm(runs: Sequence[np.ndarray], n_boot: int = N_BOOT) -> dict:
    """Pooled success rate and throughput of one arm over its runs' rows, each with the hierarchical 95 %
    interval (``*_ci95``) and the seed-only one (``*_ci95_seeds_only``), and the per-run figures."""
    rows = np.concatenate([np.asarray(r, dtype=float).reshape(-1, 2) for r in runs]) if runs else np.zeros((0, 2))
    out = {"runs": len(runs), "episodes": int(len(rows)), "successes": int(rows[:, 0].sum())}
    for key, statistic in (("success_rate", success_rate), ("throughput_per_hour", throughput)):
        out[key] = statistic(rows) if len(rows) else float("nan")
        out[f"{key}_ci95"] = list(hierarchical_interval(runs, statistic, n_boot=n_boot))
        out[f"{key}_ci95_seeds_only"] = list(hierarchical_interval(runs, statistic, resample_runs=False, n_boot=n_boot))
    out["per_run"] = [
        {"success_rate": success_rate(r), "throughput_per_hour": throughput(r) if len(r) else float("nan")}
        for r in runs
    ]
    return out


def pool_paired(runs: Sequence[np.ndarray], n_boot: int = N_BOOT) -> dict:
    """Pooled paired throughput difference over runs of rows ``(success_a, seconds_a, success_b, seconds_b)``."""
    rows = np.concatenate([np.asarray(r, dtype=float).reshape(-1, 4) for r in runs]) if runs else np.zeros((0, 4))
    if not len(rows):
        return {"seeds": 0}
    return {
        "seeds": int(len(rows)),
        "throughput_difference_per_hour": throughput_difference(rows),
        "throughput_difference_ci95": list(hierarchical_interval(runs, throughput_difference, n_boot=n_boot)),
        "throughput_difference_ci95_seeds_only": list(
            hierarchical_interval(runs, throughput_difference, resample_runs=False, n_boot=n_boot)
        ),
        "per_run": [throughput_difference(r) if len(r) else float("nan") for r in runs],
    }


#: the comparisons the pooled report makes: RECAP (last iterate, beta 2) against every other main arm
POOLED_COMPARISONS = tuple(
    ("recap_beta2", b) for b in ("sft", "hg_dagger", "awr", "awr_positive", "recap_paper", "recap_beta1")
)


def read_run(path: pathlib.Path) -> tuple[dict, dict | None]:
    """A pipeline run's test evaluation and its summary (None when it has none): ``path`` is the run's
    directory (``eval.json``, ``summary.json``) or an ``eval.json``."""
    path = pathlib.Path(path)
    report_path = path / "eval.json" if path.is_dir() else path
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelinePoolError(f"{path}: cannot read its test evaluation {report_path} ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("arms"), dict):
        raise PipelinePoolError(f"{report_path}: not a recap eval report (no 'arms')")
    summary_path = report_path.parent / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError:
            summary = None
    return report, summary


def pool_runs(
    reports: Sequence[dict],
    summaries: Sequence[dict | None] | None = None,
    names: Sequence[str] | None = None,
    n_boot: int = N_BOOT,
) -> dict:
    """Pool the test evaluations of pipeline runs of one profile: per arm, :func:`pool_arm` over the runs that
    evaluated it, and :data:`POOLED_COMPARISONS` paired. Refuses runs whose summaries name different profiles
    (``protocol.profile_sha256``), the same pipeline seed twice, or different test seeds for an arm."""
    names = list(names or [f"run {k}" for k in range(len(reports))])
    summaries = list(summaries or [None] * len(reports))
    if not reports:
        raise PipelinePoolError("nothing to pool: give at least one pipeline run")
    protocols = [(s or {}).get("protocol") or {} for s in summaries]
    hashes = {p.get("profile_sha256") for p in protocols if p.get("profile_sha256")}
    if len(hashes) > 1:
        raise PipelinePoolError(
            "the runs ran different profiles (protocol.profile_sha256 differs: "
            + ", ".join(f"{n}: {(p.get('profile_sha256') or '?')[:12]}" for n, p in zip(names, protocols))
            + "); pool pipeline seeds of one profile"
        )
    seeds = [p.get("pipeline_seed") for p in protocols if p.get("pipeline_seed") is not None]
    if len(seeds) != len(set(seeds)):
        raise PipelinePoolError(f"pipeline seed given twice among the runs ({seeds}): each run must be its own seed")
    arm_names: list[str] = []
    for report in reports:
        arm_names += [n for n in report["arms"] if n not in arm_names]
    arms = {}
    for arm in arm_names:
        held = [(name, r["arms"][arm]) for name, r in zip(names, reports) if arm in r["arms"]]
        seed_sets = {tuple(sorted(int(o["seed"]) for o in a.get("outcomes", []))) for _, a in held}
        if len(seed_sets) > 1:
            raise PipelinePoolError(f"arm {arm} was evaluated on different test seeds in different runs")
        arms[arm] = {**pool_arm([arm_rows(a) for _, a in held], n_boot=n_boot), "run_names": [n for n, _ in held]}
    paired = {}
    for a, b in POOLED_COMPARISONS:
        both = [r for r in reports if a in r["arms"] and b in r["arms"]]
        if both:
            paired[f"{a}_vs_{b}"] = pool_paired([paired_rows(r["arms"][a], r["arms"][b]) for r in both], n_boot=n_boot)
    return {
        "runs": names,
        "pipeline_seeds": [p.get("pipeline_seed") for p in protocols],
        "profile_sha256": next(iter(hashes)) if hashes else None,
        "test_seeds": sorted({int(o["seed"]) for r in reports for a in r["arms"].values() for o in a["outcomes"]}),
        "bootstrap": f"hierarchical: runs with replacement, then seeds within each run; {n_boot} replicates",
        "arms": arms,
        "paired": paired,
    }


def _ci(value, interval, fmt: str, scale: float = 1.0) -> str:
    def cell(v):
        return number(v * scale if v is not None and np.isfinite(v) else v, fmt)

    return f"{cell(value)} [{cell(interval[0])}, {cell(interval[1])}]"


def pooled_table(pooled: dict) -> list[str]:
    """Markdown: per arm, each run's success rate and throughput, then the pooled figures with the
    hierarchical interval and, for comparison, the seed-only one; then the pooled paired differences."""
    runs = pooled["runs"]
    lines = [
        "| arm | "
        + " | ".join(f"{name}: success %, successes/h" for name in runs)
        + " | pooled success % [95% CI, runs and seeds] | seeds only | pooled successes/h [95% CI, runs and seeds]"
        " | seeds only |",
        "|---|" + "---|" * (len(runs) + 4),
    ]
    for arm, a in pooled["arms"].items():
        per = dict(zip(a["run_names"], a["per_run"]))
        cells = [
            f"{number(per[n]['success_rate'] * 100, '.0f')}, {number(per[n]['throughput_per_hour'], '.0f')}"
            if n in per
            else "not run"
            for n in runs
        ]
        lines.append(
            f"| {arm} | "
            + " | ".join(cells)
            + f" | {_ci(a['success_rate'], a['success_rate_ci95'], '.0f', 100)}"
            + f" | [{number(a['success_rate_ci95_seeds_only'][0] * 100, '.0f')}, "
            f"{number(a['success_rate_ci95_seeds_only'][1] * 100, '.0f')}]"
            + f" | {_ci(a['throughput_per_hour'], a['throughput_per_hour_ci95'], '.0f')}"
            + f" | [{number(a['throughput_per_hour_ci95_seeds_only'][0], '.0f')}, "
            f"{number(a['throughput_per_hour_ci95_seeds_only'][1], '.0f')}] |"
        )
    if pooled.get("paired"):
        lines += [
            "",
            "| comparison | seeds (all runs) | per run, successes/h | pooled difference [95% CI, runs and seeds] "
            "| seeds only |",
            "|---|---|---|---|---|",
        ]
        for name, c in pooled["paired"].items():
            if not c.get("seeds"):
                lines.append(f"| {name.replace('_vs_', ' vs ')} | 0 | | no common seeds | |")
                continue
            per = ", ".join(number(v, "+.0f") for v in c["per_run"])
            lo, hi = c["throughput_difference_ci95_seeds_only"]
            lines.append(
                f"| {name.replace('_vs_', ' vs ')} | {c['seeds']} | {per} | "
                f"{_ci(c['throughput_difference_per_hour'], c['throughput_difference_ci95'], '+.0f')} | "
                f"[{number(lo, '+.0f')}, {number(hi, '+.0f')}] |"
            )
    return lines
