"""The experiment's report: a markdown table, plots per iteration, value curves, a JSON summary."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from recap_core.outputs import write_json

from recap_core.stats import paired_throughput_difference, sign_test
from recap_experiment.evaluate import DT, conditioning_cell, number

# recap experiment's AWR arms: the paper's baseline (AWR from a pretraining without advantage conditioning,
# prompted as trained: no advantage text) and the hybrid (AWR from RECAP's pi_pre, prompted "Advantage: positive")
AWR_ARMS = ("awr", "awr_positive")
#: the controls issue 31 added: supervised on the same corrections, and the paper's recipe on the same data
CONTROL_ARMS = ("hg_dagger", "recap_paper")
#: the report's main arms, in its order (older runs hold some of them)
MAIN_ARMS = ("sft", "hg_dagger", "awr", "awr_positive", "recap_paper", "recap_beta1", "recap_beta2")


#: the report's units, the same in its tables and plots
SUCCESS_RATE = "success rate (%)"
THROUGHPUT = "throughput (successes per hour)"
TIME_TO_SUCCESS = "mean time to success (s)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _percent(values) -> np.ndarray:
    return np.array(values, dtype=float) * 100.0


def _error_bars(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``[2, N]`` distances below and above each value; 0 where the interval is undefined."""
    return np.nan_to_num(np.stack([values - lo, hi - values]), nan=0.0).clip(min=0)


