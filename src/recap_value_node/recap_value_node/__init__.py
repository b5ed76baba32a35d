"""Live value node: observations to value stream and rviz visuals."""
