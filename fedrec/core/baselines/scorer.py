"""One scorer interface and one evaluation for every recommender, baseline or trained model.

A :class:`Scorer` is fitted on a :class:`LeaveOneOutSplit` and then scores every
item for a batch of users. :func:`evaluate_scorer` turns those scores into the
numbers the project compares, per evaluated user ``u`` with scores ``s_u (n_items,)``:

* through :func:`fedrec.core.evaluation.protocols.evaluate_user` — the sampled NCF protocol
  (``hr@K``, ``ndcg@K``) and the full-ranking mid-rank metrics (``full_hr@K``,
  ``full_ndcg@K``, ``full_recall@K``), averaged with
  :func:`fedrec.core.evaluation.protocols.mean_metrics`;
* on the full-ranking list ``L_u = top_k(s_u, K, exclude = train ∪ validation)``
  (:func:`fedrec.core.recommend.reranking.top_k`, ties towards the lower item id), with the
  relevant set ``R_u = {test item}``, the list metrics of
  :mod:`fedrec.core.evaluation.lists`, averaged over users: ``precision@K``,
  ``recall@K``, ``f1@K``, ``mrr@K``. (``recall@K`` is the hit of the test item in
  the list ``L_u``; ``full_recall@K`` counts ties by mid-rank instead, so the two
  differ only where the test item ties with the K-th item.)
* over all evaluated users' lists: ``coverage@K`` = |∪_u L_u| / n_items;
  ``diversity@K`` = intra-list diversity, mean_u mean_{i<j ∈ L_u} (1 − cos(v_i, v_j));
  ``novelty@K`` = mean over slots of −log2(max(c_i, 1) / n_users), in bits, with
  ``c_i`` the number of users who trained on item ``i``.

The item vectors ``v_i`` of ``diversity@K`` are ``item_vectors`` when given, else
column ``i`` of the binary training matrix X (``X[u, i] = 1`` iff ``u`` trained on
``i``), so that the same vectors serve every model. ``diversity_features`` (e.g.
genre indicators, ``(n_items, f)``) adds ``feature_diversity@K`` computed the same
way. Cosine is undefined for a zero vector (an item nobody trained on has a zero
column), so each list is restricted to its items with a non-zero vector and lists
left with fewer than two items do not count; the value is NaN if no list counts.

A trained torch :class:`~fedrec.core.models.base.Recommender` that holds every
user's vector is evaluated the same way through :class:`RecommenderScorer` /
:func:`evaluate_recommender`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.evaluation import lists as list_metrics
from fedrec.core.evaluation.catalogue import coverage, intra_list_diversity, novelty
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics
from fedrec.core.models.base import Recommender
from fedrec.core.recommend.reranking import top_k
from fedrec.core.training.implicit import score_all_items

EVAL_BATCH_USERS = 256


class Scorer(Protocol):
    """A recommender that is fitted on a split and scores every item for users."""

    def fit(self, split: LeaveOneOutSplit) -> Scorer:
        """Learn from the training items of ``split``; returns ``self``."""
        ...

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        """Scores ``(len(users), n_items)``; higher is better. Needs :meth:`fit` first."""
        ...


# --------------------------------------------------------------------------- shared plumbing


def training_matrix(split: LeaveOneOutSplit) -> sp.csr_matrix:
    """Binary ``(n_users, n_items)`` float64 CSR matrix X with X[u, i] = 1 iff u trained on i.

    A repeated (user, item) interaction counts once.
    """
    X = sp.csr_matrix(
        (np.ones(len(split.train_items)), (split.train_users(), split.train_items)),
        shape=(split.n_users, split.n_items),
    )
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def check_users(users: NDArray[np.integer], n_users: int) -> NDArray[np.int64]:
    """``users`` as a 1-D int64 array of ids in [0, n_users), or a ValueError saying what is wrong."""
    array = np.asarray(users)
    if array.ndim != 1:
        raise ValueError(f"users must be a 1-D array of user ids, got shape {array.shape}")
    if len(array) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"users must be integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if len(array) and (array.min() < 0 or array.max() >= n_users):
        raise ValueError(f"user ids must lie in [0, {n_users}), got {array.min()}..{array.max()}")
    return array


class RecommenderScorer:
    """A trained torch Recommender as a :class:`Scorer`: s(u, i) is the model's logit.

    ``fit`` does not train; it only checks that the model covers the split's users
    and items (one user vector per user, as the central twin holds).
    """

    def __init__(self, model: Recommender) -> None:
        self.model = model

    def fit(self, split: LeaveOneOutSplit) -> RecommenderScorer:
        if (self.model.n_users, self.model.n_items) != (split.n_users, split.n_items):
            raise ValueError(
                f"the model holds {self.model.n_users} users × {self.model.n_items} items, "
                f"the split has {split.n_users} × {split.n_items}; evaluate a model trained on this split"
            )
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        users = check_users(users, self.model.n_users)
        return score_all_items(self.model, users).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- evaluation


def _nonzero_diversity(lists: Sequence[NDArray[np.intp]], vectors: NDArray[np.float64]) -> float:
    """Intra-list diversity over each list's items with a non-zero vector; NaN if no list keeps two."""
    usable = np.linalg.norm(vectors, axis=1) > 0
    kept = [items[usable[items]] for items in lists]
    kept = [items for items in kept if len(items) >= 2]
    if not kept:
        return float("nan")
    return intra_list_diversity(kept, vectors)


