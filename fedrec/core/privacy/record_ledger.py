"""Ledger rows of ``dp record-distributed`` and the audit's recompute of their ε.

A **train** row is one round of the mechanism of
:mod:`fedrec.core.privacy.record_distributed`: ``who = server`` (the run's accountant),
``unit = record``, relation ``add-remove``, accountant ``ddg-zcdp`` (ρ adds up), ``q = 1``
and one step (no amplification is claimed). Its ``mechanism`` is the canonical JSON of the
plan's parameters; ``sensitivity`` is the record bound ``B = scale + slack`` (grid units) and
``noise_multiplier`` is ``√n_min·σ_share/B``, the accounted noise over the sensitivity, as for
``user-distributed`` rows. An **evaluation** row is the Gaussian release ``(σ_e, 1, 1)``.

The audit (:func:`recompute_epsilons`) trusts none of the derived numbers: from the layout
(``row_widths``, ``dense_sizes``, ``negatives``) it recomputes the rounding slack and the
entries a record touches, then ``B``, the local part's noise multiplier ``√n_min·σ_share/scale``
and each round's ``ρ``; a row whose stated sensitivity, noise multiplier, clip or derived
numbers differ from those is reported, and ε after each row is CKS20's conversion of the
summed ρ.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from fedrec.core.privacy.distributed_accounting import Sensitivity, zcdp_epsilon
from fedrec.core.privacy.distributed_mode import eval_rho
from fedrec.core.privacy.ledger_rows import (
    DISTRIBUTED_ACCOUNTANT,
    SERVER,
    LedgerEntry,
    is_int,
    is_real,
    mechanism_parameters,
)
from fedrec.core.privacy.record_distributed import MODE, Layout, RecordPlan, local_rho, shared_rho

# the numbers a record-distributed train row's mechanism must hold
RECORD_KEYS = ("clip", "scale", "bits", "sigma_share", "n_min", "n_clients", "dim", "negatives", "rounds")
LAYOUT_KEYS = ("row_widths", "dense_sizes")


def ledger_entries(plan: RecordPlan, run_id: str, server_round: int, rounds_done: int, evaluations_done: int,
                   release: str = "train", eval_sensitivity: float = 1.0) -> list[LedgerEntry]:
    """The server's row for one round's training release or one evaluation release (ε after it)."""
    common: dict[str, Any] = dict(
        run_id=run_id, round=int(server_round), unit="record", mode=MODE, who=SERVER, sample_rate=1.0, steps=1,
        clip_norm=plan.clip, delta=plan.delta, accountant=DISTRIBUTED_ACCOUNTANT,
        epsilon=plan.epsilon(rounds_done, evaluations_done), budget=plan.epsilon_target, relation="add-remove")
    if release == "evaluate":
        return [LedgerEntry(**common, noise_multiplier=plan.eval_noise_multiplier, sensitivity=eval_sensitivity,
                            release="evaluate")]
    bound = plan.bound.l2
    mechanism = json.dumps(plan.parameters(), sort_keys=True, separators=(",", ":"))
    return [LedgerEntry(**common, noise_multiplier=math.sqrt(plan.n_min) * plan.share_std / bound,
                        sensitivity=bound, release="train", mechanism=mechanism)]


def mechanism_problem(entry: LedgerEntry) -> str:
    """What is wrong with a record-distributed row's ``mechanism`` ("" when nothing)."""
    if entry.release == "evaluate":
        return "" if entry.mechanism == "" else "record-distributed evaluation rows carry no mechanism parameters"
    params = mechanism_parameters(entry)
    if params is None:
        return f"mechanism must be a JSON object of the record-distributed parameters, got {entry.mechanism!r}"
    missing = [key for key in RECORD_KEYS if not is_real(params.get(key))]
    missing += [key for key in LAYOUT_KEYS
                if not (isinstance(params.get(key), list) and all(is_int(v) and v > 0 for v in params[key]))]
    if missing:
        return f"mechanism lacks the record-distributed parameters {missing}"
    return ""


def _round_rho(params: dict[str, Any]) -> tuple[float, float, float]:
    """``(ρ, B, σ_l)`` of one train round from the row's parameters alone."""
    layout = Layout(tuple(int(w) for w in params["row_widths"]), tuple(int(p) for p in params["dense_sizes"]),
                    int(params["negatives"]), int(params["dim"]))
    scale, share, n_min = float(params["scale"]), float(params["sigma_share"]), int(params["n_min"])
    if not (scale > 0 and share > 0 and n_min >= 1 and layout.dim >= 1 and layout.negatives >= 1):
        raise ValueError(f"scale, σ_share, n_min, dim and negatives must be positive, got {params}")
    bound = scale + layout.rounding_slack
    sensitivity = Sensitivity(bound, min(bound * bound, math.sqrt(layout.nnz) * bound))
    local = math.sqrt(n_min) * share / scale
    stated = {"nnz": layout.nnz, "rounding_slack": layout.rounding_slack, "local_noise_multiplier": local,
              "gamma": float(params["clip"]) / scale}
    for key, value in stated.items():
        if key in params and not math.isclose(float(params[key]), value, rel_tol=1e-9):
            raise ValueError(f"{key} {params[key]!r} is not {value!r}, what the layout and noise give")
    return shared_rho(share, n_min, sensitivity, layout.dim) + local_rho(local), bound, local


def recompute_epsilons(rows: Sequence[LedgerEntry]) -> list[tuple[float | None, str]]:
    """The audit's ε after each of one who's record-distributed rows (in order), from the rows'
    parameters alone: ``(ε, problem)``, ``ε`` ``None`` once a row's parameters make no sense."""
    out: list[tuple[float | None, str]] = []
    rho, broken = 0.0, False
    for row in rows:
        if broken:
            out.append((None, "an earlier row's parameters make no sense"))
            continue
        if row.release == "evaluate":
            if not row.noise_multiplier > 0:
                broken = True
                out.append((None, f"evaluation σ_e must be > 0, got {row.noise_multiplier}"))
                continue
            rho += eval_rho(row.noise_multiplier)
            out.append((zcdp_epsilon(rho, row.delta), ""))
            continue
        params = mechanism_parameters(row)
        try:
            if params is None or mechanism_problem(row):
                raise ValueError(mechanism_problem(row) or "no parameters")
            one, bound, _ = _round_rho(params)
        except (KeyError, TypeError, ValueError) as error:
            broken = True
            out.append((None, f"the record-distributed parameters make no sense ({error})"))
            continue
        problem = ""
        noise = math.sqrt(int(params["n_min"])) * float(params["sigma_share"]) / bound
        if not math.isclose(row.sensitivity, bound, rel_tol=1e-9):
            problem = f"sensitivity {row.sensitivity:.6g} is not the record bound B = {bound:.6g} of its parameters"
        elif not math.isclose(row.noise_multiplier, noise, rel_tol=1e-9):
            problem = f"noise_multiplier {row.noise_multiplier:.6g} is not √n_min·σ_share/B = {noise:.6g}"
        elif not math.isclose(row.clip_norm, float(params["clip"]), rel_tol=1e-12):
            problem = f"clip_norm {row.clip_norm:.6g} is not the parameters' clip {float(params['clip']):.6g}"
        rho += one
        out.append((zcdp_epsilon(rho, row.delta), problem))
    return out
