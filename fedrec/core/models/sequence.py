"""SASRec: a causal self-attention encoder over a user's own history (Kang & McAuley, ICDM 2018).

A user is represented by the items they interacted with, in time order; the model
predicts the next one. For a history of tokens ``t_1..t_L`` (token ``0`` is padding,
token ``i + 1`` is dense item ``i``)::

    x_l = √d · E[t_l] + P[p_l]                      (item + learned position embedding)
    H   = LN(Block_B(… Block_1(dropout(x)) …))       (causal: position l sees t_1..t_l)
    s_l(i) = <H_l, E[i + 1]>                         (scores tied to the item embedding)

``E`` is ``(n_items + 1, d)`` with row 0 the padding row (kept at zero); ``P`` is
``(max_len, d)``; both start as ``N(0, EMBEDDING_INIT_STD²)``. Positions are
**right-aligned**: the last token of a length-``L`` input gets position ``max_len − 1``,
the one before it ``max_len − 2``, and so on, so a history scores the same whether or
not it is left-padded. Each block is pre-LN
(as in the public PyTorch port of SASRec)::

    h ← h + dropout(W_o · Attn_causal(LN(h)))
    h ← h + dropout(W_2 · dropout(ReLU(W_1 · LN(h))))

where the attention of position ``l`` sees the non-padding positions ``≤ l`` (a
padding position sees only itself, so no softmax row is empty; its output is zeroed
and never seen by a real position).

**The split.** Every parameter is global: the item table, the positions, the blocks
and the final norm are shared and averaged by the server. What is private to a user
is their *history* — data, not parameters — which stays on the device and is only
ever an input. So ``local_parameter_names`` is empty.

**Why a sibling base and not** :class:`~fedrec.core.models.base.Recommender`: a
``Recommender`` scores ``(user id, item)`` pairs through a per-user embedding table
(``forward(users, items)``, ``score_items(users, items)``, ``reset_local_parameters``)
and the shared model suite requires a non-empty local part. None of that fits a model
whose user is a sequence of items, so :class:`SequenceRecommender` declares the same
split attributes (``global_parameter_names``, ``local_parameter_names``,
``item_table_names``) with the same exact-partition check, and its scoring entry is
:meth:`SequenceRecommender.score_items_for_history`. Code that ships parameters asks
the model through :func:`sequence_global_state` and :func:`load_sequence_global`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional as F

from fedrec.core.models.base import EMBEDDING_INIT_STD, check_declared_split

PAD_TOKEN = 0

# Parameters of one CausalBlock, relative to the block (declared, not discovered).
BLOCK_PARAMETER_NAMES: tuple[str, ...] = (
    "attention_norm.weight",
    "attention_norm.bias",
    "qkv.weight",
    "qkv.bias",
    "attention_out.weight",
    "attention_out.bias",
    "feed_forward_norm.weight",
    "feed_forward_norm.bias",
    "feed_forward_in.weight",
    "feed_forward_in.bias",
    "feed_forward_out.weight",
    "feed_forward_out.bias",
)


@dataclass(frozen=True)
class SASRecConfig:
    """Architecture of :class:`SASRec` (the catalogue size comes from the data).

    Attributes:
        dim: width ``d`` of every embedding and hidden state.
        max_len: longest history the model reads; longer ones keep their last
            ``max_len`` items.
        blocks: number of causal self-attention blocks.
        heads: attention heads (``dim`` must be divisible by it).
        dropout: dropout probability on the embeddings, attention and feed-forward outputs.
    """

    dim: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.dim < 1 or self.max_len < 1 or self.blocks < 1 or self.heads < 1:
            raise ValueError(
                f"dim, max_len, blocks and heads must be ≥ 1, got {self.dim}, {self.max_len}, "
                f"{self.blocks}, {self.heads}"
            )
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, n_items: int, seed: int = 0) -> "SASRec":
        """A :class:`SASRec` over ``n_items`` items with parameters from a generator seeded by ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SASRec(n_items, self.dim, self.max_len, self.blocks, self.heads, self.dropout)


