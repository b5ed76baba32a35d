"""ROS 2 glue shared by the node packages: QoS profiles, message <-> numpy
conversion, parameter declaration with descriptors, a node ``main``, and the test
probe. This is the only part of recap_core that imports rclpy; the learning side
(rl, data, models, train) never imports it, so training machines need no ROS.
"""
