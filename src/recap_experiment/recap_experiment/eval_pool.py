"""``recap eval-pool A.json B.json ... [--compare X,Y ...]``: one evaluation from several on disjoint seeds.

A lab evaluates the same checkpoints in parts (the experiment's held-out seeds, then more seeds to settle
a close call); this pools them into one report with the same intervals as ``recap eval`` and the paired
comparisons asked for. docs/experiment.md has what it refuses.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from recap_core.errors import UserError

from recap_experiment.evaluate import EpisodeOutcome, format_table, summarise
from recap_experiment.experiment_report import paired_comparison, paired_table

# settings every part must share: they change what an episode is
_SETTINGS = ("max_steps", "task", "replan_steps", "blend_steps", "chunk_mode", "inference_delay_ms")
# what makes an arm the same policy in every part
_IDENTITY = ("checkpoint_id", "beta", "advantage")


class PoolError(UserError, ValueError):
    """The parts are not one evaluation."""


def pool(reports: list[dict], names: list[str] | None = None) -> dict:
    """Pool ``recap eval`` reports (dicts as written by ``--out``) into one.

    Per arm, the outcomes of every part are concatenated and summarised again. It refuses what would not
    be one evaluation: an arm whose checkpoint differs between parts (``checkpoint_id``, or beta /
    advantage), a seed evaluated twice for the same arm, parts with a different time limit, task,
    replanning or blending. An arm missing from some parts is pooled over the parts that hold it.

    ``names`` label the parts in error messages (the files' paths). Returns a report with the same
    arm fields as ``recap eval`` (``scene_conditioning`` from the first part holding the arm) plus
    ``parts`` (how many parts held the arm).
    """
    if not reports:
        raise PoolError("nothing to pool: give at least one report")
    names = names or [f"report {k}" for k in range(len(reports))]
    first = reports[0]
    for name, report in zip(names, reports):
        if not isinstance(report, dict) or not isinstance(report.get("arms"), dict):
            raise PoolError(f"{name}: not a recap eval report (no 'arms')")
        for key in _SETTINGS:
            if _setting(report, key) != _setting(first, key):
                raise PoolError(
                    f"{name}: {key} is {_setting(report, key)!r}, {names[0]} has {_setting(first, key)!r}; "
                    f"episodes under different settings do not pool"
                )
    arms: dict[str, dict] = {}
    seen: dict[str, dict[int, str]] = {}
    for name, report in zip(names, reports):
        for arm_name, arm in report["arms"].items():
            _check_arm(name, arm_name, arm)
            if arm_name not in arms:
                arms[arm_name] = {
                    "checkpoint": arm.get("checkpoint"),
                    **{key: arm.get(key) for key in _IDENTITY},
                    "scene_conditioning": arm.get("scene_conditioning"),
                    "outcomes": [],
                    "parts": 0,
                }
                seen[arm_name] = {}
            pooled = arms[arm_name]
            for key in _IDENTITY:
                if arm.get(key) != pooled[key]:
                    raise PoolError(
                        f"{name}: arm {arm_name} has {key} {arm.get(key)!r}, an earlier part "
                        f"{pooled[key]!r}: not the same policy"
                    )
            for outcome in arm.get("outcomes", []):
                seed = int(outcome["seed"])
                if seed in seen[arm_name]:
                    raise PoolError(
                        f"{name}: arm {arm_name} has seed {seed} already in {seen[arm_name][seed]}; "
                        f"the parts must evaluate disjoint seeds"
                    )
                seen[arm_name][seed] = name
                pooled["outcomes"].append(outcome)
            pooled["parts"] += 1
    out = {
        "seeds": sorted({seed for by_seed in seen.values() for seed in by_seed}),
        **{key: _setting(first, key) for key in _SETTINGS},
        "pooled_from": list(names),
        "arms": {},
    }
    for arm_name, pooled in arms.items():
        outcomes = sorted(pooled.pop("outcomes"), key=lambda o: int(o["seed"]))
        summary = summarise(
            [
                EpisodeOutcome(int(o["seed"]), bool(o["success"]), int(o["steps"]), _reward(o.get("max_reward")))
                for o in outcomes
            ]
        )
        out["arms"][arm_name] = {**pooled, **summary, "outcomes": outcomes}
    return out


def _setting(report: dict, key: str):
    """A report's setting; reports from before chunk modes and simulated delays ran crossfade (naive without
    blend steps) without delay."""
    if key == "chunk_mode" and key not in report:
        return "naive" if report.get("blend_steps") == 0 else "crossfade"
    if key == "inference_delay_ms" and key not in report:
        return 0.0
    return report.get(key)


def _check_arm(name: str, arm_name: str, arm) -> None:
    """PoolError unless ``arm`` looks as ``recap eval --out`` writes an arm: outcomes with seed, success, steps."""
    outcomes = arm.get("outcomes", []) if isinstance(arm, dict) else None
    if not isinstance(outcomes, list) or not all(
        isinstance(o, dict)
        and isinstance(o.get("seed"), int)
        and isinstance(o.get("success"), bool)
        and isinstance(o.get("steps"), int)
        for o in outcomes
    ):
        raise PoolError(
            f"{name}: arm {arm_name} is not as `recap eval --out` writes an arm (a list of outcomes, "
            f"each with an integer seed and steps and a boolean success)"
        )


def _reward(value) -> float:
    """An outcome's ``max_reward``: reports write an undefined one as null (older ones as NaN)."""
    return float("nan") if value is None else float(value)


