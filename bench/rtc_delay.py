"""Study: chunk execution under inference delay -- naive switching, crossfade and real-time chunking (RTC).

One policy checkpoint on the same held-out sim seeds, for every chunk mode x simulated inference delay
(``recap eval --chunk-mode M --inference-delay-ms D``: the chunk planned at tick t arrives at tick
t + ceil(D / 20 ms) and the robot runs the old plan meanwhile; deterministic, no clock). Per cell: success rate
with its 95 % Wilson interval, and the jerk of the commands (rad/s^3) over the ticks around chunk switches
(the switch and the ``blend_steps`` ticks after it, the same window for every mode) against elsewhere.

Writes ``rtc_delay.md`` (the table) and ``rtc_delay.json`` (every cell's ``recap eval`` report) to ``--out``.

    .venv/bin/python bench/rtc_delay.py runs/<policy> --seeds 100000-100049 --workers 2 --out runs/rtc_delay

``--quick``: an untrained tiny checkpoint, 2 seeds, 60 steps, 48 px (a smoke run: its numbers mean nothing).
Last line: {"name": "rtc_delay", "cells": [{"mode", "delay_ms", "success_rate", "boundary_jerk_mean"}, ...]}
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

from recap_core.outputs import dumps, write_json
from recap_experiment.evaluate import EvalArm, evaluate, number, parse_cameras, parse_seeds

MODES = ("naive", "crossfade", "rtc")
DELAYS_MS = (0.0, 100.0, 200.0, 300.0)


def run_study(
    checkpoint: pathlib.Path,
    seeds: list[int],
    *,
    modes=MODES,
    delays_ms=DELAYS_MS,
    beta: float = 1.0,
    advantage: str | None = "as_trained",
    progress: bool = True,
    **eval_kwargs,
) -> dict:
    """Every (mode, delay) cell's ``recap eval`` report of one arm ``policy`` on ``seeds``."""
    arm = EvalArm("policy", checkpoint, beta, advantage)
    cells = []
    for delay in delays_ms:
        for mode in modes:
            t0 = time.perf_counter()
            report = evaluate(
                [arm],
                seeds,
                chunk_mode=mode,
                inference_delay_ms=float(delay),
                conditioning_seeds=0,
                progress=False,
                **eval_kwargs,
            )
            a = report["arms"]["policy"]
            cells.append({"mode": mode, "delay_ms": float(delay), "report": report})
            if progress:
                print(
                    f"[rtc_delay] {mode:9s} {delay:5.0f} ms: {a['successes']}/{a['episodes']} success, boundary jerk "
                    f"{number(a['boundary_jerk']['boundary_mean'], '.0f')} ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                )
    return {"checkpoint": str(checkpoint), "seeds": seeds, "settings": eval_kwargs, "cells": cells}


def table(study: dict) -> str:
    rows = [
        f"Checkpoint `{study['checkpoint']}`, {len(study['seeds'])} seeds. Jerk in rad/s³ (norm over the joints of "
        "the commands' third difference), pooled over the episodes; boundary: the ticks of a chunk switch and the "
        "crossfade window after it.",
        "",
        "| delay (ms) | ticks | mode | success | 95% CI | switches | boundary jerk mean | boundary p95 "
        "| elsewhere mean | boundary / elsewhere |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in study["cells"]:
        report = cell["report"]
        a = report["arms"]["policy"]
        j = a["boundary_jerk"]
        lo, hi = a["success_rate_ci95"]
        rows.append(
            f"| {cell['delay_ms']:g} | {report['inference_delay_ticks']} | {cell['mode']} | "
            f"{a['successes']}/{a['episodes']} ({number(a['success_rate'], '.0%')}) | "
            f"{number(lo, '.0%')}–{number(hi, '.0%')} | {j['switches']} | {number(j['boundary_mean'], '.0f')} | "
            f"{number(j['boundary_p95'], '.0f')} | {number(j['elsewhere_mean'], '.0f')} | "
            f"{number(j['boundary_to_elsewhere'], '.2f')} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=pathlib.Path, help="the policy checkpoint (not with --quick)")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("100000-100049"))
    parser.add_argument("--delays-ms", default=",".join(f"{d:g}" for d in DELAYS_MS), help="e.g. 0,100,200,300")
    parser.add_argument("--modes", default=",".join(MODES), help="of naive, crossfade, rtc")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument(
        "--advantage", default="as_trained", choices=("as_trained", "positive", "negative", "none"), help="prompt"
    )
    parser.add_argument("--task", default="transfer the cube to the other arm")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--replan-steps", type=int, default=25)
    parser.add_argument("--blend-steps", type=int, default=8, help="crossfade length, also the boundary window")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cameras", type=parse_cameras, default=None, metavar="CAM,CAM")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="directory for rtc_delay.md and .json")
    parser.add_argument("--quick", action="store_true", help="untrained tiny checkpoint, 2 seeds, 60 steps")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes must name some of {list(MODES)}, got {args.modes!r}")
    try:
        delays = tuple(float(d) for d in args.delays_ms.split(",") if d.strip())
    except ValueError:
        parser.error(f"--delays-ms must be numbers of ms, got {args.delays_ms!r}")
    if not delays or any(not d >= 0 for d in delays):
        parser.error(f"--delays-ms must be numbers >= 0, got {args.delays_ms!r}")
    settings = dict(
        task=args.task,
        max_steps=args.max_steps,
        replan_steps=args.replan_steps,
        blend_steps=args.blend_steps,
        image_size=args.image_size,
        threads=args.threads,
        workers=args.workers,
        cameras=args.cameras,
    )
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if args.quick:
            from recap_core.models import get_config
            from recap_core.models.untrained import save_untrained_checkpoint

            checkpoint = save_untrained_checkpoint(pathlib.Path(scratch) / "tiny", get_config("tiny"), tasks=["reach"])
            args.seeds = args.seeds[:2]
            settings.update(task="reach", max_steps=60, image_size=48, threads=1, workers=1)
        elif checkpoint is None:
            parser.error("give a policy checkpoint (or --quick)")
        advantage = None if args.advantage == "none" else args.advantage
        study = run_study(
            checkpoint, args.seeds, modes=modes, delays_ms=delays, beta=args.beta, advantage=advantage, **settings
        )
    text = table(study)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rtc_delay.md").write_text(text + "\n", encoding="utf-8")
        write_json(args.out / "rtc_delay.json", study)
        print(f"wrote {args.out / 'rtc_delay.md'} and {args.out / 'rtc_delay.json'}")
    summary = [
        {
            "mode": cell["mode"],
            "delay_ms": cell["delay_ms"],
            "success_rate": cell["report"]["arms"]["policy"]["success_rate"],
            "boundary_jerk_mean": cell["report"]["arms"]["policy"]["boundary_jerk"]["boundary_mean"],
        }
        for cell in study["cells"]
    ]
    print(dumps({"name": "rtc_delay", "quick": bool(args.quick), "cells": summary}, indent=None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
