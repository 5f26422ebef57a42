"""The evaluation section of the run config: when and how a run is evaluated.

:class:`EvaluationConfig` holds the run-config keys of the evaluation protocol
(:mod:`fedrec.core.evaluation.protocols`: the held-out item ranked among sampled negatives
and among the whole catalogue) and checks them once, when it is built.
:class:`~fedrec.core.config.run_config.RunConfig` builds it from its flat fields
(``config.evaluation``); a function that reads only these keys takes the section.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.core.evaluation.selection import MODEL_SELECTIONS


@dataclass(frozen=True)
class EvaluationConfig:
    """When and how a run is evaluated (the run-config keys are the names with ``-``).

    ``eval_every``: evaluate every N rounds (and the last). ``eval_fraction``: the share of
    users evaluated. ``eval_k``: the length of the top-K list. ``eval_negatives``: sampled
    negatives ranked against each held-out item. ``reconstruct_epochs``: epochs fitting the
    user vector before an evaluation. ``model_selection``: the round a run reports
    (:mod:`fedrec.core.evaluation.selection`: ``last``, or ``best-validation``, which also
    evaluates each user's validation item).
    """

    eval_every: int = 5
    eval_fraction: float = 1.0
    eval_k: int = 10
    eval_negatives: int = 99
    reconstruct_epochs: int = 3
    model_selection: str = "last"

    def __post_init__(self) -> None:
        for name in ("eval_every", "eval_k", "eval_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.eval_fraction <= 1:
            raise ValueError(f"eval-fraction must be in (0, 1], got {self.eval_fraction}")
        if self.reconstruct_epochs < 0:
            raise ValueError(f"reconstruct-epochs must be ≥ 0, got {self.reconstruct_epochs}")
        if self.model_selection not in MODEL_SELECTIONS:
            raise ValueError(f"unknown model-selection {self.model_selection!r}: choose one of {MODEL_SELECTIONS}")

    @property
    def validation(self) -> bool:
        """Whether evaluations also rank each user's validation item (for model selection)."""
        return self.model_selection == "best-validation"


EVALUATION_DEFAULTS = EvaluationConfig()