def _check_vectors(vectors: NDArray[np.floating] | sp.spmatrix, n_items: int, name: str) -> NDArray[np.float64]:
    dense = vectors.toarray() if sp.issparse(vectors) else np.asarray(vectors, dtype=np.float64)
    if dense.ndim != 2 or dense.shape[0] != n_items:
        raise ValueError(f"{name} must have shape (n_items={n_items}, dim), got {dense.shape}")
    if np.isnan(dense).any():
        raise ValueError(f"{name} contain NaN")
    return dense


def evaluate_scorer(
    scorer: Scorer,
    split: LeaveOneOutSplit,
    k: int = 10,
    users: NDArray[np.integer] | None = None,
    item_vectors: NDArray[np.floating] | None = None,
    diversity_features: NDArray[np.floating] | None = None,
) -> dict[str, float]:
    """Mean metrics of a fitted ``scorer`` over ``users`` (default: every evaluated user).

    Keys (K = ``k``): ``hr@K``, ``ndcg@K``, ``full_hr@K``, ``full_ndcg@K``,
    ``full_recall@K``, ``precision@K``, ``recall@K``, ``f1@K``, ``mrr@K``,
    ``coverage@K``, ``diversity@K``, ``novelty@K`` and, when ``diversity_features``
    is given, ``feature_diversity@K``. See the module docstring for the formulas.
    ``item_vectors`` and ``diversity_features`` have shape ``(n_items, dim)``.
    """
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")
    evaluated = split.evaluated_users() if users is None else check_users(users, split.n_users)
    if len(evaluated) == 0:
        raise ValueError("no users to evaluate: the split has no user with a test item")
    without_test = evaluated[split.test_item[evaluated] < 0]
    if len(without_test):
        raise ValueError(f"user {without_test[0]} has no test item; evaluate only split.evaluated_users()")
    X = training_matrix(split)
    vectors = _check_vectors(X.T.tocsr() if item_vectors is None else item_vectors, split.n_items, "item_vectors")
    features = None
    if diversity_features is not None:
        features = _check_vectors(diversity_features, split.n_items, "diversity_features")

    rows: list[dict[str, float]] = []
    lists: list[NDArray[np.intp]] = []
    for start in range(0, len(evaluated), EVAL_BATCH_USERS):
        batch = evaluated[start : start + EVAL_BATCH_USERS]
        scores = np.asarray(scorer.score_users(batch))
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"{type(scorer).__name__}.score_users returned shape {scores.shape}, "
                f"expected (len(users)={len(batch)}, n_items={split.n_items})"
            )
        for j, u in enumerate(batch):
            data = split.user_data(int(u))
            row = evaluate_user(scores[j], data, k)
            ranked = top_k(scores[j], k, exclude=data.excluded_from_ranking())
            relevant = np.array([data.test_item])
            row[f"precision@{k}"] = list_metrics.precision_at_k(ranked, relevant, k)
            row[f"recall@{k}"] = list_metrics.recall_at_k(ranked, relevant, k)
            row[f"f1@{k}"] = list_metrics.f1_at_k(ranked, relevant, k)
            row[f"mrr@{k}"] = list_metrics.mrr_at_k(ranked, relevant, k)
            rows.append(row)
            lists.append(ranked)

    metrics = mean_metrics(rows)
    users_per_item = np.asarray(X.sum(axis=0)).ravel().astype(np.int64)
    metrics[f"coverage@{k}"] = coverage(lists, split.n_items)
    metrics[f"diversity@{k}"] = _nonzero_diversity(lists, vectors)
    metrics[f"novelty@{k}"] = novelty(lists, users_per_item, split.n_users)
    if features is not None:
        metrics[f"feature_diversity@{k}"] = _nonzero_diversity(lists, features)
    return metrics


def evaluate_recommender(
    model: Recommender,
    split: LeaveOneOutSplit,
    k: int = 10,
    users: NDArray[np.integer] | None = None,
    item_vectors: NDArray[np.floating] | None = None,
    diversity_features: NDArray[np.floating] | None = None,
) -> dict[str, float]:
    """:func:`evaluate_scorer` of a trained torch Recommender holding every user's vector."""
    return evaluate_scorer(
        RecommenderScorer(model).fit(split), split, k, users, item_vectors, diversity_features
    )
