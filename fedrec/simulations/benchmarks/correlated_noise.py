"""User-central DP on ML-100K with noise correlated across rounds, against independent noise.

    python -m fedrec.simulations.benchmarks.correlated_noise --data-dir ../shared/data --out D \\
        --settings poisson:30,gaussian:4:120,banded-mf:4:120 --epsilon 8 --seeds 0

A setting is ``poisson:T`` (today's user-central: every user by Poisson with rate
``clients-per-round/n``, independent Gaussian noise, ``T`` rounds) or ``MECHANISM:g:T``
(``dp-groups g``: cyclic groups, ``T`` rounds, the server's noise from ``MECHANISM``,
:mod:`fedrec.core.privacy.correlated_rounds`). Everything else is the distributed-DP
benchmark's (MF unless ``--model``/``--personal`` say otherwise, SGD lr 2, server lr 20,
C = 1, δ = 10⁻⁵, the round driver with the cohort executor, one evaluation at the last
round, which the ε includes). Printed per run: HR@10,
NDCG@10, the ε spent, the noise std on a round's sum (``σ·C`` for Poisson rounds; for the
correlated ones the std of ``w_t``'s first entry, ``σ·sqrt((C^{-1}C^{-T})_{00})``, and its
largest over the rounds) and seconds. Results accumulate in ``OUT/results.json`` (a rerun
skips what is there).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import typer

from fedrec.core.config.privacy_section import NOISE_MECHANISMS
from fedrec.core.config.run_config import RunConfig

# what identifies a run in results.json (a rerun skips the runs it finds); defaults of older rows
RUN_KEY = {"mechanism": None, "groups": None, "rounds": None, "epsilon_target": None, "seed": None, "model": "mf",
           "personal": "none", "clip": 1.0, "adaptive_clip": False}


def run_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(name, default) for name, default in RUN_KEY.items())


def parse_setting(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if parts[0] == "poisson" and len(parts) == 2:
        return {"mechanism": "poisson", "groups": 0, "rounds": int(parts[1])}
    if len(parts) == 3 and parts[0] in NOISE_MECHANISMS:
        return {"mechanism": parts[0], "groups": int(parts[1]), "rounds": int(parts[2])}
    raise typer.BadParameter(f"setting {text!r}: poisson:T or {'|'.join(NOISE_MECHANISMS)}:GROUPS:T")


def round_noise_std(row: dict[str, Any]) -> tuple[float, float]:
    """The std of one entry of the noise on a round's sum: (first round, largest round)."""
    from fedrec.core.privacy.correlated_noise import inverse_coefficients

    params = row["correlated"]
    inverse = inverse_coefficients(np.array(params["coefficients"]), params["rounds"])
    # w_t = Σ_s inv_{t−s} z_s: variance σ² Σ_{j≤t} inv_j², largest at the last round
    variances = np.cumsum(inverse ** 2) * params["noise_std"] ** 2
    return float(math.sqrt(variances[0])), float(math.sqrt(variances.max()))


def run_one(base: RunConfig, setting: dict[str, Any], epsilon: float, seed: int) -> dict[str, Any]:
    from fedrec.core.families.registry import family_of
    from fedrec.core.federation.driver import run_federation
    from fedrec.core.privacy import plan

    rounds = setting["rounds"]
    config = replace(base, dp="user-central", epsilon=epsilon, seed=seed, rounds=rounds, eval_every=rounds,
                     dp_groups=setting["groups"], adaptive_clip=base.adaptive_clip and not setting["groups"],
                     dp_mechanism="gaussian" if setting["mechanism"] == "poisson" else setting["mechanism"])
    started = time.perf_counter()
    result = run_federation(config)
    last = result.rows[-1]
    if setting["groups"]:
        first_std, largest_std = round_noise_std(last)
    else:
        n_users = family_of(config.model).load_split(config).n_users
        first_std = largest_std = plan.central_noise(config, n_users) * config.clip
    return {**setting, "epsilon_target": epsilon, "seed": seed, "hr@10": last["hr@10"], "ndcg@10": last["ndcg@10"],
            "epsilon_spent": last["epsilon_max"], "noise_std_first": first_std, "noise_std_largest": largest_std,
            "seconds": time.perf_counter() - started}


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for results.json"),
    settings: str = typer.Option("poisson:30,gaussian:4:120,banded-mf:4:120"),
    epsilon: float = typer.Option(8.0),
    seeds: str = typer.Option("0"),
    model: str = typer.Option("mf", help="the model (mf, gmf, …)"),
    personal: str = typer.Option("none", help="personal parts kept on the device (e.g. head: never released)"),
    clip: float = typer.Option(1.0, help="C of a user's update (the start, with --adaptive-clip)"),
    adaptive_clip: bool = typer.Option(False, help="Poisson settings: C follows the median update norm"),
    lr: float = typer.Option(2.0),
    server_lr: float = typer.Option(20.0),
    threads: int = typer.Option(1, help="torch threads"),
) -> None:
    import torch

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    base = RunConfig(dataset="ml-100k", data_dir=data_dir, model=model, personal=personal, rounds=30,
                     adaptive_clip=adaptive_clip, clients_per_round=943, batch_size=16, client_optimizer="sgd",
                     lr=lr, server_lr=server_lr, clip=clip, delta=1e-5, executor="cohort")
    path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for text in settings.split(","):
        setting = parse_setting(text)
        for seed in (int(s) for s in seeds.split(",")):
            labels = {"epsilon_target": epsilon, "seed": seed, "model": model, "personal": personal, "clip": clip,
                      "adaptive_clip": adaptive_clip}
            if any(run_key(r) == run_key({**setting, **labels}) for r in results):
                continue
            row = {**run_one(base, setting, epsilon, seed), **labels}
            results.append(row)
            path.write_text(json.dumps(results, indent=2))
            print(json.dumps(row), flush=True)
    for r in results:
        print(f"{r.get('model', 'mf')}/{r.get('personal', 'none')} C={r.get('clip', 1.0):g}"
              f"{' adaptive' if r.get('adaptive_clip') else ''} {r['mechanism']:>9} g={r['groups']:<2} "
              f"T={r['rounds']:<4} ε={r['epsilon_target']:g} seed {r['seed']}: "
              f"HR@10 {r['hr@10']:.4f} NDCG@10 {r['ndcg@10']:.4f} ε spent {r['epsilon_spent']:.3f} noise std "
              f"{r['noise_std_first']:.3f}..{r['noise_std_largest']:.3f} ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    typer.run(main)
