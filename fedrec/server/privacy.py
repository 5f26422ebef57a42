"""The server's side of a DP run: central noise and accounting, the ledger, refusals.

* ``user-central``: the server samples units by Poisson (each independently with
  ``q = clients-per-round / n``, from OS entropy, so nobody can replay who was
  sampled), adds the noise to the sum of clipped updates
  (:mod:`fedrec.core.privacy.aggregation`) and keeps the accountant: ``(σ, q, 1)``
  per round, one ledger row ``who = server`` per round. A round that would take ε past
  the budget is not run.
* ``record`` / ``user-local``: clients account for themselves and report, per user,
  ``(σ, q, steps, ε)`` or a refusal; the server writes one ledger row per user that
  trained and counts the refusals.

Rows are appended (and committed) as soon as a round is aggregated, before its line in
``metrics.jsonl``; that line then carries the ledger's size and head hash as an
anchor, so deleting the newest rows is detectable too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import ConfigRecord, Message

from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.core.privacy.adaptive_clip import AdaptiveClip
from fedrec.core.privacy.mechanisms import secure_generator
from fedrec.core.privacy.ledger import LEDGER_FILE, LedgerEntry, PrivacyLedger, anchor, read_ledger
from fedrec.core.run_config import RunConfig
from fedrec.core.wire import (
    METRICS,
    NUM_EXAMPLES,
    PRIVACY,
    PRIVACY_EPSILON,
    PRIVACY_NOISE,
    PRIVACY_PRIOR_NOISE,
    PRIVACY_PRIOR_RATE,
    PRIVACY_PRIOR_RUNS,
    PRIVACY_PRIOR_STEPS,
    PRIVACY_RATE,
    PRIVACY_REFUSED,
    PRIVACY_STEPS,
    PRIVACY_USERS,
)

logger = logging.getLogger("fedrec.server")
SERVER = "server"


@dataclass
class ServerPrivacy:
    """Ledger, server accountant (user-central) and refusal counts of a DP run."""

    config: RunConfig
    n_units: int
    run_id: str
    ledger: PrivacyLedger
    history: list[Step] = field(default_factory=list)
    adaptive: AdaptiveClip | None = None
    round_clip: float = 0.0  # the clip norm of the round being run (adaptive clipping moves it)
    per_node_users: bool = False  # deployed: user ids are a device's own, so rows name the device too
    _steps_by_who: dict[str, dict[tuple[float, float], int]] | None = None

    @classmethod
    def open(cls, config: RunConfig, n_units: int, run_dir: Path, run_id: str) -> "ServerPrivacy":
        """Open (or create) ``privacy.db``; a resumed run reloads the server's history
        (and, with adaptive clipping, the last clip norm) from it."""
        path = run_dir / LEDGER_FILE
        history: list[Step] = []
        clip = config.clip
        if config.resume and path.exists():
            server_rows = [r for r in read_ledger(path) if r.who == SERVER]
            history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in server_rows]
            clip = server_rows[-1].clip_norm if server_rows else clip
        privacy = cls(config, n_units, run_id, PrivacyLedger(path), history, round_clip=clip)
        if config.adaptive_clip:
            privacy.adaptive = AdaptiveClip.for_round_size(clip, config.clip_quantile, privacy.expected_units)
            privacy.adaptive.update_noise_multiplier(privacy.noise_multiplier)  # refuse 2σ_b ≤ σ now
        return privacy

    @property
    def clip(self) -> float:
        """The clip norm clients must apply this round."""
        return self.adaptive.clip if self.adaptive is not None else self.config.clip

    @property
    def update_noise_multiplier(self) -> float:
        """σ on the update sum: σ itself, or σ_Δ when adaptive clipping spends part of σ on the bits."""
        sigma = self.noise_multiplier
        return self.adaptive.update_noise_multiplier(sigma) if self.adaptive is not None else sigma

    def begin_round(self) -> None:
        self.round_clip = self.clip

    def adapt_clip(self, centred_bits: float) -> None:
        """Adaptive clipping's step from ``Σ(b − ½)`` of this round's users (no-op otherwise)."""
        if self.adaptive is not None:
            self.adaptive.step(centred_bits, self.expected_units, secure_generator())

    # --- user-central -------------------------------------------------------------
    @property
    def central(self) -> bool:
        return self.config.dp == "user-central"

    @property
    def rate(self) -> float:
        return plan.central_rate(self.config, self.n_units)

    @property
    def noise_multiplier(self) -> float:
        return plan.central_noise(self.config, self.n_units)

    @property
    def expected_units(self) -> float:
        return self.rate * self.n_units

    def central_round_allowed(self) -> bool:
        """False when one more round would take the server's ε past the budget."""
        budget = plan.budget(self.config)
        if budget is None:
            return True
        after = epsilon([*self.history, (self.noise_multiplier, self.rate, 1)], self.config.delta,
                        self.config.accountant)
        return after <= budget * (1 + 1e-9)

    # --- ledger ---------------------------------------------------------------------
    def record_round(self, server_round: int, replies: list[Message]) -> dict[str, object]:
        """Write this round's ledger rows; return the metrics-row fields (anchor, refusals)."""
        entries: list[LedgerEntry] = []
        refused = 0
        budget = plan.budget(self.config)
        if self.central:
            self.history.append((self.noise_multiplier, self.rate, 1))
            entries.append(self._entry(server_round, SERVER, self.noise_multiplier, self.rate, 1,
                                       epsilon(self.history, self.config.delta, self.config.accountant), budget))
        else:
            for message in replies:
                if not message.has_content():
                    continue
                record = message.content.config_records.get(PRIVACY)
                if record is None and not message.content.metric_records.get(METRICS, {}).get(NUM_EXAMPLES):
                    continue  # a node none of whose users was due to train this round
                if record is None:
                    logger.warning("round %d: node %d replied without its privacy report", server_round,
                                   message.metadata.src_node_id)
                    continue
                try:
                    releases = parse_releases(record)
                except ValueError as err:  # the strategy dropped this update for the same reason
                    logger.warning("round %d: node %d: %s", server_round, message.metadata.src_node_id, err)
                    continue
                try:
                    priors = parse_priors(record, len(releases))
                except ValueError as err:
                    logger.warning("round %d: node %d: %s", server_round, message.metadata.src_node_id, err)
                    priors = None
                for index, release in enumerate(releases):
                    user, was_refused, sigma, rate, steps, eps = release
                    if was_refused:
                        refused += 1
                        logger.warning("round %d: client %d refused to train: its next round would exceed "
                                       "ε=%g (spent %.4g)", server_round, user, budget or 0.0, eps)
                        continue
                    who = (f"client:node-{message.metadata.src_node_id}/user-{user}" if self.per_node_users
                           else f"client:{user}")
                    if priors is not None:
                        entries.extend(self._carried(server_round, who, priors[index], budget))
                    entries.append(self._entry(server_round, who, sigma, rate, steps, eps, budget))
                    self._ledgered(who)[(sigma, rate)] = self._ledgered(who).get((sigma, rate), 0) + steps
        if entries:
            self.ledger.append(entries)
        return {**anchor(self.ledger.head()), "dp_refused": refused,
                "epsilon_max": max((e.epsilon for e in entries), default=None)}

    def _ledgered(self, who: str) -> dict[tuple[float, float], int]:
        """Steps per (σ, q) this run's ledger holds for ``who`` (read back from privacy.db on resume)."""
        if self._steps_by_who is None:
            self._steps_by_who = {}
            for row in read_ledger(self.ledger.path) if self.ledger.path.exists() else []:
                if row.who != SERVER:
                    held = self._steps_by_who.setdefault(row.who, {})
                    key = (row.noise_multiplier, row.sample_rate)
                    held[key] = held.get(key, 0) + row.steps
        return self._steps_by_who.setdefault(who, {})

    def _carried(self, server_round: int, who: str, prior: list[Step], budget: float | None) -> list[LedgerEntry]:
        """Rows for releases in a device's history that this run's ledger lacks.

        A deployed device's accountant outlives runs and server restarts, so a user's
        history can hold releases the ledger never saw: an earlier run, or a round whose
        updates the server received but whose rows it never committed (it was killed).
        They did happen, so they are written as rows before this round's row; then the
        rows of ``who`` compose to the ε its device reports. Logged as a warning.
        """
        held = self._ledgered(who)
        wanted: dict[tuple[float, float], int] = {}
        for sigma, rate, steps in prior:
            wanted[(sigma, rate)] = wanted.get((sigma, rate), 0) + steps
        rows = []
        for (sigma, rate), steps in wanted.items():
            missing = steps - held.get((sigma, rate), 0)
            if missing <= 0:
                continue
            held[(sigma, rate)] = steps
            composed = [(s, q, n) for (s, q), n in held.items() if n > 0]
            rows.append(self._entry(server_round, who, sigma, rate, missing,
                                    epsilon(composed, self.config.delta, self.config.accountant), budget))
            logger.warning("round %d: %s's device reports %d earlier release(s) (σ=%g, q=%g) this run's ledger "
                           "lacks (an earlier run, or a round the server lost); recorded before this round's row",
                           server_round, who, missing, sigma, rate)
        return rows

    def _entry(self, server_round: int, who: str, sigma: float, rate: float, steps: int, eps: float,
               budget: float | None) -> LedgerEntry:
        return LedgerEntry(run_id=self.run_id, round=server_round, unit=plan.UNIT[self.config.dp],
                           mode=self.config.dp, who=who, noise_multiplier=sigma, sample_rate=rate, steps=steps,
                           clip_norm=self.round_clip, delta=self.config.delta, accountant=self.config.accountant,
                           epsilon=eps, budget=budget)

    def close(self) -> None:
        self.ledger.close()


