# Source this (or let the Makefile do it): the DDS settings every ROS process here
# uses, so that no traffic leaves the machine and large images are not dropped.
_RECAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_RECAP_ROOT/src/recap_ros/recap_ros/fastdds_localhost.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
unset _RECAP_ROOT
