"""Privacy–utility on ML-100K: every DP mode × mechanism at ε ∈ {1, 2, 4, 8}, against the best non-private run.

    python -m fedrec.simulations.benchmarks.privacy_utility --data-dir DIR --out D
        [--settings NAME,...] [--epsilons 1,2,4,8] [--seeds 0,1,2] [--reference-rounds 100]

Each row of :data:`SETTINGS` is one mode with one mechanism and the hyper-parameters found
best for it at ε = 8 on seed 0 (the explorations are in ``docs/privacy.md``); it runs in the
round driver (:func:`fedrec.core.federation.driver.run_federation`), every ML-100K user in
every round, for its fixed number of rounds, and evaluates once, at the end (that release is
accounted: a private run cannot pick its best round by validation without paying for each
validation release). The yardstick is the **best** non-private federated run of the same
architecture a user could have had: ``dp off`` for ``--reference-rounds`` rounds, evaluated
every ``--reference-every`` rounds, the round with the best validation HR@10 reported
(``model-selection best-validation``). Ratios are of HR@10 / NDCG@10 means over the seeds.

Results accumulate in ``D/results.json`` (a run already there is skipped, nothing is lost
when the benchmark stops); ``D/table.md`` and ``D/hr_vs_epsilon.png`` (HR@10 against ε per
setting, the reference as a line) are rewritten at the end.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from fedrec.core.config.run_config import RunConfig

# name -> (architecture, RunConfig overrides); MF unless the name says otherwise
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "user-central/gaussian": ("mf", dict(dp="user-central", rounds=20, clip=1.0, lr=2.0, server_lr=20.0)),
    "user-central/banded-mf/2-groups": ("mf", dict(dp="user-central", dp_groups=2, dp_mechanism="banded-mf",
                                                   rounds=30, clip=1.0, lr=2.0, server_lr=20.0)),
    "user-central/gaussian/gmf+head": ("gmf", dict(dp="user-central", model="gmf", personal="head", rounds=20,
                                                   clip=1.0, lr=2.0, server_lr=20.0)),
    "user-distributed/ddg": ("mf", dict(dp="user-distributed", rounds=20, clip=1.0, lr=2.0, server_lr=20.0,
                                        ddg_bits=20)),
    "user-local/gaussian": ("mf", dict(dp="user-local", rounds=30, clip=1.0, lr=2.0, server_lr=20.0)),
    "record-distributed/ddg": ("mf", dict(dp="record-distributed", rounds=40, clip=0.05, lr=1.0, server_lr=50.0,
                                          ddg_bits=48)),
}
DEFAULT_SETTINGS = "record-distributed/ddg,user-central/gaussian/gmf+head,user-central/gaussian"


def base_config(data_dir: str) -> RunConfig:
    return RunConfig(dataset="ml-100k", data_dir=data_dir, model="mf", clients_per_round=943, batch_size=16,
                     client_optimizer="sgd", lr=2.0, server_lr=20.0, delta=1e-5, executor="cohort")


def run_setting(base: RunConfig, name: str, epsilon: float, seed: int, threads: int) -> dict[str, Any]:
    from fedrec.core.federation.driver import run_federation

    _, overrides = SETTINGS[name]
    config = replace(base, **overrides, epsilon=epsilon, seed=seed)
    config = replace(config, eval_every=config.rounds)
    started = time.perf_counter()
    rows = run_federation(config, threads=threads).rows
    last = rows[-1]
    return {"setting": name, "epsilon": epsilon, "seed": seed, "rounds": len(rows), "hr@10": last["hr@10"],
            "ndcg@10": last["ndcg@10"], "epsilon_spent": last["epsilon_max"],
            "seconds": time.perf_counter() - started}


def run_reference(base: RunConfig, architecture: str, rounds: int, every: int, seed: int,
                  threads: int) -> dict[str, Any]:
    """The best non-private run of ``architecture``: its best-validation round of ``rounds``."""
    from fedrec.core.federation.driver import run_federation

    overrides = dict(SETTINGS["user-central/gaussian/gmf+head"][1]) if architecture == "gmf" else {}
    config = replace(base, model=architecture, personal=overrides.get("personal", "none"), rounds=rounds,
                     eval_every=every, model_selection="best-validation", seed=seed)
    started = time.perf_counter()
    result = run_federation(config, threads=threads)
    chosen = next(r for r in result.rows if r["round"] == result.selected_round)
    return {"setting": f"off/{architecture}", "epsilon": None, "seed": seed, "rounds": chosen["round"],
            "hr@10": chosen["hr@10"], "ndcg@10": chosen["ndcg@10"], "epsilon_spent": None,
            "seconds": time.perf_counter() - started}


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for results.json, table.md and hr_vs_epsilon.png"),
    settings: str = typer.Option(DEFAULT_SETTINGS, help=f"comma-separated, of {', '.join(SETTINGS)}"),
    epsilons: str = typer.Option("8,4,2,1"),
    seeds: str = typer.Option("0,1,2"),
    reference_rounds: int = typer.Option(100, help="rounds of the non-private reference (0: none run here)"),
    reference_every: int = typer.Option(5, help="the reference evaluates every this many rounds"),
    threads: int = typer.Option(2, help="torch threads"),
) -> None:
    names = [s for s in settings.split(",") if s]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        raise typer.BadParameter(f"unknown settings {unknown}: choose from {list(SETTINGS)}")
    out.mkdir(parents=True, exist_ok=True)
    base = base_config(data_dir)
    path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []

    def done(setting: str, epsilon: float | None, seed: int) -> bool:
        return any(r["setting"] == setting and r["epsilon"] == epsilon and r["seed"] == seed for r in results)

    def keep(row: dict[str, Any]) -> None:
        results.append(row)
        path.write_text(json.dumps(results, indent=2))  # after every run: nothing lost
        print(json.dumps(row), flush=True)

    for architecture in sorted({SETTINGS[n][0] for n in names}) if reference_rounds else []:
        if not done(f"off/{architecture}", None, 0):
            keep(run_reference(base, architecture, reference_rounds, reference_every, 0, threads))
    seed_list = [int(s) for s in seeds.split(",")]
    for epsilon in (float(e) for e in epsilons.split(",")):
        for seed in seed_list:
            for name in names:
                if not done(name, epsilon, seed):
                    keep(run_setting(base, name, epsilon, seed, threads))
    table = report(results, names)
    (out / "table.md").write_text(table)
    print(table)
    plot(results, names, out / "hr_vs_epsilon.png")


def _mean(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report(results: list[dict[str, Any]], names: list[str]) -> str:
    """The markdown table: one row per (setting, ε), means over seeds, ratios to the reference."""
    references = {r["setting"].split("/", 1)[1]: r for r in results if r["setting"].startswith("off/")}
    lines = ["| setting | ε | ε spent | seeds | HR@10 | NDCG@10 | HR@10 / best non-private | NDCG@10 / best |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        reference = references.get(SETTINGS[name][0])
        for epsilon in sorted({r["epsilon"] for r in results if r["setting"] == name}, reverse=True):
            rows = [r for r in results if r["setting"] == name and r["epsilon"] == epsilon]
            hr = [r["hr@10"] for r in rows]
            ndcg = [r["ndcg@10"] for r in rows]
            ratio = (f"{statistics.mean(hr) / reference['hr@10']:.2f}" if reference else "—")
            ratio_ndcg = (f"{statistics.mean(ndcg) / reference['ndcg@10']:.2f}" if reference else "—")
            lines.append(f"| {name} | {epsilon:g} | {max(r['epsilon_spent'] for r in rows):.3g} | "
                         f"{','.join(str(r['seed']) for r in rows)} | {_mean(hr)} | {_mean(ndcg)} | {ratio} | "
                         f"{ratio_ndcg} |")
    for architecture, reference in sorted(references.items()):
        lines.append(f"| off/{architecture} (best validation round {reference['rounds']}) | ∞ | — | "
                     f"{reference['seed']} | {reference['hr@10']:.4f} | {reference['ndcg@10']:.4f} | 1 | 1 |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        epsilons = sorted({r["epsilon"] for r in results if r["setting"] == name})
        if not epsilons:
            continue
        means = [statistics.mean(r["hr@10"] for r in results if r["setting"] == name and r["epsilon"] == e)
                 for e in epsilons]
        ax.plot(epsilons, means, marker="o", label=name)
    references = [r for r in results if r["setting"].startswith("off/")]
    for reference, style in zip(references, ("--", ":", "-.", (0, (5, 1)))):
        ax.axhline(reference["hr@10"], linestyle=style, color="black", linewidth=1,
                   label=f"best non-private {reference['setting'][4:]}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("HR@10 (ML-100K, leave-one-out, 99 negatives)")
    ax.legend(fontsize=7)
    ax.set_title("fedrec on ML-100K: HR@10 against ε")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    typer.run(main)
