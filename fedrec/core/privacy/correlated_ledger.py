"""Ledger rows of ``user-central`` over ``dp-groups`` and the audit's recompute of their ε.

The run is one Gaussian mechanism (:mod:`fedrec.core.privacy.correlated_rounds`): after
``t`` rounds and ``E`` evaluation releases it is ``μ``-GDP with
``μ² = (Δ_t/σ)² + E/σ_e²``, ``Δ_t`` the sensitivity of the first ``t`` rounds of the
noise's Toeplitz factor for users ``g`` rounds apart. Its rows are the server's, accountant
``gdp``:

* a **train** row per round: ``mechanism`` holds the canonical JSON of the plan
  (``coefficients`` of the factor, ``groups``, planned ``rounds``, ``noise_std`` σ,
  ``clip`` C, ``eval_sigma``); ``noise_multiplier`` is ``σ/C``, ``sensitivity`` ``C``;
* an **evaluation** row per evaluation release: the Gaussian release ``(σ_e, 1, 1)``.

The audit (:func:`recompute_epsilons`) recomputes ``Δ_t`` from the coefficients (the dynamic
programme over separated rounds of :func:`fedrec.core.privacy.correlated_noise.sensitivity`),
``μ`` and the tight Gaussian curve's ``ε`` at the row's δ, and reports a row whose stated
numbers disagree with its mechanism.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from fedrec.core.privacy import correlated_noise as cn
from fedrec.core.privacy.correlated_rounds import CorrelatedPlan
from fedrec.core.privacy.ledger_rows import GDP_ACCOUNTANT, SERVER, LedgerEntry, is_real, mechanism_parameters

KEYS = ("noise_std", "clip", "eval_sigma", "groups", "rounds")


def ledger_entries(plan: CorrelatedPlan, run_id: str, server_round: int, rounds_done: int, evaluations_done: int,
                   budget: float | None, release: str = "train", eval_sensitivity: float = 1.0) -> list[LedgerEntry]:
    """The server's row for one round's release or one evaluation release (ε after it)."""
    noise = plan.noise
    common: dict[str, Any] = dict(
        run_id=run_id, round=int(server_round), unit="user", mode="user-central", who=SERVER, sample_rate=1.0,
        steps=1, clip_norm=noise.clip, delta=noise.delta, accountant=GDP_ACCOUNTANT,
        epsilon=plan.epsilon(rounds_done, evaluations_done), budget=budget, relation="add-remove")
    if release == "evaluate":
        return [LedgerEntry(**common, noise_multiplier=plan.eval_sigma, sensitivity=eval_sensitivity,
                            release="evaluate")]
    mechanism = json.dumps({"mechanism": noise.mechanism, "coefficients": list(noise.coefficients),
                            "noise_std": noise.noise_std, "clip": noise.clip, "eval_sigma": plan.eval_sigma,
                            "groups": len(plan.groups), "rounds": noise.participation.rounds},
                           sort_keys=True, separators=(",", ":"))
    return [LedgerEntry(**common, noise_multiplier=noise.noise_std / noise.clip, sensitivity=noise.clip,
                        release="train", mechanism=mechanism)]


def mechanism_problem(entry: LedgerEntry) -> str:
    """What is wrong with a ``gdp`` row's ``mechanism`` ("" when nothing)."""
    if entry.release == "evaluate":
        return "" if entry.mechanism == "" else "gdp evaluation rows carry no mechanism parameters"
    params = mechanism_parameters(entry)
    if params is None:
        return f"mechanism must be a JSON object of the correlated-noise parameters, got {entry.mechanism!r}"
    missing = [key for key in KEYS if not is_real(params.get(key))]
    coefficients = params.get("coefficients")
    if not (isinstance(coefficients, list) and coefficients and all(is_real(c) for c in coefficients)):
        missing.append("coefficients")
    return f"mechanism lacks the correlated-noise parameters {missing}" if missing else ""


def recompute_epsilons(rows: Sequence[LedgerEntry]) -> list[tuple[float | None, str]]:
    """ε after each of the server's ``gdp`` rows (in order) from the rows alone: ``(ε, problem)``."""
    out: list[tuple[float | None, str]] = []
    rounds = evaluations = 0
    eval_mu_squared = 0.0
    train_params: dict[str, Any] | None = None
    broken = False
    for row in rows:
        if broken:
            out.append((None, "an earlier row's parameters make no sense"))
            continue
        problem = ""
        if row.release == "evaluate":
            if not row.noise_multiplier > 0:
                broken = True
                out.append((None, f"evaluation σ_e must be > 0, got {row.noise_multiplier}"))
                continue
            evaluations += 1
            eval_mu_squared += 1.0 / row.noise_multiplier ** 2
        else:
            params = mechanism_parameters(row)
            why = mechanism_problem(row)
            if params is None or why:
                broken = True
                out.append((None, why or "no parameters"))
                continue
            if train_params is not None and params != train_params:
                problem = "the mechanism changed within the run: one plan is one Gaussian mechanism"
            train_params = params
            rounds += 1
            clip, sigma = float(params["clip"]), float(params["noise_std"])
            if not math.isclose(row.noise_multiplier, sigma / clip, rel_tol=1e-9):
                problem = f"noise_multiplier {row.noise_multiplier:.6g} is not σ/C = {sigma / clip:.6g}"
            elif not math.isclose(row.sensitivity, clip, rel_tol=1e-12):
                problem = f"sensitivity {row.sensitivity:.6g} is not the clip {clip:.6g}"
            elif rounds > int(params["rounds"]):
                problem = f"round {rounds} is past the {params['rounds']} rounds the noise was planned for"
        try:
            mu_squared = eval_mu_squared
            if train_params is not None and rounds > 0:
                done = cn.Participation(rounds, int(train_params["groups"]))
                delta_t = cn.sensitivity(np.array(train_params["coefficients"], dtype=np.float64), done,
                                         float(train_params["clip"]))
                mu_squared += (delta_t / float(train_params["noise_std"])) ** 2
            mu = math.sqrt(mu_squared)
            out.append((cn.epsilon(mu, row.delta) if mu > 0 else 0.0, problem))
        except (KeyError, TypeError, ValueError) as error:
            broken = True
            out.append((None, f"the correlated-noise parameters make no sense ({error})"))
    return out