def history_tokens(histories: Sequence[NDArray[np.int64]], n_items: int, max_len: int) -> torch.Tensor:
    """Left-padded token tensor ``(b, L)`` from ``b`` histories of dense item ids in time order.

    Each history keeps its last ``max_len`` items; item ``i`` becomes token ``i + 1`` and
    shorter histories are padded with :data:`PAD_TOKEN` on the left; ``L`` is the longest
    kept length.
    """
    if len(histories) == 0:
        raise ValueError("no histories given")
    rows = []
    for r, history in enumerate(histories):
        items = np.asarray(history)
        if items.ndim != 1 or len(items) == 0:
            raise ValueError(f"history {r} is empty or not 1-D: a sequence model needs at least one item")
        if not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"history {r} holds {items.dtype} values, expected integer item ids")
        if items.min() < 0 or items.max() >= n_items:
            raise ValueError(f"history {r} has an item id outside 0..{n_items - 1}")
        rows.append(items[-max_len:].astype(np.int64) + 1)
    length = max(len(row) for row in rows)
    tokens = np.full((len(rows), length), PAD_TOKEN, dtype=np.int64)
    for r, row in enumerate(rows):
        tokens[r, length - len(row) :] = row
    return torch.from_numpy(tokens)


class CausalBlock(nn.Module):
    """One pre-LN transformer block with causal, padding-aware self-attention (see module doc)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward_in = nn.Linear(dim, dim)
        self.feed_forward_out = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``h (b, L, d)``; ``allowed (b, 1, L, L)`` is True where query ``l`` may attend to key ``m``."""
        b, length, d = h.shape
        q, k, v = self.qkv(self.attention_norm(h)).split(d, dim=-1)
        q, k, v = (x.view(b, length, self.heads, d // self.heads).transpose(1, 2) for x in (q, k, v))
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        attended = attended.transpose(1, 2).reshape(b, length, d)
        h = h + F.dropout(self.attention_out(attended), p, self.training)
        inner = F.dropout(F.relu(self.feed_forward_in(self.feed_forward_norm(h))), p, self.training)
        return h + F.dropout(self.feed_forward_out(inner), p, self.training)


class SequenceRecommender(nn.Module):
    """Scores the catalogue from a user's history; subclasses declare the global/local split.

    The same declared attributes as :class:`~fedrec.core.models.base.Recommender`
    (see the module docstring for why this is a sibling, not a subclass).
    """

    global_parameter_names: ClassVar[tuple[str, ...]] = ()
    local_parameter_names: ClassVar[tuple[str, ...]] = ()
    item_table_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_items: int, dim: int, max_len: int) -> None:
        super().__init__()
        if n_items < 1 or dim < 1 or max_len < 1:
            raise ValueError(f"n_items, dim and max_len must be ≥ 1, got {n_items}, {dim}, {max_len}")
        self.n_items = n_items
        self.dim = dim
        self.max_len = max_len

    def check_split(self) -> None:
        """Raise if the declared split does not partition the parameters exactly."""
        check_declared_split(self)

    def check_history(self, history: torch.Tensor) -> None:
        """Raise unless ``history`` is a valid left-padded token tensor ``(b, L)``, ``1 ≤ L ≤ max_len``."""
        if history.dim() != 2 or history.shape[0] == 0 or history.shape[1] == 0:
            raise ValueError(f"history must have shape (b, L) with b, L ≥ 1, got {tuple(history.shape)}")
        if history.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"history must hold integer tokens, got {history.dtype}")
        if history.shape[1] > self.max_len:
            raise ValueError(
                f"history length {history.shape[1]} exceeds max_len={self.max_len}; keep the last "
                f"{self.max_len} items (history_tokens does)"
            )
        if history.min() < 0 or history.max() > self.n_items:
            raise ValueError(
                f"history tokens must be in 0..{self.n_items} (0 = padding, item i = token i + 1)"
            )
        real = history != PAD_TOKEN
        if not real[:, -1].all():
            rows = torch.nonzero(~real[:, -1]).flatten().tolist()
            raise ValueError(
                f"history rows {rows[:5]} end in padding: histories must be non-empty and left-padded"
            )
        if (real[:, 1:] < real[:, :-1]).any():
            raise ValueError("padding after an item: histories must be left-padded (padding first)")

    def score_items_for_history(self, history: torch.Tensor) -> torch.Tensor:
        """Logits ``(b, n_items)`` of the next item after each history ``(b, L)`` of tokens."""
        raise NotImplementedError


