"""The federated round loop of the ServerApp.

Per round: sample ``clients-per-round`` nodes (strategy), send the global part, receive
updates, aggregate, append one line to ``metrics.jsonl`` (``round``, ``wall_seconds``,
``train_loss``, ``clients`` (users trained), ``nodes`` (replies), ``nodes_asked`` (nodes sent
the round's instruction), ``train_seconds`` (sampling to
aggregation), ``bytes_up``, ``bytes_down`` and, on evaluation rounds,
the ranking metrics), and checkpoint every ``checkpoint-every`` rounds and at the end.
A resumed run continues from the last checkpoint's round with its global model and
server-optimiser state; clients that lost their private vectors reconstruct them.

Under a DP mode ``metrics.jsonl`` is meant to be shared, so it holds only what the DP
mechanisms cover or what is public: ``round``, the ledger anchor (``ledger_rows``,
``ledger_head``), ``dp_refused``, ``epsilon_max``, ``skipped`` and, on evaluation rounds,
the noised private metrics (:func:`fedrec.core.privacy.plan.private_metric_keys`) — no
timing at all. The operational numbers (``clients``, ``nodes``, ``nodes_asked``, ``examples``,
``node_seconds_max``, ``train_loss``, ``bytes_up``/``bytes_down``, ``train_seconds``,
``wall_seconds``, ``users-evaluated``) go to ``server_internal.jsonl`` (:data:`INTERNAL_FILE`):
**internal to the trusted server, do not share: it holds the realised sample sizes and
timings that the DP mechanisms do not cover.** At the start of a DP run the server writes
``privacy_plan.json`` and, after each round's ledger rows, signs the ledger head
(:mod:`fedrec.server.privacy`).

Under ``dp user-distributed`` (per-client simulation or deployment: one user per node) a round's
training is SecAgg+ over the sampled nodes (:mod:`fedrec.server.secure_rounds`): the
server only ever holds masked vectors and the unmasked sum, decodes it, divides by the
survivors and steps (unless the sum fails the sum check: ``sum_refused``, still
accounted, ``dp_refused`` 1); a round with fewer survivors than the noise split's ``n_min`` (or
whose secrets lost their ``t`` holders) is skipped (``skipped`` in the shared row, the
reason as ``skip_reason`` and the per-stage ``secagg_bytes_up``/``secagg_bytes_down``/
``secagg_seconds`` in ``server_internal.jsonl``, and a warning).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from fedrec.core.config.run_config import RunConfig
from fedrec.core.evaluation.selection import BestRound
from fedrec.core.families.implicit import initial_implicit_global
from fedrec.core.families.registry import family_of
from fedrec.core.federation.driver import round_users
from fedrec.core.federation.sampling import sample_users
from fedrec.core.federation.server_step import initial_global, server_optimizer
from fedrec.core.privacy.distributed_mode import FLOWER_REFUSAL, RunPlan, rotation_seed, unflatten
from fedrec.core.privacy.ledger import LEDGER_FILE
from fedrec.core.privacy.plan import private_metric_keys
from fedrec.core.run_files import METRICS_FILE, append_jsonl, read_jsonl
from fedrec.protocol.distributed_plan import flower_run_plan
from fedrec.protocol.wire import (
    CATALOGUE,
    DP_CLIP,
    LEDGER_RUN_ID,
    METRICS,
    NODE_SECONDS,
    NUM_EXAMPLES,
    SAMPLED_USERS,
    TRAIN_LOSS,
    USERS_EVALUATED,
    USERS_RECONSTRUCTED,
    USERS_TRAINED,
)
from fedrec.reporting.progress import connected_line, waiting_line
from fedrec.server.checkpoint import (
    MODEL_FILE,
    Checkpoint,
    load_checkpoint,
    save_arrays,
    save_checkpoint,
)
from fedrec.server.payload import content_bytes
from fedrec.server.privacy import ServerPrivacy, committed_plan
from fedrec.server.secure_rounds import run_secure_round
from fedrec.server.strategy.fedopt_updates import FedOptOnUpdates, arrays_to_numpy, numpy_to_arrays

logger = logging.getLogger("fedrec.server")
# Under DP: operational numbers of each round, internal to the trusted server (do not share)
INTERNAL_FILE = "server_internal.jsonl"
# Under DP: the metrics.jsonl keys besides the private metrics (all covered by DP, or public)
# evaluation reply keys that are counts (the rest are rates, pooled by the family)
COUNT_KEYS = (NUM_EXAMPLES, USERS_EVALUATED, USERS_RECONSTRUCTED)
SHARED_DP_KEYS = ("round", "ledger_rows", "ledger_head", "dp_refused", "epsilon_max", "skipped")

# Configuration that must not change when a run is resumed.
RESUME_INVARIANTS = ("dataset", "data-dir", "model", "dim", "seed", "num-items", "dp", "epsilon", "delta",
                     "clip", "noise-multiplier", "accountant", "adaptive-clip", "dp-participations")


def initial_global_arrays(config: RunConfig, n_items: int, split: Any | None = None) -> dict[str, np.ndarray]:
    """Round 0's global arrays: the family's from the run's split, or (deployed: no data on
    the server) the implicit model's for ``n_items`` items — the only family devices train."""
    if split is None:
        return initial_implicit_global(config, n_items)
    return initial_global(config, split)


