"""Test support shared by every package, without rclpy: ``procs`` starts nodes as
real processes with ``--ros-args`` and always stops them by PID. The in-process
probe node (which needs rclpy) lives in the repository's root conftest.py."""
