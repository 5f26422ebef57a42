"""The cold-start section of ``fedrec compare``: a second split with simulated cold users
and held-out new items (:func:`make_cold_start_split`), and the new-item metrics
(:func:`new_item_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from fedrec.core.baselines import Scorer
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit
from fedrec.core.evaluation import lists as list_metrics
from fedrec.simulations.compare.config import COLD_START_STREAM, NEW_ITEM_TIE_STREAM


@dataclass(frozen=True)
class ColdStartSplit:
    """The leave-one-out split with simulated cold users and new items.

    Attributes:
        split: training lists without the new items, cold users' lists cut to their
            latest ``max_train_items``; validation and test items unchanged.
        cold_users: evaluated users with ≤ ``max_train_items`` training items.
        warm_users: the other evaluated users.
        new_items: items removed from every training list (never a validation or test item).
        new_item_users: users who held a new item in training.
        new_item_truth: per ``new_item_users`` entry, the new items that user held.
        max_train_items: N.
    """

    split: LeaveOneOutSplit
    cold_users: NDArray[np.int64]
    warm_users: NDArray[np.int64]
    new_items: NDArray[np.int64]
    new_item_users: NDArray[np.int64]
    new_item_truth: list[NDArray[np.int64]]
    max_train_items: int


def make_cold_start_split(split: LeaveOneOutSplit, max_train_items: int, user_fraction: float,
                          item_fraction: float, seed: int) -> ColdStartSplit:
    """New items: ``⌈item_fraction · n_items⌉`` items drawn (seeded) among those with 3 to
    median training users that are nobody's validation or test item, removed from every
    training list. Cold users: ``user_fraction`` of the evaluated users with more than
    ``max_train_items`` training items keep only their latest ``max_train_items`` (the CSR
    order is time order); with users who already had that few, they form ``cold_users``.
    """
    rng = np.random.default_rng([seed, COLD_START_STREAM])
    counts = np.bincount(split.train_items, minlength=split.n_items)
    held_out = np.union1d(split.validation_item[split.validation_item != NO_ITEM],
                          split.test_item[split.test_item != NO_ITEM])
    median = float(np.median(counts[counts > 0])) if np.any(counts > 0) else 0.0
    candidates = np.setdiff1d(np.flatnonzero((counts >= 3) & (counts <= max(median, 3))), held_out)
    n_new = min(len(candidates), int(np.ceil(item_fraction * split.n_items)))
    new_items = np.sort(rng.choice(candidates, size=n_new, replace=False)).astype(np.int64)
    is_new = np.zeros(split.n_items, dtype=bool)
    is_new[new_items] = True

    lists = [split.train_items_of(u) for u in range(split.n_users)]
    truth_users, truth = [], []
    for u, items in enumerate(lists):
        if is_new[items].any():
            truth_users.append(u)
            truth.append(np.unique(items[is_new[items]]))
            lists[u] = items[~is_new[items]]
    evaluated = split.evaluated_users()
    longer = np.array([u for u in evaluated if len(lists[u]) > max_train_items], dtype=np.int64)
    n_cut = min(len(longer), int(round(user_fraction * len(evaluated))))
    for u in rng.choice(longer, size=n_cut, replace=False) if n_cut else []:
        lists[int(u)] = lists[int(u)][-max_train_items:]
    sizes = np.array([len(items) for items in lists], dtype=np.int64)
    cold_split = replace(split, train_indptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                         train_items=np.concatenate(lists).astype(np.int64) if lists else split.train_items[:0])
    cold = evaluated[sizes[evaluated] <= max_train_items]
    return ColdStartSplit(cold_split, cold.astype(np.int64), np.setdiff1d(evaluated, cold).astype(np.int64),
                          new_items, np.asarray(truth_users, dtype=np.int64), truth, max_train_items)


def new_item_metrics(scorer: Scorer, cold: ColdStartSplit, k: int, seed: int = 0) -> dict[str, float]:
    """Each new-item user ranks all new items by score; mean AUC, HR@K and R@K of its own new items.

    AUC of a user = P(score of a held new item > score of a not-held one), ties ½ (NaN
    when the user held every new item). The top K break score ties in a random order
    (generator ``(seed, user, NEW_ITEM_TIE_STREAM)``), so a model that scores every new
    item alike ranks them at random rather than by item id. ``new_item_random_recall@K``
    = ``min(K, m)/m`` for ``m`` new items, what a random order gives.
    """
    m = len(cold.new_items)
    if m == 0 or len(cold.new_item_users) == 0:
        return {}
    position = {int(item): j for j, item in enumerate(cold.new_items)}
    aucs, hits, recalls = [], [], []
    batch = 256
    for start in range(0, len(cold.new_item_users), batch):
        users = cold.new_item_users[start:start + batch]
        scores = np.asarray(scorer.score_users(users))[:, cold.new_items]
        for j, truth in enumerate(cold.new_item_truth[start:start + batch]):
            relevant = np.array([position[int(i)] for i in truth])
            tie_order = np.random.default_rng([seed, int(users[j]), NEW_ITEM_TIE_STREAM]).permutation(m)
            ranked = np.lexsort((tie_order, -scores[j]))[:k]  # by score, ties at random
            hits.append(list_metrics.hit_ratio_at_k(ranked, relevant, k))
            recalls.append(list_metrics.recall_at_k(ranked, relevant, k))
            aucs.append(_auc(scores[j], relevant))
    return {"new_item_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan"),
            f"new_item_hr@{k}": float(np.mean(hits)), f"new_item_recall@{k}": float(np.mean(recalls)),
            f"new_item_random_recall@{k}": min(k, m) / m, "new_item_users": float(len(cold.new_item_users))}


def _auc(scores: NDArray[np.floating], relevant: NDArray[np.intp]) -> float:
    """Mann–Whitney AUC of the ``relevant`` positions against the rest, ties ½."""
    mask = np.zeros(len(scores), dtype=bool)
    mask[relevant] = True
    positive, negative = scores[mask], scores[~mask]
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))

