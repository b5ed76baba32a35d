#!/usr/bin/env python3
"""Where the rollouts of a simulated RECAP experiment went wrong, by the sim's task stage.

    .venv/bin/python scripts/rollout_stages.py runs/X/dataset [--json out.json]

Prints, per stage, the autonomous and correction frames and their share labelled positive, and at which
stage the simulated human took over; see ``analyse``.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys

import numpy as np

STAGES = ("untouched", "touched", "lifted", "both hold", "handed over")


def frame_stages(bag: pathlib.Path, frames: int) -> np.ndarray | None:
    """The sim's task stage at each of the episode's ``frames`` dataset frames, on the converter's own
    timeline (the newest ``sim/status`` received at or before each frame's tick); None without sim/status."""
    from recap_recorder.bag_to_dataset import latest_at_or_before, load_episode

    with load_episode(bag) as episode:
        received, statuses = episode.diagnostics("sim/status")
        ticks = episode.timeline.tick_ns
    if len(ticks) != frames:
        raise SystemExit(f"{bag}: {len(ticks)} frames on the converter's timeline, {frames} in the dataset")
    if not statuses:
        return None
    # a status from before the reset carries the seed of the episode before; the episode's is the last one's
    seed = statuses[-1].get("seed")
    mine = np.array([status.get("seed") == seed for status in statuses])
    rewards = np.array([float(status.get("reward", 0.0)) for status in statuses])[mine]
    at = latest_at_or_before(np.asarray(received)[mine], ticks)
    return np.where(at >= 0, rewards[np.maximum(at, 0)], 0.0).astype(int)


def analyse(dataset: pathlib.Path) -> dict:
    """Per stage, the rollouts' frames, labels and take-overs.

    Reads the dataset (labels: ``is_intervention``, ``indicator``) and, for every rollout episode, its
    bag's ``sim/status`` (the sim's staged reward: 0 untouched, 1 touched, 2 lifted, 3 both grippers on
    the cube, 4 handed over), which `recap_bringup/config/station_sim.yaml` records on the sim only:
    per stage, how many autonomous and correction frames there are and which share is labelled
    positive, and at which stage (current and best reached) the simulated human took over. A frame's
    stage is the newest ``sim/status`` received at or before the frame's tick, on the timeline `recap
    convert` builds the frames on. Episodes whose bag has no ``sim/status`` (recorded before the station
    recorded it) are counted and skipped.
    """
    from recap_core.data import load_episodes, load_frames_table

    table = load_frames_table(dataset)
    labelled = "indicator" in table.column_names  # rollouts appended since the last `recap label` have none
    columns = ("episode_index", "frame_index", "is_intervention") + (("indicator",) if labelled else ())
    rows = {name: table[name].to_numpy(zero_copy_only=False) for name in columns}
    kinds = ("autonomous", "correction")
    counts = {kind: collections.Counter() for kind in kinds}
    positives = {kind: collections.Counter() for kind in kinds}
    takeovers_now, takeovers_best = collections.Counter(), collections.Counter()
    failed_furthest = collections.Counter()
    used, skipped = 0, 0
    for episode in load_episodes(dataset):
        if episode["source"] != "rollout":
            continue
        mine = rows["episode_index"] == episode["episode_index"]
        order = np.argsort(rows["frame_index"][mine])
        stage = frame_stages(pathlib.Path(episode["bag_path"]), int(mine.sum()))
        if stage is None:
            skipped += 1
            continue
        used += 1
        human = rows["is_intervention"][mine][order].astype(bool)
        positive = rows["indicator"][mine][order].astype(bool) if labelled else np.zeros_like(human)
        best = np.maximum.accumulate(stage)
        for kind, mask in zip(kinds, (~human, human)):
            counts[kind].update(stage[mask].tolist())
            positives[kind].update(stage[mask & positive].tolist())
        starts = np.flatnonzero(human & ~np.concatenate([[False], human[:-1]]))
        takeovers_now.update(stage[starts].tolist())
        takeovers_best.update(best[starts].tolist())
        if not episode["success"]:
            failed_furthest[int(best[-1]) if len(best) else 0] += 1
    stages = []
    for s, name in enumerate(STAGES):
        entry = {
            "stage": s,
            "name": name,
            "take_overs_at": takeovers_now[s],
            "take_overs_best_reached": takeovers_best[s],
        }
        for kind in kinds:
            n = counts[kind][s]
            entry[f"{kind}_frames"] = n
            entry[f"{kind}_positive"] = positives[kind][s] / n if n and labelled else None
        stages.append(entry)
    return {
        "rollout_episodes": used,
        "labelled": labelled,
        "skipped_without_sim_status": skipped,
        "stages": stages,
        "failed_rollouts_by_furthest_stage": {STAGES[s]: failed_furthest[s] for s in sorted(failed_furthest)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=pathlib.Path)
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    result = analyse(args.dataset)
    print(f"{result['rollout_episodes']} rollout episodes ({result['skipped_without_sim_status']} without sim/status)")
    print("| stage | take-overs at / best reached | autonomous frames (positive) | correction frames (positive) |")
    print("|---|---|---|---|")

    def cell(entry, kind):
        n, share = entry[f"{kind}_frames"], entry[f"{kind}_positive"]
        return f"{n:,}" + (f" ({share:.0%})" if share is not None else "")

    for e in result["stages"]:
        print(
            f"| {e['stage']} {e['name']} | {e['take_overs_at']} / {e['take_overs_best_reached']} | "
            f"{cell(e, 'autonomous')} | {cell(e, 'correction')} |"
        )
    print("failed rollouts by furthest stage:", result["failed_rollouts_by_furthest_stage"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
