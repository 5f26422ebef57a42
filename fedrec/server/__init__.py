"""The server side: the Flower ServerApp, its strategy, checkpoints and the round log."""
