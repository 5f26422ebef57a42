"""Benchmarks' entry points (``python -m fedrec.simulations.benchmarks.<name>``)."""
