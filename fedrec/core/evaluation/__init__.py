"""Evaluation: metrics for a held-out item, ranked lists, catalogues and ratings."""
