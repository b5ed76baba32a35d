# Source this (scripts/test.sh and scripts/demo.sh do): the localhost DDS settings of the tests and the
# simulated station, so that no traffic leaves the machine and large images are not dropped. It serves
# either venv (.venv on kilted, .venv-jazzy on jazzy): the ROS wheels find their libraries themselves.
# A real station does not source it: the nodes keep the DDS settings they are started with.
_RECAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_RECAP_ROOT/src/recap_ros/recap_ros/fastdds_localhost.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
unset _RECAP_ROOT
