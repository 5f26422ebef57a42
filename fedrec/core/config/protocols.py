"""Evaluation protocols as presets: the settings a published line of work fixes, applied at once.

``ncf-loo`` — the protocol of the NCF line of federated recommenders (He et al. 2017; FedNCF,
FedRecon, PFedRec IJCAI'23, GPFedRec KDD'24, CoFedRec WWW'24) on MovieLens: leave-one-out
(latest interaction = test, the one before = validation), the test item ranked among 99
sampled items the user never interacted with, HR@10 / NDCG@10; **every user trains in every
round**, 100 rounds, 1 local epoch, d = 32, 4 sampled negatives per positive; the reported
model is the one of the round with the best validation HR@10 (evaluated every round; the
validation item never trains). The protocol sets these keys and nothing else: the client's
optimiser and learning rate, the server's step, the seed and the personal parts stay the
run's own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedrec.core.config.run_config import RunConfig

PROTOCOLS: dict[str, dict[str, Any]] = {
    "none": {},
    "ncf-loo": {"rounds": 100, "local_epochs": 1, "dim": 32, "negatives": 4, "eval_every": 1, "eval_k": 10,
                "eval_negatives": 99, "eval_fraction": 1.0, "model_selection": "best-validation"},
}


def protocol_settings(name: str, n_users: int) -> dict[str, Any]:
    """The keys protocol ``name`` fixes for a data set of ``n_users`` users (every user each round)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {list(PROTOCOLS)}")
    if name == "none":
        return {}
    if n_users < 1:
        raise ValueError(f"protocol {name} needs the data set's users, got n_users = {n_users}")
    return {**PROTOCOLS[name], "clients_per_round": n_users}


def apply_protocol(config: "RunConfig", n_users: int) -> "RunConfig":
    """``config`` with the keys of ``config.protocol`` set (unchanged for protocol ``none``)."""
    settings = protocol_settings(config.protocol, n_users)
    if not settings or all(getattr(config, key) == value for key, value in settings.items()):
        return config
    return replace(config, **settings)
