"""Personalised parts of an implicit-feedback model: what a user keeps beyond its user vector.

Two registered options (``--run-config personal=…``), combinable as ``head+tune``:

* ``head`` — a **local score head** (PFedRec, Zhang et al. IJCAI 2023): the model's score layers,
  every global parameter that is neither an item table nor an item-side projection (GMF's
  output layer ``h, c``; MLP's and NeuMF's tower and output), move from the global part to the
  local part. Each user trains its own head; it is declared local exactly like the user vector, so
  it is never in a reply, never aggregated and never noised (it is not released). A user's head
  starts from the same values: those of a one-item model built with the run's seed (the head's
  shapes do not depend on the catalogue, its draw does). MF, hybrid and content have no score layer beyond
  the user vector (``s = <p_u, q_i> + b_i``: ``p_u`` *is* the head, and local already).
* ``tune`` — **post-tuning of the item tables** (PFedRec's dual personalisation): before scoring
  (evaluation, ``fedrec client recommend``), the user fine-tunes a private copy of the received
  global part together with its local part for ``tune-epochs`` epochs on its own training items
  (the local-training loss and optimiser, a generator seeded by ``(seed, user, 37)``), and scores
  with the tuned copy. The copy is thrown away after scoring: nothing is stored, nothing is sent.

Storage on the device per user (float32): the user vector ``4·d`` bytes, plus with ``head`` the
head's parameters (:func:`local_bytes`); ``tune`` stores nothing between rounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

# the options and their check are defined, torch-free, with the run config; re-exported here
from fedrec.core.config.choices import PERSONAL_OPTIONS as PERSONAL_OPTIONS
from fedrec.core.config.choices import personal_parts

if TYPE_CHECKING:
    from fedrec.core.models.base import Recommender

TUNE_SEED_TAG = 37  # the post-tuning generator is seeded by (seed, user, TUNE_SEED_TAG)


def score_head_names(model: "Recommender") -> tuple[str, ...]:
    """The global parameters of ``model`` that score (neither item tables nor item-side projections)."""
    item_side = set(model.item_table_names) | set(getattr(model, "item_side_names", ()))
    return tuple(name for name in model.global_parameter_names if name not in item_side)


def with_local_head(model: "Recommender") -> "Recommender":
    """``model`` with its score head declared local (``ValueError`` when it has none)."""
    head = score_head_names(model)
    if not head:
        raise ValueError(f"personal head: {type(model).__name__} has no score layer beyond its user vector "
                         "(which is local already); use gmf, mlp or neumf")
    model.global_parameter_names = tuple(n for n in model.global_parameter_names if n not in head)
    model.local_parameter_names = (*model.local_parameter_names, *head)
    model.score_head = head  # type: ignore[attr-defined]
    model.check_split()
    return model


def personalise(model: "Recommender", option: str) -> "Recommender":
    """Apply the declared-split changes of ``option`` to a freshly built ``model``."""
    if "head" in personal_parts(option):
        with_local_head(model)
    return model


def local_bytes(model: "Recommender") -> int:
    """Bytes one user stores for ``model``'s local part (a one-user model: one user row)."""
    params = dict(model.named_parameters())
    return sum(params[name].numel() * params[name].element_size() for name in model.local_parameter_names)


def reset_user_vectors(model: "Recommender", generator: torch.Generator, std: float) -> None:
    """Draw the local parameters other than the score head from ``N(0, std²)``, in declaration
    order (the head keeps the model's seeded initial values)."""
    params = dict(model.named_parameters())
    head = set(getattr(model, "score_head", ()))
    with torch.no_grad():
        for name in model.local_parameter_names:
            if name in head:
                continue
            p = params[name]
            p.copy_(torch.randn(p.shape, generator=generator) * std)
