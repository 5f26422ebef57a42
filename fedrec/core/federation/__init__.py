"""Federated rounds without Flower: user sampling, aggregation, server optimisers."""
