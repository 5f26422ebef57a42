"""The privacy ledger's row types and their validation.

A :class:`LedgerEntry` is one mechanism run as the caller states it; a :class:`LedgerRow`
is that entry as stored, with its place in the hash chain; a :class:`SignedHead` is one
signed statement of the ledger's head. :func:`check_entry` refuses an entry whose
parameters make no sense (``σ ≥ 0`` finite, ``0 < q ≤ 1``, ``0 < δ < 1``, ``ε ≥ 0`` with
``∞`` allowed, the unit and relation the mode fixes: :mod:`fedrec.core.privacy.modes`).
The chain itself is in :mod:`fedrec.core.privacy.ledger_chain`, the file in
:mod:`fedrec.core.privacy.ledger`.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from fedrec.core.privacy.accounting import ACCOUNTANTS
from fedrec.core.privacy.modes import MODE_RELATION, MODE_UNIT

UNITS = ("record", "user")
RELATIONS = ("add-remove", "replace-one", "zero-out")
# the accountant of user-distributed rows: zCDP of the distributed discrete Gaussian (KLS21),
# rows composed by adding ρ (fedrec.core.privacy.distributed_mode)
DISTRIBUTED_ACCOUNTANT = "ddg-zcdp"
# the keys a user-distributed train row's ``mechanism`` JSON must hold
DDG_KEYS = ("gamma", "sigma_share", "n_min", "n_clients", "bits", "clip", "beta", "dim", "rotate", "rounds")
# the accountant of user-central rows over dp-groups: Gaussian DP of one correlated-noise
# mechanism (fedrec.core.privacy.correlated_ledger)
GDP_ACCOUNTANT = "gdp"
# the modes whose rows are the server's zCDP accountant's, with their parameters in ``mechanism``
DISTRIBUTED_MODES = ("user-distributed", "record-distributed")
RELEASES = ("train", "evaluate")
SERVER = "server"
CLIENT_PREFIX = "client:"


@dataclass(frozen=True)
class LedgerEntry:
    """One mechanism run, as the caller states it.

    ``epsilon`` is ``who``'s ε at ``delta`` after this row: the composition of all of
    its rows so far on the same unit, by ``accountant`` (``inf`` when σ = 0).
    ``budget`` is ``who``'s ε budget, ``None`` when it has none.
    """

    run_id: str
    round: int
    unit: str  # "record" or "user"
    mode: str  # "record", "user-local", "user-central"
    who: str  # "server" or "client:<id>"
    noise_multiplier: float  # σ = noise std / sensitivity
    sample_rate: float  # q, Poisson inclusion probability of one unit per step
    steps: int
    clip_norm: float  # C, L2 bound on one unit's contribution
    delta: float
    accountant: str  # "rdp" or "prv"
    epsilon: float
    budget: float | None
    relation: str  # "add-remove" or "replace-one": MODE_RELATION[mode]
    sensitivity: float  # L2 sensitivity of the released quantity under ``relation``
    release: str = "train"  # "train" or "evaluate"
    device_signature: str = ""  # hex ECDSA signature of the device over release_statement, "" when none
    # user-/record-distributed: the mechanism's parameters as canonical JSON ("" for every other mode)
    mechanism: str = ""


@dataclass(frozen=True, kw_only=True)
class LedgerRow(LedgerEntry):
    """A stored entry with its place in the chain (``seq`` counts from 1)."""

    seq: int
    prev_hash: str
    hash: str

    @property
    def entry(self) -> LedgerEntry:
        return LedgerEntry(**{f.name: getattr(self, f.name) for f in fields(LedgerEntry)})


ENTRY_FIELDS = tuple(f.name for f in fields(LedgerEntry))
ROW_FIELDS = ("seq", *ENTRY_FIELDS, "prev_hash", "hash")
FLOAT_FIELDS = ("noise_multiplier", "sample_rate", "clip_norm", "delta", "epsilon", "budget", "sensitivity")
INT_FIELDS = ("seq", "round", "steps")
TEXT_FIELDS = ("run_id", "unit", "mode", "who", "accountant", "relation", "release", "device_signature",
               "mechanism", "prev_hash", "hash")


@dataclass(frozen=True)
class SignedHead:
    """One row of the ``heads`` table: a signed statement of the ledger's head after ``round``."""

    seq: int
    round: int
    rows: int
    head: str
    final: bool
    statement: str  # canonical JSON (head_statement), the signed bytes as ASCII text
    public_key: str  # raw Ed25519 public key, hex
    signature: str  # Ed25519 signature of ``statement``, hex

    def claims(self) -> dict[str, Any] | None:
        """The statement's fields, ``None`` when it is not a JSON object."""
        try:
            value = json.loads(self.statement)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


HEAD_FIELDS = tuple(f.name for f in fields(SignedHead))


