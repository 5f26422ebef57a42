"""``fedrec audit``: pinned ε, the independent accountants, and every kind of tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy.accounting import RDP_ORDERS, epsilon
from fedrec.core.privacy.audit import AuditError, audit_run
from fedrec.core.privacy.audit_accounting import (
    DEFAULT_TOLERANCE,
    ORDERS,
    Independent,
    dp_event,
)
from fedrec.core.privacy.audit_crosscheck import (
    CHECKPOINT_STATE,
    CONFIG_FILE,
    PLAN_FILE,
)
from fedrec.core.privacy.audit_json import AUDIT_FILE
from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger, read_ledger
from fedrec.core.privacy.ledger_chain import GENESIS, anchor, row_hash
from fedrec.core.privacy.ledger_rows import LedgerEntry
from fedrec.core.privacy.modes import MODE_RELATION
from fedrec.core.privacy.signing import PUBLIC_KEY_FILE, LedgerSigner, write_public_key
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE
from fedrec.reporting.audit_report import PLOT_FILE, print_audit, write_audit

DELTA = 1e-5
# (round, who, σ, q, steps): three clients with their own sampling rates, four rounds
RECORD_PLAN = [
    (1, "client:1", 1.1, 0.05, 20), (1, "client:2", 1.1, 0.1, 10),
    (2, "client:1", 1.1, 0.05, 20), (2, "client:3", 1.1, 0.2, 5),
    (3, "client:2", 1.1, 0.1, 10), (3, "client:3", 1.1, 0.2, 5), (3, "client:1", 1.1, 0.05, 20),
    (4, "client:1", 1.1, 0.05, 20), (4, "client:2", 1.1, 0.1, 10),
]


def make_run(run_dir: Path, plan=RECORD_PLAN, accountant: str = "rdp", mode: str = "record",
             budget: float | None = None) -> Path:
    """A ledger with honest ε and anchors per round, nothing else (for the ε recompute: the
    signature and cross-checks fail on such a run, these tests look at the ε findings)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    histories: dict[str, list] = defaultdict(list)
    unit = "record" if mode == "record" else "user"
    with PrivacyLedger(run_dir / LEDGER_FILE) as ledger, (run_dir / METRICS_FILE).open("w") as metrics:
        for round_ in sorted({step[0] for step in plan}):
            entries = []
            for _, who, sigma, rate, steps in (step for step in plan if step[0] == round_):
                histories[who].append((sigma, rate, steps))
                entries.append(LedgerEntry(
                    run_id="test", round=round_, unit=unit, mode=mode, who=who, noise_multiplier=sigma,
                    sample_rate=rate, steps=steps, clip_norm=1.0, delta=DELTA, accountant=accountant,
                    epsilon=epsilon(histories[who], DELTA, accountant), budget=budget,
                    relation=MODE_RELATION[mode], sensitivity=2.0 if mode == "user-local" else 1.0))
            ledger.append(entries)
            metrics.write(json.dumps({"round": round_, "train_loss": 0.5, **anchor(ledger.head())}) + "\n")
    return run_dir


# --- a well-formed run, as the server writes one --------------------------------------------

N_UNITS = 100
EVAL_METRICS = 2  # hr@10, ndcg@10 released per user, each in [0, 1]: sensitivity √2
CLIENTS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Fabricated:
    """A fabricated run: its directory, the server's signer and a trusted copy of its public key."""

    run_dir: Path
    signer: LedgerSigner
    trusted_key: Path
    plan: dict
    config: dict


def run_config(mode: str, rounds: int = 3, **changes) -> RunConfig:
    values = dict(dp=mode, rounds=rounds, epsilon=50.0, delta=DELTA, clip=1.0, noise_multiplier=1.1,
                  eval_noise_multiplier=5.0, clients_per_round=20, record_sample_rate=0.1, local_epochs=1,
                  user_epochs=1, accountant="rdp")
    values.update(changes)
    return RunConfig(**values)


