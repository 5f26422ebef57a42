"""``fedrec client recommend``: top-K lists on the device, offline, from its own state.

Everything comes from the device: the last global model it received and its users'
vectors (the encrypted state directory) and the user's interactions (its CSV). Nothing
is sent anywhere. Per user, by what the device knows of them:

* **personal** — the user has interactions: its vector (the stored one, or for a user
  who never trained here a seeded fresh one: the cold-start path) is fitted to the last
  global model on the user's own items with the global part frozen (FedRecon,
  ``reconstruct-epochs`` epochs, as in evaluation), then every item is scored;
* **non-personal** — the user has no interactions on this device: items are ranked by
  what the global model alone holds, the score with a zero user vector (for MF/GMF that
  is the item bias ``b_i``); no other user's data is involved.

Items the user has interacted with (all of its rows in the CSV) are never recommended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrec.client.device_state import load_state, locked
from fedrec.client.local_data import load_local_data
from fedrec.core.config.run_config import RunConfig
from fedrec.core.models.base import load_parameters
from fedrec.core.models.registry import build_model
from fedrec.core.recommend.reranking import top_k
from fedrec.core.training.implicit import score_all_items
from fedrec.core.training.local_round import user_scores


class RecommendError(Exception):
    """Recommendations cannot be made (the message says why)."""


@dataclass(frozen=True)
class Recommendations:
    user: str
    kind: str  # "personal", "cold-start" (no stored vector) or "non-personal"
    items: list[str]
    scores: list[float]
    server_round: int

    def as_dict(self) -> dict:
        return {"user": self.user, "kind": self.kind, "server_round": self.server_round,
                "items": [{"item": i, "score": s} for i, s in zip(self.items, self.scores)]}


def recommend(state_dir: Path, users: list[str] | None = None, k: int = 10,
              data_file: Path | None = None) -> list[Recommendations]:
    """Top-``k`` items for ``users`` (default: every user of the device's CSV)."""
    if k < 1:
        raise RecommendError(f"k must be ≥ 1, got {k}")
    state_dir = Path(state_dir).expanduser()
    if not state_dir.is_dir():
        raise RecommendError(f"state directory {state_dir} does not exist")
    with locked(state_dir):
        state = load_state(state_dir)
    if not state.global_model:
        raise RecommendError(f"{state_dir} holds no global model yet: the device has not taken part in a round")
    meta = state.meta
    config = RunConfig.from_user_config(meta["run_config"])
    catalogue = tuple(meta["catalogue"])
    data_path = Path(data_file or meta.get("data_file", ""))
    local = load_local_data(data_path, catalogue, config.seed, config.eval_negatives) if data_path.is_file() else None
    known_users = list(local.user_ids) if local is not None else []
    wanted = users if users else known_users
    if not wanted:
        raise RecommendError("no user given and the device's data file is missing: pass --user")
    global_arrays = {name: np.asarray(value, dtype=np.float32) for name, value in state.global_model.items()}
    out = []
    for raw_user in wanted:
        if local is not None and raw_user in local.user_ids:
            index = local.user_index(raw_user)
            user = local.split.user_data(index, for_evaluation=False)
            seen = _all_items(local, index)
            stored = state.vectors.get(raw_user)
            scores = user_scores(config.model, config.dim, global_arrays, stored, user, config.training,
                                 config.reconstruct_epochs, config.seed, personal=config.personal,
                                 tune_epochs=config.tune_epochs, tuning=config.tuning,
                                 negative_pool=config.train_negatives)
            kind = "personal" if stored is not None else "cold-start"
        else:
            scores = _non_personal_scores(config, global_arrays, len(catalogue))
            seen, kind = np.zeros(0, dtype=np.int64), "non-personal"
        chosen = top_k(scores, k, exclude=seen)
        out.append(Recommendations(raw_user, kind, [catalogue[i] for i in chosen],
                                   [float(scores[i]) for i in chosen], int(meta.get("server_round", 0))))
    return out


def _all_items(local, index: int) -> np.ndarray:
    """Every item of the user in the CSV: training, validation and test items."""
    split = local.split
    held = [int(i) for i in (split.validation_item[index], split.test_item[index]) if i >= 0]
    return np.concatenate([split.train_items_of(index), np.asarray(held, dtype=np.int64)])


def _non_personal_scores(config: RunConfig, global_arrays: dict[str, np.ndarray], n_items: int) -> np.ndarray:
    """Scores with a zero user vector: what the global model alone says about each item (a local
    score head, with ``personal`` head, keeps the run's seeded initial head)."""
    model = build_model(config.model, 1, n_items, config.dim, seed=config.seed, personal=config.personal)
    load_parameters(model, {k: torch.from_numpy(v) for k, v in global_arrays.items()}, "global")
    head = set(getattr(model, "score_head", ()))
    initial = dict(model.named_parameters())
    local = {name: initial[name].detach().clone() if name in head else torch.zeros_like(initial[name])
             for name in model.local_parameter_names}
    load_parameters(model, local, "local")
    return score_all_items(model, np.zeros(1, dtype=np.int64))[0]
