"""The ``fedrec`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.deploy import certs_app, client_app, server_app
from fedrec.core.config.run_config import RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated, private recommenders on Flower.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: download and inspect.")
app.add_typer(data_app, name="data")
app.add_typer(certs_app, name="certs")
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")

DEFAULTS = RunConfig()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _absolute_data_paths(dataset: str, data_dir: str) -> tuple[str, str]:
    """A CSV dataset path and ``--data-dir`` made absolute: the ServerApp and ClientApps run in
    other working directories, where a relative path would name nothing."""
    from fedrec.core.data.loaders import is_csv_path

    if is_csv_path(dataset):
        dataset = str(Path(dataset).expanduser().resolve())
    if data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
    return dataset, data_dir


def _privacy_targets(epsilon: float | None, noise_multiplier: float | None) -> dict[str, float]:
    """--epsilon / --noise-multiplier as run-config values (0 means "not given" there)."""
    if epsilon is not None and not epsilon > 0:
        raise ValueError(f"--epsilon must be > 0, got {epsilon}: ε is the privacy budget")
    if noise_multiplier is not None and not noise_multiplier > 0:
        raise ValueError(f"--noise-multiplier must be > 0, got {noise_multiplier}")
    return {"epsilon": epsilon or 0.0, "noise_multiplier": noise_multiplier or 0.0}


@app.command()
def simulate(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, ml-100k or a path to a CSV file"),
    data_dir: str = typer.Option("", help="folder holding ml-100k (u.data)"),
    model: str = typer.Option(DEFAULTS.model, help="mf, gmf, mlp, neumf, hybrid or content (item features)"),
    rounds: Optional[int] = typer.Option(None, help=f"total rounds (default {DEFAULTS.rounds}; with --resume: the checkpointed run's)"),
    clients_per_round: int = typer.Option(DEFAULTS.clients_per_round),
    local_epochs: int = typer.Option(DEFAULTS.local_epochs),
    user_epochs: int = typer.Option(DEFAULTS.user_epochs, help="user-vector-only epochs before local training"),
    reconstruct_epochs: int = typer.Option(DEFAULTS.reconstruct_epochs, help="user-vector fit before evaluation"),
    client_optimizer: str = typer.Option(DEFAULTS.client_optimizer, help="adam or sgd"),
    lr: float = typer.Option(DEFAULTS.lr, help="client learning rate"),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="positives per client batch"),
    dim: int = typer.Option(DEFAULTS.dim),
    loss: str = typer.Option(DEFAULTS.loss, help="bce or bpr"),
    aggregation: str = typer.Option(DEFAULTS.aggregation, help="fedavg, fedavg-slr or fedadam"),
    server_lr: float = typer.Option(DEFAULTS.server_lr),
    seed: int = typer.Option(DEFAULTS.seed),
    eval_every: int = typer.Option(DEFAULTS.eval_every),
    eval_fraction: float = typer.Option(DEFAULTS.eval_fraction, help="share of users evaluated"),
    checkpoint_every: int = typer.Option(DEFAULTS.checkpoint_every),
    executor: str = typer.Option(DEFAULTS.executor, help="per-client (one node per user) or cohort "
                                 "(a few nodes, each training its sampled users in one vectorised pass)"),
    cohort_nodes: int = typer.Option(DEFAULTS.cohort_nodes, help="simulated nodes with --executor cohort"),
    device: str = typer.Option(DEFAULTS.device, help="cpu, cuda or auto: where --executor cohort trains"),
    dp: str = typer.Option(DEFAULTS.dp, help="off, record (Opacus DP-SGD on each client), user-local "
                           "(clients noise their own updates) or user-central (the server noises the sum)"),
    epsilon: Optional[float] = typer.Option(None, help="privacy budget ε per unit; σ is derived when "
                                            "--noise-multiplier is not given"),
    delta: float = typer.Option(DEFAULTS.delta, help="δ; must be below 1/number of units"),
    clip: float = typer.Option(DEFAULTS.clip, help="L2 clip norm C of one unit's contribution"),
    noise_multiplier: Optional[float] = typer.Option(None, help="σ (noise std = σ·C); ε is then tracked"),
    accountant: str = typer.Option(DEFAULTS.accountant, help="rdp or prv (Opacus accountants)"),
    adaptive_clip: bool = typer.Option(DEFAULTS.adaptive_clip, help="user-central: C follows --clip-quantile of "
                                       "the update norms (Andrew et al. 2021); --clip is the start"),
    clip_quantile: float = typer.Option(DEFAULTS.clip_quantile),
    dp_participations: int = typer.Option(DEFAULTS.dp_participations, help="record/user-local: plan σ for this "
                                          "many rounds per client (0: every round); more and the client refuses"),
    record_sample_rate: float = typer.Option(DEFAULTS.record_sample_rate, help="record: the public Poisson rate of "
                                             "a record per DP-SGD step (the same for every user)"),
    eval_noise_multiplier: float = typer.Option(DEFAULTS.eval_noise_multiplier, help="σ_e of the noised "
                                                "evaluation releases under DP (0: derived, 10%% of ε)"),
    out: Optional[Path] = typer.Option(None, help="run directory (required unless --resume)"),
    resume: Optional[Path] = typer.Option(None, help="continue the checkpointed run in this directory"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    ray_address: str = typer.Option("", help="HOST:PORT of an existing Ray cluster's head (`ray start --head`); "
                                    "default: a private Ray on this machine"),
) -> None:
    """Run a federated simulation (every user a client) and write the run directory."""
    from fedrec.simulations.flower_runtime import Terminated
    from fedrec.simulations.simulate import resume_config, simulate as run_simulation

    try:
        if resume is not None:
            config = resume_config(resume, {} if rounds is None else {"rounds": rounds})
            out_dir = resume
        else:
            if out is None:
                _fail("give --out DIR (or --resume DIR)")
            if rounds is not None and rounds < 1:
                _fail(f"--rounds must be ≥ 1, got {rounds}")
            dataset, data_dir = _absolute_data_paths(dataset, data_dir)
            config = RunConfig(
                dataset=dataset, data_dir=data_dir, model=model, rounds=DEFAULTS.rounds if rounds is None else rounds,
                clients_per_round=clients_per_round, local_epochs=local_epochs, user_epochs=user_epochs,
                reconstruct_epochs=reconstruct_epochs, client_optimizer=client_optimizer, lr=lr,
                batch_size=batch_size, dim=dim, loss=loss, aggregation=aggregation,
                server_lr=server_lr, seed=seed, eval_every=eval_every, eval_fraction=eval_fraction,
                checkpoint_every=checkpoint_every, executor=executor, cohort_nodes=cohort_nodes,
                device=device, dp=dp, delta=delta, clip=clip, accountant=accountant,
                adaptive_clip=adaptive_clip, clip_quantile=clip_quantile, dp_participations=dp_participations,
                record_sample_rate=record_sample_rate, eval_noise_multiplier=eval_noise_multiplier,
                **_privacy_targets(epsilon, noise_multiplier),
            )
            out_dir = out
        summary = run_simulation(config, out_dir, show_progress=not quiet, ray_address=ray_address)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, Terminated) as err:
        _fail(str(err))
    _print_summary(summary, out_dir)


@app.command("train-central")
def train_central(
    dataset: str = typer.Option(DEFAULTS.dataset),
    data_dir: str = typer.Option(""),
    model: str = typer.Option(DEFAULTS.model),
    epochs: int = typer.Option(20),
    lr: float = typer.Option(0.001),
    batch_size: int = typer.Option(256),
    dim: int = typer.Option(DEFAULTS.dim),
    loss: str = typer.Option(DEFAULTS.loss),
    seed: int = typer.Option(DEFAULTS.seed),
    eval_every: int = typer.Option(5),
    out: Path = typer.Option(..., help="run directory"),
) -> None:
    """Train the same model on the same split centrally (plain torch, no Flower)."""
    from fedrec.simulations.central_twin import CentralRunConfig, run_central

    try:
        summary = run_central(
            CentralRunConfig(dataset=dataset, data_dir=data_dir, model=model, epochs=epochs, lr=lr,
                             batch_size=batch_size, dim=dim, loss=loss, seed=seed, eval_every=eval_every),
            out,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        _fail(str(err))
    _print_summary(summary, out)


@app.command()
def compare(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, ml-100k or a path to a CSV file"),
    data_dir: str = typer.Option("", help="folder holding ml-100k (u.data, u.item)"),
    models: str = typer.Option("", help="comma-separated models (default: all): itempop, user-knn, item-knn, bpr, "
                               "mf, gmf, mlp, neumf, hybrid, content, sequence, explicit-mf"),
    quick: bool = typer.Option(False, help="a user subsample and a tenth of the training (minutes, not an hour)"),
    epsilon: float = typer.Option(8.0, help="ε of the DP rows (user-level, δ = --delta)"),
    delta: float = typer.Option(1e-5, help="δ of the DP rows"),
    cold_max_items: int = typer.Option(5, help="cold-start users: at most this many training items"),
    cold_start: bool = typer.Option(True, help="run the cold-start section"),
    seed: int = typer.Option(DEFAULTS.seed),
    threads: int = typer.Option(1, help="torch threads"),
    out: Path = typer.Option(..., help="folder for compare.json, compare.md and compare.png"),
) -> None:
    """Every model centrally and federated (and with DP at one ε) on one split: compare.json/.md/.png."""
    from dataclasses import replace

    from fedrec.simulations.compare import FULL, QUICK, CompareConfig, run_compare

    try:
        budget = replace(QUICK if quick else FULL, cold_start=cold_start)
        config = CompareConfig(dataset=dataset, data_dir=data_dir,
                               models=tuple(m.strip() for m in models.split(",") if m.strip()), budget=budget,
                               quick=quick, seed=seed, epsilon=epsilon, delta=delta, cold_max_items=cold_max_items,
                               threads=threads)
        result = run_compare(config, out, progress=lambda line: typer.echo(line))
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    problems = [r for r in result.rows + result.cold_rows if r["status"] != "ok"]
    typer.echo(f"{len(result.rows)} rows, {len(result.cold_rows)} cold-start rows in {result.meta['wall_seconds']:.0f} s"
               f"{f' ({len(problems)} did not run, see compare.md)' if problems else ''}; report in {out}/compare.md")


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="dataset to fetch: ml-100k"),
    dir: Path = typer.Option(..., "--dir", help="folder to put the dataset in"),
    url: Optional[str] = typer.Option(None, help="override the download address (a mirror)"),
) -> None:
    """Download a public dataset and verify its checksum."""
    from fedrec.core.data.download import ML100K_URL, DownloadError, download_ml100k

    if name != "ml-100k":
        _fail(f"unknown dataset {name!r}: only ml-100k can be downloaded")
    try:
        folder = download_ml100k(dir, url or ML100K_URL)
    except DownloadError as err:
        _fail(str(err))
    typer.echo(f"ml-100k verified in {folder}; use --dataset ml-100k --data-dir {dir}")


@data_app.command("export")
def data_export(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, ml-100k or a CSV path"),
    data_dir: str = typer.Option("", help="folder holding ml-100k"),
    clients: int = typer.Option(2, help="number of device CSV files (users dealt round-robin)"),
    out: Path = typer.Option(..., help="folder for items.txt and client-K.csv"),
    seed: int = typer.Option(DEFAULTS.seed),
    force: bool = typer.Option(False, help="overwrite existing files"),
) -> None:
    """Write an item catalogue and one CSV per device, to try a deployment."""
    from fedrec.core.data.export import CATALOGUE_FILE, export_for_devices
    from fedrec.core.data.loaders import load_dataset

    try:
        paths = export_for_devices(load_dataset(dataset, data_dir, seed), clients, out, force=force)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"catalogue {out / CATALOGUE_FILE}; device files {paths[0]} … {paths[-1]}")


def _print_summary(summary: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedrec run in {out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(k for k in summary if "@" in k):
        table.add_row(key, f"{summary[key]:.4f}")
    table.add_row("rounds", str(summary.get("rounds")))
    if "wall_seconds" in summary:  # (under DP timings stay in server_internal.jsonl)
        table.add_row("wall seconds", f"{summary['wall_seconds']:.1f}")
    config = summary.get("config", {})
    if isinstance(config, dict) and config.get("dp", "off") != "off":
        table.caption = ("metrics are noised releases (dp): run `fedrec audit` on the run directory; "
                         "realised sample sizes and timings are in server_internal.jsonl (do not share)")
    Console().print(table)


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="a run directory holding privacy.db"),
    accountant: Optional[str] = typer.Option(None, help="independent accountant for every row: rdp or pld "
                                             "(default: rdp for rdp rows, pld for prv rows)"),
    exact: int = typer.Option(100, help="PRV/PLD histories recomputed exactly, the rest bracketed (0: all)"),
    verify_key: Optional[Path] = typer.Option(None, "--verify-key", help="the server's ledger public key "
                                              "(hex file, obtained out of band) the signed heads must verify "
                                              "with; default: the run's own ledger-signing.pub"),
    device_keys: Optional[Path] = typer.Option(None, "--device-keys", help="a directory of the devices' "
                                               "OpenSSH *.pub keys; rows a device countersigned are verified"),
) -> None:
    """Verify a run's privacy ledger, its signatures and its agreement with the run's plan and
    config, and recompute every ε with an independent accountant.

    Writes RUN_DIR/audit.json and RUN_DIR/epsilon.png; exits 1 when anything is wrong, 2
    when the run cannot be audited (no run directory or ledger, an unreadable file, a
    missing key file).
    """
    from rich.console import Console

    from fedrec.core.privacy.audit import AuditError, audit_run
    from fedrec.core.privacy.audit_report import print_audit, write_audit

    try:
        report = audit_run(run_dir, accountant, max_exact=exact or None, verify_key=verify_key,
                           device_keys=device_keys)
    except AuditError as err:
        _fail(str(err))
    try:
        write_audit(report, run_dir)
    except OSError as err:
        _fail(f"{run_dir}: cannot write the audit's files ({err.strerror or err})")
    print_audit(report, Console())
    if not report.ok:
        raise typer.Exit(1)


@app.command("ledger-key")
def ledger_key(
    out: Optional[Path] = typer.Option(None, help="write the public key (hex) to this file"),
    key: Optional[Path] = typer.Option(None, help="the private key file (default: $FEDREC_HOME/ledger-signing.key, "
                                       "FEDREC_HOME defaulting to ~/.fedrec); created 0600 when missing"),
) -> None:
    """Print (or write) the public key the server signs its privacy ledgers with: hand it to
    auditors out of band, for `fedrec audit RUN --verify-key FILE`."""
    from fedrec.core.privacy.signing import LedgerSigner, SigningError, default_signing_key_path, write_public_key

    path = key.expanduser() if key is not None else default_signing_key_path()
    try:
        signer = LedgerSigner.load_or_create(path)
        if out is not None:
            write_public_key(out.expanduser(), signer.public_key_hex())
    except (SigningError, OSError) as err:
        _fail(f"{path}: {err}")
    typer.echo(signer.public_key_hex())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
