"""The scorers ``fedrec compare`` hands to the one evaluation
(:func:`fedrec.core.baselines.evaluate_scorer`) for the models that are not baselines:
a federated model as its clients score it, a released item-kNN similarity, SASRec, and
another scorer's lists re-ranked by MMR."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from fedrec.core.arrays import Arrays
from fedrec.core.baselines import Scorer, training_matrix
from fedrec.core.baselines.scorer import check_users
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.models.run_model import run_item_features
from fedrec.core.recommend.reranking import mmr_rerank
from fedrec.core.training.local_round import user_scores


class FederatedScorer:
    """A federated model scored as its clients score it: the global ``arrays`` and each
    user's stored vector (``local``; a fresh seeded one for a user who never trained), fitted
    for ``reconstruct-epochs`` on the user's own items with the global part frozen
    (:func:`fedrec.core.training.local_round.user_scores`)."""

    def __init__(self, config: RunConfig, arrays: Arrays, local: dict[int, Arrays]) -> None:
        self.config, self.arrays, self.local = config, arrays, local
        self.features = run_item_features(config)
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> FederatedScorer:
        self.split = split
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        split = _fitted(self.split, self)
        users = check_users(users, split.n_users)
        c = self.config
        return np.stack([user_scores(c.model, c.dim, self.arrays, self.local.get(int(u)),
                                     split.user_data(int(u), for_evaluation=False), c.training,
                                     c.reconstruct_epochs, c.seed, item_features=self.features,
                                     personal=c.personal, tune_epochs=c.tune_epochs,
                                     tuning=c.tuning, negative_pool=c.train_negatives)
                         for u in users]).astype(np.float32, copy=False)


class SimilarityScorer:
    """Item-kNN from a released ``(n_items, n_items)`` similarity: ``s_u = S x_u``
    (:func:`fedrec.core.baselines.federated_itemknn.score_user` for all users at once)."""

    def __init__(self, similarity: NDArray[np.float64]) -> None:
        self.similarity = sp.csr_matrix(similarity)
        self.X: sp.csr_matrix | None = None

    def fit(self, split: LeaveOneOutSplit) -> SimilarityScorer:
        self.X = training_matrix(split)
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        X = _fitted(self.X, self)
        users = check_users(users, X.shape[0])
        return (X[users] @ self.similarity.T).toarray().astype(np.float32)


class SequenceScorer:
    """A sequence model scoring the next item after each user's training + validation items."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> SequenceScorer:
        self.split = split
        return self

    @torch.no_grad()
    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        from fedrec.core.models.sequence import history_tokens
        from fedrec.core.training.sequence import evaluation_history

        split = _fitted(self.split, self)
        users = check_users(users, split.n_users)
        self.model.eval()
        histories = [evaluation_history(split.user_data(int(u), for_evaluation=False)) for u in users]
        tokens = history_tokens(histories, split.n_items, self.model.max_len)
        return self.model.score_items_for_history(tokens).numpy().astype(np.float32, copy=False)


class MMRScorer:
    """Another scorer's top-``k`` re-ranked by MMR (:func:`fedrec.core.recommend.reranking.mmr_rerank`).

    The re-ranked list is put on top, in its order, above every other item, which keeps
    its score: ``s'_i = max(s) + 1 + (k − position)`` for the list's items. So the one
    evaluation sees exactly the MMR list (and the sampled protocol sees its effect too).
    """

    def __init__(self, base: Scorer, item_vectors: NDArray[np.floating], k: int, lam: float, pool: int) -> None:
        self.base, self.item_vectors, self.k, self.lam, self.pool = base, item_vectors, k, lam, pool
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> MMRScorer:
        self.split = split
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        split = _fitted(self.split, self)
        scores = np.array(self.base.score_users(users), dtype=np.float64)
        for row, u in zip(scores, users):
            excluded = split.user_data(int(u), for_evaluation=False).excluded_from_ranking()
            chosen = mmr_rerank(row, self.item_vectors, self.k, self.lam, pool=self.pool, exclude=excluded)
            row[chosen] = row.max() + 1 + np.arange(len(chosen))[::-1]
        return scores.astype(np.float32)


def _fitted(value: Any, scorer: Any) -> Any:
    if value is None:
        raise RuntimeError(f"{type(scorer).__name__} is not fitted: call fit(split) first")
    return value