def make_strategy(config: RunConfig, n_nodes: int, n_items: int,
                  privacy: ServerPrivacy | None = None, deployed: bool = False) -> FedOptOnUpdates:
    """Per-client: Flower samples ``clients-per-round`` of the (one-user) nodes
    (user-central DP: each node with probability ``q``, see :mod:`fedrec.server.privacy`).

    Cohort: every node is asked each round and trains those of its users that the
    server sampled (:func:`fedrec.core.federation.sampling.sample_users`; Poisson under user-central).
    """
    if deployed:  # every connected device each round; wait for at least min-nodes
        clients, evaluate_fraction, evaluate_nodes = config.min_nodes, 1.0, config.min_nodes
        n_nodes = max(n_nodes, 1)
        train_fraction = 1.0
    elif config.executor == "cohort":
        clients, evaluate_fraction, evaluate_nodes = n_nodes, 1.0, n_nodes
    else:
        clients = min(config.clients_per_round, n_nodes)
        evaluate_fraction = config.eval_fraction
        evaluate_nodes = max(1, int(round(n_nodes * config.eval_fraction)))
    strategy = FedOptOnUpdates(
        server_optimizer(config, n_items),
        privacy,
        releases_sum=family_of(config.model).releases_sum,
        min_valid_updates=config.min_valid_updates,
        fraction_train=train_fraction if deployed else clients / n_nodes,
        min_train_nodes=clients,
        fraction_evaluate=evaluate_fraction,
        min_evaluate_nodes=evaluate_nodes,
        min_available_nodes=clients,
    )
    strategy.poisson_nodes = privacy is not None and privacy.central and config.executor != "cohort"
    return strategy


def round_config(config: RunConfig, n_users: int | None, server_round: int, purpose: str,
                 privacy: ServerPrivacy | None = None, catalogue: tuple[str, ...] | None = None,
                 run_id: str = "", split: Any | None = None) -> ConfigRecord:
    """What an instruction carries besides the model: in cohort mode, the sampled users
    (under user-central DP, each user with probability ``clients-per-round / n``, secretly);
    with adaptive clipping, this round's clip norm; deployed, the item catalogue."""
    record = ConfigRecord()
    if purpose == "train" and privacy is not None and privacy.adaptive is not None:
        record[DP_CLIP] = float(privacy.clip)
    if catalogue is not None:  # deployed: each device trains all of its users
        record[CATALOGUE] = list(catalogue)
        if config.dp != "off" and run_id:  # the ledger's run id, which devices countersign
            record[LEDGER_RUN_ID] = run_id
        return record
    if config.executor != "cohort":
        return record
    if n_users is None:
        raise ValueError("the cohort executor needs the number of users: the server must read the dataset")
    if purpose == "train" and config.dp == "user-central":
        return record  # each node samples its own users by Poisson, secretly (see the ClientApp)
    if purpose == "train" and split is not None:  # the family's trainable users, as the round driver samples
        record[SAMPLED_USERS] = round_users(family_of(config.model), split, config, server_round)
        return record
    k = config.clients_per_round if purpose == "train" else max(1, int(round(n_users * config.eval_fraction)))
    record[SAMPLED_USERS] = [int(u) for u in sample_users(n_users, k, config.seed, server_round, purpose)]
    return record


