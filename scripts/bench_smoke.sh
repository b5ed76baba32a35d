#!/usr/bin/env bash
# Every benchmark with --quick as a smoke check (DESIGN.md §11): it must exit 0 and
# its last line must be one JSON object whose "name" is the benchmark's file name.
# bench/_*.py are helper modules (bench/_spread.py: median and worst of repeats), not benchmarks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/ros_env.sh
failed=0
for bench in bench/*.py; do
  name="$(basename "$bench" .py)"
  [[ "$name" == _* ]] && continue
  start=$(date +%s)
  if ! out="$(scripts/netns.sh .venv/bin/python "$bench" --quick 2>/tmp/bench_$name.err)"; then
    echo "[bench] $name FAILED (exit); stderr tail:"; tail -20 "/tmp/bench_$name.err"; failed=1; continue
  fi
  last="$(printf '%s\n' "$out" | tail -n 1)"
  if ! printf '%s' "$last" | .venv/bin/python -c "import json,sys; d=json.loads(sys.stdin.read()); sys.exit(0 if d.get('name')=='$name' else 1)"; then
    echo "[bench] $name FAILED: last line is not its JSON figures: $last"; failed=1; continue
  fi
  echo "[bench] $name ok ($(( $(date +%s) - start )) s): $last"
done
exit $failed
