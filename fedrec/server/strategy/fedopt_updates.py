"""FedAvg / FedAvg with a server learning rate / FedAdam, over clients' *updates*.

Algorithm (FedOpt, Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
clients reply with ``Δ_k = x_k − x`` for the global part and ``n_k`` examples; the
server forms ``Δ̄ = Σ n_k Δ_k / Σ n_k`` and steps ``x`` with a server optimiser
(:class:`fedrec.core.federation.aggregation.ServerOptimizer`).

Which one and why. Plain FedAvg (``η_s = 1``) averages every item row over *all*
sampled clients although only the few that hold the item (as a positive or a sampled
negative) moved it, so item rows learn about ``#touching / #sampled`` times slower
than in central training. Measured on ML-100K (MF, d=32, 100 rounds × 100 clients,
2 local epochs of SGD at lr 2, the same per-user seeds; pure-torch loop of
``fedrec/simulations/benchmarks/central_vs_federated.py``): HR@10 0.478 with plain
FedAvg, 0.624 with ``η_s = 20`` (0.612 at 30, 0.597 at 60 with 1 local epoch), against
0.638 for the central twin and 0.397 for ItemPop. So the default is ``fedavg-slr``:
it gives rows their step size back without using which rows a client touched, so it
stays valid when updates are dense and noised (DP). ``η_s`` applies to the tables the
model declares as item tables (``item_table_names``); dense layers, which every client
moves, keep ``η = 1`` — scaled by 20 they overshot (NeuMF with SGD clients diverged to
NaN, the MLP's ReLUs died on the synthetic data). Averaging each row over its
touching clients would also work but reveals the touched items, so we do not offer it.
FedAdam on the same updates stayed far below (0.35 after 50 rounds with Adam clients).

Sampling: ``configure_train`` samples ``clients-per-round`` nodes uniformly without
replacement (Flower's FedAvg sampling), except under ``user-central`` DP, where each
node is sampled independently with ``q = clients-per-round / n`` (Poisson), which is
what the accountant describes.

Evaluation under a DP mode: replies carry sums of private metric vectors (see
:mod:`fedrec.core.privacy.evaluation`), released by :class:`ServerPrivacy`, not averaged here.

Under a DP mode (``privacy`` given) every trained user weighs 1 and the aggregation is
:mod:`fedrec.core.privacy.aggregation` (plain mean of private updates, or the noised sum
of clipped ones over the expected count). Flower's DP wrappers
(``DifferentialPrivacyServerSideFixedClipping`` and friends, ``fixedclipping_mod``) do
not fit: they clip and noise the *model* a client returns and divide by the sampled
count, while our clients return updates of the global part only and our noise must be
divided by the expected count under Poisson sampling; they also keep no accountant.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import ERROR, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedrec.core.federation.aggregation import ServerOptimizer
from fedrec.core.federation.server_step import combine_replies
from fedrec.core.privacy.aggregation import central_noised_mean, exceeds_clip, private_mean
from fedrec.core.privacy.mechanisms import poisson_sample, secure_generator
from fedrec.protocol.array_check import array_problem
from fedrec.protocol.wire import ARRAYS, CONFIG, DP_WITHIN_CLIP, METRICS, NUM_EXAMPLES, PRIVACY, SAMPLED_USERS
from fedrec.server.privacy import ServerPrivacy, parse_releases

COUNT_METRICS_SUFFIX = ("users-trained", "users-evaluated", "users-reconstructed", DP_WITHIN_CLIP)


def aggregate_reply_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Weighted mean of rate metrics; sums of counts (``num-examples``, ``users-*``)."""
    totals: dict[str, float] = {}
    weighted: dict[str, float] = {}
    weight_sum = 0.0
    for record in records:
        metrics = record.metric_records[METRICS]
        weight = float(metrics[weighted_by_key])
        weight_sum += weight
        for key, value in metrics.items():
            if key == weighted_by_key or key in COUNT_METRICS_SUFFIX:
                totals[key] = totals.get(key, 0.0) + float(value)
            else:
                weighted[key] = weighted.get(key, 0.0) + weight * float(value)
    out = {key: int(value) for key, value in totals.items()}
    if weight_sum > 0:
        out.update({key: value / weight_sum for key, value in weighted.items()})
    return MetricRecord(out)


