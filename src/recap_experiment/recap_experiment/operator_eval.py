"""``recap operator-eval``: the scripted operator's success rate and episode length per quality, headless.

Runs the same seeds at each quality (physics only), stops each episode at its first success or at
``--max-steps``, prints a table and writes the per-episode outcomes to JSON (``--timing`` also times
rendering). docs/operator.md has the measured numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time

import numpy as np

from recap_core.errors import UserError
from recap_core.outputs import check_output_file, write_json

from recap_sim.operator import ScriptedOperator
from recap_sim.sim import AlohaSim


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
    seed: int
    success: bool
    first_success_step: int | None  # control steps until the first success (reward 4)
    steps: int  # steps run (first success, or the limit)
    fumbles: int  # deliberate slips the operator drew (missed grasps, drops)
    wall_seconds: float


def run_episode(sim: AlohaSim, operator: ScriptedOperator, seed: int, max_steps: int) -> EpisodeOutcome:
    """One episode from ``sim.reset(seed)``, operator re-seeded with ``seed``, until success or the limit."""
    sim.reset(seed)
    operator.reset(seed)
    started = time.perf_counter()
    first = None
    for _ in range(max_steps):
        result = sim.step(operator.act(sim.joint_positions(), sim.object_pose()))
        if result.success:
            first = result.step
            break
    return EpisodeOutcome(
        seed, first is not None, first, sim.step_count, operator.fumbles, time.perf_counter() - started
    )


def summarise(outcomes: list[EpisodeOutcome], max_steps: int) -> dict:
    """Success rate and first-success-step statistics (successful episodes only)."""
    lengths = np.array([o.first_success_step for o in outcomes if o.success], dtype=float)
    summary = {
        "episodes": len(outcomes),
        "successes": int(lengths.size),
        "success_rate": lengths.size / max(len(outcomes), 1),
        "mean_fumbles": float(np.mean([o.fumbles for o in outcomes])) if outcomes else 0.0,
        "wall_seconds_per_episode": float(np.mean([o.wall_seconds for o in outcomes])) if outcomes else 0.0,
    }
    if lengths.size:
        p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
        summary["length"] = {"mean": float(lengths.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}
    else:
        summary["length"] = None
    # Counting failures as the full time limit gives one number that falls with quality.
    summary["mean_steps_failures_as_limit"] = (
        float(np.mean([o.first_success_step if o.success else max_steps for o in outcomes])) if outcomes else 0.0
    )
    return summary


def time_episodes(task: str, steps: int = 400) -> dict:
    """Wall seconds for ``steps`` control steps: sim alone, sim + operator, sim + operator + 3 cameras at 224."""
    timings = {}
    sim = AlohaSim(task)
    sim.reset(0)
    hold = sim.joint_positions()
    started = time.perf_counter()
    for _ in range(steps):
        sim.step(hold)
    timings["physics_only"] = time.perf_counter() - started
    operator = ScriptedOperator(task)
    for label, render in (("physics_and_operator", False), ("physics_operator_render_3x224", True)):
        sim.reset(0)
        operator.reset(0)
        if render:
            sim.render()  # the GL context is created once; do not time it
        started = time.perf_counter()
        for _ in range(steps):
            sim.step(operator.act(sim.joint_positions(), sim.object_pose()))
            if render:
                sim.render()
        timings[label] = time.perf_counter() - started
    sim.close()
    return {"steps": steps, **{k: round(v, 3) for k, v in timings.items()}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=50, help="episodes per quality, seeds 0..N-1 (default 50)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--qualities",
        type=float,
        nargs="+",
        default=[1.0, 0.7, 0.4, 0.1],
        help="operator qualities in [0, 1] (default 1.0 0.7 0.4 0.1)",
    )
    parser.add_argument("--max-steps", type=int, default=400, help="time limit per episode in steps (default 400)")
    parser.add_argument("--task", default="transfer_cube", help="task (default transfer_cube)")
    parser.add_argument(
        "--output", default="operator_eval.json", help="JSON file to write (default operator_eval.json)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file that is not an operator-eval report"
    )
    parser.add_argument(
        "--timing", action="store_true", help="also time a 400-step episode with and without rendering 3 cameras"
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1 or args.max_steps < 1:
        raise UserError(f"--seeds and --max-steps must be >= 1, got {args.seeds} and {args.max_steps}")
    if args.first_seed < 0:
        raise UserError(f"--first-seed must be >= 0, got {args.first_seed}")
    bad = [q for q in args.qualities if not 0.0 <= q <= 1.0]
    if bad:
        raise UserError(f"--qualities must be in [0, 1], got {bad}")
    check_output_file(
        args.output,
        overwrite=args.overwrite,
        what="an operator-eval report",
        option="--output",
        accepts=lambda data: isinstance(data, dict) and "results" in data,
    )
    sim = AlohaSim(args.task, max_episode_steps=args.max_steps)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m recap_experiment.operator_eval"] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "task": args.task,
        "max_steps": args.max_steps,
        "seeds": [seeds.start, seeds.stop - 1],
        "results": [],
    }
    print(f"{'quality':>7} {'success':>9} {'mean':>6} {'p10':>5} {'p50':>5} {'p90':>5} {'fumbles':>7} {'s/ep':>5}")
    for quality in args.qualities:
        operator = ScriptedOperator(args.task, quality=quality)
        outcomes = [run_episode(sim, operator, seed, args.max_steps) for seed in seeds]
        summary = summarise(outcomes, args.max_steps)
        length = summary["length"] or {
            "mean": float("nan"),
            "p10": float("nan"),
            "p50": float("nan"),
            "p90": float("nan"),
        }
        print(
            f"{quality:7.2f} {summary['successes']:>4}/{summary['episodes']:<4} {length['mean']:6.1f} "
            f"{length['p10']:5.0f} {length['p50']:5.0f} {length['p90']:5.0f} {summary['mean_fumbles']:7.2f} "
            f"{summary['wall_seconds_per_episode']:5.2f}",
            flush=True,
        )
        report["results"].append({"quality": quality, **summary, "outcomes": [dataclasses.asdict(o) for o in outcomes]})
    if args.timing:
        report["timing"] = time_episodes(args.task)
        print(
            "timing (s per {steps} steps): ".format(**report["timing"])
            + ", ".join(f"{k} {v}" for k, v in report["timing"].items() if k != "steps")
        )
    write_json(args.output, report, indent=1)
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recap_experiment.operator_eval", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