def check_entry(entry: LedgerEntry) -> None:
    """Raise ``ValueError`` naming the field when ``entry`` makes no sense."""
    where = f"ledger entry (round {entry.round}, {entry.who!r})"

    def fail(message: str) -> None:
        raise ValueError(f"{where}: {message}")

    if not isinstance(entry.run_id, str) or not entry.run_id:
        fail(f"run_id must be a non-empty string, got {entry.run_id!r}")
    if not is_int(entry.round) or entry.round < 0:
        fail(f"round must be an integer ≥ 0, got {entry.round!r}")
    if entry.mode not in MODE_UNIT:
        fail(f"mode must be one of {tuple(MODE_UNIT)}, got {entry.mode!r}")
    if entry.unit != MODE_UNIT[entry.mode]:
        fail(f"mode {entry.mode!r} protects unit {MODE_UNIT[entry.mode]!r}, got unit {entry.unit!r}")
    if entry.mode in DISTRIBUTED_MODES and entry.who != SERVER:
        fail(f"{entry.mode} rows are the server's accountant's: who must be {SERVER!r}, got {entry.who!r}")
    if entry.mode in DISTRIBUTED_MODES:
        pass
    elif entry.mode == "user-central" and entry.release == "train":
        if entry.who != SERVER:
            fail(f"user-central train rows are the server's: who must be {SERVER!r}, got {entry.who!r}")
    elif entry.mode == "user-central" and entry.who == SERVER:
        pass  # an evaluation release the server noises
    elif not (isinstance(entry.who, str) and entry.who.startswith(CLIENT_PREFIX)
              and len(entry.who) > len(CLIENT_PREFIX)):
        fail(f"{entry.mode} rows are a client's: who must be 'client:<id>', got {entry.who!r}")
    if entry.mode in DISTRIBUTED_MODES:
        if entry.accountant != DISTRIBUTED_ACCOUNTANT:
            fail(f"{entry.mode} rows are accounted by {DISTRIBUTED_ACCOUNTANT!r}, got {entry.accountant!r}")
        if entry.mode == "user-distributed":
            problem = ddg_parameters_problem(entry)
        else:
            from fedrec.core.privacy.record_ledger import mechanism_problem  # (imports torch: only here)

            problem = mechanism_problem(entry)
        if problem:
            fail(problem)
    elif entry.accountant == GDP_ACCOUNTANT:
        if entry.mode != "user-central" or entry.who != SERVER:
            fail(f"{GDP_ACCOUNTANT} rows are the server's over dp-groups (user-central), got mode {entry.mode!r} "
                 f"and who {entry.who!r}")
        from fedrec.core.privacy.correlated_ledger import mechanism_problem as gdp_problem

        problem = gdp_problem(entry)
        if problem:
            fail(problem)
    elif entry.accountant not in ACCOUNTANTS:
        fail(f"accountant must be one of {ACCOUNTANTS}, got {entry.accountant!r}")
    elif entry.mechanism != "":
        fail(f"only the distributed modes' rows carry mechanism parameters, got {entry.mechanism!r}")
    if not is_real(entry.noise_multiplier) or not (math.isfinite(entry.noise_multiplier)
                                                    and entry.noise_multiplier >= 0):
        fail(f"noise_multiplier must be finite and ≥ 0, got {entry.noise_multiplier!r}")
    if not is_real(entry.sample_rate) or not 0 < entry.sample_rate <= 1:
        fail(f"sample_rate must be in (0, 1], got {entry.sample_rate!r}")
    if not is_int(entry.steps) or entry.steps < 0:
        fail(f"steps must be an integer ≥ 0, got {entry.steps!r}")
    if not is_real(entry.clip_norm) or not (math.isfinite(entry.clip_norm) and entry.clip_norm > 0):
        fail(f"clip_norm must be finite and > 0, got {entry.clip_norm!r}")
    if not is_real(entry.delta) or not 0 < entry.delta < 1:
        fail(f"delta must be in (0, 1), got {entry.delta!r}")
    if not is_real(entry.epsilon) or not entry.epsilon >= 0:  # inf allowed, nan refused
        fail(f"epsilon must be ≥ 0 (inf allowed), got {entry.epsilon!r}")
    if entry.budget is not None and not (is_real(entry.budget) and math.isfinite(entry.budget)
                                         and entry.budget > 0):
        fail(f"budget must be None or finite and > 0, got {entry.budget!r}")
    if entry.mode in MODE_RELATION and entry.relation != MODE_RELATION[entry.mode]:
        fail(f"mode {entry.mode!r} is stated under relation {MODE_RELATION[entry.mode]!r}, "
             f"got relation {entry.relation!r}")
    if not is_real(entry.sensitivity) or not (math.isfinite(entry.sensitivity) and entry.sensitivity > 0):
        fail(f"sensitivity must be finite and > 0, got {entry.sensitivity!r}")
    if entry.release not in RELEASES:
        fail(f"release must be one of {RELEASES}, got {entry.release!r}")
    if not isinstance(entry.device_signature, str) or not all(c in "0123456789abcdef"
                                                              for c in entry.device_signature):
        fail(f"device_signature must be lower-case hex or '', got {entry.device_signature!r}")


def mechanism_parameters(entry: LedgerEntry) -> dict[str, Any] | None:
    """A train row's ``mechanism`` parameters (user-/record-distributed, dp-groups), ``None`` when unreadable."""
    try:
        value = json.loads(entry.mechanism)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def ddg_parameters_problem(entry: LedgerEntry) -> str:
    """What is wrong with a user-distributed row's ``mechanism`` ("" when nothing)."""
    if entry.release == "evaluate":
        return "" if entry.mechanism == "" else "user-distributed evaluation rows carry no DDG parameters"
    params = mechanism_parameters(entry)
    if params is None:
        return f"mechanism must be a JSON object of the DDG parameters, got {entry.mechanism!r}"
    missing = [key for key in DDG_KEYS if not is_real(params.get(key))]
    if missing:
        return f"mechanism lacks the DDG parameters {missing} (numbers)"
    return ""


def is_int(value: Any) -> bool:
    """An integer (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def plain_entry(entry: LedgerEntry) -> LedgerEntry:
    """The entry with Python ``int``/``float`` values (numpy scalars are valid input too)."""
    values = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    for name in INT_FIELDS:
        if name in values:
            values[name] = int(values[name])
    for name in FLOAT_FIELDS:
        if values[name] is not None:
            values[name] = float(values[name])
    return LedgerEntry(**values)


def is_digest(value: Any, allow_empty: bool = False) -> bool:
    """64 lower-case hex digits (a sha256), or ``""`` when ``allow_empty``."""
    if allow_empty and value == "":
        return True
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)