class SASRec(SequenceRecommender):
    """Self-attentive sequential recommendation (Kang & McAuley 2018); all parameters global."""

    item_table_names = ("item_embedding.weight",)

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 50,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(n_items, dim, max_len)
        SASRecConfig(dim, max_len, blocks, heads, dropout)  # validates the architecture
        self.dropout = dropout
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD_TOKEN)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(CausalBlock(dim, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(dim)
        nn.init.normal_(self.item_embedding.weight, std=EMBEDDING_INIT_STD)
        nn.init.normal_(self.position_embedding.weight, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.item_embedding.weight[PAD_TOKEN].zero_()
        self.global_parameter_names = (
            "item_embedding.weight",
            "position_embedding.weight",
            *(f"blocks.{j}.{name}" for j in range(blocks) for name in BLOCK_PARAMETER_NAMES),
            "final_norm.weight",
            "final_norm.bias",
        )
        self.check_split()

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """Hidden states ``H (b, L, d)``; ``H_l`` depends only on ``history[:, :l+1]``.

        Padding positions come out as zeros.
        """
        self.check_history(history)
        b, length = history.shape
        real = history != PAD_TOKEN
        positions = torch.arange(self.max_len - length, self.max_len, device=history.device)
        h = self.item_embedding(history) * self.dim**0.5 + self.position_embedding(positions)[None]
        h = F.dropout(h, self.dropout, self.training) * real[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = ((causal[None] & real[:, None, :]) | eye[None])[:, None]  # (b, 1, L, L)
        for block in self.blocks:
            h = block(h, allowed) * real[..., None]
        return self.final_norm(h) * real[..., None]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., n_items)`` logits ``<H, E[i + 1]>`` of every item from hidden states ``(..., d)``."""
        return hidden @ self.item_embedding.weight[1:].T

    def token_logits(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of chosen tokens: ``hidden (b, L, d)``, ``tokens (b, L, m)`` → ``(b, L, m)``."""
        return (self.item_embedding(tokens) * hidden[:, :, None, :]).sum(-1)

    def score_items_for_history(self, history: torch.Tensor) -> torch.Tensor:
        return self.item_logits(self.encode(history)[:, -1])


def sequence_global_state(model: SequenceRecommender) -> dict[str, torch.Tensor]:
    """The shared parameters, in declaration order (live tensors, not copies)."""
    params = dict(model.named_parameters())
    return {name: params[name] for name in model.global_parameter_names}


def load_sequence_global(model: SequenceRecommender, values: dict[str, torch.Tensor | NDArray]) -> None:
    """Copy ``values`` into the global parameters, checking names and shapes before changing anything."""
    names = model.global_parameter_names
    if set(values) != set(names):
        raise KeyError(
            f"global parameters of {type(model).__name__} are {list(names)}, got {sorted(values)}"
        )
    params = dict(model.named_parameters())
    tensors = {name: torch.as_tensor(values[name]) for name in names}
    for name, value in tensors.items():
        if value.shape != params[name].shape:
            raise ValueError(
                f"global parameter {name!r}: expected shape {tuple(params[name].shape)}, "
                f"got {tuple(value.shape)}"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
