"""Distributed DP on ML-100K (MF): ``user-distributed`` against ``user-central`` and ``user-local``.

Rows: mode ∈ {user-distributed, user-central, user-local} × ε ∈ ``--epsilons`` (δ = 1e-5),
plus the non-private run (``off``) as reference; every run has the same length, the same
users per round (all 943 by default) and the same hyper-parameters, and runs the round
driver (:func:`fedrec.core.federation.driver.run_federation`, cohort executor):
``user-distributed`` emulates secure aggregation's arithmetic (each client's discrete
Gaussian share, quantisation, the sum mod ``2^bits``; :mod:`fedrec.core.privacy.distributed_mode`),
``user-central`` is the trusted server's Gaussian (Poisson-sampled users at the rate that
gives the same expected count), ``user-local`` noises each update on the device. ε comes
from each mode's accountant for the run's real parameters; the table shows what was spent.

Per (mode, ε): HR@10 and NDCG@10 (mean ± std over the seeds run), the ratios
distributed/central and distributed/local (means over the seeds both have), seconds per
round (wall, this machine, evaluation included) and bytes per client-round:

* ``off``, ``user-central``, ``user-local``: the client receives the global part and sends
  its dense update of it, float32 (``4·dim`` bytes each way);
* ``user-distributed``: the client receives the global part (``4·dim``) and SecAgg+'s
  requests, and sends SecAgg+'s replies; the masked vector is ``d'`` entries (``dim``
  padded to a power of two for the rotation) in the narrowest unsigned dtype that holds
  ``bits`` (uint32 for 20 bits). The SecAgg+ figures are measured payload bytes (no
  framing) of one in-process round (:func:`fedrec.secure_aggregation.in_process.run_round`)
  of ``--secagg-clients`` clients (neighbourhood 20, threshold 11) with vectors of ``d'``
  entries, divided by the number of clients; with ``--secagg-clients 0`` only the masked
  vector is counted (``d'·4`` bytes up) — the keys, shares and unmasking add to it.

Results are appended to ``results.json`` after every run (a rerun skips the runs already
there, keyed by mode, ε, seed, rounds and users per round), so the seeds and ε can be
added in separate invocations. Outputs: ``results.json``, ``table.md``, ``summary.json``,
``hr_vs_epsilon.png``.

    python -m fedrec.simulations.benchmarks.distributed_dp --data-dir DIR --out bench/ddp \\
        --epsilons 8 --seeds 0,1,2
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

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.privacy.plan import preflight
from fedrec.simulations.torch_loop import run_torch_loop

K = 10
DISTRIBUTED, CENTRAL, LOCAL, OFF = "user-distributed", "user-central", "user-local", "off"
MODES = (DISTRIBUTED, CENTRAL, LOCAL)
# the targets at ε = 8: distributed ≥ 0.97× central and ≥ 3× local (HR@10)
TARGET_CENTRAL, TARGET_LOCAL = 0.97, 3.0


def run_key(row: dict[str, Any]) -> tuple:
    return (row["mode"], row["epsilon_target"], row["seed"], row["rounds"], row["clients_per_round"])


def plain_bytes(dim: int) -> dict[str, int]:
    """A plain client-round: the global part down and the dense update up, float32."""
    return {"bytes_down": 4 * dim, "bytes_up": 4 * dim}


def distributed_bytes(dim: int, encoded_dim: int, bits: int, secagg: dict[str, float] | None) -> dict[str, Any]:
    """A user-distributed client-round: the model down, SecAgg+'s messages (``secagg``: per
    client, measured) or, without them, the masked vector alone."""
    if secagg is None:
        width = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
        return {"bytes_down": 4 * dim, "bytes_up": encoded_dim * width, "bytes_note": "masked vector only"}
    return {"bytes_down": int(round(4 * dim + secagg["down"])), "bytes_up": int(round(secagg["up"])),
            "bytes_note": f"SecAgg+ measured at n = {secagg['clients']}"}


def secagg_bytes_per_client(clients: int, encoded_dim: int, bits: int) -> dict[str, Any]:
    """Payload bytes per client of one in-process SecAgg+ round of ``clients`` clients, no dropouts."""
    from fedrec.secure_aggregation import SecAggConfig, run_round

    config = SecAggConfig(num_clients=clients, neighbourhood_size=min(20, clients - 1),
                          threshold=min(11, clients - 1), modulus_bits=bits, vector_length=encoded_dim)
    rng = np.random.default_rng(0)
    inputs = {node: rng.integers(0, 1 << bits, encoded_dim, dtype=np.uint64) for node in range(clients)}
    started = time.perf_counter()
    result = run_round(config, inputs)
    return {"clients": clients, "down": sum(result.bytes_to_clients.values()) / clients,
            "up": sum(result.bytes_from_clients.values()) / clients,
            "stages_down": {k: v / clients for k, v in result.bytes_to_clients.items()},
            "stages_up": {k: v / clients for k, v in result.bytes_from_clients.items()},
            "seconds": time.perf_counter() - started}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, ε) of the runs in ``results`` (``off`` first): means ± std over
    seeds, and for ``user-distributed`` its HR@10 ratios to ``user-central`` and
    ``user-local`` at the same ε over the seeds both have."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["mode"], r["epsilon_target"]), []).append(r)

    def order(key: tuple[str, float | None]) -> tuple:
        mode, eps = key
        return (0 if mode == OFF else 1 + MODES.index(mode) if mode in MODES else 9, -(eps or math.inf))

    def by_seed(mode: str, eps: float | None) -> dict[int, float]:
        return {r["seed"]: r["hr@10"] for r in groups.get((mode, eps), [])}

    rows = []
    for key in sorted(groups, key=order):
        mode, eps = key
        runs = groups[key]
        hr, hr_std = _mean_std([r["hr@10"] for r in runs])
        ndcg, ndcg_std = _mean_std([r["ndcg@10"] for r in runs])
        row: dict[str, Any] = {
            "mode": mode, "epsilon_target": eps, "seeds": sorted(r["seed"] for r in runs),
            "epsilon_spent": max((r["epsilon_spent"] for r in runs if r["epsilon_spent"] is not None), default=None),
            "hr@10": hr, "hr@10_std": hr_std, "ndcg@10": ndcg, "ndcg@10_std": ndcg_std,
            "seconds_per_round": float(np.mean([r["seconds"] / r["rounds"] for r in runs])),
            "bytes_down": runs[0]["bytes_down"], "bytes_up": runs[0]["bytes_up"],
            "ratio_central": None, "ratio_local": None,
        }
        if mode == DISTRIBUTED:
            mine = by_seed(DISTRIBUTED, eps)
            for other, name in ((CENTRAL, "ratio_central"), (LOCAL, "ratio_local")):
                theirs = by_seed(other, eps)
                common = sorted(set(mine) & set(theirs))
                if common:
                    row[name] = float(np.mean([mine[s] for s in common]) / np.mean([theirs[s] for s in common]))
                    row[name + "_seeds"] = common
        rows.append(row)
    return rows


def _pm(mean: float, std: float, runs: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if runs > 1 else f"{mean:.4f}"


def _kib(value: int) -> str:
    return f"{value / 1024:.1f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (ratios only on the user-distributed rows)."""
    lines = ["| mode | ε | ε spent | seeds | HR@10 | NDCG@10 | dist/central | dist/local | s/round "
             "| KiB down | KiB up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        runs = len(r["seeds"])
        eps = "∞" if r["epsilon_target"] is None else f"{r['epsilon_target']:g}"
        spent = "—" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3g}"
        ratio_c = "" if r["ratio_central"] is None else f"{r['ratio_central']:.3f}"
        ratio_l = "" if r["ratio_local"] is None else f"{r['ratio_local']:.2f}"
        lines.append(f"| {r['mode']} | {eps} | {spent} | {','.join(map(str, r['seeds']))} "
                     f"| {_pm(r['hr@10'], r['hr@10_std'], runs)} | {_pm(r['ndcg@10'], r['ndcg@10_std'], runs)} "
                     f"| {ratio_c} | {ratio_l} | {r['seconds_per_round']:.1f} | {_kib(r['bytes_down'])} "
                     f"| {_kib(r['bytes_up'])} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """HR@10 against ε per mode (error bars: std over seeds), the non-private run dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        points = sorted((r["epsilon_target"], r["hr@10"], r["hr@10_std"]) for r in rows if r["mode"] == mode)
        if points:
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=3, label=mode)
    for r in rows:
        if r["mode"] == OFF:
            ax.axhline(r["hr@10"], color="black", linestyle="--", label="non-private")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("HR@10")
    ax.set_title("MF on ML-100K, all users every round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: list[dict[str, Any]], out: Path, secagg: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = summarise(results)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "secagg": secagg}, indent=2))
    (out / "table.md").write_text(markdown(rows))
    plot(rows, out / "hr_vs_epsilon.png")
    return rows


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for results.json, table.md, summary.json, hr_vs_epsilon.png"),
    modes: str = typer.Option(",".join(MODES)),
    epsilons: str = typer.Option("1,2,4,8"),
    seeds: str = typer.Option("0", help="run seeds (sampling, noise, initial model); the split is fixed"),
    reference_seeds: str = typer.Option("", help="seeds of the non-private reference run (empty: the first of "
                                        "--seeds; 'none': no reference)"),
    rounds: int = typer.Option(30),
    clients_per_round: int = typer.Option(943, help="users per round (user-central: expected, Poisson)"),
    lr: float = typer.Option(2.0, help="client learning rate (SGD)"),
    server_lr: float = typer.Option(20.0),
    batch_size: int = typer.Option(16),
    clip: float = typer.Option(1.0, help="C of one user's update (all private modes)"),
    delta: float = typer.Option(1e-5),
    ddg_bits: int = typer.Option(20, help="user-distributed: the modulus is 2^bits"),
    secagg_clients: int = typer.Option(100, help="clients of the SecAgg+ round whose bytes are measured (0: skip)"),
    threads: int = typer.Option(1, help="torch threads of the loop"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    split = leave_one_out(load_dataset("ml-100k", data_dir, 0))
    base = RunConfig(dataset="ml-100k", data_dir=data_dir, model="mf", rounds=rounds,
                     clients_per_round=min(clients_per_round, split.n_users), batch_size=batch_size,
                     client_optimizer="sgd", lr=lr, server_lr=server_lr, eval_every=rounds, delta=delta,
                     clip=clip, ddg_bits=ddg_bits, executor="cohort")
    results_path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {run_key(r) for r in results}

    from fedrec.core.privacy.distributed_mode import plan_for_split

    probe = plan_for_split(replace(base, dp=DISTRIBUTED, epsilon=8.0), split).quantiser
    dim, encoded_dim = probe.dim, probe.encoded_dim
    secagg_path = out / "secagg_bytes.json"
    secagg = None
    if secagg_clients:
        wanted = {"clients": secagg_clients, "encoded_dim": encoded_dim, "bits": ddg_bits}
        cached = json.loads(secagg_path.read_text()) if secagg_path.exists() else None
        if cached and all(cached.get(k) == v for k, v in wanted.items()):
            secagg = cached
        else:
            secagg = {**secagg_bytes_per_client(secagg_clients, encoded_dim, ddg_bits), **wanted}
            secagg_path.write_text(json.dumps(secagg, indent=2))
        print(f"SecAgg+ round of {secagg_clients} clients, d' = {encoded_dim}: {secagg['down'] / 1024:.1f} KiB down, "
              f"{secagg['up'] / 1024:.1f} KiB up per client ({secagg['seconds']:.1f} s in process)", flush=True)

    seed_list = [int(s) for s in seeds.split(",")]
    references = ([] if reference_seeds == "none" else [int(s) for s in reference_seeds.split(",")]
                  if reference_seeds else seed_list[:1])
    runs: list[tuple[str, float | None, int, RunConfig]] = []
    for seed in seed_list:
        for eps in sorted((float(e) for e in epsilons.split(",")), reverse=True):
            for mode in modes.split(","):
                runs.append((mode, eps, seed, replace(base, seed=seed, dp=mode, epsilon=eps)))
        if seed in references:
            runs.append((OFF, None, seed, replace(base, seed=seed)))
    for mode, eps, seed, config in runs:
        key = (mode, eps, seed, config.rounds, config.clients_per_round)
        if key in done:
            continue
        line = preflight(config, split)
        print(line, flush=True)
        started = time.perf_counter()
        rows = run_torch_loop(split, config, threads=threads)
        seconds = time.perf_counter() - started
        last = rows[-1]
        costs = (distributed_bytes(dim, encoded_dim, ddg_bits, secagg) if mode == DISTRIBUTED
                 else plain_bytes(dim))
        row = {"mode": mode, "epsilon_target": eps, "seed": seed, "rounds": len(rows),
               "clients_per_round": config.clients_per_round, "epsilon_spent": last.get("epsilon_max"),
               "hr@10": last[f"hr@{K}"], "ndcg@10": last[f"ndcg@{K}"], "seconds": seconds, **costs,
               "plan": line, "ddg": last.get("ddg")}
        results.append(row)
        results_path.write_text(json.dumps(results, indent=2))  # after every run: nothing lost
        print(f"{mode} ε={eps} seed={seed}: HR@10 {row['hr@10']:.4f} NDCG@10 {row['ndcg@10']:.4f} "
              f"ε spent {row['epsilon_spent']} in {seconds:.0f} s", flush=True)
        write_report(results, out, secagg)
    summary = write_report(results, out, secagg)
    print(markdown(summary))
    for r in summary:
        if r["mode"] == DISTRIBUTED and r["epsilon_target"] == 8.0:
            print(f"ε = 8: distributed/central {r['ratio_central']} (target ≥ {TARGET_CENTRAL}), "
                  f"distributed/local {r['ratio_local']} (target ≥ {TARGET_LOCAL})")


if __name__ == "__main__":
    typer.run(main)
