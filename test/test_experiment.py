"""recap experiment --quick: every stage of the RECAP loop produces its artefacts.

Through the real station nodes and bags (demos, rollouts with the simulated
human), conversion, value/policy training, labelling, iterations, AWR, eval and
the report. Asserts artefacts and bookkeeping, not a gain (tiny sizes).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recap_ros.testing.procs import test_environment

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.mark.timeout(600)  # ~2.5 min on a 2-core machine; the stages are real processes
def test_quick_experiment_produces_every_artefact(tmp_path):
    out = tmp_path / "exp"
    proc = subprocess.run(
        [sys.executable, "-m", "recap_core.cli", "experiment", "--quick", "--out", str(out)],
        env=test_environment(),
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    profile = json.loads((out / "profile.json").read_text())
    demos = sum(n for _, n in profile["demos"])
    rollouts = profile["rollouts_per_iteration"] * profile["iterations"]

    bags = sorted(p for p in (out / "bags").glob("*/*") if p.is_dir())
    assert len(bags) == demos + rollouts, [b.name for b in bags]
    assert all((b / "metadata.yaml").is_file() for b in bags)

    from recap_core.data import load_episodes, load_frames_table

    eps = load_episodes(out / "dataset")
    assert len(eps) == demos + rollouts
    assert sorted({e["source"] for e in eps}) == ["demo", "rollout"]
    # the time limit fits the clean operator, so the values have successes to tell apart from failures; the
    # sloppy one (quality 0.4) takes 220-400 steps on the same seed, depending on timing, and may time out
    clean = sum(n for quality, n in profile["demos"] if quality == 1.0)
    demo_eps = [e for e in eps if e["source"] == "demo"]
    assert all(e["success"] for e in demo_eps[:clean]), [e["length"] for e in eps]
    table = load_frames_table(out / "dataset")
    assert {"value", "advantage", "indicator"} <= set(table.column_names)
    values = table["value"].to_numpy()
    assert values.max() - values.min() > 0.05, "the values along the episodes are flat"
    assert table["is_intervention"].to_numpy(zero_copy_only=False)[table["episode_index"].to_numpy() >= demos].any(), (
        "the simulated human never intervened in a rollout"
    )

    for k in range(profile["iterations"] + 1):
        for part in ("value", "policy"):
            prov = json.loads((out / "checkpoints" / f"iter_{k}" / part / "provenance.json").read_text())
            assert prov["iteration"] == k
    last = out / "checkpoints" / f"iter_{profile['iterations']}"
    for name, init in (("awr_positive", "pi_pre"), ("awr", "pi_pre_plain")):  # each folder named as its arm
        prov = json.loads((last / name / "provenance.json").read_text())
        assert prov["mode"] == "awr"
        assert prov["parent_checkpoint"]["path"] == str((out / "checkpoints" / init).resolve())
    # the paper's AWR starts from a pretraining without advantage conditioning: no text, demos only
    plain = json.loads((out / "checkpoints" / "pi_pre_plain" / "config.json").read_text())["training"]
    pre = json.loads((out / "checkpoints" / "pi_pre" / "config.json").read_text())["training"]
    assert plain["mode"] == "bc" and plain["sample_shares"] == {"demo": 1.0} and plain["steps"] == pre["steps"]

    report = json.loads((out / "eval.json").read_text())
    assert {"sft", "recap_beta1", "recap_beta2", "awr", "awr_positive"} <= set(report["arms"])
    # the paper's AWR (from pi_pre_plain) as it was trained, without advantage text; the hybrid prompted positive
    assert report["arms"]["awr"]["advantage"] is None and report["arms"]["awr_positive"]["advantage"] == "positive"
    for arm in ("awr", "awr_positive"):
        assert report["arms"][arm]["checkpoint"] == str(last / arm)
    assert report["arms"]["recap_beta2"]["advantage"] == "positive"
    seeds = {tuple(o["seed"] for o in a["outcomes"]) for a in report["arms"].values()}
    assert len(seeds) == 1, "arms were evaluated on different seeds"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["beyond_95_intervals"]) == {
        "recap_beats_sft_on_throughput",
        "recap_beats_sft_on_failure_rate",
        "recap_beats_awr_on_throughput",
        "recap_beats_awr_positive_on_throughput",
    }
    paired = summary["paired_by_seed"]["recap_beta2_vs_sft"]
    assert paired["seeds"] == len(next(iter(seeds)))
    lo, hi = paired["throughput_difference_ci95"]
    assert lo <= paired["throughput_difference_per_hour"] <= hi
    assert set(summary["paired_throughput_difference_above_0"]) == {
        "recap_beats_sft_on_throughput",
        "recap_beats_awr_on_throughput",
        "recap_beats_awr_positive_on_throughput",
    }
    assert "sign test p" in (out / "report.md").read_text()
    for name in ("report.md", "arms.png", "iterations.png", "value_curves.png"):
        assert (out / name).stat().st_size > 0, name

    # the sim records its task stage in every bag, and scripts/rollout_stages.py places every rollout frame
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "rollout_stages.py"
    spec = importlib.util.spec_from_file_location("rollout_stages", script)
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    result = stages.analyse(out / "dataset")
    assert result["rollout_episodes"] == rollouts and result["skipped_without_sim_status"] == 0, result
    in_rollouts = table["episode_index"].to_numpy() >= demos
    human = table["is_intervention"].to_numpy(zero_copy_only=False).astype(bool)
    assert sum(e["autonomous_frames"] for e in result["stages"]) == int((in_rollouts & ~human).sum())
    assert sum(e["correction_frames"] for e in result["stages"]) == int((in_rollouts & human).sum())
    assert sum(e["take_overs_at"] for e in result["stages"]) >= 1