def hand_plan(config: RunConfig, n_units: int) -> dict:
    """The plan ``plan.privacy_plan`` gives (the contract's keys), written out by hand."""
    mode = config.dp
    train = {"record": dict(sensitivity=config.clip, sample_rate=config.record_sample_rate,
                            steps=(config.local_epochs + config.user_epochs) * math.ceil(1 / config.record_sample_rate),
                            who="client"),
             "user-local": dict(sensitivity=2 * config.clip, sample_rate=1.0, steps=1, who="client"),
             "user-central": dict(sensitivity=config.clip, sample_rate=min(1.0, config.clients_per_round / n_units),
                                  steps=1, who="server")}[mode]
    return {"mode": mode, "unit": "record" if mode == "record" else "user", "relation": MODE_RELATION[mode],
            "accountant": config.accountant, "delta": config.delta,
            "budget": config.epsilon if config.epsilon > 0 else None, "n_units": n_units, "rounds": config.rounds,
            "train": {"noise_multiplier": config.noise_multiplier, "clip": config.clip, **train},
            "evaluate": {"noise_multiplier": config.eval_noise_multiplier, "sensitivity": math.sqrt(EVAL_METRICS),
                         "metrics": EVAL_METRICS, "sample_rate": 1.0, "steps": 1, "releases": 1, "who": "client"}}


def make_plan(config: RunConfig, n_units: int, run_id: str) -> dict:
    """``plan.privacy_plan`` when this fedrec has it (the audit recomputes it), else ``hand_plan``."""
    from fedrec.core.privacy import plan as planner

    made = planner.privacy_plan(config, n_units) if hasattr(planner, "privacy_plan") else hand_plan(config, n_units)
    return {**json.loads(json.dumps(made)), "run_id": run_id}


def fabricate_run(run_dir: Path, mode: str = "record", rounds: int = 3, run_id: str = "run-A",
                  signer: LedgerSigner | None = None, finished: bool = True, **config_changes) -> Fabricated:
    """A run directory as the server writes it: run_config.json, privacy_plan.json, the ledger
    (rows from the plan, honest ε, a signed head after each round), metrics.jsonl with the
    anchors, checkpoint/state.json, summary.json and ledger-signing.pub."""
    run_dir.mkdir(parents=True, exist_ok=True)
    signer = signer or LedgerSigner.generate()
    config = run_config(mode, rounds, **config_changes)
    user_config = config.to_user_config()
    (run_dir / CONFIG_FILE).write_text(json.dumps(user_config, indent=2, sort_keys=True))
    plan = make_plan(config, N_UNITS, run_id)
    (run_dir / PLAN_FILE).write_text(json.dumps(plan, sort_keys=True))
    plan_sha = hashlib.sha256((run_dir / PLAN_FILE).read_bytes()).hexdigest()
    config_sha = hashlib.sha256((run_dir / CONFIG_FILE).read_bytes()).hexdigest()
    write_public_key(run_dir / PUBLIC_KEY_FILE, signer.public_key_hex())
    trusted = run_dir.parent / f"{run_dir.name}-trusted.pub"
    write_public_key(trusted, signer.public_key_hex())
    entries_by_round = plan_entries(plan, mode, rounds, run_id)
    with PrivacyLedger(run_dir / LEDGER_FILE, run_id=run_id) as ledger, \
            (run_dir / METRICS_FILE).open("w") as metrics:
        for round_ in range(1, rounds + 1):
            ledger.append(entries_by_round[round_])
            ledger.sign_head(round_, finished and round_ == rounds, plan_sha, config_sha, signer)
            metrics.write(json.dumps({"round": round_, "train_loss": 0.5, **anchor(ledger.head())}) + "\n")
    (run_dir / CHECKPOINT_STATE).parent.mkdir(exist_ok=True)
    (run_dir / CHECKPOINT_STATE).write_text(json.dumps({"round": rounds, "config": user_config}))
    if finished:
        (run_dir / SUMMARY_FILE).write_text(json.dumps({"hr@10": 0.5, "ndcg@10": 0.3, "rounds": rounds,
                                                        "evaluated_at": rounds, "config": user_config}))
    return Fabricated(run_dir, signer, trusted, plan, user_config)


