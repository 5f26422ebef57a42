"""The DP round of the apps, in one process: client mechanisms, accountants, server noise.

The round driver (:mod:`fedrec.core.federation.driver`) hands its rounds here under a DP
mode. Clients run :func:`fedrec.core.privacy.client_round.private_train_users` (the
family's local round plus the mode's mechanism and the user's budget); the server
averages (``record``, ``user-local``) or, under ``user-central``, samples users by
Poisson with rate ``q``, adds ``N(0, σ²C²)`` to the sum of clipped updates and divides by
the expected count ``q·n`` (:func:`fedrec.core.privacy.aggregation.central_noised_mean`),
keeping the server's accountant. Each row reports the round's largest ε
(``epsilon_max``: the server's for ``user-central``, the largest client's otherwise) and
the refusals; nothing is written to a ledger. Evaluations are counted as the apps count
them: one release ``(σ_e, 1, 1)`` per evaluated user (client modes) or per evaluation
round (``user-central``).

Under ``user-central`` with ``dp-groups`` (:mod:`fedrec.core.privacy.correlated_rounds`)
round ``t`` trains cyclic group ``(t − 1) mod g`` and the server adds noise correlated
across rounds (``dp-mechanism``); one GDP accountant covers the training and evaluation
releases, and each row carries the plan (``correlated``).

Under ``user-distributed`` (:mod:`fedrec.core.privacy.distributed_mode`) the round emulates
secure aggregation's arithmetic: ``clients-per-round`` users are sampled as without DP,
each clips the global part of its update and encodes it with its own discrete Gaussian
noise share (a sampled user with nothing to train encodes the zero vector: its share
still counts), the server adds the integer vectors mod ``2^bits`` (the only thing it
would see), decodes and divides by the number sampled. The server's zCDP accountant
gives ``epsilon_max``; the row carries the mechanism's parameters (``ddg``).

Under ``record-distributed`` the rounds are :class:`fedrec.core.federation.record_rounds.RecordRounds`'
(one DP gradient step over every record of the sampled users, emulated secure aggregation).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.base import ModelFamily
from fedrec.core.federation.server_step import reply_update
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.core.privacy.adaptive_clip import AdaptiveClip
from fedrec.core.privacy.aggregation import central_noised_mean
from fedrec.core.privacy.client_round import budgeted, private_train_users
from fedrec.core.privacy.correlated_ledger import ledger_entries as correlated_entries
from fedrec.core.privacy.correlated_noise import NoiseStream
from fedrec.core.privacy.correlated_rounds import CorrelatedPlan, plan_correlated
from fedrec.core.privacy.distributed_mode import (
    RunPlan,
    SumOutOfBound,
    checked_mean,
    encode_updates,
    flatten,
    ledger_entries,
    plan_for_split,
    rotation_seed,
    unflatten,
)
from fedrec.core.privacy.mechanisms import clip_update, poisson_sample, secure_generator
from fedrec.core.privacy.quantisation import reduce_modulo
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.core.training.implicit import needs_evaluation_negatives


class PrivateRounds:
    """Per-user and server accountants across the rounds of one private run."""

    def __init__(self, config: RunConfig, family: ModelFamily, n_users: int) -> None:
        self.config = config
        self.family = family
        self.n_users = n_users
        self.histories: dict[int, list[Step]] = {}
        self.server_history: list[Step] = []
        self.adaptive = None
        self.distributed: RunPlan | None = None
        self.rounds_done = self.evaluations_done = 0
        # user-distributed, for tests: called with (client's flat update, its encoded vector)
        self.observe_encoding: Callable[[np.ndarray, np.ndarray], None] | None = None
        self.last_modular_sum: np.ndarray | None = None
        # user-distributed: clients encoded together by the emulation (rows independent; only
        # the cost changes), and the time the encodings took (clients' work, for the benchmark)
        self.encode_batch = 32
        self.encode_seconds = 0.0
        self.encoded_clients = 0
        # user-distributed and dp-groups: the server's ledger rows (train and evaluation releases), in order
        self.ledger_entries: list[Any] = []
        self.run_id = f"driver-{config.seed}"
        # user-central with dp-groups: the plan and the server's noise stream (secret state)
        self.correlated: CorrelatedPlan | None = None
        # record-distributed: the run's plan and rounds (fedrec.core.federation.record_rounds)
        self.records: Any = None
        self.noise_stream: NoiseStream | None = None
        if config.dp == "user-central" and config.adaptive_clip:
            self.adaptive = AdaptiveClip.for_round_size(config.clip, config.clip_quantile,
                                                        plan.central_rate(config, n_users) * n_users)

    def start(self, split: Any) -> None:
        """Plan what needs the data before round 1 (``user-distributed``: γ and σ; refuses
        a plan that cannot fit, with the reason)."""
        if self.config.dp == "user-distributed":
            self.distributed = plan_for_split(self.config, split)
        if self.config.dp == "user-central" and self.config.dp_groups > 0:
            self.correlated = plan_correlated(self.config, self.n_users)
        if self.config.dp == "record-distributed":
            from fedrec.core.federation.record_rounds import RecordRounds

            self.records = RecordRounds(self.config, self.family, split,
                                        self.family.initial_global(self.config, split))

    def count_evaluation(self, split: Any) -> float:
        """Add one evaluation release to every evaluated user's (or the server's) history,
        under the apps' budget rule (:func:`~fedrec.core.privacy.client_round.budgeted`: a
        release that would exceed the budget is refused); the largest ε after it."""
        if self.records is not None:
            return self.records.count_evaluation()
        if self.distributed is not None:  # zCDP: ρ of one Gaussian release added to the server's
            self.evaluations_done += 1
            self.ledger_entries += ledger_entries(self.distributed, self.run_id, self.rounds_done, self.rounds_done,
                                                  self.evaluations_done, "evaluate",
                                                  plan.eval_sensitivity(self.config.evaluation))
            return self.distributed.epsilon(self.rounds_done, self.evaluations_done)
        if self.correlated is not None:  # GDP: μ² grows by 1/σ_e² a release
            if self.correlated.epsilon(self.rounds_done, self.evaluations_done + 1) <= self.config.epsilon * (1 + 1e-9):
                self.evaluations_done += 1
                self.ledger_entries += correlated_entries(
                    self.correlated, self.run_id, self.rounds_done, self.rounds_done, self.evaluations_done,
                    plan.budget(self.config.privacy), "evaluate", plan.eval_sensitivity(self.config.evaluation))
            return self.correlated.epsilon(self.rounds_done, self.evaluations_done)
        step = plan.evaluation_step(self.config, self.n_users)
        if self.config.dp == "user-central":
            _, after = budgeted(self.config, 0, self.server_history, step)
            self.server_history = after if after is not None else self.server_history
            return epsilon(self.server_history, self.config.delta, self.config.accountant)
        spent = 0.0
        for user in self.family.evaluated_users(split):
            release, after = budgeted(self.config, user, self.histories.get(user, []), step)
            if after is not None:
                self.histories[user] = after
            spent = max(spent, release.epsilon)
        return spent

    def round_allowed(self) -> bool:
        """Whether the server's next ``user-central`` round fits the budget (``record-distributed``:
        the next round is in the plan; always, otherwise)."""
        if self.records is not None:
            return self.records.round_allowed()
        if self.config.dp != "user-central" or plan.budget(self.config.privacy) is None:
            return True
        if self.correlated is not None:  # planned for config.rounds rounds: never past them
            return self.rounds_done < self.correlated.noise.participation.rounds
        step = (plan.central_noise(self.config, self.n_users), plan.central_rate(self.config, self.n_users), 1)
        spent = epsilon([*self.server_history, step], self.config.delta, self.config.accountant)
        return spent <= self.config.epsilon * (1 + 1e-9)

    def round(self, split: Any, arrays: Arrays, local: dict[int, Arrays], optimizer: Any,
              server_round: int) -> tuple[Arrays, dict[str, Any]]:
        """One private round: the new global arrays and the round's row."""
        from fedrec.core.federation.driver import round_users

        config = self.config
        if config.dp == "user-distributed":
            return self._distributed_round(split, arrays, local, optimizer, server_round)
        if config.dp == "record-distributed":
            if self.records is None:
                self.start(split)
            assert self.records is not None
            return self.records.round(split, arrays, local, optimizer, server_round)
        if self.correlated is not None:
            return self._correlated_round(split, arrays, local, optimizer, server_round)
        if config.dp == "user-central":
            users = poisson_sample(list(range(self.n_users)), plan.central_rate(config, self.n_users))
        else:
            users = round_users(self.family, split, config, server_round)
        if self.adaptive is not None:
            config = replace(config, clip=self.adaptive.clip)
        result, releases, histories, within_clip = private_train_users(
            config, arrays, [local.get(u) for u in users],
            [self.family.user_data(split, u, for_evaluation=needs_evaluation_negatives(config.train_negatives))
             for u in users],
            server_round, [self.histories.get(u, []) for u in users])
        local.update((u, v) for u, v in zip(result.users, result.locals) if v)
        if config.dp != "user-central":
            self.histories.update((u, h) for u, h in zip(users, histories) if h)
        if config.dp == "user-central":
            sums = [result.update_sum] if result.weight > 0 else []
            sigma, rate = plan.central_noise(config, self.n_users), plan.central_rate(config, self.n_users)
            update_sigma = self.adaptive.update_noise_multiplier(sigma) if self.adaptive is not None else sigma
            expected = rate * self.n_users
            mean = central_noised_mean(sums, [1.0] * len(sums), arrays, update_sigma, config.clip, expected,
                                       secure_generator())
            if self.family.releases_sum:  # the noised sum itself
                mean = {k: (v.astype(np.float64) * expected).astype(np.float32) for k, v in mean.items()}
            if self.adaptive is not None:
                self.adaptive.step(within_clip - result.weight / 2, expected, secure_generator())
            self.server_history.append((sigma, rate, 1))
            eps = epsilon(self.server_history, config.delta, config.accountant)
        else:
            mean = reply_update(self.family, result.update_sum, result.weight) if result.weight > 0 else None
            eps = max((r.epsilon for r in releases), default=0.0)
        if mean is not None:
            arrays = optimizer.step(arrays, mean)
        refused = sum(r.refused for r in releases)
        return arrays, {"round": server_round, "clients": len(result.users), "dp_refused": refused,
                        "epsilon_max": eps, "train_loss": None, "clip": config.clip}

    def _correlated_round(self, split: Any, arrays: Arrays, local: dict[int, Arrays], optimizer: Any,
                          server_round: int) -> tuple[Arrays, dict[str, Any]]:
        """One ``dp-groups`` round: the round's group trains and clips, the server adds ``w_t``
        to the sum, divides by ``n/g`` and steps."""
        config, correlated = self.config, self.correlated
        assert correlated is not None
        users = correlated.users(server_round)
        result, releases, _, _ = private_train_users(
            config, arrays, [local.get(u) for u in users],
            [self.family.user_data(split, u, for_evaluation=needs_evaluation_negatives(config.train_negatives))
             for u in users],
            server_round, [[] for _ in users])
        local.update((u, v) for u, v in zip(result.users, result.locals) if v)
        names = sorted(arrays)
        total = (flatten(result.update_sum, names) if result.weight > 0
                 else np.zeros(sum(np.size(arrays[n]) for n in names)))
        if self.noise_stream is None:
            self.noise_stream = NoiseStream(correlated.noise, total.size, secure_generator())
        noised = total + self.noise_stream.next()
        if not self.family.releases_sum:  # a family that releases sums steps with the noised sum itself
            noised = noised / correlated.divisor
        arrays = optimizer.step(arrays, unflatten(noised, arrays, names))
        self.rounds_done += 1
        eps = correlated.epsilon(self.rounds_done, self.evaluations_done)
        self.ledger_entries += correlated_entries(correlated, self.run_id, server_round, self.rounds_done,
                                                  self.evaluations_done, plan.budget(config.privacy))
        return arrays, {"round": server_round, "clients": len(result.users),
                        "dp_refused": sum(r.refused for r in releases), "epsilon_max": eps, "train_loss": None,
                        "clip": config.clip, "correlated": correlated.parameters()}

    def _distributed_round(self, split: Any, arrays: Arrays, local: dict[int, Arrays], optimizer: Any,
                           server_round: int) -> tuple[Arrays, dict[str, Any]]:
        """One ``user-distributed`` round: encode on each client, sum mod 2^bits, decode, step."""
        from fedrec.core.federation.driver import round_users

        config = self.config
        if self.distributed is None:
            self.start(split)
        run = self.distributed
        assert run is not None
        users = round_users(self.family, split, config, server_round)
        if len(users) < run.n_min:
            raise ValueError(f"round {server_round} sampled {len(users)} clients, fewer than the n_min = {run.n_min} "
                             "whose noise the accountant counts: the sum would carry too little noise")
        names = sorted(arrays)
        seed = rotation_seed(config.seed, server_round)
        bits = run.quantiser.bits
        total = np.zeros(run.quantiser.encoded_dim, dtype=np.int64)  # the running modular sum
        pending: list[np.ndarray] = []  # clipped updates waiting for the next batch's encoding

        def encode_pending() -> None:
            # Each client encodes its own update with its own SecureRandom (fresh OS key); the
            # emulation does k clients' arithmetic at once (rows independent, the same output
            # as one at a time) and keeps only the running modular sum, as the server would.
            nonlocal total
            if not pending:
                return
            started = time.perf_counter()
            flats = np.stack(pending)
            pending.clear()
            encoded = encode_updates(flats, run, seed, [SecureRandom() for _ in range(len(flats))])
            if self.observe_encoding is not None:
                for flat, vector in zip(flats, encoded):
                    self.observe_encoding(flat, vector)
            total = reduce_modulo(total + encoded.sum(axis=0), bits)
            self.encode_seconds += time.perf_counter() - started
            self.encoded_clients += len(flats)

        def add(flat: np.ndarray) -> None:
            pending.append(flat)
            if len(pending) >= self.encode_batch:
                encode_pending()

        def client(update: Arrays) -> Arrays:  # runs on the client: only the encoding leaves
            clipped, _ = clip_update(update, config.clip)
            add(flatten(clipped, names))
            return {name: np.zeros_like(value) for name, value in update.items()}

        result = self.family.train_users(
            config, arrays, [local.get(u) for u in users],
            [self.family.user_data(split, u, for_evaluation=needs_evaluation_negatives(config.train_negatives))
             for u in users], server_round, update_transform=client)
        local.update((u, v) for u, v in zip(result.users, result.locals) if v)
        for _ in range(len(users) - int(result.weight)):  # sampled, nothing to train: the noise share alone
            add(np.zeros(run.quantiser.dim, dtype=np.float64))
        encode_pending()
        self.last_modular_sum = total
        refused = ""
        try:  # the server's check: no sum outside what honest clients can make (model unchanged if so)
            mean = checked_mean(total, run, seed, len(users))
        except SumOutOfBound as error:
            refused = str(error)
            warnings.warn(f"round {server_round} refused, the model is unchanged (the round is still accounted: "
                          f"the server saw the sum): {refused}", RuntimeWarning, stacklevel=2)
        if not refused:
            arrays = optimizer.step(arrays, unflatten(mean, arrays, names))
        self.rounds_done += 1  # refused or not, the sum was released to the server
        eps = run.epsilon(self.rounds_done, self.evaluations_done)
        self.ledger_entries += ledger_entries(run, self.run_id, server_round, self.rounds_done, self.evaluations_done)
        return arrays, {"round": server_round, "clients": len(users), "dp_refused": int(bool(refused)),
                        "epsilon_max": eps, "train_loss": None, "clip": config.clip, "ddg": run.parameters(),
                        "sum_refused": refused}