POLL_INTERVAL_S = 0.01


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and collect their replies, polling every 10 ms until ``timeout``.

    Flower's ``Grid.send_and_receive`` polls every 0.1 s in simulation (3 s over gRPC),
    which adds that much to every exchange; a cohort round of a few hundred ms would pay
    it twice. Pulling is a cheap state lookup, so we poll often.
    """
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(pending):
            replies.append(reply)
            pending.discard(reply.metadata.reply_to_message_id)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    return replies


def _slowest_node_seconds(replies: list[Message]) -> float:
    """The largest finite ``node-seconds`` among the replies (0 when none reports one)."""
    reported = []
    for message in replies:
        metrics = message.content.metric_records.get(METRICS) if message.has_content() else None
        value = metrics.get(NODE_SECONDS) if metrics is not None else None
        if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
            reported.append(float(value))
    return max(reported, default=0.0)


def split_row(row: dict[str, Any], k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DP round's row as (shared: what :data:`SHARED_DP_KEYS` and the private metrics
    name, internal: ``round`` and everything else)."""
    shared_keys = {*SHARED_DP_KEYS, *private_metric_keys(k)}
    shared = {key: value for key, value in row.items() if key in shared_keys}
    internal = {key: value for key, value in row.items() if key not in shared_keys or key == "round"}
    return shared, internal


def _drop_rows_after(path: Path, last_round: int) -> None:
    """Forget logged rounds newer than the checkpoint: they will be run again."""
    if not path.exists():
        return
    rows = [row for row in read_jsonl(path) if int(row["round"]) <= last_round]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    os.replace(tmp, path)