def plan_entries(plan: dict, mode: str, rounds: int, run_id: str) -> dict[int, list[LedgerEntry]]:
    """Each round's rows: the train releases of the plan (clients in every round, or the
    server's one), and each client's evaluation release in the last round; honest ε."""
    histories: dict[str, list] = defaultdict(list)
    by_round: dict[int, list[LedgerEntry]] = {}

    def row(round_: int, who: str, release: str) -> LedgerEntry:
        section = plan[release]
        histories[who].append((section["noise_multiplier"], section["sample_rate"], section["steps"]))
        return LedgerEntry(
            run_id=run_id, round=round_, unit=plan["unit"], mode=mode, who=who,
            noise_multiplier=section["noise_multiplier"], sample_rate=section["sample_rate"], steps=section["steps"],
            clip_norm=plan["train"]["clip"], delta=plan["delta"], accountant=plan["accountant"],
            epsilon=epsilon(histories[who], plan["delta"], plan["accountant"]), budget=plan["budget"],
            relation=plan["relation"], sensitivity=section["sensitivity"], release=release)

    for round_ in range(1, rounds + 1):
        whos = ["server"] if plan["train"]["who"] == "server" else [f"client:{c}" for c in CLIENTS]
        by_round[round_] = [row(round_, who, "train") for who in whos]
        if round_ == rounds:
            evaluators = ["server"] if plan["evaluate"]["who"] == "server" else [f"client:{c}" for c in CLIENTS]
            by_round[round_] += [row(round_, who, "evaluate") for who in evaluators]
    return by_round


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("good") / "run")


@pytest.fixture
def run(good_run: Path, tmp_path: Path) -> Path:
    """A private copy of the ε-only run, free to tamper with."""
    return Path(shutil.copytree(good_run, tmp_path / "run"))


def drop_triggers(db: sqlite3.Connection) -> None:
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("DROP TRIGGER ledger_no_delete")


def forge(run_dir: Path, seq: int, **changes) -> None:
    """A forger with write access: edit a row, re-hash the whole chain, rewrite the anchors."""
    path = run_dir / LEDGER_FILE
    rows = read_ledger(path)
    db = sqlite3.connect(path)
    drop_triggers(db)
    renamed, prev = {GENESIS: GENESIS}, GENESIS
    for row in rows:
        if row.seq == seq:
            row = dataclasses.replace(row, **changes)
        digest = row_hash(prev, row.seq, row)
        fields = {name: getattr(row, name) for name in changes} if row.seq == seq else {}
        fields.update(prev_hash=prev, hash=digest)
        db.execute(f"UPDATE ledger SET {', '.join(f'{k} = ?' for k in fields)} WHERE seq = ?",
                   [*fields.values(), row.seq])
        renamed[row.hash] = digest
        prev = digest
    db.commit()
    db.close()
    metrics = run_dir / METRICS_FILE
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    for line in lines:
        line["ledger_head"] = renamed[line["ledger_head"]]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))


# --- pinned numbers and the independent accountants ------------------------------------

def test_pinned_rdp_epsilons() -> None:
    """σ=1, q=0.1, 100 steps, δ=1e-5, integer orders 2–128: Opacus and dp_accounting RDP 7.9729."""
    assert epsilon([(1.0, 0.1, 100)], 1e-5, "rdp") == pytest.approx(7.9729, abs=1e-3)
    independent = Independent()
    assert independent.rdp_epsilon(100 * independent.rdp_curve(1.0, 0.1), 1e-5) == pytest.approx(
        epsilon([(1.0, 0.1, 100)], 1e-5, "rdp"), rel=1e-9)


def test_pinned_prv_and_pld_epsilons() -> None:
    """Same mechanism: Opacus PRV 7.0571, dp_accounting PLD 7.0466."""
    assert epsilon([(1.0, 0.1, 100)], 1e-5, "prv") == pytest.approx(7.0571, abs=1e-3)
    assert Independent().pld_epsilon(((1.0, 0.1, 100),), 1e-5) == pytest.approx(7.0466, abs=1e-3)


