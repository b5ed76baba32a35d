"""Simulated bimanual ALOHA station node and scripted IK expert."""
