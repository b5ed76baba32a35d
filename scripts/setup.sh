#!/usr/bin/env bash
# Idempotent setup of everything this repo needs on a fresh Debian 12 machine:
# Debian packages for headless MuJoCo and the network namespace, a .venv with
# torch==2.13.0 (CPU, pinned), the ROS 2 kilted wheels, the simulator, the model
# stack and the packages under src/ (editable); then .venv-jazzy, the same with the
# ROS 2 jazzy wheels, where CI runs the node tests a second time (RECAP_JAZZY=0
# skips it). A second run skips what is done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages: EGL/Mesa for headless MuJoCo rendering, iproute2 + util-linux
#    for the private network namespace the ROS tests run in.
APT_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 iproute2 util-linux)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "WARNING: missing Debian packages (${missing[*]}); run as root or: sudo apt-get install ${missing[*]}"
  fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)

# 3. torch first, from the local CPU wheel; everything after is constrained to it.
if ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  log "installing torch==2.13.0 (CPU)"
  "${PIP[@]}" install torch==2.13.0 2> >(grep -v 'is ignored: it is neither' >&2)
fi

# 4. Third-party requirements, re-run only when the requirement files change.
stamp="$VENV/.recap-requirements.sha"
want="$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing requirements (ROS 2 kilted wheels, gym-aloha, transformers, rosbags, ...)"
  "${PIP[@]}" install -c constraints.txt -r requirements.txt 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$want" > "$stamp"
fi

# 5. The packages under src/, editable, without touching dependencies.
pstamp="$VENV/.recap-packages.sha"
pwant="$(cat src/*/setup.py src/*/package.xml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$pstamp" 2>/dev/null)" != "$pwant" ]; then
  log "installing the packages under src/ (editable)"
  args=(); for d in src/*/; do args+=(-e "$d"); done
  "${PIP[@]}" install --no-deps --no-build-isolation "${args[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$pwant" > "$pstamp"
fi

# 5b. launch and launch_ros (not on any registry) from ../shared/wheels where it exists, for the tests that
#     run launch files through launch.LaunchService (test/test_real_station_launch.py skips without them).
#     launch_testing is left out: its pytest plugin does not load with this pytest. The wheels name ROS
#     packages as dependencies PyPI does not have (ament_index_python is ros-ament-index-python here).
WHEELS="$ROOT/../shared/wheels"
if [ -d "$WHEELS" ] && ! "$VPY" -c 'import launch, launch_ros.actions' 2>/dev/null; then
  log "installing launch and launch_ros from $WHEELS"
  "${PIP[@]}" install --no-deps "$WHEELS"/launch-*.whl "$WHEELS"/launch_ros-*.whl "$WHEELS"/launch_xml-*.whl \
    "$WHEELS"/launch_yaml-*.whl "$WHEELS"/composition_interfaces-*.whl
  "${PIP[@]}" install -c constraints.txt osrf-pycommon lark packaging ros-ament-index-python
fi

broken="$("$VPY" -m pip check 2>&1 | grep -v 'requires ament-index-python, which is not installed' || true)"
[ "$broken" = "No broken requirements found." ] || [ -z "$broken" ] || { echo "$broken"; exit 1; }
"$VPY" -c 'import torch; assert torch.__version__.startswith("2.13.0") and not torch.version.cuda, torch.__version__' \
  || { log "ERROR: torch is not the pinned CPU 2.13.0 build"; exit 1; }
log "ready: $VENV"

# 5b. .venv-openpi-client: openpi's own client (it pins numpy < 2, so never in .venv), for the interop test of
#     `recap serve` (test/test_openpi_interop.py). RECAP_OPENPI_CLIENT=0 skips it (that test then skips).
if [ "${RECAP_OPENPI_CLIENT:-1}" != 0 ]; then
  OVENV="$ROOT/.venv-openpi-client"
  if ! "$OVENV/bin/python" -c 'import openpi_client' 2>/dev/null; then
    log "creating $OVENV (openpi-client 0.1.2)"
    "$PY" -m venv "$OVENV"
    echo '*' > "$OVENV/.gitignore"
    "$OVENV/bin/python" -m pip --disable-pip-version-check -q install "openpi-client==0.1.2" typing-extensions \
      2> >(grep -v 'is ignored: it is neither' >&2)
  fi
fi

# 6. .venv-jazzy: the same stack on the ROS 2 jazzy wheels (never beside the kilted ones: both install
#    the same module names). Its requirements are requirements.txt with every ros-X as ros-jazzy-X (the
#    jazzy meta packages pin their ros-X versions), without the build and lint tools.
[ "${RECAP_JAZZY:-1}" = 0 ] && { log "RECAP_JAZZY=0: no .venv-jazzy"; exit 0; }
JVENV="${JAZZY_VENV:-$ROOT/.venv-jazzy}"
if [ ! -x "$JVENV/bin/python" ]; then
  log "creating $JVENV"
  "$PY" -m venv "$JVENV"
  echo '*' > "$JVENV/.gitignore"  # a build output, like .venv
fi
JPY="$JVENV/bin/python"
JPIP=("$JPY" -m pip --disable-pip-version-check -q)
if ! "$JPY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  log "installing torch==2.13.0 (CPU) into $JVENV"
  "${JPIP[@]}" install torch==2.13.0 2> >(grep -v 'is ignored: it is neither' >&2)
fi
jreq="$JVENV/requirements-jazzy.txt"
sed -E 's/^ros-/ros-jazzy-/' requirements.txt | grep -vE '^(colcon-|ruff)' > "$jreq"
jstamp="$JVENV/.recap-requirements.sha"
jwant="$(cat "$jreq" constraints.txt src/*/setup.py src/*/package.xml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$jstamp" 2>/dev/null)" != "$jwant" ]; then
  log "installing the ROS 2 jazzy wheels, the other requirements and src/ (editable) into $JVENV"
  "${JPIP[@]}" install -c constraints.txt -r "$jreq" 2> >(grep -v 'is ignored: it is neither' >&2)
  args=(); for d in src/*/; do args+=(-e "$d"); done
  "${JPIP[@]}" install --no-deps --no-build-isolation "${args[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$jwant" > "$jstamp"
fi
"$JPY" -m pip check >/dev/null || { "$JPY" -m pip check; exit 1; }
"$JPY" -c 'import importlib.metadata as m; v = m.version("ros-rclpy"); assert v.startswith("7."), v' \
  || { log "ERROR: $JVENV does not hold jazzy's rclpy 7.x"; exit 1; }
log "ready: $JVENV (ROS 2 jazzy)"
