"""The fedrec ServerApp (Flower Message API).

Reads the run config, sizes the global model from the item catalogue, runs the round
loop (:mod:`fedrec.server.loop`), and writes the run directory: ``metrics.jsonl``,
checkpoints, ``model.npz``, ``summary.json`` and ``curves.png``.

The server needs the catalogue size (``num-items``). Deployed (``catalogue`` names an
item catalogue file), the catalogue sizes the model and travels with every instruction;
the server holds no user data. In simulation, when ``num-items`` is not given, it is
read from the dataset; ItemPop — a central reference line, not part of federated
training — is then computed from the same split for the summary (not under a DP mode:
``summary.json`` then holds only the noised metrics, the rounds and the config).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrec.core.baselines.popularity import evaluate_itempop
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.catalogue import read_catalogue
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.privacy.plan import preflight, private_metric_keys
from fedrec.core.run_files import CURVES_FILE, SUMMARY_FILE, build_summary, write_json_atomic
from fedrec.reporting.curves import plot_curves
from fedrec.server.loop import run_rounds

app = ServerApp()
logger = logging.getLogger("fedrec.server")


def default_run_dir(run_id: int) -> Path:
    return Path.home() / ".fedrec" / "runs" / f"run-{run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run a federated training job described by the run config."""
    config = RunConfig.from_user_config(context.run_config)
    run_dir = Path(config.out_dir).expanduser() if config.out_dir else default_run_dir(context.run_id)
    started = time.perf_counter()
    itempop = None
    n_users = None
    catalogue: tuple[str, ...] | None = None
    if config.catalogue:
        catalogue = read_catalogue(config.catalogue)
        if config.num_items and config.num_items != len(catalogue):
            raise ValueError(f"num-items={config.num_items} but the catalogue lists {len(catalogue)} items")
        n_items = len(catalogue)
        logger.info("deployment: %d items in catalogue %s; devices hold the data", n_items, config.catalogue)
    else:
        n_items, n_users, itempop = _from_dataset(config)
    rows = run_rounds(grid, config, run_dir, n_items, n_users, run_id=str(context.run_id), catalogue=catalogue)
    k = config.eval_k
    if config.dp != "off":  # shared files hold only noised metrics and config (see fedrec.server.loop)
        itempop = None  # an exact statistic of the raw training data, which no mechanism covers
    summary = build_summary(rows, k, itempop, config.to_user_config(), time.perf_counter() - started,
                            model_selection=config.model_selection)
    if config.dp != "off":
        summary = dp_summary(summary, k)
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    plot_curves(rows, k, run_dir / CURVES_FILE, itempop, title=f"fedrec {config.model} on {config.dataset}")
    logger.info("run written to %s", run_dir)


def dp_summary(summary: dict, k: int) -> dict:
    """A DP run's ``summary.json``: the noised private metrics, the rounds and the config —
    no timing (``wall_seconds``) and no count of users evaluated."""
    keep = {*private_metric_keys(k), "rounds", "evaluated_at", "config"}
    return {key: value for key, value in summary.items() if key in keep}


def _from_dataset(config: RunConfig) -> tuple[int, int | None, dict[str, float] | None]:
    """(n_items, n_users, ItemPop metrics) from the dataset, or num-items alone when unreadable."""
    itempop = None
    n_users = None
    try:
        data = load_dataset(config.dataset, config.data_dir, config.seed)
    except (FileNotFoundError, ValueError) as err:
        if config.num_items == 0:
            raise ValueError(
                f"the server cannot read dataset {config.dataset!r} ({err}); give num-items"
            ) from err
        n_items = config.num_items
    else:
        if config.num_items and config.num_items != data.n_items:
            raise ValueError(f"num-items={config.num_items} but the dataset has {data.n_items} items")
        n_items, n_users = data.n_items, data.n_users
        split = leave_one_out(data, seed=config.seed, eval_negatives=config.eval_negatives)
        itempop = evaluate_itempop(split, config.eval_k)
        logger.info(preflight(config, split))
    return n_items, n_users, itempop
