"""Bring up a RECAP station with ``ros2 launch``, from the same station YAML as ``recap station``.

    ros2 launch recap_bringup station.launch.py      # simulated station, driven by the scripted operator
    ros2 launch recap_bringup station.launch.py sim:=false operator:=false config:=/path/to/my_station.yaml \
        policy_checkpoint:=/ckpt/pi_1 value_checkpoint:=/ckpt/V_1 bag_dir:=/data/bags
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "..", "config", "station_sim.yaml")


def generate_launch_description():
    config = LaunchConfiguration("config")
    sim = LaunchConfiguration("sim")
    operator = LaunchConfiguration("operator")
    namespace = LaunchConfiguration("namespace")
    args = [
        DeclareLaunchArgument("config", default_value=DEFAULT_CONFIG, description="station parameter YAML"),
        DeclareLaunchArgument("sim", default_value="true", description="start the simulated station"),
        DeclareLaunchArgument(
            "operator",
            default_value="true",
            description="sim only: start the scripted operator (demos, simulated human)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="station namespace"),
        DeclareLaunchArgument("policy_checkpoint", default_value="", description="policy checkpoint dir"),
        DeclareLaunchArgument("value_checkpoint", default_value="", description="value checkpoint dir"),
        DeclareLaunchArgument("bag_dir", default_value="bags", description="where episode bags go"),
    ]
    common = dict(namespace=namespace, output="screen", emulate_tty=True)
    nodes = [
        Node(
            package="recap_sim",
            executable="sim_station",
            name="sim_station",
            parameters=[config],
            condition=IfCondition(sim),
            **common,
        ),
        Node(
            package="recap_sim",
            executable="scripted_operator",
            name="scripted_operator",
            parameters=[config],
            condition=IfCondition(operator),
            **common,
        ),
        Node(package="recap_teleop", executable="gate", name="gate", parameters=[config], **common),
        Node(
            package="recap_teleop", executable="episode_manager", name="episode_manager", parameters=[config], **common
        ),
        Node(
            package="recap_policy_node",
            executable="policy_node",
            name="policy_node",
            parameters=[config, {"checkpoint": LaunchConfiguration("policy_checkpoint")}],
            **common,
        ),
        Node(
            package="recap_value_node",
            executable="value_node",
            name="value_node",
            parameters=[config, {"checkpoint": LaunchConfiguration("value_checkpoint")}],
            **common,
        ),
        Node(
            package="recap_recorder",
            executable="recorder",
            name="recorder",
            parameters=[config, {"output_dir": LaunchConfiguration("bag_dir")}],
            **common,
        ),
    ]
    return LaunchDescription(args + nodes)
