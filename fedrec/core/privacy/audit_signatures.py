"""The audit's signature checks: the server's signed ledger heads and the devices'
countersignatures (items 2 and 3 of :mod:`fedrec.core.privacy.audit`).

Each check returns problems (strings naming the round or row and the reason) and adds
notes; a key file that cannot be used raises :class:`KeyFileError`, which the audit turns
into "cannot be audited" (exit 2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

from fedrec.core.privacy.audit_crosscheck import CONFIG_FILE, PLAN_FILE
from fedrec.core.privacy.ledger_chain import (
    ANCHOR_HEAD,
    ANCHOR_ROWS,
    GENESIS,
    head_statement,
)
from fedrec.core.privacy.ledger_rows import LedgerRow, SignedHead
from fedrec.core.privacy.signing import (
    PUBLIC_KEY_FILE,
    SigningError,
    load_device_public_key,
    read_public_key,
    release_statement,
    verify_ed25519,
    verify_release,
)
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE


class KeyFileError(ValueError):
    """A key file or run file the signature checks need cannot be read."""


def trusted_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return read_public_key(Path(path))
    except SigningError as error:
        raise KeyFileError(f"--verify-key: {error}") from error


def device_public_keys(directory: Path | None) -> dict[str, str]:
    """``{file name: OpenSSH public key line}`` of ``directory/*.pub``."""
    if directory is None:
        return {}
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyFileError(f"--device-keys: {directory}: no such directory")
    keys = {}
    for path in sorted(directory.glob("*.pub")):
        try:
            text = path.read_text(encoding="ascii")
            load_device_public_key(text)
        except (OSError, UnicodeDecodeError, SigningError) as error:
            raise KeyFileError(f"--device-keys: {path}: not a readable OpenSSH public key ({error})") from error
        keys[path.name] = text
    if not keys:
        raise KeyFileError(f"--device-keys: {directory}: no *.pub files there")
    return keys


def _sha256_of(path: Path) -> str:
    """sha256 of the file's bytes; ``""`` when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read it ({error.strerror})") from error


class SignedHeads:
    """The signed-head checks of the module docstring (item 2)."""

    def __init__(self, run_dir: Path, rows: Sequence[LedgerRow], heads: Sequence[SignedHead],
                 metrics: Sequence[dict[str, Any]], finished: bool, trusted: str | None) -> None:
        self.run_dir, self.rows, self.heads, self.metrics = run_dir, rows, heads, metrics
        self.finished, self.trusted = finished, trusted
        self.key_source: str | None = None

    def check(self, notes: list[str]) -> list[str]:
        problems: list[str] = []
        rows, heads = self.rows, self.heads
        key = self._key(problems, notes)
        run_ids = sorted({row.run_id for row in rows})
        if len(run_ids) > 1:
            problems.append(f"the ledger's rows name {len(run_ids)} runs {run_ids}: rows of another run were mixed in")
        plan_sha = _sha256_of(self.run_dir / PLAN_FILE)
        config_sha = _sha256_of(self.run_dir / CONFIG_FILE)
        anchored = {line["round"]: (line[ANCHOR_ROWS], line[ANCHOR_HEAD]) for line in self.metrics
                    if isinstance(line.get("round"), int) and ANCHOR_ROWS in line and ANCHOR_HEAD in line}
        needed = sorted({row.round for row in rows} | set(anchored))
        if rows and not heads:
            problems.append(f"missing signature: the ledger has {len(rows)} rows but no signed head (a ledger "
                            "written without the server's key, or its heads were removed)")
        last_of_round: dict[int, SignedHead] = {}
        previous: SignedHead | None = None
        changed: set[int] = set()
        for head in heads:
            where = f"signed head {head.seq} (round {head.round})"
            claims = head.claims()
            if claims is None or set(claims) != _STATEMENT_KEYS:
                problems.append(f"{where}: its statement is not a head statement")
                continue
            try:
                canonical = head_statement(**claims)
            except (TypeError, ValueError):
                canonical = b""
            if canonical.decode("ascii") != head.statement:
                problems.append(f"{where}: its statement is not in canonical form")
            told = (claims["round"], claims["rows"], claims["head"], claims["final"])
            if told != (head.round, head.rows, head.head, head.final):
                problems.append(f"{where}: the columns (round, rows, head, final) differ from the signed statement")
            verify_with = key if key is not None else head.public_key
            if head.public_key != verify_with:
                problems.append(f"{where}: signed by key {head.public_key[:16]}…, not the "
                                f"{'trusted' if self.key_source == 'trusted' else 'run'}'s key {verify_with[:16]}…")
            if not verify_ed25519(verify_with, head.statement.encode("ascii", "replace"), head.signature):
                problems.append(f"{where}: the signature does not verify with the "
                                f"{_KEY_WORDS[self.key_source or 'embedded']} {verify_with[:16]}…")
            if run_ids and claims["run_id"] not in run_ids:
                problems.append(f"{where}: signed for run {claims['run_id']!r} but the ledger's rows are of run "
                                f"{run_ids[0]!r}")
            count, digest = claims["rows"], claims["head"]
            if not isinstance(count, int) or count < 0:
                problems.append(f"{where}: rows={count!r} is not a row count")
            elif count == 0 and digest != GENESIS:
                problems.append(f"{where}: says an empty ledger with a head other than the genesis hash")
            elif count > len(rows):
                problems.append(f"{where}: says the ledger had {count} rows, it has {len(rows)}: rows were deleted")
            elif count > 0 and rows[count - 1].hash != digest:
                problems.append(f"{where}: says row {count} hashed {str(digest)[:12]}…, the ledger's row {count} "
                                f"hashes {rows[count - 1].hash[:12]}…: the ledger was rewritten")
            for name, actual, file in (("plan_sha256", plan_sha, PLAN_FILE), ("config_sha256", config_sha,
                                                                                CONFIG_FILE)):
                if name == "config_sha256" and head is not heads[-1] and claims[name] != actual:
                    changed.add(head.round)  # a resumed run rewrites run_config.json (resume, out-dir)
                    continue
                if claims[name] != actual:
                    problems.append(f"{where}: signed {name} {str(claims[name])[:12] or '(none)'}… but {file} "
                                    f"{'hashes ' + actual[:12] + '…' if actual else 'is missing'}: the file was "
                                    "replaced or edited after the run signed it")
            if previous is not None and (head.round < previous.round or head.rows < previous.rows
                                         or previous.final):
                problems.append(f"{where}: out of order after signed head {previous.seq} (round {previous.round}"
                                f"{', final' if previous.final else ''})")
            last_of_round[head.round] = head
            previous = head
        if changed:
            notes.append(f"signed heads of round(s) {sorted(changed)} name another {CONFIG_FILE} than the present "
                         "one (which the last head names): a resumed run rewrites it")
        for round_ in needed:
            head = last_of_round.get(round_)
            if head is None:
                if heads:
                    problems.append(f"round {round_}: missing signature (no signed head for a round with "
                                    "ledger rows or an anchor)")
                continue
            covered = max((row.seq for row in rows if row.round == round_), default=0)
            if head.rows < covered:
                problems.append(f"round {round_}: its signed head covers {head.rows} rows but the round's rows go "
                                f"to seq {covered}")
            if round_ in anchored and tuple(anchored[round_]) != (head.rows, head.head):
                problems.append(f"round {round_}: the {METRICS_FILE} anchor ({anchored[round_][0]} rows) differs "
                                f"from the round's signed head ({head.rows} rows)")
        if heads:
            last = heads[-1]
            if self.finished and not last.final:
                problems.append(f"round {last.round}: the last signed head is not final although {SUMMARY_FILE} "
                                "says the run finished (the final signed heads were removed)")
            if self.finished and last.rows != len(rows):
                problems.append(f"round {last.round}: the last signed head covers {last.rows} rows, the ledger has "
                                f"{len(rows)}")
            elif not self.finished and last.rows < len(rows):
                notes.append(f"{len(rows) - last.rows} row(s) after the last signed head (an unfinished run): "
                             "their deletion would not be detected")
        return problems

    def _key(self, problems: list[str], notes: list[str]) -> str | None:
        if self.trusted is not None:
            self.key_source = "trusted"
            return self.trusted
        if not self.heads:
            return None
        own = self.run_dir / PUBLIC_KEY_FILE
        if own.exists():
            try:
                key = read_public_key(own)
            except SigningError as error:
                problems.append(str(error))
                key = None
            else:
                self.key_source = "run"
                notes.append(f"signatures verified against the run's own {PUBLIC_KEY_FILE}: this proves only "
                             "that the ledger is consistent with itself (whoever can rewrite the run directory "
                             "can replace that file); pass --verify-key with the server's public key obtained "
                             "out of band to prove who signed")
                return key
        self.key_source = "embedded"
        keys = sorted({head.public_key for head in self.heads})
        if len(keys) > 1:
            problems.append(f"the signed heads carry {len(keys)} different public keys")
        notes.append(f"no {PUBLIC_KEY_FILE} and no --verify-key: signatures verified against the key stored "
                     "with each head, which proves only self-consistency")
        return keys[0]


_STATEMENT_KEYS = {"run_id", "round", "rows", "head", "final", "plan_sha256", "config_sha256"}
_KEY_WORDS = {"trusted": "trusted key", "run": f"run's {PUBLIC_KEY_FILE} key", "embedded": "key stored with it"}


def check_device_signatures(rows: Sequence[LedgerRow], keys: dict[str, str], directory: Path | None,
                             notes: list[str]) -> tuple[list[str], int]:
    """Problems with rows' device countersignatures (module docstring item 3), rows checked."""
    signed = [row for row in rows if row.device_signature]
    if not keys:
        if signed:
            notes.append(f"{len(signed)} row(s) carry device signatures, not verified (pass --device-keys)")
        return [], 0
    problems = []
    for row in signed:
        statement = release_statement(row.run_id, row.round, row.who, row.relation, row.noise_multiplier,
                                      row.sample_rate, row.steps, row.epsilon, row.release)
        if not any(verify_release(text, statement, row.device_signature) for text in keys.values()):
            problems.append(f"row seq={row.seq} (round {row.round}, {row.who}): its device signature verifies "
                            f"with none of the {len(keys)} key(s) in {directory}")
    # A deployed device signs every release it reports; the rows the server writes for a
    # device's earlier releases (carried, see fedrec.server.privacy) come right before that
    # device's signed row of the same round. Any other unsigned device row lost its signature.
    signed_at = {(row.who, row.round, row.release) for row in signed}
    for row in rows:
        if (row.who.startswith(DEVICE_PREFIX) and not row.device_signature
                and not any((row.who, row.round, release) in signed_at for release in ("train", "evaluate"))):
            problems.append(f"row seq={row.seq} (round {row.round}, {row.who}): a device's row without its "
                            "signature (with --device-keys every deployed device's release must be countersigned)")
    return problems, len(signed)


DEVICE_PREFIX = "client:node-"  # who of a deployed device's user (fedrec.server.privacy)