def test_orders_are_the_accounting_integer_orders() -> None:
    assert ORDERS == tuple(RDP_ORDERS) == tuple(range(2, 129))


@pytest.mark.parametrize("sigma, rate, steps, delta", [
    (0.5, 0.001, 1, 1e-5), (0.5, 1.0, 10000, 1e-7), (1.1, 0.05, 2000, 1e-5), (3.25, 0.316, 10000, 1e-5),
    (10.0, 0.00147, 10000, 1e-5), (0.9, 0.2, 3, 1e-6)])
def test_opacus_and_dp_accounting_rdp_agree_within_1e_4(sigma: float, rate: float, steps: int,
                                                         delta: float) -> None:
    """docs/audit.md's grid measured ≤ 1.7e-11 relative; a few of its corners, pinned."""
    independent = Independent()
    ours = epsilon([(sigma, rate, steps)], delta, "rdp")
    theirs = independent.rdp_epsilon(steps * independent.rdp_curve(sigma, rate), delta)
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert DEFAULT_TOLERANCE.band("rdp", "rdp").agrees(ours, theirs)


def test_cumulative_rdp_curve_matches_public_incremental_composition() -> None:
    from dp_accounting.rdp import RdpAccountant

    history = [(1.1, 0.05, 20), (0.9, 0.2, 3), (1.1, 0.05, 7), (2.0, 1.0, 2)]
    independent, public = Independent(), RdpAccountant(orders=list(ORDERS))
    total = np.zeros(len(ORDERS))
    for sigma, rate, steps in history:
        total = total + steps * independent.rdp_curve(sigma, rate)
        public.compose(dp_event(sigma, rate, steps))
        assert independent.rdp_epsilon(total, DELTA) == pytest.approx(public.get_epsilon(DELTA), rel=1e-12)


def test_cached_pld_matches_the_pld_accountant() -> None:
    from dp_accounting import dp_event as events
    from dp_accounting.pld import PLDAccountant

    history = ((2.0, 0.001, 10), (1.5, 0.002, 4), (3.0, 1.0, 2))
    public = PLDAccountant()
    public.compose(events.ComposedDpEvent([dp_event(*run) for run in history]))
    assert Independent().pld_epsilon(history, DELTA) == pytest.approx(public.get_epsilon(DELTA), rel=1e-9)


def test_edge_mechanisms_do_not_crash_the_independent_accountants() -> None:
    independent = Independent()
    assert independent.rdp_epsilon(np.zeros(len(ORDERS)), DELTA) == 0
    assert independent.rdp_epsilon(independent.rdp_curve(0.0, 0.1), DELTA) == math.inf
    assert independent.pld_epsilon((), DELTA) == 0
    assert independent.pld_epsilon(((0.0, 0.5, 3),), DELTA) == math.inf


@pytest.mark.parametrize("recorded, independent, agrees", [
    (1.0, 1.0, True), (0.99995, 1.0, True), (0.9998, 1.0, False),  # 1e-4 below
    (30.0 * 0.99995, 30.0, True), (30.0 * 0.9998, 30.0, False),  # the same at any ε
    (3.0 * (1 + 5e-5), 3.0, True), (3.0 * (1 + 2e-4), 3.0, False),  # 1e-4 above
    (0.0, 0.0, True), (math.inf, math.inf, True), (5.0, math.inf, False), (math.inf, 5.0, False),
])
def test_rdp_band(recorded: float, independent: float, agrees: bool) -> None:
    assert DEFAULT_TOLERANCE.band("rdp", "rdp").agrees(recorded, independent) is agrees


def test_pld_band_is_the_measured_prv_offset_with_margin() -> None:
    band = DEFAULT_TOLERANCE.band("prv", "pld")
    assert band.agrees(7.0571, 7.0466) and band.agrees(7.0466 - 0.004, 7.0466)
    assert not band.agrees(7.0466 + 0.03, 7.0466) and not band.agrees(7.0466 - 0.006, 7.0466)


