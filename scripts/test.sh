#!/usr/bin/env bash
# The test command: setup (idempotent), the lint and format check (ruff, settings in ruff.toml), then the
# whole suite inside a private network namespace with the project's DDS settings, on the ROS 2 kilted
# wheels (.venv); then the node tests again on the jazzy wheels (.venv-jazzy, JAZZY_TESTS below).
# With arguments only those run, on kilted (scripts/test.sh -k gate); `scripts/test.sh --jazzy [OPTIONS]`
# runs the jazzy part alone, with those pytest options.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# One test per node executable at least (every package's node test), the composed `recap station`
# (test_network_settings), the executor choice and the QoS matching: what differs between the distros is
# rclpy and its rmw.
JAZZY_TESTS=(
  src/*/test/test_*node*.py
  src/recap_teleop/test/test_leader_arms.py
  src/recap_ros/test/test_qos.py
  src/recap_policy_node/test/test_qos_sensors.py
  src/recap_ros/test/test_jazzy_executor.py
  src/recap_ros/test/test_diagnostics.py
  test/test_diagnostics_nodes.py
  test/test_network_settings.py
)

jazzy() {
  if [ ! -x .venv-jazzy/bin/python ]; then
    echo "no .venv-jazzy: run scripts/setup.sh without RECAP_JAZZY=0 (the jazzy node tests need it)" >&2
    return 1
  fi
  echo "== the node tests on ROS 2 jazzy (.venv-jazzy) =="
  scripts/netns.sh .venv-jazzy/bin/python -m pytest "$@"
}

bash scripts/setup.sh
source scripts/ros_env.sh
if [ "${1:-}" = --jazzy ]; then  # the remaining arguments are pytest options for the jazzy tests (-x, -k ...)
  shift
  jazzy "${JAZZY_TESTS[@]}" "$@"
  exit
fi
.venv/bin/ruff check . || { echo "ruff check failed: fix the findings (ruff check --fix . fixes many)" >&2; exit 1; }
.venv/bin/ruff format --check . || { echo "ruff format --check failed: run .venv/bin/ruff format ." >&2; exit 1; }
if [ $# -gt 0 ]; then
  exec scripts/netns.sh .venv/bin/python -m pytest "$@"
fi
status=0
scripts/netns.sh .venv/bin/python -m pytest || status=$?
if [ "${RECAP_JAZZY:-1}" != 0 ]; then
  jazzy "${JAZZY_TESTS[@]}" || status=$?
fi
exit $status
