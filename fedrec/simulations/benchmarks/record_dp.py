"""Record-level DP on ML-100K: ``dp record-distributed`` against the per-client ``dp record``.

``python -m fedrec.simulations.benchmarks.record_dp --data-dir ../shared/data --out D
[--settings T:C:lr:server_lr,...] [--epsilons 1,2,4,8] [--seeds 0,1,2] [--model mf] [--plain-rounds 3]``

Each setting is one run of the round driver (:func:`fedrec.core.federation.driver.run_federation`)
with every ML-100K user in every round, ``T`` rounds (one DP gradient step each, over every
training record), clip ``C`` for both the shared and the local part, client ``lr`` and
``server-lr``; it evaluates once, at the end (that release is accounted). HR@10 and NDCG@10
are printed with their ratio to ``--best-non-private`` (the best non-private federated MF
found on ML-100K, 0.616, docs/privacy.md). Results accumulate in ``D/results.json`` (a run
already there is skipped). ``--plain-rounds`` also times non-private cohort rounds of the
same model and users (local epochs as configured) in the same process, for the ratio of a
private round's seconds to a plain one's.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from fedrec.core.config.run_config import RunConfig

KEYS = ("model", "rounds", "clip", "lr", "server_lr", "epsilon", "seed", "negatives")


def parse_setting(text: str) -> dict[str, Any]:
    """``T:C:lr:server_lr`` → a setting."""
    parts = text.split(":")
    if len(parts) != 4:
        raise typer.BadParameter(f"a setting is T:C:lr:server_lr, got {text!r}")
    return {"rounds": int(parts[0]), "clip": float(parts[1]), "lr": float(parts[2]), "server_lr": float(parts[3])}


def run_one(base: RunConfig, setting: dict[str, Any], epsilon: float, seed: int, threads: int) -> dict[str, Any]:
    from fedrec.core.federation.driver import run_federation

    config = replace(base, epsilon=epsilon, seed=seed, rounds=setting["rounds"], eval_every=setting["rounds"],
                     clip=setting["clip"], lr=setting["lr"], server_lr=setting["server_lr"])
    started = time.perf_counter()
    result = run_federation(config, threads=threads)
    last = result.rows[-1]
    seconds = time.perf_counter() - started
    train = [r["train_seconds"] for r in result.rows]
    return {"hr@10": last["hr@10"], "ndcg@10": last["ndcg@10"], "epsilon_spent": last["epsilon_max"],
            "noise_multiplier": last["record_ddg"]["local_noise_multiplier"], "seconds": seconds,
            "round_seconds": sorted(train)[len(train) // 2]}


def plain_round_seconds(base: RunConfig, rounds: int, threads: int) -> float:
    """Median training seconds of a non-private cohort round of the same users and model."""
    from fedrec.core.federation.driver import run_federation

    config = replace(base, dp="off", epsilon=0.0, rounds=rounds, eval_every=rounds, executor="cohort")
    result = run_federation(config, threads=threads, evaluate=False)
    train = sorted(r["train_seconds"] for r in result.rows)
    return train[len(train) // 2]


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for results.json"),
    settings: str = typer.Option("20:0.1:0.5:50", help="T:C:lr:server_lr, comma-separated"),
    epsilons: str = typer.Option("8"),
    seeds: str = typer.Option("0"),
    model: str = typer.Option("mf"),
    negatives: int = typer.Option(4, help="negatives per record"),
    bits: int = typer.Option(48, help="ddg-bits: the modulus of the integer sum"),
    threads: int = typer.Option(2, help="torch threads"),
    best_non_private: float = typer.Option(0.616, help="HR@10 of the best non-private federated run"),
    plain_rounds: int = typer.Option(0, help="also time this many non-private cohort rounds (0: none)"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = RunConfig(dataset="ml-100k", data_dir=data_dir, model=model, dp="record-distributed", epsilon=8.0,
                     delta=1e-5, clients_per_round=943, client_optimizer="sgd", negatives=negatives,
                     ddg_bits=bits)
    path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for text in settings.split(","):
        setting = parse_setting(text)
        for epsilon in (float(e) for e in epsilons.split(",")):
            for seed in (int(s) for s in seeds.split(",")):
                labels = {**setting, "model": model, "epsilon": epsilon, "seed": seed, "negatives": negatives}
                if any(tuple(r.get(k) for k in KEYS) == tuple(labels.get(k) for k in KEYS) for r in results):
                    continue
                row = {**labels, **run_one(base, setting, epsilon, seed, threads)}
                results.append(row)
                path.write_text(json.dumps(results, indent=2))
                print(json.dumps(row), flush=True)
    if plain_rounds:
        import statistics

        plain = plain_round_seconds(base, plain_rounds, threads)
        ours = [r["round_seconds"] for r in results if r["model"] == model]
        private = statistics.median(ours) if ours else float("nan")
        print(f"timing ({model}, {threads} threads, one process): non-private cohort round {plain:.2f} s, "
              f"record-distributed round {private:.2f} s (median of this folder's runs): {private / plain:.2f}×")
    for r in results:
        print(f"{r['model']} T={r['rounds']:<3} C={r['clip']:<5g} lr={r['lr']:<5g} slr={r['server_lr']:<4g} "
              f"k={r['negatives']} ε={r['epsilon']:g} seed {r['seed']}: HR@10 {r['hr@10']:.4f} "
              f"({r['hr@10'] / best_non_private:.2f}×) NDCG@10 {r['ndcg@10']:.4f} ε spent {r['epsilon_spent']:.3f} "
              f"σ {r['noise_multiplier']:.2f} ({r['round_seconds']:.1f} s a round, {r['seconds']:.0f} s)")


if __name__ == "__main__":
    typer.run(main)
