"""Simulated bimanual ALOHA station node and the scripted operator that drives it."""