# --- a good run ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["record", "user-local", "user-central"])
def test_a_well_formed_run_passes_every_check(tmp_path: Path, mode: str) -> None:
    made = fabricate_run(tmp_path / "run", mode)
    for key in (None, made.trusted_key):
        report = audit_run(made.run_dir, verify_key=key)
        assert report.ok, report.problems()
        assert report.heads == 3 and report.key_source == ("trusted" if key else "run")
    assert any("only that the ledger is consistent with itself" in note
               for note in audit_run(made.run_dir).notes)
    assert report.rows_opacus_checked == report.rows_independent_checked == report.rows
    whos = {w.who for w in report.whos}
    assert whos == ({"server"} if mode == "user-central" else {"client:1", "client:2", "client:3"})
    for who in report.whos:
        assert all(b > a for a, b in zip(who.recorded, who.recorded[1:]))
        assert who.opacus == pytest.approx(who.recorded, rel=1e-9)
        assert who.independent == pytest.approx(who.recorded, rel=1e-4)
        assert who.pld_epsilon is not None and 0 < who.pld_epsilon <= who.final_epsilon  # PLD is tighter


def test_an_unfinished_run_needs_no_final_head(tmp_path: Path) -> None:
    made = fabricate_run(tmp_path / "run", "user-central", finished=False)
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    assert report.ok, report.problems()


def test_rdp_ledger_checks_without_signatures_or_plan_fail_but_find_no_epsilon_mismatch(run: Path) -> None:
    report = audit_run(run)
    assert report.chain_ok and report.anchors_ok and report.anchors == 4
    assert not report.mismatches and not report.overshoots
    assert any("missing signature" in p for p in report.signature_problems)
    assert any(PLAN_FILE in p and "missing" in p for p in report.crosscheck_problems)
    assert not report.ok
    assert report.rows == len(RECORD_PLAN)
    assert report.rows_opacus_checked == report.rows_independent_checked == report.rows
    for who in report.whos:
        assert len(who.recorded) == sum(1 for step in RECORD_PLAN if step[1] == who.who)
        assert all(b > a for a, b in zip(who.independent, who.independent[1:]))
        assert who.opacus == pytest.approx(who.recorded, rel=1e-9)
    assert report.epsilon_by_round(server=False)[4] == max(w.max_epsilon for w in report.whos)