def compare(report: dict, pairs: list[tuple[str, str]]) -> dict[str, dict | None]:
    """``{"A_vs_B": paired comparison}`` for each pair (see ``experiment_report.paired_comparison``)."""
    missing = sorted({name for pair in pairs for name in pair} - set(report["arms"]))
    if missing:
        raise PoolError(f"--compare names arm(s) {missing}; the reports hold {sorted(report['arms'])}")
    return {f"{a}_vs_{b}": paired_comparison(report["arms"][a], report["arms"][b]) for a, b in pairs}


def _pair(text: str) -> tuple[str, str]:
    parts = text.split(",")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"--compare {text!r}: expected FIRST,SECOND (two arm names)")
    return parts[0], parts[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reports",
        nargs="+",
        type=pathlib.Path,
        help="recap eval --out JSON files (with --pipeline-runs: recap experiment run directories)",
    )
    parser.add_argument(
        "--pipeline-runs",
        action="store_true",
        help="the arguments are pipeline runs of one profile (recap experiment directories, or their eval.json), "
        "each evaluated on the same test seeds: per arm each run's figures and a pooled estimate whose 95%% "
        "interval is a hierarchical bootstrap over runs, then seeds",
    )
    parser.add_argument(
        "--compare",
        type=_pair,
        action="append",
        default=[],
        metavar="FIRST,SECOND",
        help="paired comparison of two arms over their common seeds (repeatable)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the pooled report here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file that is not a recap eval report"
    )


def run(args) -> int:
    from recap_core.outputs import check_output_file, write_json

    from recap_experiment.evaluate import is_eval_report

    if args.pipeline_runs:
        return _run_pipeline_pool(args)
    if args.out:
        check_output_file(args.out, overwrite=args.overwrite, what="a recap eval report", accepts=is_eval_report)
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise PoolError(
                f"{path}: cannot read it as a recap eval report ({exc}); give the JSON file `recap eval --out` wrote"
            ) from None
    report = pool(reports, [str(path) for path in args.reports])
    report["paired"] = compare(report, args.compare)
    print(format_table(report))
    if report["paired"]:
        print(
            "\nPaired by seed (seeds both arms saw; only the first / only the second solved, exact sign test, "
            "throughput difference with a 95% bootstrap interval over the seeds):\n"
        )
        print("\n".join(paired_table(report["paired"])))
    if args.out:
        write_json(args.out, report)
        print(f"report: {args.out}")
    return 0


def _run_pipeline_pool(args) -> int:
    from recap_core.outputs import check_output_file, write_json

    from recap_experiment.pipeline_pool import pool_runs, pooled_table, read_run

    if args.compare:
        raise PoolError("--compare is for evaluations on disjoint seeds; --pipeline-runs compares RECAP to every arm")
    if args.out:
        check_output_file(
            args.out,
            overwrite=args.overwrite,
            what="a pooled pipeline report",
            accepts=lambda report: isinstance(report, dict) and "bootstrap" in report,
        )
    parts = [read_run(path) for path in args.reports]
    pooled = pool_runs([r for r, _ in parts], [s for _, s in parts], [str(path) for path in args.reports])
    print("\n".join(pooled_table(pooled)))
    if args.out:
        write_json(args.out, pooled)
        print(f"report: {args.out}")
    return 0
