"""Policy inference node: observations to chunked 50 Hz joint commands with runtime CFG."""
