"""Differentially private evaluation releases (no Flower here).

Why. An evaluation reply is a function of a user's data: the user vector is refitted on
the training records, the held-out item is ranked, and the full-ranking metrics leave the
training items out of the ranking. A server that sends a crafted model (zero item
vectors, item biases = any ranking it likes) can read from exact replies which item is
held out and, item by item, which items the user trained on. So under every DP mode an
evaluation reply is a Gaussian mechanism, accounted and budgeted like training.

The mechanism. Per user ``u`` the released quantity is the vector

    v_u = clamp(m_u, 0, 1) ∈ [0, 1]^K,  m_u = the metrics of :func:`plan.private_metric_keys`

(``hr``, ``ndcg``, ``full_hr``, ``full_ndcg`` at ``K``; a NaN becomes 0). Any two such
vectors — two datasets of one user (replace-one) or a user and no user (add/remove,
``v = 0``) — differ by at most ``Δ = √K`` in L2 (:func:`plan.eval_sensitivity`). With the
accounted noise multiplier ``σ_e`` of :func:`plan.evaluation_step` the noise std per
coordinate is ``σ_e·Δ = σ_e·√K``, so one release is the Gaussian mechanism
``(σ_e, q = 1, 1 step)`` (σ = noise std / sensitivity, as in every history).

* ``record`` / ``user-local`` (accounted on the client): each user's device adds
  ``N(0, (σ_e√K)² I_K)`` to its own ``v_u`` (draws from
  :class:`~fedrec.core.privacy.secure_random.SecureRandom`) and appends ``(σ_e, 1, 1)``
  to the user's accountant history — the same history as training, so the same budget.
  A user whose history plus that step would exceed the budget refuses: it is not
  evaluated and releases nothing but the refusal. The node replies
  ``Σ_u (v_u + z_u)`` over its evaluated users and their number. The noise is added per
  user, so the guarantee holds against whoever reads the reply (the server included).
  (Under ``record`` the relation is add/remove of a record; changing one record moves
  ``v_u`` by at most ``√K`` too, so the same σ_e covers it.)
* ``user-central`` (accounted on the trusted server): each node replies the exact
  ``Σ_u v_u`` over the users the server asked and their number; the server adds
  ``N(0, (σ_e√K)² I_K)`` once to the total over all replies and divides by the number
  of users it **asked** (public, fixed before any reply), not by the number that
  answered. Adding or removing a user changes the total by at most ``√K``, so the
  released mean is ``(σ_e, 1, 1)``-DP; the server appends that step to its own history
  and does not evaluate a round whose release would exceed the budget.

Released values are rounded to float32 after the float64 noise is added (the snapping
remedy of Mironov 2012, as for updates; see :mod:`fedrec.core.privacy.secure_random`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step
from fedrec.core.privacy.client_round import Release, budgeted
from fedrec.core.privacy.secure_random import SecureRandom, secure_generator

if TYPE_CHECKING:  # annotations only: the run config is not imported at run time (no import cycle)
    from fedrec.core.config.evaluation_section import EvaluationConfig
    from fedrec.core.config.run_config import RunConfig


class PrivateEvaluation(NamedTuple):
    """A node's DP evaluation: the sum of the users' (noised, or for user-central exact)
    metric vectors, the number of users in it, each due user's release (refusals too,
    none under user-central) and the users' new histories (same order as given)."""

    total: np.ndarray  # (K,) float64, in the order of plan.private_metric_keys
    count: int
    releases: list[Release]
    histories: list[list[Step]]


def metric_vector(row: Mapping[str, float], keys: Sequence[str]) -> np.ndarray:
    """One user's released vector: its metrics at ``keys``, NaN → 0, clamped to ``[0, 1]``."""
    values = np.array([float(row[key]) for key in keys], dtype=np.float64)
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def noise_std(config: RunConfig) -> float:
    """Noise std per released coordinate: ``σ_e · √K``."""
    sigma, _, _ = plan.evaluation_step(config, 0)
    return sigma * plan.eval_sensitivity(config.evaluation)


def local_private_evaluation(config: RunConfig, users: Sequence[int], histories: Sequence[list[Step]],
                             evaluate: Callable[[list[int]], list[dict[str, float]]],
                             generator: SecureRandom | None = None) -> PrivateEvaluation:
    """``record`` / ``user-local``: the budget check, the evaluation of the admitted users
    (``evaluate(indices)`` returns one metrics row per index into ``users``) and each
    admitted user's vector noised on the device."""
    if plan.ACCOUNTED_BY.get(config.dp) != "client":
        raise ValueError(f"dp {config.dp} evaluations are not noised on the client")
    if len(users) != len(histories):
        raise ValueError("one history per user is required")
    generator = generator if generator is not None else secure_generator()
    keys = plan.private_metric_keys(config.eval_k)
    admitted: list[int] = []
    releases: dict[int, Release] = {}
    new_histories = [list(h) for h in histories]
    step = plan.evaluation_step(config, 0)
    for index, (user, history) in enumerate(zip(users, histories)):
        releases[index], after = budgeted(config, int(user), history, step)
        if after is not None:
            admitted.append(index)
            new_histories[index] = after
    total = np.zeros(len(keys), dtype=np.float64)
    rows = evaluate(admitted) if admitted else []
    if len(rows) != len(admitted):
        raise RuntimeError(f"evaluate returned {len(rows)} rows for {len(admitted)} users")
    std = noise_std(config)
    for row in rows:
        noised = metric_vector(row, keys) + np.asarray(generator.normal(0.0, std, size=len(keys)))
        total += noised.astype(np.float32).astype(np.float64)
    return PrivateEvaluation(total, len(rows), [releases[i] for i in sorted(releases)], new_histories)


def exact_sum(config: RunConfig, rows: Sequence[Mapping[str, float]]) -> PrivateEvaluation:
    """``user-central``: the exact sum of the users' clamped vectors (the server noises it)."""
    keys = plan.private_metric_keys(config.eval_k)
    total = np.zeros(len(keys), dtype=np.float64)
    for row in rows:
        total += metric_vector(row, keys)
    return PrivateEvaluation(total, len(rows), [], [])


def central_release(config: RunConfig, total: np.ndarray, asked: int,
                    generator: SecureRandom | None = None) -> dict[str, float]:
    """``user-central``: ``(Σ v + N(0, (σ_e√K)² I)) / asked``, per metric key (float32-rounded)."""
    if asked < 1:
        raise ValueError("an evaluation release needs at least one user asked")
    keys = plan.private_metric_keys(config.eval_k)
    total = np.asarray(total, dtype=np.float64)
    if total.shape != (len(keys),):
        raise ValueError(f"expected a sum of {len(keys)} metrics, got shape {total.shape}")
    generator = generator if generator is not None else secure_generator()
    noised = (total + np.asarray(generator.normal(0.0, noise_std(config), size=len(keys)))) / asked
    return {key: float(np.float32(value)) for key, value in zip(keys, noised)}


def local_release(evaluation: EvaluationConfig, total: np.ndarray, count: int) -> dict[str, float] | None:
    """``record`` / ``user-local``: the mean of the users' noised vectors (None when nobody was evaluated)."""
    if count < 1:
        return None
    keys = plan.private_metric_keys(evaluation.eval_k)
    return {key: float(np.float32(value / count)) for key, value in zip(keys, np.asarray(total, dtype=np.float64))}
