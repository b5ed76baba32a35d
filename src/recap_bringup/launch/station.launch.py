"""Bring up a RECAP station with ros2 launch (real ROS 2 install with launch_ros).

    ros2 launch recap_bringup station.launch.py                      # simulated station, expert as operator
    ros2 launch recap_bringup station.launch.py sim:=false config:=/path/to/my_station.yaml \
        policy_checkpoint:=/ckpt/pi_1 value_checkpoint:=/ckpt/V_1 bag_dir:=/data/bags

Reads the same station YAML as `recap station` (recap_bringup/config/station_sim.yaml by
default), so the two cannot drift. On a real station your robot driver publishes
camera/<cam>/image_raw and joint_states and follows joint_command; leave sim:=false.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, '..', 'config', 'station_sim.yaml')


def generate_launch_description():
    config = LaunchConfiguration('config')
    sim = LaunchConfiguration('sim')
    expert = LaunchConfiguration('expert')
    namespace = LaunchConfiguration('namespace')
    args = [
        DeclareLaunchArgument('config', default_value=DEFAULT_CONFIG, description='station parameter YAML'),
        DeclareLaunchArgument('sim', default_value='true', description='start the simulated station'),
        DeclareLaunchArgument('expert', default_value='true',
                              description='sim only: the scripted expert acts as the operator'),
        DeclareLaunchArgument('namespace', default_value='', description='station namespace'),
        DeclareLaunchArgument('policy_checkpoint', default_value='', description='policy checkpoint dir'),
        DeclareLaunchArgument('value_checkpoint', default_value='', description='value checkpoint dir'),
        DeclareLaunchArgument('bag_dir', default_value='bags', description='where episode bags go'),
    ]
    common = dict(namespace=namespace, output='screen', emulate_tty=True)
    nodes = [
        Node(package='recap_sim', executable='sim_station', name='sim_station',
             parameters=[config], condition=IfCondition(sim), **common),
        Node(package='recap_sim', executable='scripted_expert', name='scripted_expert',
             parameters=[config], condition=IfCondition(expert), **common),
        Node(package='recap_teleop', executable='gate', name='gate', parameters=[config], **common),
        Node(package='recap_teleop', executable='episode_manager', name='episode_manager',
             parameters=[config], **common),
        Node(package='recap_policy_node', executable='policy_node', name='policy_node',
             parameters=[config, {'checkpoint': LaunchConfiguration('policy_checkpoint')}], **common),
        Node(package='recap_value_node', executable='value_node', name='value_node',
             parameters=[config, {'checkpoint': LaunchConfiguration('value_checkpoint')}], **common),
        Node(package='recap_recorder', executable='recorder', name='recorder',
             parameters=[config, {'output_dir': LaunchConfiguration('bag_dir')}], **common),
    ]
    return LaunchDescription(args + nodes)