def _plot_arms(eval_report: dict, path: pathlib.Path, names: list[str]) -> None:
    """Per arm: success rate, throughput and mean time to success, with their 95 % intervals. An undefined
    figure (the mean time to success of an arm that solved nothing) gets no bar but an "n/a" label."""
    plt = _pyplot()
    arms = eval_report["arms"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(names))
    for ax, key, ci, title, scale, fmt in (
        (axes[0], "success_rate", "success_rate_ci95", SUCCESS_RATE, 100.0, ".0f"),
        (axes[1], "throughput_per_hour", "throughput_ci95", THROUGHPUT, 1.0, ".0f"),
        (axes[2], "mean_time_to_success_s", "time_to_success_ci95", TIME_TO_SUCCESS, 1.0, ".2f"),
    ):
        values = np.array([arms[n][key] for n in names], dtype=float) * scale
        lo = np.array([arms[n][ci][0] for n in names], dtype=float) * scale
        hi = np.array([arms[n][ci][1] for n in names], dtype=float) * scale
        defined = np.isfinite(values)
        ax.bar(x[defined], values[defined], yerr=_error_bars(values, lo, hi)[:, defined], capsize=4, color="#4c9a6a")
        tops = np.where(np.isfinite(hi), np.fmax(hi, values), values)
        top = float(np.nanmax(tops)) if defined.any() and np.nanmax(tops) > 0 else 1.0
        for i in range(len(names)):  # the value above its bar and interval; n/a where it is undefined
            label = format(values[i], fmt) if defined[i] else "n/a"
            height = tops[i] if defined[i] and np.isfinite(tops[i]) else 0.0
            ax.text(
                x[i],
                height + 0.02 * top,
                label,
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.2" if defined[i] else "0.5",
            )
        ax.set_ylim(0, top * 1.15)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xticks(x, names)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("held-out seeds, no interventions (95% intervals; n/a: no success to time)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_iterations(eval_report: dict, iterations: int, path: pathlib.Path) -> list[dict]:
    plt = _pyplot()
    arms = eval_report["arms"]
    names = ["sft"] + [f"iter_{k}" for k in range(1, iterations)] + ["recap_beta1"]
    rows = [
        {
            "iteration": k,
            **{key: arms[n][key] for key in ("success_rate", "throughput_per_hour")},
            "success_ci": arms[n]["success_rate_ci95"],
            "throughput_ci": arms[n]["throughput_ci95"],
        }
        for k, n in enumerate(names)
        if n in arms
    ]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ks = [r["iteration"] for r in rows]
    for ax, key, ci, title, scale in (
        (axes[0], "success_rate", "success_ci", SUCCESS_RATE, 100.0),
        (axes[1], "throughput_per_hour", "throughput_ci", THROUGHPUT, 1.0),
    ):
        v = np.array([r[key] for r in rows], dtype=float) * scale
        lo = np.array([r[ci][0] for r in rows], dtype=float) * scale
        hi = np.array([r[ci][1] for r in rows], dtype=float) * scale
        ax.errorbar(ks, v, yerr=_error_bars(v, lo, hi), marker="o", capsize=4, clip_on=False)
        finite = np.concatenate([v, hi])[np.isfinite(np.concatenate([v, hi]))]
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        ax.set_ylim(0, top * 1.1)
        ax.set_xlabel("RECAP iteration (0 = SFT)")
        ax.set_title(title)
        ax.set_xticks(ks)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def _plot_value_curves(dataset: pathlib.Path, path: pathlib.Path, max_episodes: int = 6) -> int:
    """Value along a few recorded episodes (labels of the last iteration's V): each episode in its own
    colour, solid when it succeeded and dashed when it failed, a point every 0.5 s, and a wide band of
    its colour under the human's corrections."""
    plt = _pyplot()

    from recap_core.data import load_episodes, load_frames_table

    table = load_frames_table(dataset)
    if "value" not in table.column_names:
        return 0
    sources = {int(ep["episode_index"]): str(ep.get("source", "?")) for ep in load_episodes(dataset)}
    episode = table["episode_index"].to_numpy()
    value = table["value"].to_numpy()
    success = table["episode_success"].to_numpy(zero_copy_only=False)
    intervention = table["is_intervention"].to_numpy(zero_copy_only=False).astype(bool)
    chosen = []
    for want in (True, False):
        ids = [int(e) for e in np.unique(episode) if bool(success[episode == e][0]) == want]
        chosen += ids[-(max_episodes // 2) :]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    colours = plt.get_cmap("tab10")
    for i, e in enumerate(chosen):
        rows = episode == e
        t = np.arange(rows.sum()) * 0.02
        ok = bool(success[rows][0])
        colour = colours(i % 10)
        ax.plot(
            t,
            value[rows],
            color=colour,
            linestyle="-" if ok else "--",
            marker="o",
            markersize=3,
            markevery=25,
            label=f"episode {e}: {sources.get(e, '?')}, {'success' if ok else 'failure'}",
        )
        if sources.get(e) != "demo":  # in a demonstration every frame is the human's
            corrected = np.where(intervention[rows], value[rows], np.nan)
            ax.plot(t, corrected, color=colour, linewidth=7, alpha=0.25, solid_capstyle="butt")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("value (normalised)")
    ax.set_ylim(-1.05, 0.05)
    ax.set_title("value along recorded episodes")
    ax.legend(
        fontsize=7,
        loc="lower left",
        ncols=2,
        title="solid: success, dashed: failure, wide band: human correction",
        title_fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(chosen)


def _data_summary(dataset: pathlib.Path) -> dict:
    from recap_core.data import load_episodes

    episodes = load_episodes(dataset)
    by_source: dict[str, dict] = {}
    for ep in episodes:
        s = by_source.setdefault(str(ep.get("source", "?")), {"episodes": 0, "successes": 0, "frames": 0})
        s["episodes"] += 1
        s["successes"] += int(bool(ep.get("success")))
        s["frames"] += int(ep.get("length", 0))
    return by_source


def _furthest_stages(arms: dict) -> dict[str, list[int]]:
    """arm -> episodes whose highest reward stage was 0, 1, 2, 3, 4 (where the policies get stuck)."""
    out = {}
    for name, arm in arms.items():
        rewards = [o.get("max_reward") for o in arm.get("outcomes", [])]
        if rewards and all(r is not None for r in rewards):
            out[name] = [sum(1 for r in rewards if int(r) == k) for k in range(5)]
    return out


def paired_table(paired: dict[str, dict | None]) -> list[str]:
    """Markdown rows of :func:`paired_comparison` results keyed ``A_vs_B`` (the report's and ``recap
    eval-pool``'s table)."""
    lines = [
        "| comparison | seeds | only first | only second | sign test p "
        "| throughput difference, successes per hour [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in paired.items():
        label = name.replace("_vs_", " vs ")
        if not c:
            lines.append(f"| {label} | 0 | | | | no common seeds |")
            continue
        diff = (
            _interval(c, "throughput_difference_per_hour", "throughput_difference_ci95", "+.0f")
            if "throughput_difference_ci95" in c
            else "n/a"
        )
        lines.append(
            f"| {label} | {c['seeds']} | {c['only_first']} | {c['only_second']} | "
            f"{number(c['sign_test_p'], '.3g')} | {diff} |"
        )
    return lines


def paired_comparison(a: dict, b: dict, dt: float = DT) -> dict | None:
    """Arm ``a`` against ``b`` seed by seed (every arm sees the same seeds): the seeds only one of them
    solved, and the two-sided exact sign test on those (McNemar's exact test); when the outcomes carry
    their steps, also ``a``'s throughput minus ``b``'s (successes per hour) with a 95 % bootstrap
    interval that resamples the seeds, both arms together."""
    won = {o["seed"]: o for o in a.get("outcomes", [])}
    other = {o["seed"]: o for o in b.get("outcomes", [])}
    seeds = sorted(set(won) & set(other))
    if not seeds:
        return None
    only_a = sum(bool(won[s]["success"]) and not other[s]["success"] for s in seeds)
    only_b = sum(bool(other[s]["success"]) and not won[s]["success"] for s in seeds)
    out = {"seeds": len(seeds), "only_first": only_a, "only_second": only_b, "sign_test_p": sign_test(only_a, only_b)}
    if all("steps" in won[s] and "steps" in other[s] for s in seeds):
        rows = np.array(
            [
                [float(won[s]["success"]), won[s]["steps"] * dt, float(other[s]["success"]), other[s]["steps"] * dt]
                for s in seeds
            ]
        )
        difference, interval = paired_throughput_difference(rows)
        out["throughput_difference_per_hour"] = difference
        out["throughput_difference_ci95"] = list(interval)
    return out


def _yes(value) -> str:
    return "yes" if value else "no" if value is not None else "n/a"


def _seed_text(seeds: list[int]) -> str:
    seeds = sorted(int(s) for s in seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]} ({len(seeds)} per arm)"
    return f"{', '.join(map(str, seeds[:5]))}{', ...' if len(seeds) > 5 else ''} ({len(seeds)} per arm)"


def _arm_rows(arms: dict) -> list[str]:
    return [
        f"| {n} | {_interval(a, 'success_rate', 'success_rate_ci95', '.0f', 100.0)} | "
        f"{_interval(a, 'throughput_per_hour', 'throughput_ci95', '.0f')} | "
        f"{_interval(a, 'mean_time_to_success_s', 'time_to_success_ci95', '.2f')} | "
        f"{conditioning_cell(a.get('scene_conditioning'))} |"
        for n, a in arms.items()
    ]


def _protocol_lines(protocol: dict | None, selection: dict | None) -> list[str]:
    """The protocol paragraph: both seed ranges, the pipeline seed, the profile's hash, what was chosen."""
    if not protocol:
        return []
    v, t = protocol["validation_seeds"], protocol["test_seeds"]
    evaluations = protocol.get("test_evaluations") or []
    lines = [
        "",
        "## Protocol",
        "",
        f"- Validation seeds {v[0]}-{v[1]}: every decision of this run (SFT's step count, AWR's temperature and "
        f"weight cap) was taken on them.",
        f"- Test seeds {t[0]}-{t[1]}: a range no earlier evaluation used, evaluated after the profile was frozen "
        f"({len(evaluations)} test evaluation(s) in this run directory"
        + (
            ", with different profiles: the later ones are not a fresh test"
            if len({e.get("profile_sha256") for e in evaluations}) > 1
            else ""
        )
        + ").",
        f"- Pipeline seed {protocol['pipeline_seed']}; profile sha256 `{protocol['profile_sha256'][:16]}...` "
        "(summary.json has it whole).",
    ]
    if selection:
        sft, awr = selection["sft"], selection["awr"]
        lines.append(
            f"- Chosen on the validation seeds: SFT at {sft['steps']} steps (of {len(sft['candidates'])} "
            f"candidates); AWR at temperature {awr['temperature']:g}, weight cap {awr['max_weight']:g} "
            f"({awr['probes']} probes). Rule: {selection['rule']}."
        )
    return lines


def _validation_lines(validation: dict, selection: dict | None) -> list[str]:
    """The validation table: every candidate and probe, the chosen ones marked, apart from the test table."""
    chosen = {(selection or {}).get(k, {}).get("chosen") for k in ("sft", "awr")}
    lines = [
        "## Validation seeds (decisions, not results)",
        "",
        f"Seeds {_seed_text(validation['seeds'])}. SFT's candidates are checkpoints of one run; AWR's probes one "
        "fine-tune each. **Chosen** marks what the test seeds evaluated.",
        "",
        f"| candidate | {SUCCESS_RATE} [95% CI] | {THROUGHPUT} [95% CI] | {TIME_TO_SUCCESS} [95% CI] | |",
        "|---|---|---|---|---|",
    ]
    rows = _arm_rows(validation["arms"])
    for name, row in zip(validation["arms"], rows):
        lines.append(row[: row.rstrip(" |").rfind("|") + 1] + (" **chosen** |" if name in chosen else " |"))
    return lines + [""]


def _verdict_lines(verdict: dict) -> list[str]:
    return [f"- {k.replace('_', ' ')}: {'yes' if v else 'no' if v is not None else 'n/a'}" for k, v in verdict.items()]


def _interval(a: dict, key: str, ci: str, fmt: str, scale: float = 1.0) -> str:
    """``value [lo, hi]`` (times ``scale``); an undefined figure (null in eval.json, NaN computed) is ``n/a``."""

    def cell(value) -> str:
        return number(value * scale if _defined(value) else value, fmt)

    lo, hi = a[ci]
    return f"{cell(a[key])} [{cell(lo)}, {cell(hi)}]"


def _defined(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def _above_zero(comparison: dict | None) -> bool | None:
    """Whether a paired comparison's throughput-difference interval lies above 0; None when it has none."""
    low = ((comparison or {}).get("throughput_difference_ci95") or [None])[0]
    return bool(low > 0) if _defined(low) else None


def write_report(
    out: pathlib.Path,
    profile,
    timings: dict,
    total_seconds: float,
    *,
    protocol: dict | None = None,
    selection: dict | None = None,
    costs: dict | None = None,
) -> pathlib.Path:
    eval_report = json.loads((out / "eval.json").read_text())
    arms = eval_report["arms"]
    main_arms = [n for n in MAIN_ARMS if n in arms]
    validation = json.loads((out / "validation.json").read_text()) if (out / "validation.json").is_file() else None
    _plot_arms(eval_report, out / "arms.png", main_arms)
    per_iteration = _plot_iterations(eval_report, profile.iterations, out / "iterations.png")
    curves = _plot_value_curves(out / "dataset", out / "value_curves.png")
    data = _data_summary(out / "dataset")
    stages = _furthest_stages(arms)

    def beats(a: str, b: str, key: str, ci: str, higher: bool = True) -> bool | None:
        if a not in arms or b not in arms:
            return None
        lo_a, hi_a = arms[a][ci]
        lo_b, hi_b = arms[b][ci]
        if not all(_defined(v) for v in (lo_a, hi_a, lo_b, hi_b)):
            return None
        return bool(lo_a > hi_b) if higher else bool(hi_a < lo_b)

    verdict = {
        "recap_beats_sft_on_throughput": beats("recap_beta2", "sft", "throughput_per_hour", "throughput_ci95"),
        "recap_beats_sft_on_failure_rate": beats("recap_beta2", "sft", "success_rate", "success_rate_ci95"),
        **{
            f"recap_beats_{b}_on_throughput": beats("recap_beta2", b, "throughput_per_hour", "throughput_ci95")
            for b in AWR_ARMS
        },
    }
    paired = {
        f"{a}_vs_{b}": paired_comparison(arms[a], arms[b])
        for a, b in (
            ("recap_beta2", "sft"),
            ("recap_beta1", "sft"),
            *(("recap_beta2", b) for b in (*AWR_ARMS, *CONTROL_ARMS)),
            ("hg_dagger", "sft"),
        )
        if a in arms and b in arms
    }
    # the same question asked of the paired data: the 95 % interval of the throughput difference over
    # seeds resampled jointly (every arm saw the same scenes, so the scene-to-scene spread cancels)
    paired_verdict = {
        f"recap_beats_{b}_on_throughput": _above_zero(paired.get(f"recap_beta2_vs_{b}")) for b in ("sft", *AWR_ARMS)
    }
    # the controls of issue 31, kept apart from the verdicts older runs reported
    controls = {
        f"recap_beats_{b}_on_throughput": {
            "beyond_95_intervals": beats("recap_beta2", b, "throughput_per_hour", "throughput_ci95"),
            "paired_difference_above_0": _above_zero(paired.get(f"recap_beta2_vs_{b}")),
        }
        for b in CONTROL_ARMS
        if b in arms
    }
    summary = {
        **({"protocol": protocol} if protocol is not None else {}),
        "profile": dataclasses.asdict(profile),
        "total_seconds": total_seconds,
        "stage_seconds": timings,
        "data": data,
        "arms": {n: {k: v for k, v in a.items() if k != "outcomes"} for n, a in arms.items()},
        "per_iteration": per_iteration,
        "furthest_stage_counts": stages,
        "beyond_95_intervals": verdict,
        "paired_by_seed": paired,
        "paired_throughput_difference_above_0": paired_verdict,
        "controls": controls,
        **({"selection": selection} if selection is not None else {}),
        **(
            {
                "validation_arms": {
                    n: {k: v for k, v in a.items() if k != "outcomes"} for n, a in validation["arms"].items()
                }
            }
            if validation
            else {}
        ),
        **({"arm_costs": costs} if costs is not None else {}),
    }
    write_json(out / "summary.json", summary)

    sources = ", ".join(f"{k}: {v['episodes']} ({v['successes']} successful)" for k, v in data.items())
    lines = [
        f"# RECAP experiment ({profile.name} profile)",
        "",
        f"{sum(d['episodes'] for d in data.values())} episodes recorded through the station nodes "
        f"({sources}); "
        f"{profile.iterations} RECAP iteration(s), rollout indicators by {profile.rollout_positives}"
        + (f", {profile.takeover_negative} steps before each take-over negative" if profile.takeover_negative else "")
        + (f", fine-tunes sampled {' '.join(profile.policy_mix)}" if profile.policy_mix else "")
        + (f", values cross-fitted over {profile.value_folds} folds" if profile.value_folds else "")
        + "; "
        f"evaluation on {len(eval_report['seeds'])} held-out seeds "
        f"per arm without interventions; total {total_seconds / 60:.1f} min on this machine.",
    ]
    lines += _protocol_lines(protocol, selection)
    lines += [
        "",
        "## Test seeds",
        "",
        f"Seeds {_seed_text(eval_report['seeds'])}, every arm, no interventions.",
        "",
        f"| arm | {SUCCESS_RATE} [95% CI] | {THROUGHPUT} [95% CI] | {TIME_TO_SUCCESS} [95% CI] "
        "| first chunk: scene / noise spread |",
        "|---|---|---|---|---|",
    ]
    lines += _arm_rows(arms)
    if costs:
        lines += [
            "",
            "Cost per arm: the policy's gradient steps from scratch (pretraining included), and the wall time of "
            "the stages that trained it (its pretraining, the values and labels it reads, its fine-tune) and of "
            "those that chose its settings (the other candidates, the validation evaluation). Data collection "
            "(demonstrations, rollouts, earlier iterates) is shared and no arm's.",
            "",
            "| arm | policy gradient steps | training (min) | tuning (min) |",
            "|---|---|---|---|",
        ]
        for n, c in costs.items():
            steps = c.get("policy_gradient_steps")
            lines.append(
                f"| {n} | {steps if steps is not None else 'n/a'} | {c['training_seconds'] / 60:.1f} | "
                f"{c['tuning_seconds'] / 60:.1f} |"
            )
    if "awr_positive" in arms:
        lines += [
            "",
            "awr: the paper's AWR baseline, fine-tuned from pi_pre_plain (the same pretraining without "
            "advantage conditioning) and prompted as it was trained, without advantage text; awr_positive: "
            'AWR fine-tuned from RECAP\'s pi_pre and prompted "Advantage: positive", which its fine-tune '
            "never saw but pi_pre learnt to follow (AWR on top of the pretraining's advantage conditioning, "
            "a stronger hybrid).",
        ]
    if stages:
        lines += [
            "",
            "Furthest task stage reached per episode (sim reward: 1 cube touched, 2 lifted, "
            "3 both hands on it, 4 transferred):",
            "",
            "| arm | " + " | ".join(f"stage {k}" for k in range(5)) + " | mean |",
            "|---|" + "---|" * 6,
        ]
        for n, counts in stages.items():
            mean = sum(k * c for k, c in enumerate(counts)) / max(1, sum(counts))
            cells = " | ".join(str(c) for c in counts)
            lines.append(f"| {n} | {cells} | {mean:.2f} |")
    lines += [
        "",
        "Scene / noise spread: how far the first chunk's last target moves between scenes (same noise) "
        "against between noise draws (same scene), mean over the arm joints; a ratio near 0 means the "
        "policy samples its demonstrations' targets without reading the cameras.",
    ]
    lines += ["", "Beyond the 95% intervals (RECAP = last iterate, beta 2):", ""]
    lines += _verdict_lines(verdict)
    if any(paired.values()):
        lines += [
            "",
            "Paired by seed (every arm saw the same seeds): seeds only the first arm solved, only the "
            "second, the exact two-sided sign test on them, and the first arm's throughput minus the "
            "second's with a 95% bootstrap interval over the seeds:",
            "",
        ]
        lines += paired_table(paired)
        lines += ["", "Paired throughput difference above 0 (RECAP = last iterate, beta 2):", ""]
        lines += _verdict_lines(paired_verdict)
    if controls:
        lines += ["", "The controls (RECAP = last iterate, beta 2):", ""]
        lines += [
            f"- {k.replace('_', ' ')}: beyond the 95% intervals "
            f"{_yes(v['beyond_95_intervals'])}, paired difference above 0 {_yes(v['paired_difference_above_0'])}"
            for k, v in controls.items()
        ]
    lines += ["", "![arms](arms.png)", "", "![per iteration](iterations.png)", ""]
    if curves:
        lines += ["![value curves](value_curves.png)", ""]
    if validation:
        lines += _validation_lines(validation, selection)
    lines += ["## Stage times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def write_pooled_report(out: pathlib.Path, runs: list[pathlib.Path]) -> pathlib.Path:
    """``recap experiment --pipeline-seeds``: ``OUT/report.md`` and ``OUT/summary.json`` over the runs in ``runs``
    (each a complete run with its own report): each run's test figures, and per arm the pooled estimate with a
    hierarchical bootstrap interval over runs and seeds (recap_experiment.pipeline_pool)."""
    from recap_experiment.pipeline_pool import pool_runs, pooled_table, read_run

    parts = [read_run(run) for run in runs]
    pooled = pool_runs([r for r, _ in parts], [s for _, s in parts], [run.name for run in runs])
    protocols = [(s or {}).get("protocol") or {} for _, s in parts]
    first = protocols[0] if protocols else {}
    protocol = {
        "validation_seeds": first.get("validation_seeds"),
        "test_seeds": first.get("test_seeds"),
        "pipeline_seeds": [p.get("pipeline_seed") for p in protocols],
        "profile_sha256": pooled["profile_sha256"],
    }
    write_json(out / "summary.json", {"protocol": protocol, "runs": [str(r) for r in runs], "pooled": pooled})
    v, t = protocol["validation_seeds"] or ["?", "?"], protocol["test_seeds"] or ["?", "?"]
    lines = [
        f"# RECAP experiment: {len(runs)} pipeline runs pooled",
        "",
        f"Pipeline seeds {', '.join(str(p) for p in protocol['pipeline_seeds'])}, one profile (sha256 "
        f"`{(protocol['profile_sha256'] or '?')[:16]}...`); in each run every decision was taken on the validation "
        f"seeds {v[0]}-{v[1]} and the test seeds {t[0]}-{t[1]} were evaluated once. Each run's own report: "
        + ", ".join(f"[{r.name}]({r.name}/report.md)" for r in runs)
        + ".",
        "",
        "## Test seeds, per run and pooled",
        "",
        "Pooled: every run's test episodes together. Its interval is a hierarchical bootstrap (runs drawn with "
        "replacement, then seeds within each drawn run), so it covers the spread between pipeline runs; the "
        "seed-only interval (seeds resampled within every run) is shown beside it.",
        "",
    ]
    lines += pooled_table(pooled)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
