#!/usr/bin/env bash
# The main job: setup (idempotent), then the simulated station with the scripted
# expert, inside a private network namespace.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/ros_env.sh
exec scripts/netns.sh .venv/bin/recap station --sim "$@"
