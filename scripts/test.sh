#!/usr/bin/env bash
# The test command: setup (idempotent), the lint and format check (ruff, settings in ruff.toml), then the
# whole suite inside a private network namespace with the project's DDS settings.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
.venv/bin/ruff check . || { echo "ruff check failed: fix the findings (ruff check --fix . fixes many)" >&2; exit 1; }
.venv/bin/ruff format --check . || { echo "ruff format --check failed: run .venv/bin/ruff format ." >&2; exit 1; }
source scripts/ros_env.sh
exec scripts/netns.sh .venv/bin/python -m pytest "$@"
