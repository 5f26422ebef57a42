"""Simulation runners and benchmark entry points (on top of client, server and core)."""
