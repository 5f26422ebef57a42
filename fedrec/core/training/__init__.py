"""Local training: one user's round, the cohort executor, the central twin."""
