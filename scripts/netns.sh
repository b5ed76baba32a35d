#!/usr/bin/env bash
# Run a command inside a private network namespace with only loopback up, so that
# nothing a test starts can reach (or be reached from) any network card. Only
# loopback exists there, so its ROS processes get localhost discovery (and, unless
# the caller chose others, the shared-memory Fast DDS profile and rmw).
# Usage: scripts/netns.sh CMD [ARGS...]
set -euo pipefail
_profile="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/src/recap_ros/recap_ros/fastdds_localhost.xml"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_profile}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _profile
if [ "${RECAP_IN_NETNS:-}" = 1 ]; then exec "$@"; fi
if [ "$(id -u)" != 0 ] && ! unshare -r -n true 2>/dev/null; then
  echo "[netns] ERROR: cannot create a network namespace (need root or user namespaces)" >&2
  exit 1
fi
uflags=(-n); [ "$(id -u)" = 0 ] || uflags=(-r -n)
exec unshare "${uflags[@]}" env RECAP_IN_NETNS=1 bash -c 'ip link set lo up && exec "$@"' netns "$@"
