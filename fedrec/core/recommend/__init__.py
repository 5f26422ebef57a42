"""Turning scores into recommendation lists."""
