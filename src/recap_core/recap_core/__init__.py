"""RECAP math, models, dataset format, training, checkpoints and the recap CLI (no rclpy)."""