def run_rounds(grid: Grid, config: RunConfig, run_dir: Path, n_items: int,
               n_users: int | None = None, run_id: str = "",
               catalogue: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Train for ``config.rounds`` rounds (minus those already done when resuming).

    Under a DP mode, ``privacy.db`` gets each round's mechanism applications
    (:mod:`fedrec.server.privacy`) and each metrics row its anchor and refusals.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    split = family_of(config.model).load_split(config) if catalogue is None and n_users is not None else None
    arrays = initial_global_arrays(config, n_items, split)
    optimizer_state: dict[str, dict[str, np.ndarray]] = {}
    first_round = 1
    user_config = config.to_user_config()
    if config.resume and config.model_selection == "best-validation":
        raise ValueError("cannot resume a run with model-selection best-validation: checkpoints keep the last "
                         "round's model, not the best round's; rerun it, or resume with model-selection last")
    if config.resume:
        checkpoint = load_checkpoint(run_dir)
        changed = [k for k in RESUME_INVARIANTS if checkpoint.config.get(k) != user_config[k]]
        if changed:
            raise ValueError(f"cannot resume {run_dir}: {changed} differ from the checkpointed run")
        arrays, optimizer_state = checkpoint.global_arrays, checkpoint.optimizer_state
        first_round = checkpoint.round + 1
        _drop_rows_after(run_dir / METRICS_FILE, checkpoint.round)
        _drop_rows_after(run_dir / INTERNAL_FILE, checkpoint.round)
        logger.info("resuming %s after round %d", run_dir, checkpoint.round)
    else:  # a fresh run: no rows of an earlier attempt in this directory
        (run_dir / INTERNAL_FILE).unlink(missing_ok=True)

    # Flower's node sampling draws from `random`; a resumed run continues with fresh draws
    random.seed(config.seed * 1_000_003 + first_round)
    n_nodes = len(list(grid.get_node_ids())) if catalogue is None else _wait_for_nodes(grid, config.min_nodes)
    privacy = None
    _check_private_setup(config, run_dir, first_round, n_nodes, n_users, deployed=catalogue is not None)
    if config.dp != "off":
        n_units = n_users if config.executor == "cohort" and n_users is not None else n_nodes
        committed = committed_plan(run_dir) if config.resume else None
        if committed is not None:
            # a resumed run keeps the ledger's run id (Flower gives the resumed run a new one) and,
            # deployed, the number of units its plan was made for (devices reconnect one by one)
            run_id = str(committed.get("run_id") or run_id)
            if catalogue is not None and isinstance(committed.get("n_units"), int):
                n_units = int(committed["n_units"])
        distributed = (flower_run_plan(config, arrays, n_nodes, deployed=catalogue is not None)
                       if config.dp == "user-distributed" else None)
        privacy = ServerPrivacy.open(config, n_units, run_dir, run_id or run_dir.name, distributed=distributed)
        # deployed devices number their users locally: a ledger row names the device too
        privacy.per_node_users = catalogue is not None
    strategy = make_strategy(config, n_nodes, n_items, privacy, deployed=catalogue is not None)
    strategy.optimizer.state = optimizer_state
    metrics_path = run_dir / METRICS_FILE
    try:
        _train_rounds(grid, config, run_dir, arrays, strategy, privacy, first_round, n_users, catalogue, split)
    finally:
        if privacy is not None:
            privacy.close()
    return read_jsonl(metrics_path)


NODE_WAIT_LOG_S = 10.0


def _wait_for_nodes(grid: Grid, minimum: int) -> int:
    """Deployed: block until ``minimum`` devices are connected; their number.

    Says so on stdout (which Flower copies into the log ``flwr run --stream`` writes, where
    ``fedrec server run`` reads it: :class:`fedrec.reporting.progress.RunFollower`) at once,
    whenever the count changes, every :data:`NODE_WAIT_LOG_S` seconds, and when enough
    devices are there."""
    said: tuple[int, float] | None = None  # (count, when) last said
    while (connected := len(list(grid.get_node_ids()))) < minimum:
        if said is None or said[0] != connected or time.monotonic() - said[1] >= NODE_WAIT_LOG_S:
            print(waiting_line(connected, minimum), flush=True)
            said = (connected, time.monotonic())
        time.sleep(0.5)
    print(connected_line(connected, minimum), flush=True)
    return connected


def _check_private_setup(config: RunConfig, run_dir: Path, first_round: int, n_nodes: int,
                         n_users: int | None, deployed: bool = False) -> None:
    """Refuse DP set-ups whose accounting would be wrong (raises ``ValueError``).

    Deployed devices keep their accountants in their encrypted state directories, so a
    record/user-local run can resume there; simulated nodes lose theirs with the run."""
    if config.dp == "off":
        return
    if config.dp == "record-distributed":
        from fedrec.core.federation.record_rounds import FLOWER_REFUSAL as RECORD_REFUSAL

        raise ValueError(RECORD_REFUSAL)
    if config.dp_groups > 0:
        raise ValueError("dp-groups (cyclic groups, noise correlated across rounds) runs in the round driver only "
                         "so far (fedrec.core.federation.driver); the Flower server samples by Poisson")
    if config.dp == "user-distributed":
        if config.executor == "cohort" and not deployed:
            raise ValueError(FLOWER_REFUSAL)
        if not deployed and n_users is not None and n_nodes != n_users:
            raise ValueError(f"dp user-distributed samples nodes as users: {n_nodes} nodes for {n_users} users "
                             "would encode several users together; run one node per user")
    if first_round > 1 and config.dp in ("record", "user-local") and not deployed:
        raise ValueError(f"cannot resume a dp {config.dp} run: each client's accountant lives in its node's "
                         "state, which a new run does not have; every ε would restart from zero")
    if first_round > 1 and not (run_dir / LEDGER_FILE).exists():
        raise ValueError(f"cannot resume {run_dir}: rounds 1..{first_round - 1} spent privacy but its "
                         f"{LEDGER_FILE} is missing")
    if (config.dp == "user-central" and config.executor != "cohort" and n_users is not None
            and n_nodes != n_users):
        raise ValueError(f"user-central samples nodes as users: {n_nodes} nodes for {n_users} users would "
                         "sample users together; use one node per user or --executor cohort")


def _plain_train(grid: Grid, config: RunConfig, arrays: dict[str, np.ndarray], strategy: FedOptOnUpdates,
                 privacy: ServerPrivacy | None, instructions: list[Message],
                 server_round: int) -> tuple[dict[str, np.ndarray], dict[str, Any], int, int]:
    """A round's training with the updates in the clear: (arrays, row, bytes down, bytes up);
    under a DP mode its ledger rows are committed before the row is written."""
    bytes_down = content_bytes(instructions)
    replies = send_and_receive(grid, instructions, config.round_timeout)
    bytes_up = content_bytes(replies)
    new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    if new_arrays is not None:
        arrays = arrays_to_numpy(new_arrays)
    row: dict[str, Any] = {
        "round": server_round,
        "clients": int(train_metrics[USERS_TRAINED]) if train_metrics and USERS_TRAINED in train_metrics else 0,
        "nodes": sum(1 for m in replies if m.has_content()),
        "nodes_asked": len(instructions),  # deployed: every device connected at the round's start
        # the slowest node's own compute time: train_seconds minus this is the round's overhead
        "node_seconds_max": _slowest_node_seconds(replies),
        "train_loss": float(train_metrics[TRAIN_LOSS]) if train_metrics and TRAIN_LOSS in train_metrics else None,
        "examples": int(train_metrics[NUM_EXAMPLES]) if train_metrics else 0,
    }
    if server_round in strategy.skipped_rounds:
        row["skipped"] = True  # fewer valid updates than min-valid-updates: model unchanged
    if privacy is not None:  # committed to privacy.db before this row is written
        privacy.record_round(server_round, replies)
    return arrays, row, bytes_down, bytes_up


def _secure_train(grid: Grid, config: RunConfig, arrays: dict[str, np.ndarray], strategy: FedOptOnUpdates,
                  run: RunPlan, instructions: list[Message],
                  server_round: int) -> tuple[dict[str, np.ndarray], dict[str, Any], int, int]:
    """A ``user-distributed`` round's training over SecAgg+ (:mod:`fedrec.server.secure_rounds`):
    (arrays, row, bytes down, bytes up). The row says ``skipped`` when nothing was released.
    Deployed, every connected device gets an instruction: ``min-nodes`` of them (the plan's
    ``n``, a uniform sample) take part."""
    if len(instructions) > run.n_clients:  # deployed: min-nodes of the connected devices, the plan's n
        instructions = secrets.SystemRandom().sample(instructions, run.n_clients)
    secure = run_secure_round(grid, instructions, run, server_round, rotation_seed(config.seed, server_round),
                              config.round_timeout, send_and_receive)
    if secure.mean is not None:
        names = sorted(arrays)
        arrays = strategy.optimizer.step(arrays, unflatten(secure.mean, arrays, names))
    elif secure.refused:
        logger.warning("round %d refused, the model is unchanged (the round is still accounted: the server saw "
                       "the sum): %s", server_round, secure.refused)
    else:
        logger.warning("round %d skipped, the model is unchanged: %s", server_round, secure.skipped)
    row: dict[str, Any] = {
        "round": server_round, "clients": len(secure.survivors), "nodes": len(secure.survivors),
        "nodes_asked": secure.sampled, "node_seconds_max": 0.0, "train_loss": None, "examples": 0,
        "secagg_bytes_down": secure.bytes_down, "secagg_bytes_up": secure.bytes_up,
        "secagg_seconds": {stage: round(seconds, 4) for stage, seconds in secure.seconds.items()},
        "secagg_dropped": {stage: len(nodes) for stage, nodes in secure.dropped.items() if nodes},
    }
    if secure.refused:
        row["sum_refused"] = secure.refused
    elif not secure.released:
        row.update({"skipped": True, "skip_reason": secure.skipped})
    return arrays, row, sum(secure.bytes_down.values()), sum(secure.bytes_up.values())


def _train_rounds(grid: Grid, config: RunConfig, run_dir: Path, arrays: dict[str, np.ndarray],
                  strategy: FedOptOnUpdates, privacy: ServerPrivacy | None, first_round: int,
                  n_users: int | None, catalogue: tuple[str, ...] | None = None, split: Any | None = None) -> None:
    metrics_path = run_dir / METRICS_FILE
    user_config = config.to_user_config()
    best = BestRound(config.model_selection, config.eval_k)
    selected: dict[str, np.ndarray] | None = None  # best-validation: the global part of the best round
    for server_round in range(first_round, config.rounds + 1):
        if privacy is not None and privacy.central and not privacy.central_round_allowed():
            logger.warning("round %d not run: it would take the server's ε past the budget %g",
                           server_round, config.epsilon)
            break
        started = time.perf_counter()
        if privacy is not None:
            privacy.begin_round()
        instructions = list(strategy.configure_train(
            server_round, numpy_to_arrays(arrays),
            round_config(config, n_users, server_round, "train", privacy, catalogue,
                         privacy.run_id if privacy is not None else "", split), grid))
        if privacy is not None and privacy.distributed is not None:
            arrays, row, bytes_down, bytes_up = _secure_train(grid, config, arrays, strategy, privacy.distributed,
                                                              instructions, server_round)
            privacy.record_distributed_round(server_round, released=not row.get("skipped"),
                                             refused=bool(row.get("sum_refused")))
        else:
            arrays, row, bytes_down, bytes_up = _plain_train(grid, config, arrays, strategy, privacy, instructions,
                                                             server_round)
        train_seconds = time.perf_counter() - started
        evaluate = server_round % config.eval_every == 0 or server_round == config.rounds
        if evaluate and privacy is not None and not privacy.evaluation_allowed():
            logger.warning("round %d not evaluated: the release would take the server's ε past the budget %g",
                           server_round, config.epsilon)
            evaluate = False
        if evaluate:
            record = numpy_to_arrays(arrays)
            eval_messages = list(strategy.configure_evaluate(
                server_round, record, round_config(config, n_users, server_round, "evaluate", catalogue=catalogue,
                             run_id=privacy.run_id if privacy is not None else ""), grid))
            bytes_down += content_bytes(eval_messages)
            eval_replies = send_and_receive(grid, eval_messages, config.round_timeout)
            bytes_up += content_bytes(eval_replies)
            eval_metrics = strategy.aggregate_evaluate(server_round, eval_replies)
            if eval_metrics is not None:
                counts = {key: int(value) for key, value in eval_metrics.items() if key in COUNT_KEYS}
                rates = family_of(config.model).finish(
                    {key: float(value) for key, value in eval_metrics.items() if key not in COUNT_KEYS})
                row.update({**rates, **counts})
                if best.selection != "last" and best.improves(row):
                    selected = {k: v.copy() for k, v in arrays.items()}
        row.update({"bytes_up": bytes_up, "bytes_down": bytes_down, "train_seconds": train_seconds,
                    "wall_seconds": time.perf_counter() - started})
        if privacy is None:
            append_jsonl(metrics_path, row)
        else:  # ledger rows, then the signed head, then the anchored metrics line
            row.update(privacy.round_fields())
            final = server_round == config.rounds or (privacy.central and not privacy.central_round_allowed())
            privacy.sign_round(server_round, final)
            shared, internal = split_row(row, config.eval_k)
            append_jsonl(run_dir / INTERNAL_FILE, internal)
            append_jsonl(metrics_path, shared)
        if server_round % config.checkpoint_every == 0 or server_round == config.rounds:
            save_checkpoint(run_dir, Checkpoint(server_round, arrays, strategy.optimizer.state, user_config))
    # model.npz: the reported model (best-validation: the selected round's global part)
    save_arrays(run_dir / MODEL_FILE, selected if selected is not None else arrays)
