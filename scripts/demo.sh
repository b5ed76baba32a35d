#!/usr/bin/env bash
# The main job: setup (idempotent); the simulated station with the scripted operator
# (3 labelled episodes, topic rates); then the whole RECAP loop at quick size
# (demos -> value/policy -> rollouts with the simulated human -> RECAP -> eval -> report).
# Everything runs inside a private network namespace.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/ros_env.sh
scripts/netns.sh .venv/bin/recap station --sim "$@"
out="${RECAP_DEMO_OUT:-runs/demo-quick}"
echo
echo "== the RECAP loop at quick size (a few minutes): $out =="
# The demo's own output folder: a second demo replaces the first one's run.
scripts/netns.sh .venv/bin/recap experiment --quick --out "$out" --overwrite
echo
echo "report: $ROOT/$out/report.md (plots and summary.json next to it)"
