"""Per DP mode at one ε: the relation, ε by RDP and by PLD, and HR@10 (MF, torch loop).

For each mode the run is the pure-torch loop (:mod:`fedrec.simulations.torch_loop`: the
apps' client mechanisms, accountants and server noise, in one process), every user taking
part in every round, σ derived from ε (which now includes the evaluation releases). The
ε columns are of the planned history of a unit that takes part in every round and every
evaluation (:func:`fedrec.core.privacy.plan.planned_history`) — with all users sampled
each round, the history of every user (client modes) or of the server (user-central):

* RDP: the run's accountant (integer orders 2–128), what the ledger records;
* PLD: Google's ``dp_accounting`` PLD accountant on the same ``(σ, q, steps)`` runs
  (add/remove; a replace-one release is its Gaussian with σ = noise std / 2C, which is
  exactly replace-one), a tighter figure of the same mechanism.

HR@10 is the harness's exact evaluation (the experimenter's measurement, not a release),
at the last round and at the best evaluated round; ``off`` is evaluated every round so
its best round is the best non-private model of the same length.

    python -m fedrec.simulations.benchmarks.privacy_truth --dataset ml-100k --data-dir DIR --out results.json
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.simulations.torch_loop import run_torch_loop


def pld_epsilon(history: list[Step], delta: float) -> float:
    """dp_accounting's PLD ε of ``(σ, q, steps)`` runs (add/remove), discretisation 1e-4."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, rate, steps in history:
        event = dp_event.GaussianDpEvent(sigma)
        if rate < 1:
            event = dp_event.PoissonSampledDpEvent(rate, event)
        accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def main(
    dataset: str = typer.Option("synthetic"),
    data_dir: str = typer.Option(""),
    out: Path = typer.Option(..., help="results JSON"),
    modes: str = typer.Option("off,user-central,user-local,record"),
    epsilon_target: float = typer.Option(8.0, "--epsilon"),
    rounds: int = typer.Option(10),
    threads: int = typer.Option(2),
) -> None:
    split = leave_one_out(load_dataset(dataset, data_dir, 0))
    results = {}
    for mode in modes.split(","):
        settings = dict(dataset=dataset, data_dir=data_dir, model="mf", rounds=rounds,
                        clients_per_round=split.n_users, client_optimizer="sgd", lr=2.0, server_lr=20.0,
                        eval_every=1 if mode == "off" else rounds, local_epochs=1, user_epochs=1,
                        executor="per-client" if mode == "record" else "cohort")
        if mode != "off":
            settings.update(dp=mode, epsilon=epsilon_target, delta=1e-5, clip=1.0)
        config = RunConfig(**settings)
        row: dict = {"mode": mode}
        if mode != "off":
            line = plan.preflight(config, split)
            history = plan.planned_history(config, split.n_users)
            row.update(plan=line, relation=plan.RELATION[mode], history=history,
                       epsilon_rdp=epsilon(history, config.delta, "rdp"),
                       epsilon_pld=pld_epsilon(history, config.delta))
        started = time.perf_counter()
        rows = run_torch_loop(split, config, threads=threads)
        hrs = [r["hr@10"] for r in rows if "hr@10" in r]
        row.update({"hr@10_last": hrs[-1] if hrs else math.nan, "hr@10_best": max(hrs, default=math.nan),
                    "rounds_run": len(rows), "epsilon_loop": max((r.get("epsilon_max") or 0.0) for r in rows),
                    "seconds": time.perf_counter() - started})
        results[mode] = row
        typer.echo(json.dumps(row))
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    typer.run(main)
