"""The pure-torch federated loop (fedrec/simulations/torch_loop.py) trains feature models."""

from __future__ import annotations

from fedrec.client.partition import split_for
from fedrec.core.baselines.popularity import evaluate_itempop
from fedrec.core.config.run_config import RunConfig
from fedrec.simulations.torch_loop import run_torch_loop


def test_hybrid_learns_past_itempop_on_synthetic() -> None:
    """20 rounds × 100 users (2 user-epochs on average), the benchmark's SGD settings.

    Measured (seed 0, dim 16): hybrid hr@10 ≈ 0.45, mf 0.37, ItemPop 0.279; ≈ 8 s on 2 busy cores.
    """
    config = RunConfig(model="hybrid", rounds=20, clients_per_round=100, local_epochs=2, client_optimizer="sgd",
                       lr=2.0, server_lr=20.0, dim=16, eval_every=20, executor="cohort")
    split = split_for(config)
    rows = run_torch_loop(split, config)
    itempop = evaluate_itempop(split, config.eval_k)
    assert [r["round"] for r in rows] == list(range(1, 21))
    assert rows[-1]["hr@10"] > itempop["hr@10"] + 0.1
    assert rows[-1]["ndcg@10"] > itempop["ndcg@10"]