def test_audit_json_and_plot_are_written(tmp_path: Path) -> None:
    made = fabricate_run(tmp_path / "run", "user-central")
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    write_audit(report, made.run_dir)
    payload = json.loads((made.run_dir / AUDIT_FILE).read_text())
    assert payload["ok"] is True and payload["chain_ok"] is True and payload["anchors_ok"] is True
    assert payload["signatures_ok"] is True and payload["crosscheck_ok"] is True
    assert payload["signature_key"] == "trusted" and payload["signed_heads"] == 3
    server = next(w for w in payload["whos"] if w["who"] == "server")
    assert 0 < server["pld_epsilon"] < server["final_epsilon"]
    assert payload["global"]["server_pld_epsilon"] == pytest.approx(server["pld_epsilon"])
    assert len(payload["whos"]) == 1 and payload["mismatches"] == [] and payload["overshoots"] == []
    assert (made.run_dir / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(record=True, width=160)
    print_audit(report, console)
    text = console.export_text()
    assert "hash chain" in text and "signed heads" in text and "verdict" in text and "FAILED" not in text
    assert "PLD ε" in text


def test_server_run_with_budget_and_infinite_epsilon(tmp_path: Path) -> None:
    plan = [(r, "server", 1.0, 0.01, 1) for r in range(1, 6)] + [(6, "server", 0.0, 0.01, 1)]
    run = make_run(tmp_path / "run", plan, mode="user-central", budget=50.0)
    report = audit_run(run)
    assert [f.kind for f in report.overshoots] == ["overshoot"] and report.overshoots[0].seq == 6
    assert not report.mismatches  # σ = 0 gives ε = ∞ in every accountant
    write_audit(report, run)
    payload = json.loads((run / AUDIT_FILE).read_text())
    assert payload["global"]["server_epsilon"] == "inf"
    assert payload["whos"][0]["recorded"][-1] == "inf"


# --- tampering -------------------------------------------------------------------------

def test_edited_row_breaks_the_chain(run: Path) -> None:
    db = sqlite3.connect(run / LEDGER_FILE)
    drop_triggers(db)
    db.execute("UPDATE ledger SET epsilon = epsilon / 2 WHERE seq = 4")
    db.commit()
    db.close()
    report = audit_run(run)
    assert not report.chain_ok and not report.ok
    assert any("seq=4" in p for p in report.chain_problems)


def test_deleted_middle_row_breaks_the_chain(run: Path) -> None:
    db = sqlite3.connect(run / LEDGER_FILE)
    drop_triggers(db)
    db.execute("DELETE FROM ledger WHERE seq = 3")
    db.commit()
    db.close()
    report = audit_run(run)
    assert not report.chain_ok and not report.ok


def test_deleted_last_row_is_caught_by_the_anchors(run: Path) -> None:
    db = sqlite3.connect(run / LEDGER_FILE)
    drop_triggers(db)
    db.execute(f"DELETE FROM ledger WHERE seq = {len(RECORD_PLAN)}")
    db.commit()
    db.close()
    report = audit_run(run)
    assert report.chain_ok and not report.anchors_ok and not report.ok
    assert "missing" in report.anchor_problems[0]


def test_forged_epsilon_with_a_rewritten_chain_is_caught_by_the_recompute(run: Path) -> None:
    forge(run, 5, epsilon=read_ledger(run / LEDGER_FILE)[4].epsilon * 0.8)
    report = audit_run(run)
    assert report.chain_ok and report.anchors_ok  # the forger covered the chain and the anchors
    assert not report.ok
    kinds = {(f.kind, f.seq) for f in report.mismatches}
    assert ("opacus", 5) in kinds and ("independent", 5) in kinds
    assert "below what its rows compose to" in next(f.message for f in report.mismatches if f.kind == "opacus")


def test_forged_parameters_are_caught_too(run: Path) -> None:
    forge(run, 2, noise_multiplier=5.0)  # claims more noise than was used: every later ε of client:2 is off
    report = audit_run(run)
    assert {f.seq for f in report.mismatches if f.kind == "opacus"} == {2, 5, 9}


@pytest.mark.parametrize("change", [{"sample_rate": 0.0}, {"noise_multiplier": math.inf}, {"steps": -3}])
def test_nonsense_parameters_are_reported_not_crashed_on(run: Path, change: dict) -> None:
    forge(run, 2, **change)
    report = audit_run(run)
    assert ("invalid", 2) in {(f.kind, f.seq) for f in report.mismatches} and not report.ok


def test_overshoot_is_flagged(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", budget=1.5)
    report = audit_run(run)
    assert report.overshoots and not report.mismatches and not report.ok
    spent = {(w.who, s): e for w in report.whos for s, e in zip(w.seqs, w.recorded)}
    assert all(spent[(f.who, f.seq)] > 1.5 for f in report.overshoots)
    assert len(report.overshoots) == sum(1 for e in spent.values() if e > 1.5)


# --- PRV rows ----------------------------------------------------------------------------

PRV_PLAN = [(r, f"client:{c}", 2.0, 0.001 * c, 10) for r in range(1, 4) for c in (1, 2)]


def test_prv_run_is_checked_with_pld(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", PRV_PLAN, accountant="prv")
    report = audit_run(run)
    assert not report.mismatches and not report.overshoots
    assert report.rows_opacus_checked == report.rows_independent_checked == len(PRV_PLAN)
    assert report.rows_bracketed == 0
    forced = audit_run(run, accountant="rdp")  # PRV below the independent RDP bound: fine
    assert not forced.mismatches and forced.rows_independent_checked == len(PRV_PLAN)


def test_prv_rows_past_the_exact_cap_are_bracketed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", PRV_PLAN, accountant="prv")
    report = audit_run(run, max_exact=2)  # the last row of each client only
    assert not report.mismatches
    assert report.rows_independent_checked == 2 and report.rows_bracketed == len(PRV_PLAN) - 2
    forge(run, 3, epsilon=100.0)  # above the RDP bound of its history
    report = audit_run(run, max_exact=2)
    assert ("bound", 3) in {(f.kind, f.seq) for f in report.mismatches}


# --- what cannot be audited ----------------------------------------------------------------

def test_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such run directory"):
        audit_run(tmp_path / "nope")


def test_run_without_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="--dp off"):
        audit_run(tmp_path)


def test_corrupt_ledger(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_bytes(os.urandom(4096))
    with pytest.raises(AuditError, match="not a readable SQLite"):
        audit_run(tmp_path)


def test_foreign_sqlite_file(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / LEDGER_FILE)
    db.execute("CREATE TABLE ratings (user INTEGER, item INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="not a fedrec privacy ledger"):
        audit_run(tmp_path)


def test_malformed_metrics_line(run: Path) -> None:
    with (run / METRICS_FILE).open("a") as metrics:
        metrics.write("{not json\n")
    with pytest.raises(AuditError, match=r"metrics.jsonl line 5: not JSON"):
        audit_run(run)


def test_unknown_forced_accountant(run: Path) -> None:
    with pytest.raises(AuditError, match="unknown independent accountant"):
        audit_run(run, accountant="gdp")


def test_missing_metrics_fails_the_audit_since_deleted_rows_would_go_unseen(run: Path) -> None:
    (run / METRICS_FILE).unlink()
    report = audit_run(run)
    assert not report.ok and not report.anchors_ok and report.anchors == 0
    assert any("no anchor" in problem for problem in report.anchor_problems)


def test_rows_after_the_last_anchor_are_a_note(run: Path) -> None:  # noqa: D103 (ε-only run)
    with PrivacyLedger(run / LEDGER_FILE) as ledger:  # a crash after the ledger write, before metrics
        rows = read_ledger(run / LEDGER_FILE)
        last = rows[-1]
        history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in rows if r.who == last.who]
        history.append(history[-1])
        ledger.append([dataclasses.replace(last.entry, round=5, epsilon=epsilon(history, DELTA, "rdp"))])
    report = audit_run(run)
    assert report.anchors_ok and not report.mismatches
    assert any("after the last anchor" in note for note in report.notes)


def test_a_resumed_run_config_is_a_note_but_an_edited_one_is_caught(tmp_path: Path) -> None:
    made = fabricate_run(tmp_path / "run", "user-central", finished=False)
    config_path = made.run_dir / CONFIG_FILE
    with PrivacyLedger(made.run_dir / LEDGER_FILE) as ledger:  # resumed: run_config.json rewritten, one more round
        config_path.write_text(json.dumps({**made.config, "resume": True}, indent=2, sort_keys=True))
        ledger.sign_head(3, False, hashlib.sha256((made.run_dir / PLAN_FILE).read_bytes()).hexdigest(),
                         hashlib.sha256(config_path.read_bytes()).hexdigest(), made.signer)
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    assert report.ok, report.problems()
    assert any("a resumed run rewrites it" in note for note in report.notes)
    config_path.write_text(json.dumps({**made.config, "delta": 1e-3}, indent=2, sort_keys=True))
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    assert any("signed config_sha256" in p and "(round 3)" in p for p in report.signature_problems)


def test_audit_json_states_each_whos_unit_and_relation(tmp_path: Path) -> None:
    from fedrec.core.privacy.audit_json import report_dict

    for mode, relation in (("user-local", "replace-one"), ("record", "add-remove"), ("user-central", "add-remove")):
        made = fabricate_run(tmp_path / mode, mode, rounds=2)
        whos = report_dict(audit_run(made.run_dir, verify_key=made.trusted_key))["whos"]
        assert whos and {(w["relation"], w["unit"]) for w in whos} == {
            (relation, "record" if mode == "record" else "user")}
