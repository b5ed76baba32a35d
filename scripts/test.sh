#!/usr/bin/env bash
# The test command: setup (idempotent), then the whole suite inside a private
# network namespace with the project's DDS settings.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/ros_env.sh
exec scripts/netns.sh .venv/bin/python -m pytest "$@"
