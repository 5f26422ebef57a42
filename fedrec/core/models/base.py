"""The recommender base type: a model that **declares** its global/local split.

Following TensorFlow Federated's reconstruction models, each recommender lists its
parameters in two declared tuples:

* ``global_parameter_names`` — shared by all users and trained federated (item
  embeddings, biases, MLP and output layers);
* ``item_table_names`` — the global tables indexed by item (a subset of the global
  part), whose updates are row-sparse;
* ``local_parameter_names`` — private to a user and never leaving the device (user
  embeddings: tables of shape ``(n_users, d)``; a client builds its model with
  ``n_users=1`` and holds only its own row).

Everything that ships, averages, checkpoints or noises parameters asks the model
(:func:`global_state`, :func:`local_state`), never a name pattern. The constructor
checks that the two tuples partition the module's parameters exactly.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

EMBEDDING_INIT_STD = 0.1


class Recommender(nn.Module):
    """Scores (user, item) pairs; subclasses declare the global/local split."""

    global_parameter_names: ClassVar[tuple[str, ...]] = ()
    local_parameter_names: ClassVar[tuple[str, ...]] = ()
    # Global tables indexed by item: a user's update touches only the rows of the items
    # it trained on. Public model structure, used by the server's aggregation.
    item_table_names: ClassVar[tuple[str, ...]] = ()
    # Buffers indexed by item (public, never trained or shipped, e.g. item features): an
    # executor that cuts the item tables to a user's rows must cut these the same way.
    item_buffer_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        if n_users < 1 or n_items < 1 or dim < 1:
            raise ValueError(f"n_users, n_items and dim must be ≥ 1, got {n_users}, {n_items}, {dim}")
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim

    def check_split(self) -> None:
        """Raise if the declared split does not partition the parameters exactly."""
        check_declared_split(self)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``(b,)`` for pairs ``(users[j], items[j])``."""
        raise NotImplementedError

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``(b, m)`` of every user in ``users (b,)`` for every item in ``items (m,)``."""
        b, m = len(users), len(items)
        flat = self(users.repeat_interleave(m), items.repeat(b))
        return flat.view(b, m)

    def reset_local_parameters(self, generator: torch.Generator) -> None:
        """Draw fresh local (user) parameters from ``N(0, EMBEDDING_INIT_STD²)`` (a local score
        head, :mod:`fedrec.core.models.personal`, keeps its seeded initial values)."""
        from fedrec.core.models.personal import reset_user_vectors

        reset_user_vectors(self, generator, EMBEDDING_INIT_STD)


def check_declared_split(model: nn.Module) -> None:
    """Raise ``TypeError`` unless ``model``'s declared global and local names partition its
    parameters exactly, name each once, and its item tables are global.

    Shared by every model type that declares a split (:class:`Recommender`, the sequence
    models), so the rule is written once.
    """
    names = set(dict(model.named_parameters()))
    declared_global = set(model.global_parameter_names)
    declared_local = set(model.local_parameter_names)
    overlap = declared_global & declared_local
    missing = names - declared_global - declared_local
    unknown = (declared_global | declared_local) - names
    not_global = set(model.item_table_names) - declared_global
    repeated = len(model.global_parameter_names) != len(declared_global)
    if overlap or missing or unknown or not_global or repeated:
        raise TypeError(
            f"{type(model).__name__} declares an invalid split: overlap={sorted(overlap)}, "
            f"undeclared={sorted(missing)}, unknown={sorted(unknown)}, "
            f"item tables that are not global={sorted(not_global)}, repeated names={repeated}"
        )


def _select(model: Recommender, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name] for name in names}


def global_state(model: Recommender) -> dict[str, torch.Tensor]:
    """The shared parameters, in declaration order (live tensors, not copies)."""
    return _select(model, model.global_parameter_names)


def local_state(model: Recommender) -> dict[str, torch.Tensor]:
    """The private parameters (user embeddings), in declaration order."""
    return _select(model, model.local_parameter_names)


def load_parameters(model: Recommender, values: dict[str, torch.Tensor], part: str) -> None:
    """Copy ``values`` into the ``part`` ("global" or "local") parameters, checking shapes."""
    if part not in ("global", "local"):
        raise ValueError(f"part must be 'global' or 'local', got {part!r}")
    names = model.global_parameter_names if part == "global" else model.local_parameter_names
    if set(values) != set(names):
        raise KeyError(
            f"{part} parameters of {type(model).__name__} are {list(names)}, got {sorted(values)}"
        )
    params = dict(model.named_parameters())
    tensors = {name: torch.as_tensor(values[name]) for name in names}
    for name, value in tensors.items():  # check everything before changing anything
        if value.shape != params[name].shape:
            raise ValueError(
                f"{part} parameter {name!r}: expected shape {tuple(params[name].shape)}, "
                f"got {tuple(value.shape)}"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def init_embedding(table: nn.Embedding) -> None:
    nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
