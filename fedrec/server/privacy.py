"""The server's side of a DP run: central noise and accounting, the ledger, refusals.

* ``user-central``: the server samples units by Poisson (each independently with
  ``q = clients-per-round / n``, from a ChaCha20 stream keyed by the OS, so nobody
  can replay who was sampled), adds the noise to the sum of clipped updates
  (:mod:`fedrec.core.privacy.aggregation`) and keeps the accountant: ``(σ, q, 1)``
  per round, one ledger row ``who = server`` per round. A round that would take ε past
  the budget is not run.
* ``record`` / ``user-local``: clients account for themselves and report, per user,
  ``(σ, q, steps, ε)`` or a refusal; the server writes one ledger row per user that
  trained and counts the refusals.

Evaluation releases (:mod:`fedrec.core.privacy.evaluation`) are accounted the same way:
``user-central``: the server noises the sum of the nodes' exact metric vectors, divides by
the number of users asked, appends ``(σ_e, 1, 1)`` to its history and one ``release =
evaluate`` row (a round whose evaluation would exceed the budget is not evaluated);
``record`` / ``user-local``: each user's device noised and accounted its own vector, and
the server writes one ``evaluate`` row per user from the reply's report.

``user-distributed`` (over SecAgg+, :mod:`fedrec.server.secure_rounds`): the server keeps
the DDG accountant of the run's plan (:class:`~fedrec.core.privacy.distributed_mode.RunPlan`):
after each round whose sum was released, one ``who = server`` train row
(:func:`~fedrec.core.privacy.distributed_mode.ledger_entries`: accountant ``ddg-zcdp``,
relation zero-out, the DDG parameters in ``mechanism``); a skipped round (too few
survivors) releases nothing and writes no row. Each evaluation round's release — the mean
of the users' vectors, each noised on its device with the plan's ``σ_e`` — is one server
``evaluate`` row, composed in zCDP. ``privacy_plan.json`` then describes the DDG plan
(:func:`distributed_plan_document`).

Rows are appended (and committed) as soon as a round is aggregated, before its line in
``metrics.jsonl``; that line then carries the ledger's size and head hash as an
anchor, so deleting the newest rows is detectable too. After each round's rows the
server appends a signed head (:meth:`PrivacyLedger.sign_head`, Ed25519 with the key at
:func:`fedrec.core.privacy.signing.default_signing_key_path`, public key written to
``RUN/ledger-signing.pub``) over the head, the round, whether it is the last, and the
sha256 of ``privacy_plan.json`` (written at the start of the run:
:func:`fedrec.core.privacy.plan.privacy_plan` plus the run id; a resumed run must find
the same file) and of ``run_config.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message

from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.core.privacy.adaptive_clip import AdaptiveClip
from fedrec.core.privacy.distributed_mode import RunPlan, ledger_entries
from fedrec.core.privacy.evaluation import central_release, local_release
from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger, read_ledger
from fedrec.core.privacy.ledger_chain import anchor
from fedrec.core.privacy.ledger_rows import DISTRIBUTED_ACCOUNTANT, LedgerEntry
from fedrec.core.privacy.mechanisms import secure_generator
from fedrec.core.privacy.signing import LedgerSigner, default_signing_key_path, write_public_key
from fedrec.protocol.wire import (
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
    PRIVACY_RELEASE,
    PRIVACY_SIGNATURES,
    PRIVACY_STEPS,
    PRIVACY_USERS,
    RELEASE_EVALUATE,
    RELEASE_TRAIN,
    USERS_EVALUATED,
)

logger = logging.getLogger("fedrec.server")
SERVER = "server"
PLAN_FILE = "privacy_plan.json"
CONFIG_FILE = "run_config.json"  # written by the simulation CLI (fedrec.simulations.simulate.CONFIG_FILE)
PUBLIC_KEY_FILE = "ledger-signing.pub"


def distributed_plan_document(config: RunConfig, run: RunPlan, n_units: int) -> dict:
    """``privacy_plan.json`` of a ``user-distributed`` run: the numbers its ledger rows carry
    (train: ``√n_min·σ_share / B`` over sensitivity ``B``, grid units, and the DDG
    parameters; evaluate: ``σ_e`` over ``√K``), the accountant and the planned ε."""
    bound = run.quantiser.norm_bound
    return {
        "mode": config.dp, "unit": plan.UNIT[config.dp], "relation": plan.RELATION[config.dp],
        "accountant": DISTRIBUTED_ACCOUNTANT, "delta": run.delta, "budget": run.epsilon_target,
        "n_units": int(n_units), "rounds": config.rounds,
        "train": {"noise_multiplier": run.total_std / bound, "sensitivity": bound, "clip": run.quantiser.clip,
                  "sample_rate": 1.0, "steps": 1, "who": SERVER, "noise_std": run.total_std,
                  "adaptive_clip": False, "mechanism": run.parameters()},
        "evaluate": {"noise_multiplier": run.eval_noise_multiplier,
                     "sensitivity": plan.eval_sensitivity(config.evaluation),
                     "metrics": list(plan.private_metric_keys(config.eval_k)), "sample_rate": 1.0, "steps": 1,
                     "releases": run.eval_releases, "who": SERVER},
        "planned_epsilon": run.epsilon(run.rounds, run.eval_releases),
    }


def write_plan(config: RunConfig, n_units: int, run_dir: Path, run_id: str, distributed: RunPlan | None = None) -> str:
    """Write ``privacy_plan.json`` (or, resuming, check that it is unchanged); its sha256."""
    planned = (distributed_plan_document(config, distributed, n_units) if distributed is not None
               else plan.privacy_plan(config, n_units))
    document = {**planned, "run_id": run_id}
    text = json.dumps(document, sort_keys=True, indent=2).encode("utf-8")
    path = run_dir / PLAN_FILE
    if config.resume:
        if not path.is_file():
            raise ValueError(f"cannot resume {run_dir}: its {PLAN_FILE} is missing, so the rounds already "
                             "run cannot be shown to follow the same privacy plan")
        if path.read_bytes() != text:
            raise ValueError(f"cannot resume {run_dir}: the privacy plan of this config differs from the "
                             f"run's {PLAN_FILE} (mechanisms, rounds, units or run id changed)")
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(text)
        tmp.replace(path)
    return hashlib.sha256(text).hexdigest()


def committed_plan(run_dir: Path) -> dict | None:
    """The run's ``privacy_plan.json`` as written at its start (None when there is none)."""
    path = run_dir / PLAN_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable privacy plan ({err})") from err
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a privacy plan is a JSON object")
    return document


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, ``""`` when there is no such file."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


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
    signer: LedgerSigner | None = None  # signs a head after each round's rows (None: no heads, tests)
    plan_sha256: str = ""
    config_sha256: str = ""
    distributed: RunPlan | None = None  # user-distributed: the run's DDG plan (the server's accountant)
    rounds_released: int = 0  # user-distributed: train releases so far (ledger rows)
    evaluations_released: int = 0  # user-distributed: evaluation releases so far
    _steps_by_who: dict[str, dict[tuple[float, float], int]] | None = None
    _fields: dict[str, object] = field(default_factory=dict)

    @classmethod
    def open(cls, config: RunConfig, n_units: int, run_dir: Path, run_id: str,
             signer: LedgerSigner | None = None, sign: bool = True,
             distributed: RunPlan | None = None) -> "ServerPrivacy":
        """Open (or create) ``privacy.db``; a resumed run reloads the server's history
        (and, with adaptive clipping, the last clip norm) from it.

        ``sign``: write ``privacy_plan.json`` and the public key and sign each round's head
        with ``signer`` (default: the key at ``default_signing_key_path()``, created when missing).
        ``distributed``: the DDG plan of a ``user-distributed`` run (required for that mode).
        """
        if (config.dp == "user-distributed") != (distributed is not None):
            raise ValueError("a user-distributed run needs its DDG plan, and only it has one")
        path = run_dir / LEDGER_FILE
        history: list[Step] = []
        clip = config.clip
        plan_sha = config_sha = ""
        if sign:
            plan_sha = write_plan(config, n_units, run_dir, run_id, distributed)
            config_sha = file_sha256(run_dir / CONFIG_FILE)
            signer = signer if signer is not None else LedgerSigner.load_or_create(default_signing_key_path())
            write_public_key(run_dir / PUBLIC_KEY_FILE, signer.public_key_hex())
        else:
            signer = None
        if config.resume and path.exists():
            server_rows = [r for r in read_ledger(path) if r.who == SERVER]
            history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in server_rows]
            train_rows = [r for r in server_rows if r.release == RELEASE_TRAIN]
            clip = train_rows[-1].clip_norm if train_rows else clip
        privacy = cls(config, n_units, run_id, PrivacyLedger(path, run_id=run_id), history, round_clip=clip,
                      signer=signer, plan_sha256=plan_sha, config_sha256=config_sha, distributed=distributed)
        if distributed is not None and config.resume and path.exists():
            rows = [r for r in read_ledger(path) if r.who == SERVER]
            privacy.rounds_released = sum(r.release == RELEASE_TRAIN for r in rows)
            privacy.evaluations_released = sum(r.release == RELEASE_EVALUATE for r in rows)
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
        return self._within_budget((self.noise_multiplier, self.rate, 1))

    def evaluation_allowed(self) -> bool:
        """user-central: False when this round's evaluation release would take the server's ε past
        the budget (the round is then not evaluated). Client-accounted modes: True (each user refuses)."""
        return not self.central or self._within_budget(plan.evaluation_step(self.config, self.n_units))

    def _within_budget(self, step: Step) -> bool:
        budget = plan.budget(self.config.privacy)
        if budget is None:
            return True
        return epsilon([*self.history, step], self.config.delta, self.config.accountant) <= budget * (1 + 1e-9)

    # --- ledger -----------------------------------------------------------------------
    def record_round(self, server_round: int, replies: list[Message]) -> dict[str, object]:
        """Write this round's training rows; return the metrics-row fields (anchor, refusals)."""
        entries: list[LedgerEntry] = []
        refused = 0
        if self.central:
            self.history.append((self.noise_multiplier, self.rate, 1))
            entries.append(self._entry(server_round, SERVER, self.noise_multiplier, self.rate, 1,
                                       epsilon(self.history, self.config.delta, self.config.accountant),
                                       RELEASE_TRAIN))
        else:
            entries, refused = self._client_rows(server_round, replies, RELEASE_TRAIN)
        if entries:
            self.ledger.append(entries)
        self._fields = {"dp_refused": refused, "epsilon_max": max((e.epsilon for e in entries), default=None)}
        return self.round_fields()

    def record_distributed_round(self, server_round: int, released: bool, refused: bool = False) -> dict[str, object]:
        """user-distributed: the round's train row when its sum was released (none when the
        round was skipped; a sum refused by the sum check was released, so it has its row and
        counts in ``dp_refused``); the metrics-row fields."""
        run = self.distributed
        if run is None:
            raise RuntimeError("record_distributed_round outside a user-distributed run")
        if released:
            self.rounds_released += 1
            self.ledger.append(ledger_entries(run, self.run_id, server_round, self.rounds_released,
                                              self.evaluations_released))
        self._fields = {"dp_refused": int(refused),
                        "epsilon_max": run.epsilon(self.rounds_released, self.evaluations_released) if released
                        else None}
        return self.round_fields()

    def round_fields(self) -> dict[str, object]:
        """The metrics-row fields of the round so far: ledger anchor, refusals, largest ε written."""
        return {**anchor(self.ledger.head()), "dp_refused": self._fields.get("dp_refused", 0),
                "epsilon_max": self._fields.get("epsilon_max")}

    def aggregate_evaluation(self, server_round: int, replies: list[Message], asked: int) -> dict[str, float] | None:
        """The round's DP evaluation release from the nodes' replies, and its ledger rows.

        user-central: ``(Σ exact sums + N(0, (σ_e√K)²)) / asked``, one server row; the
        caller checked :meth:`evaluation_allowed`. Client-accounted: the mean of the
        users' noised vectors, one row per user that was evaluated. Returns the private
        metrics plus ``users-evaluated`` (internal to the server), or None when nobody was.
        """
        keys = plan.private_metric_keys(self.config.eval_k)
        total = np.zeros(len(keys), dtype=np.float64)
        count = 0
        entries: list[LedgerEntry] = []
        refused = 0
        usable = []
        for message in replies:
            if not message.has_content():
                continue
            problem = self._evaluation_problem(message, keys)
            if problem:
                logger.warning("round %d: dropped the evaluation reply of node %d: %s", server_round,
                               message.metadata.src_node_id, problem)
                continue
            usable.append(message)
        if self.distributed is not None:  # each user's vector noised on its device with the plan's σ_e
            for message in usable:
                metrics = message.content.metric_records[METRICS]
                total += np.array([float(metrics[k]) for k in keys])
                count += int(metrics[USERS_EVALUATED])
            released = local_release(self.config.evaluation, total, count)
            if released is not None:
                self.evaluations_released += 1
                entries += ledger_entries(self.distributed, self.run_id, server_round, self.rounds_released,
                                          self.evaluations_released, RELEASE_EVALUATE,
                                          plan.eval_sensitivity(self.config.evaluation))
        elif self.central:
            for message in usable:
                metrics = message.content.metric_records[METRICS]
                total += np.array([float(metrics[k]) for k in keys])
                count += int(metrics[USERS_EVALUATED])
            if asked < 1:
                return None
            released = central_release(self.config, total, asked, secure_generator())
            step = plan.evaluation_step(self.config, self.n_units)
            self.history.append(step)
            entries.append(self._entry(server_round, SERVER, step[0], step[1], step[2],
                                       epsilon(self.history, self.config.delta, self.config.accountant),
                                       RELEASE_EVALUATE))
        else:
            entries, refused = self._client_rows(server_round, usable, RELEASE_EVALUATE)
            for message in usable:
                metrics = message.content.metric_records[METRICS]
                total += np.array([float(metrics[k]) for k in keys])
                count += int(metrics[USERS_EVALUATED])
            released = local_release(self.config.evaluation, total, count)
        if entries:
            self.ledger.append(entries)
        self._fields["dp_refused"] = int(self._fields.get("dp_refused", 0)) + refused  # type: ignore[call-overload]
        eps = [e.epsilon for e in entries]
        if self._fields.get("epsilon_max") is not None:
            eps.append(float(self._fields["epsilon_max"]))  # type: ignore[arg-type]
        self._fields["epsilon_max"] = max(eps, default=None)
        if released is None:
            return None
        return {**released, USERS_EVALUATED: count}

    def _evaluation_problem(self, message: Message, keys: tuple[str, ...]) -> str | None:
        """Why a DP evaluation reply cannot be used (missing or non-finite sums, a bad count,
        a report that disagrees with the count, anything else in the reply)."""
        metrics = message.content.metric_records.get(METRICS)
        if metrics is None:
            return "no metrics"
        count = metrics.get(USERS_EVALUATED)
        if not isinstance(count, int) or count < 0:
            return f"{USERS_EVALUATED}={count!r} is not a count"
        extra = set(metrics) - {*keys, USERS_EVALUATED}
        if extra:
            return f"it carries {sorted(extra)} besides the private metrics"
        for key in keys:
            value = metrics.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{key}={value!r} is not a finite sum"
            if self.central and not -1e-6 <= value <= count * (1 + 1e-6) + 1e-6:
                return f"{key}={value!r} is not a sum of {count} metrics in [0, 1]"
        if self.central or self.distributed is not None:
            return None
        record = message.content.config_records.get(PRIVACY)
        if record is None:
            return None if count == 0 else "no privacy report with a DP evaluation"
        try:
            releases = parse_releases(record)
        except ValueError as err:
            return str(err)
        if record.get(PRIVACY_RELEASE, RELEASE_TRAIN) != RELEASE_EVALUATE:
            return f"its privacy report is about release {record.get(PRIVACY_RELEASE)!r}, not an evaluation"
        evaluated = sum(1 for release in releases if not release[1])
        if evaluated != count:
            return f"its privacy report lists {evaluated} users evaluated, its count says {count}"
        return None

    def sign_round(self, server_round: int, final: bool) -> None:
        """Append the signed head of the ledger after ``server_round``'s rows (no-op without a signer)."""
        if self.signer is not None:
            self.ledger.sign_head(server_round, final, self.plan_sha256, self.config_sha256, self.signer)

    def _client_rows(self, server_round: int, replies: list[Message], release: str) -> tuple[list[LedgerEntry], int]:
        """Rows for the users' releases reported in ``replies`` (client-accounted modes); refusals."""
        entries: list[LedgerEntry] = []
        refused = 0
        budget = plan.budget(self.config.privacy)
        for message in replies:
            if not message.has_content():
                continue
            record = message.content.config_records.get(PRIVACY)
            metrics = message.content.metric_records.get(METRICS, {})
            if record is None and not metrics.get(NUM_EXAMPLES) and not metrics.get(USERS_EVALUATED):
                continue  # a node none of whose users was due this round
            if record is None:
                logger.warning("round %d: node %d replied without its privacy report", server_round,
                               message.metadata.src_node_id)
                continue
            if record.get(PRIVACY_RELEASE, RELEASE_TRAIN) != release:
                logger.warning("round %d: node %d: a %s report where a %s report was due", server_round,
                               message.metadata.src_node_id, record.get(PRIVACY_RELEASE), release)
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
            signatures = record.get(PRIVACY_SIGNATURES)
            if not (isinstance(signatures, list) and len(signatures) == len(releases)
                    and all(isinstance(x, str) for x in signatures)):
                signatures = [""] * len(releases)  # simulation, or a device without a key
            for index, (user, was_refused, sigma, rate, steps, eps) in enumerate(releases):
                if was_refused:
                    refused += 1
                    logger.warning("round %d: client %d refused to %s: it would exceed ε=%g (spent %.4g)",
                                   server_round, user, release, budget or 0.0, eps)
                    continue
                who = (f"client:node-{message.metadata.src_node_id}/user-{user}" if self.per_node_users
                       else f"client:{user}")
                if priors is not None:
                    entries.extend(self._carried(server_round, who, priors[index]))
                entries.append(self._entry(server_round, who, sigma, rate, steps, eps, release,
                                           _hex_or_empty(signatures[index])))
                self._ledgered(who)[(sigma, rate)] = self._ledgered(who).get((sigma, rate), 0) + steps
        return entries, refused

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

    def _carried(self, server_round: int, who: str, prior: list[Step]) -> list[LedgerEntry]:
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
            kind = (RELEASE_EVALUATE if (sigma, rate) == plan.evaluation_step(self.config, self.n_units)[:2]
                    else RELEASE_TRAIN)  # (a history does not say; the plan's σ_e tells them apart)
            rows.append(self._entry(server_round, who, sigma, rate, missing,
                                    epsilon(composed, self.config.delta, self.config.accountant), kind))
            logger.warning("round %d: %s's device reports %d earlier release(s) (σ=%g, q=%g) this run's ledger "
                           "lacks (an earlier run, or a round the server lost); recorded before this round's row",
                           server_round, who, missing, sigma, rate)
        return rows

    def _entry(self, server_round: int, who: str, sigma: float, rate: float, steps: int, eps: float,
               release: str, device_signature: str = "") -> LedgerEntry:
        sensitivity = (plan.eval_sensitivity(self.config.evaluation) if release == RELEASE_EVALUATE
                       else plan.train_sensitivity(self.config.privacy, self.round_clip))
        return LedgerEntry(run_id=self.run_id, round=server_round, unit=plan.UNIT[self.config.dp],
                           mode=self.config.dp, who=who, noise_multiplier=sigma, sample_rate=rate, steps=steps,
                           clip_norm=self.round_clip, delta=self.config.delta, accountant=self.config.accountant,
                           epsilon=eps, budget=plan.budget(self.config.privacy), relation=plan.RELATION[self.config.dp],
                           sensitivity=sensitivity, release=release, device_signature=device_signature)

    def close(self) -> None:
        self.ledger.close()


def _hex_or_empty(value: str) -> str:
    """A device's signature as the ledger stores it: lower-case hex, or "" when malformed
    (an unverifiable signature is no signature; the audit then counts the row unsigned)."""
    text = value.strip().lower()
    try:
        bytes.fromhex(text)
    except ValueError:
        return ""
    return text


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
