"""The simulated ALOHA station: the sim, the scripted operator, the gate, the episode manager, the policy
and value nodes and the recorder, from the same parameter file as ``recap station``.

    ros2 launch recap_bringup sim.launch.py policy_checkpoint:=/ckpt/pi_1 bag_dir:=bags

It runs on this machine only: localhost discovery and the shared-memory Fast DDS profile are set for its
nodes (localhost:=false keeps the environment's own DDS settings).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from recap_bringup import station_sim_yaml
from recap_bringup.station_launch import station_actions


def generate_launch_description():
    args = [
        DeclareLaunchArgument("config", default_value=str(station_sim_yaml()), description="station parameter YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="station namespace"),
        DeclareLaunchArgument(
            "operator", default_value="true", description="start the scripted operator (demos, simulated human)"
        ),
        DeclareLaunchArgument("policy_checkpoint", default_value="", description="policy checkpoint dir"),
        DeclareLaunchArgument("value_checkpoint", default_value="", description="value checkpoint dir"),
        DeclareLaunchArgument("bag_dir", default_value="bags", description="where episode bags go"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with recap.rviz"),
        DeclareLaunchArgument(
            "localhost", default_value="true", description="localhost-only discovery and the shared-memory profile"
        ),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=lambda context: station_actions(context, sim=True))])
