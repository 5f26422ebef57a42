"""Which evaluated round a run reports: the last one, or the one with the best validation HR.

``model-selection last``: the last evaluated round. ``model-selection best-validation`` (the
protocol of the NCF line of papers: He et al. 2017, FedNCF, PFedRec, GPFedRec): the round
``r* = argmax_r val_hr@K(r)`` (the earliest on ties), where ``val_hr@K`` ranks each user's
validation item — never trained on — among its sampled negatives. The test metrics reported
are those of round ``r*``; the test item plays no part in choosing it.
"""

from __future__ import annotations

from typing import Any

MODEL_SELECTIONS = ("last", "best-validation")


def selection_key(k: int) -> str:
    """The metric ``best-validation`` maximises."""
    return f"val_hr@{k}"


def selected_row(evaluated: list[dict[str, Any]], selection: str, k: int) -> dict[str, Any]:
    """The evaluated row ``selection`` picks (rows in round order)."""
    if selection not in MODEL_SELECTIONS:
        raise ValueError(f"unknown model selection {selection!r}: choose one of {MODEL_SELECTIONS}")
    if not evaluated:
        raise ValueError("the run has no evaluated round")
    if selection == "last":
        return evaluated[-1]
    key = selection_key(k)
    scored = [row for row in evaluated if key in row]
    if not scored:
        raise ValueError(f"model selection best-validation: no evaluated round carries {key}")
    best = scored[0]
    for row in scored[1:]:
        if row[key] > best[key]:
            best = row
    return best


class BestRound:
    """Tracks ``r* = argmax val_hr@K`` during a run, and whatever the caller keeps for it."""

    def __init__(self, selection: str, k: int) -> None:
        if selection not in MODEL_SELECTIONS:
            raise ValueError(f"unknown model selection {selection!r}: choose one of {MODEL_SELECTIONS}")
        self.selection = selection
        self.key = selection_key(k)
        self.value = float("-inf")
        self.round: int | None = None

    def improves(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` (an evaluated round) becomes the selected one; records it if so."""
        if self.selection == "last":
            self.round = int(row["round"])
            return True
        if self.key not in row or not row[self.key] > self.value:
            return False
        self.value, self.round = float(row[self.key]), int(row["round"])
        return True
