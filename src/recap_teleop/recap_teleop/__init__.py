"""Policy/teleop gate with deadman and safety limits, episode manager, operator input adapters."""
