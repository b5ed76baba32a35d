"""A real RECAP station: the robot bridge (the lab's drivers and controllers, by its robot contract), the
gate, the episode manager, the policy and value nodes, the recorder, an operator device; no simulation.

    ros2 launch recap_bringup station.launch.py contract:=/path/to/my_robot.yaml operator_device:=joy \\
        policy_checkpoint:=/ckpt/pi_1 value_checkpoint:=/ckpt/V_1 bag_dir:=/data/bags namespace:=station1

docs/real_station.md walks through it, from a fresh ROS install to a first recorded episode.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from recap_bringup import config_dir
from recap_bringup.station_launch import OPERATOR_DEVICES, station_actions


def generate_launch_description():
    args = [
        DeclareLaunchArgument("contract", description="the station's robot contract YAML (required)"),
        DeclareLaunchArgument(
            "config", default_value=str(config_dir() / "station_real.yaml"), description="node parameters YAML"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="station namespace (several stations)"),
        DeclareLaunchArgument(
            "operator_device",
            default_value="joy",
            choices=list(OPERATOR_DEVICES),
            description="take-over device: joy (gamepad with deadman), leader_arms, or none",
        ),
        DeclareLaunchArgument("joy_driver", default_value="false", description="also start joy joy_node"),
        DeclareLaunchArgument("policy_checkpoint", default_value="", description="policy checkpoint dir"),
        DeclareLaunchArgument("value_checkpoint", default_value="", description="value checkpoint dir"),
        DeclareLaunchArgument("bag_dir", default_value="", description="where episode bags go (default: config)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with recap.rviz"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=lambda context: station_actions(context, sim=False))])
