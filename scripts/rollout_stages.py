#!/usr/bin/env python3
"""Where the rollouts of a simulated RECAP experiment went wrong, by the sim's task stage.

    .venv/bin/python scripts/rollout_stages.py runs/X/dataset [--json out.json]

Reads the dataset (labels: ``is_intervention``, ``indicator``) and, for every rollout episode,
its bag's ``sim/status`` (the sim's staged reward: 0 untouched, 1 touched, 2 lifted, 3 both
grippers on the cube, 4 handed over), which `config/station_sim.yaml` records on the sim only.
Prints, per stage, how many autonomous and correction frames there are and which share is
labelled positive, and at which stage (current and best reached) the simulated human took over.
A frame's stage is the sim's reward at its step (frame i is step i + 1 of the episode). Episodes
whose bag has no ``sim/status`` (recorded before 2026-12-03) are counted and skipped.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys

import numpy as np

STAGES = ("untouched", "touched", "lifted", "both hold", "handed over")


def sim_rewards(bag: pathlib.Path) -> np.ndarray | None:
    """The sim's reward by step (index 0 = step 1) of the episode in ``bag``; None without sim/status."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic.endswith("/sim/status") or c.topic == "sim/status"]
        if not connections:
            return None
        statuses = [{v.key: v.value for v in reader.deserialize(raw, connection.msgtype).values}
                    for connection, _, raw in reader.messages(connections=connections)]
    # the first message may be the world of the episode before (its seed): the episode's is the last one's
    seed = statuses[-1].get("seed") if statuses else None
    by_step = {int(v["step"]): float(v["reward"]) for v in statuses
               if v.get("seed") == seed and int(v.get("step", -1)) >= 1}
    if not by_step:
        return None
    rewards = np.zeros(max(by_step), dtype=float)
    last = 0.0
    for step in range(1, len(rewards) + 1):
        last = by_step.get(step, last)
        rewards[step - 1] = last
    return rewards


def analyse(dataset: pathlib.Path) -> dict:
    from recap_core.data import load_episodes, load_frames_table

    table = load_frames_table(dataset)
    labelled = "indicator" in table.column_names  # rollouts appended since the last `recap label` have none
    rows = {name: table[name].to_numpy(zero_copy_only=False)
            for name in ("episode_index", "frame_index", "is_intervention", "indicator") if name in table.column_names}
    if not labelled:
        rows["indicator"] = np.zeros(len(table), dtype=bool)
    meta = load_episodes(dataset)
    counts = {kind: collections.Counter() for kind in ("autonomous", "correction")}
    positives = {kind: collections.Counter() for kind in ("autonomous", "correction")}
    takeovers_now, takeovers_best = collections.Counter(), collections.Counter()
    failed_furthest = collections.Counter()
    used, skipped = 0, 0
    for episode in meta:
        if episode["source"] != "rollout":
            continue
        rewards = sim_rewards(pathlib.Path(episode["bag_path"]))
        if rewards is None:
            skipped += 1
            continue
        used += 1
        mine = rows["episode_index"] == episode["episode_index"]
        order = np.argsort(rows["frame_index"][mine])
        index = rows["frame_index"][mine][order]
        human = rows["is_intervention"][mine][order].astype(bool)
        positive = rows["indicator"][mine][order].astype(bool)
        stage = rewards[np.clip(index, 0, len(rewards) - 1)].astype(int)
        best = np.maximum.accumulate(stage)
        for kind, mask in (("autonomous", ~human), ("correction", human)):
            counts[kind].update(stage[mask].tolist())
            positives[kind].update(stage[mask & positive].tolist())
        starts = np.flatnonzero(human & ~np.concatenate([[False], human[:-1]]))
        takeovers_now.update(stage[starts].tolist())
        takeovers_best.update(best[starts].tolist())
        if not episode["success"]:
            failed_furthest[int(best[-1]) if len(best) else 0] += 1
    table = []
    for s, name in enumerate(STAGES):
        entry = {"stage": s, "name": name, "take_overs_at": takeovers_now[s],
                 "take_overs_best_reached": takeovers_best[s]}
        for kind in counts:
            n = counts[kind][s]
            entry[f"{kind}_frames"] = n
            entry[f"{kind}_positive"] = (positives[kind][s] / n) if n else None
        table.append(entry)
    if not labelled:
        for entry in table:
            entry["autonomous_positive"] = entry["correction_positive"] = None
    return {"rollout_episodes": used, "labelled": labelled, "skipped_without_sim_status": skipped, "stages": table,
            "failed_rollouts_by_furthest_stage": {STAGES[s]: failed_furthest[s] for s in sorted(failed_furthest)}}


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
        print(f"| {e['stage']} {e['name']} | {e['take_overs_at']} / {e['take_overs_best_reached']} | "
              f"{cell(e, 'autonomous')} | {cell(e, 'correction')} |")
    print("failed rollouts by furthest stage:", result["failed_rollouts_by_furthest_stage"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
