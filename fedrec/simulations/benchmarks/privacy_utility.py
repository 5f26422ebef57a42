"""Privacy–utility on ML-100K (MF): HR@10 / NDCG@10 at ε ∈ {1, 2, 4, 8, ∞} for each DP mode.

Every run has the same length and hyper-parameters; ε = ∞ is the non-private run
(``dp off``) and every private run is printed as a ratio to it. Runs use the pure-torch
loop (:mod:`fedrec.simulations.torch_loop`), which calls the very functions of the apps
(client mechanisms, accountants, server noise); ``user-local`` and ``user-central`` run
with the cohort executor (same arithmetic, vectorised), ``record`` per client (Opacus).
σ is derived from ε for a user taking part in every round (:mod:`fedrec.core.privacy.plan`);
the ε reported is what the accountants computed for the run (the largest client's, or
the server's for ``user-central``), RDP at δ = 1e-5.

Mode-specific knobs are flags (``--record-clip``, ``--user-clip``, ``--dp-server-lr``)
so the trade-offs can be explored; the closing note says which values gave the table.

    python -m fedrec.simulations.benchmarks.privacy_utility --data-dir DIR --out D
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.privacy.plan import preflight
from fedrec.simulations.torch_loop import run_torch_loop

K = 10


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for results.json and privacy_utility.png"),
    modes: str = typer.Option("record,user-local,user-central"),
    epsilons: str = typer.Option("1,2,4,8"),
    rounds: int = typer.Option(30),
    clients_per_round: int = typer.Option(943, help="users per round (user-central: expected, Poisson)"),
    record_clients_per_round: int = typer.Option(0, help="users per round for record (0: as --clients-per-round)"),
    record_participations: int = typer.Option(0, help="record: plan σ for this many rounds per client (0: all)"),
    local_epochs: int = typer.Option(1),
    user_epochs: int = typer.Option(1),
    batch_size: int = typer.Option(16),
    client_optimizer: str = typer.Option("sgd"),
    lr: float = typer.Option(2.0, help="client learning rate"),
    server_lr: float = typer.Option(20.0, help="server learning rate of the non-private run"),
    dp_server_lr: float = typer.Option(0.0, help="server learning rate of the private runs (0: as --server-lr)"),
    record_clip: float = typer.Option(1.0, help="C of one example's gradient (record)"),
    user_clip: float = typer.Option(1.0, help="C of one user's update (user-local, user-central)"),
    delta: float = typer.Option(1e-5),
    threads: int = typer.Option(2, help="torch threads of the loop"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    split = leave_one_out(load_dataset("ml-100k", data_dir, 0))
    base = RunConfig(dataset="ml-100k", data_dir=data_dir, model="mf", rounds=rounds,
                     clients_per_round=min(clients_per_round, split.n_users), local_epochs=local_epochs,
                     user_epochs=user_epochs, batch_size=batch_size, client_optimizer=client_optimizer, lr=lr,
                     server_lr=server_lr, eval_every=rounds, delta=delta, executor="cohort")
    results_path = out / "results.json"
    results: list[dict] = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["mode"], r["epsilon_target"], r["clients_per_round"]) for r in results}

    def record(row: dict) -> None:
        results.append(row)
        results_path.write_text(json.dumps(results, indent=2))  # after every run: nothing lost

    runs = []
    for mode in modes.split(","):
        for eps in (float(e) for e in epsilons.split(",")):
            mode_settings = {"executor": "per-client", "dp_participations": record_participations,
                             "clients_per_round": min(record_clients_per_round or clients_per_round, split.n_users)
                             } if mode == "record" else {}
            config = replace(base, dp=mode, epsilon=eps, server_lr=dp_server_lr or server_lr,
                             clip=record_clip if mode == "record" else user_clip, **mode_settings)
            runs.append((mode, eps, config))
    # one non-private reference per round size (same length, same users per round)
    for size in sorted({c.clients_per_round for _, _, c in runs}, reverse=True):
        runs.insert(0, ("off", None, replace(base, clients_per_round=size)))
    for mode, eps, config in runs:
        if (mode, eps, config.clients_per_round) in done:
            continue
        line = preflight(config, split)
        Console().print(line)
        started = time.perf_counter()
        rows = run_torch_loop(split, config, threads=threads)
        last = rows[-1]
        record({"mode": mode, "epsilon_target": eps, "participations": config.dp_participations or config.rounds, "epsilon_spent": last.get("epsilon_max"),
                "refused": sum(r.get("dp_refused", 0) for r in rows), "rounds": len(rows),
                "clients_per_round": config.clients_per_round, "clip": config.clip,
                "server_lr": config.server_lr, "hr@10": last[f"hr@{K}"], "ndcg@10": last[f"ndcg@{K}"],
                "seconds": time.perf_counter() - started, "plan": line})
    _report(results, out)


def _report(results: list[dict], out: Path) -> None:
    references = {r["clients_per_round"]: r for r in results if r["mode"] == "off"}
    table = Table(title="ML-100K, MF: private / non-private (same length, same users per round)")
    for column in ("mode", "ε target", "ε spent", "HR@10", "NDCG@10", "HR ratio", "NDCG ratio", "users/round", "C", "s"):
        table.add_column(column, justify="right")
    for r in results:
        reference = references.get(r["clients_per_round"])
        hr_ratio = r["hr@10"] / reference["hr@10"] if reference else float("nan")
        ndcg_ratio = r["ndcg@10"] / reference["ndcg@10"] if reference else float("nan")
        r["hr_ratio"], r["ndcg_ratio"] = hr_ratio, ndcg_ratio
        spent = r["epsilon_spent"]
        table.add_row(r["mode"], "∞" if r["epsilon_target"] is None else f"{r['epsilon_target']:g}",
                      "—" if spent is None else f"{spent:.3g}", f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}",
                      f"{hr_ratio:.3f}", f"{ndcg_ratio:.3f}", str(r["clients_per_round"]),
                      f"{r['clip']:g}", f"{r['seconds']:.0f}")
    Console(width=140).print(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _plot(results, out / "privacy_utility.png")


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("hr_ratio", "ndcg_ratio")):
        for mode in sorted({r["mode"] for r in results if r["mode"] != "off"}):
            points = sorted((r["epsilon_target"], r[metric]) for r in results if r["mode"] == mode)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
        ax.axhline(1.0, color="black", linestyle="--", label="non-private")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ε (δ = 1e-5)")
        ax.set_ylabel(metric.replace("_", " ").upper() + " (private / non-private)")
        ax.legend()
    fig.suptitle("fedrec MF on ML-100K: privacy–utility")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    typer.run(main)
