"""Pooling pipeline runs: the hierarchical bootstrap over runs, then seeds, and recap eval-pool --pipeline-runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recap_core import cli
from recap_experiment.pipeline_pool import (
    PipelinePoolError,
    hierarchical_interval,
    pool_runs,
    pooled_table,
    success_rate,
)

SEEDS = range(200000, 200200)


def eval_report(rates: dict[str, float], seed: int, seeds=SEEDS) -> dict:
    """A test evaluation where each arm solves about ``rates[arm]`` of the seeds (200 steps when it does)."""
    rng = np.random.default_rng(seed)
    arms = {}
    for name, rate in rates.items():
        solved = rng.random(len(seeds)) < rate
        arms[name] = {
            "outcomes": [{"seed": s, "success": bool(ok), "steps": 200 if ok else 400} for s, ok in zip(seeds, solved)]
        }
    return {"seeds": list(seeds), "arms": arms}


def summary(pipeline_seed: int, sha: str = "a" * 64) -> dict:
    return {"protocol": {"pipeline_seed": pipeline_seed, "profile_sha256": sha, "test_seeds": [200000, 200199]}}


def test_runs_that_disagree_widen_the_interval_beyond_the_seed_only_one():
    # between-run variance large: one recipe that gave 20 %, 50 % and 80 % in three runs
    spread = [eval_report({"sft": rate}, seed) for seed, rate in enumerate((0.2, 0.5, 0.8))]
    pooled = pool_runs(spread, [summary(k) for k in range(3)])["arms"]["sft"]
    lo, hi = pooled["success_rate_ci95"]
    slo, shi = pooled["success_rate_ci95_seeds_only"]
    assert lo <= pooled["success_rate"] <= hi and slo <= pooled["success_rate"] <= shi
    assert hi - lo > 3 * (shi - slo), (pooled["success_rate_ci95"], pooled["success_rate_ci95_seeds_only"])
    tlo, thi = pooled["throughput_per_hour_ci95"]
    stlo, sthi = pooled["throughput_per_hour_ci95_seeds_only"]
    assert thi - tlo > 2 * (sthi - stlo)
    # runs that agree: the hierarchical interval is about the seed-only one
    same = [eval_report({"sft": 0.5}, seed) for seed in range(3)]
    agreed = pool_runs(same, [summary(k) for k in range(3)])["arms"]["sft"]
    width = agreed["success_rate_ci95"][1] - agreed["success_rate_ci95"][0]
    seed_width = agreed["success_rate_ci95_seeds_only"][1] - agreed["success_rate_ci95_seeds_only"][0]
    assert width < 2 * seed_width and width < hi - lo


def test_the_hierarchical_interval_of_one_run_is_its_seed_interval():
    rows = np.array([[float(k % 3 == 0), 4.0] for k in range(90)])
    assert hierarchical_interval([rows], success_rate) == hierarchical_interval(
        [rows], success_rate, resample_runs=False
    )
    assert all(np.isnan(hierarchical_interval([], success_rate)))


def test_paired_differences_pool_over_runs_and_every_run_is_shown():
    reports = [eval_report({"recap_beta2": 0.6, "sft": 0.3}, seed) for seed in range(3)]
    pooled = pool_runs(reports, [summary(k) for k in range(3)], ["r0", "r1", "r2"])
    c = pooled["paired"]["recap_beta2_vs_sft"]
    assert c["seeds"] == 600 and len(c["per_run"]) == 3
    lo, hi = c["throughput_difference_ci95"]
    assert 0 < lo <= c["throughput_difference_per_hour"] <= hi
    assert pooled["pipeline_seeds"] == [0, 1, 2] and pooled["profile_sha256"] == "a" * 64
    table = "\n".join(pooled_table(pooled))
    assert "r0: success %" in table and "| recap_beta2 vs sft | 600 |" in table


@pytest.mark.parametrize(
    "summaries, reports, message",
    [
        ([summary(0), summary(1, "b" * 64)], None, "different profiles"),
        ([summary(0), summary(0)], None, "pipeline seed given twice"),
        ([summary(0), summary(1)], [range(200000, 200200), range(200000, 200100)], "different test seeds"),
    ],
)
def test_runs_that_are_not_seeds_of_one_profile_are_refused(summaries, reports, message):
    seeds = reports or [SEEDS, SEEDS]
    with pytest.raises(PipelinePoolError, match=message):
        pool_runs([eval_report({"sft": 0.5}, k, s) for k, s in enumerate(seeds)], summaries)


def test_eval_pool_pools_pipeline_run_directories(tmp_path, capsys):
    runs = []
    for k in range(2):
        run = tmp_path / f"seed_{k}"
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(eval_report({"sft": 0.3 + 0.3 * k, "recap_beta2": 0.6}, k)))
        (run / "summary.json").write_text(json.dumps(summary(k)))
        runs.append(str(run))
    out = tmp_path / "pooled.json"
    assert cli.main(["eval-pool", "--pipeline-runs", *runs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed_0" in printed and "recap_beta2 vs sft" in printed
    written = json.loads(out.read_text())
    assert written["arms"]["sft"]["runs"] == 2 and written["arms"]["sft"]["episodes"] == 400
    assert "hierarchical" in written["bootstrap"]
    # an older run without summary.json pools too; a directory without eval.json is named
    (tmp_path / "seed_1" / "summary.json").unlink()
    assert cli.main(["eval-pool", "--pipeline-runs", *runs]) == 0
    (tmp_path / "empty").mkdir()
    assert cli.main(["eval-pool", "--pipeline-runs", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err


def test_the_pooled_experiment_report_shows_each_run_and_the_pooled_estimate(tmp_path):
    from recap_experiment.experiment_report import write_pooled_report

    runs = []
    for k in range(2):
        run = tmp_path / f"seed_{k}"
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(eval_report({"sft": 0.2 + 0.4 * k, "recap_beta2": 0.6}, k)))
        (run / "summary.json").write_text(json.dumps(summary(k)))
        runs.append(run)
    report = write_pooled_report(tmp_path, runs).read_text()
    assert "[seed_0](seed_0/report.md)" in report and "seed_1: success %" in report
    assert "test seeds 200000-200199" in report and "hierarchical bootstrap" in report
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["protocol"]["pipeline_seeds"] == [0, 1] and written["protocol"]["profile_sha256"] == "a" * 64
    sft = written["pooled"]["arms"]["sft"]
    assert sft["success_rate_ci95"][1] - sft["success_rate_ci95"][0] > (
        sft["success_rate_ci95_seeds_only"][1] - sft["success_rate_ci95_seeds_only"][0]
    )