def arrays_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def numpy_to_arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(v)) for name, v in arrays.items()})


class FedOptOnUpdates(FedAvg):
    """Aggregates updates of the global part and applies a server optimiser."""

    def __init__(self, optimizer: ServerOptimizer, privacy: ServerPrivacy | None = None,
                 min_valid_updates: int = 1, releases_sum: bool = False, **fedavg_kwargs: object) -> None:
        super().__init__(
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=ARRAYS,
            configrecord_key=CONFIG,
            train_metrics_aggr_fn=aggregate_reply_metrics,
            evaluate_metrics_aggr_fn=aggregate_reply_metrics,
            **fedavg_kwargs,  # type: ignore[arg-type]
        )
        if min_valid_updates < 1:
            raise ValueError(f"min_valid_updates must be ≥ 1, got {min_valid_updates}")
        self.optimizer = optimizer
        self.privacy = privacy
        # the family's replies are sums to add (item-kNN), not means to average
        self.releases_sum = releases_sum
        self.min_valid_updates = min_valid_updates
        self.skipped_rounds: list[int] = []
        self._current: dict[str, np.ndarray] | None = None
        self.poisson_nodes = False  # set by the loop: user-central with one user per node
        self.eval_asked = 0  # users asked to evaluate this round (the divisor of a user-central release)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = arrays_to_numpy(arrays)
        if self.privacy is not None and self.poisson_nodes:
            nodes = poisson_sample(sorted(grid.get_node_ids()), self.privacy.rate)
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return self._construct_messages(record, nodes, MessageType.TRAIN)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's evaluation sampling; remembers how many users were asked: the sampled users
        (cohort) or one per node asked (per-client, deployed)."""
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        sampled = config.get(SAMPLED_USERS)
        self.eval_asked = len(sampled) if isinstance(sampled, list) else len(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Without DP, Flower's weighted mean of the replies' metrics. Under a DP mode the
        replies are sums of private metric vectors: :meth:`ServerPrivacy.aggregate_evaluation`
        releases their (user-central: noised) mean and writes the ledger rows."""
        if self.privacy is None:
            return super().aggregate_evaluate(server_round, replies)
        released = self.privacy.aggregate_evaluation(server_round, list(replies), self.eval_asked)
        return MetricRecord(released) if released is not None else None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._current is None:
            raise RuntimeError("aggregate_train called before configure_train")
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        usable = [m for m in valid if self._update_is_usable(m, server_round)]
        # Too few to average: the model stays as it is. Not under user-central DP, whose noised
        # sum is divided by the *expected* count so that the actual count stays hidden.
        central = self.privacy is not None and self.privacy.central
        if len(usable) < self.min_valid_updates and not central:
            log(WARNING, "round %d skipped: %d valid updates, at least %d needed (min-valid-updates)",
                server_round, len(usable), self.min_valid_updates)
            self.skipped_rounds.append(server_round)
            return None, None
        contents = [m.content for m in usable]
        weights = [float(c.metric_records[METRICS][NUM_EXAMPLES]) for c in contents]
        metrics = aggregate_reply_metrics(contents, NUM_EXAMPLES) if contents else None
        if self.privacy is not None:
            return self._aggregate_private(server_round, contents, weights, metrics)
        if not contents or sum(weights) <= 0:
            return None, metrics
        updates = [arrays_to_numpy(c.array_records[ARRAYS]) for c in contents]
        return self._step(server_round, combine_replies(updates, weights, self.releases_sum), metrics)

    def _aggregate_private(self, server_round: int, contents: list[RecordDict], weights: list[float],
                           metrics: MetricRecord | None) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Mean of private updates, or (user-central) the noised sum over the expected count."""
        assert self.privacy is not None and self._current is not None
        updates = [arrays_to_numpy(c.array_records[ARRAYS]) for c in contents]
        if self.privacy.central:  # noise is released even when nobody was sampled
            expected = self.privacy.expected_units
            if self.releases_sum:  # the replies are sums: add them, noise the sum, keep it a sum
                mean = central_noised_mean(updates, [1.0] * len(updates), self._current,
                                           self.privacy.update_noise_multiplier, self.privacy.round_clip, 1.0,
                                           secure_generator())
            else:
                mean = central_noised_mean(updates, weights, self._current, self.privacy.update_noise_multiplier,
                                           self.privacy.round_clip, expected, secure_generator())
            within = sum(float(c.metric_records[METRICS].get(DP_WITHIN_CLIP, 0)) for c in contents)
            self.privacy.adapt_clip(within - sum(weights) / 2)
        elif sum(weights) > 0:
            mean = (combine_replies(updates, weights, True) if self.releases_sum
                    else private_mean(updates, weights, self._current))
        else:
            return None, metrics
        return self._step(server_round, mean, metrics)

    def _step(self, server_round: int, mean: dict[str, np.ndarray],
              metrics: MetricRecord | None) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self._current is not None
        new_global = self.optimizer.step(self._current, mean)
        diverged = [name for name, value in new_global.items() if not np.all(np.isfinite(value))]
        if diverged:  # finite updates times the server learning rate overflowed
            log(ERROR, "round %d: the aggregated model is not finite in %s; keeping the previous "
                "model (lower the learning rates)", server_round, diverged)
            return None, metrics
        return numpy_to_arrays(new_global), metrics

    def _update_is_usable(self, message: Message, server_round: int) -> bool:
        """Drop (with a logged reason) updates whose keys, shapes or values are unusable."""
        assert self._current is not None
        node = message.metadata.src_node_id
        record = message.content.array_records.get(ARRAYS)
        metrics = message.content.metric_records.get(METRICS)
        reason = None
        weight = metrics.get(NUM_EXAMPLES) if metrics is not None else None
        if not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            reason = f"{NUM_EXAMPLES} is missing or not a finite number ≥ 0 ({weight!r})"
        elif record is None:
            reason = "no update arrays"
        else:
            reason = array_problem(arrays_to_numpy(record), {k: v.shape for k, v in self._current.items()},
                                   dtype=np.float32)
        if reason is None and self.privacy is not None:
            reason = self._privacy_problem(message, float(weight))
        if reason:
            log(WARNING, "round %d: dropped the update of node %d: %s", server_round, node, reason)
            return False
        return True

    def _privacy_problem(self, message: Message, weight: float) -> str | None:
        """Why a DP reply cannot be used: no privacy report, or an update longer than clipping allows."""
        assert self.privacy is not None
        if self.privacy.central:
            update = arrays_to_numpy(message.content.array_records[ARRAYS])
            if self.releases_sum and weight > 0:  # a sum of `weight` users' shares: its mean must fit C
                update = {name: value / weight for name, value in update.items()}
            if exceeds_clip(update, weight, self.privacy.round_clip):
                return f"its update is longer than {weight:g} users clipped to C={self.privacy.round_clip:g}"
            within = message.content.metric_records[METRICS].get(DP_WITHIN_CLIP, 0)
            if not isinstance(within, (int, float)) or not 0 <= within <= weight:
                return f"{DP_WITHIN_CLIP}={within!r} is not a count between 0 and its {weight:g} users"
            return None
        record = message.content.config_records.get(PRIVACY)
        if record is None and weight == 0:
            return None  # none of the node's users was due to train
        if record is None:
            return "no privacy report (per-user σ, q, steps, ε) with a DP update"
        try:
            releases = parse_releases(record)
        except ValueError as err:
            return str(err)
        trained = sum(1 for release in releases if not release[1])
        if trained != weight:
            return f"its privacy report lists {trained} users that trained, its weight says {weight:g}"
        return None
