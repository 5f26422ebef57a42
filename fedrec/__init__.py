"""fedrec: federated, privacy-preserving recommenders on Flower.

The shared part of a recommender (item embeddings, neural layers) is trained
federated; each client keeps its interactions and its private user vector.
"""

__version__ = "0.1.0"