def parse_priors(record: ConfigRecord, n_releases: int) -> list[list[Step]] | None:
    """Each release's prior history from a deployed device's report (None when not reported)."""
    runs = record.get(PRIVACY_PRIOR_RUNS)
    if runs is None:
        return None
    if not isinstance(runs, list) or len(runs) != n_releases or any(int(n) < 0 for n in runs):
        raise ValueError(f"malformed privacy report: {PRIVACY_PRIOR_RUNS} must list one count per release")
    columns = [record.get(k, []) for k in (PRIVACY_PRIOR_NOISE, PRIVACY_PRIOR_RATE, PRIVACY_PRIOR_STEPS)]
    if any(not isinstance(c, list) or len(c) != sum(int(n) for n in runs) for c in columns):
        raise ValueError("malformed privacy report: prior histories do not match their counts")
    steps = [(float(s), float(q), int(n)) for s, q, n in zip(*columns)]
    if any(not (s >= 0 and 0 < q <= 1 and n > 0) for s, q, n in steps):
        raise ValueError("malformed privacy report: a prior run has σ < 0, q outside (0, 1] or no steps")
    out, start = [], 0
    for n in runs:
        out.append(steps[start:start + int(n)])
        start += int(n)
    return out


def parse_releases(record: ConfigRecord) -> list[tuple[int, bool, float, float, int, float]]:
    keys = (PRIVACY_USERS, PRIVACY_REFUSED, PRIVACY_NOISE, PRIVACY_RATE, PRIVACY_STEPS, PRIVACY_EPSILON)
    columns = [record.get(k) for k in keys]
    if any(not isinstance(c, list) for c in columns) or len({len(c) for c in columns}) != 1:
        raise ValueError("malformed privacy report: expected equal-length lists " + ", ".join(keys))
    return [(int(u), bool(r), float(s), float(q), int(n), float(e)) for u, r, s, q, n, e in zip(*columns)]
