"""``dp record-distributed`` in the round driver: its plan, its rows, its refusals, its noise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.families.registry import family_of
from fedrec.core.federation.driver import run_federation
from fedrec.core.federation.record_rounds import FLOWER_REFUSAL, RecordRounds
from fedrec.core.privacy import record_distributed as rd
from fedrec.core.privacy.distributed_accounting import zcdp_epsilon


@pytest.fixture(scope="module")
def split():
    return leave_one_out(load_dataset("synthetic", "", 0), 0)


def config(**overrides) -> RunConfig:
    values = dict(dataset="synthetic", model="mf", rounds=3, dim=4, eval_every=3, dp="record-distributed",
                  epsilon=8.0, clip=0.2, lr=0.5, server_lr=10.0, ddg_bits=48, clients_per_round=40)
    values.update(overrides)
    return RunConfig(**values)


def test_a_run_spends_at_most_its_budget_and_its_rows_recompute_it(split) -> None:
    c = config()
    result = run_federation(c, split)
    rows = result.rows
    assert [r["round"] for r in rows] == [1, 2, 3] and all(r["clients"] == 40 for r in rows)
    params = rows[-1]["record_ddg"]
    assert rows[-1]["epsilon_max"] <= c.epsilon * (1 + 1e-9)
    assert rows[-1]["epsilon_max"] == pytest.approx(c.epsilon, rel=1e-6)  # the plan spends the budget
    # ε from the row's own numbers: KLS21's bound (τ = 0 at these σ) + the local Gaussian, per round
    bound = params["scale"] + params["rounding_slack"]
    shared = bound ** 2 / (params["n_min"] * params["sigma_share"] ** 2) / 2
    local = 1 / (2 * params["local_noise_multiplier"] ** 2)
    assert params["local_noise_multiplier"] == pytest.approx(
        np.sqrt(params["n_min"]) * params["sigma_share"] / params["scale"])
    records = RecordRounds(c, family_of("mf"), split, family_of("mf").initial_global(c, split))
    evaluation_rho = 1 / (2 * records.plan.eval_noise_multiplier ** 2)
    assert zcdp_epsilon(3 * (shared + local) + evaluation_rho, c.delta) == pytest.approx(rows[-1]["epsilon_max"],
                                                                                        rel=1e-6)
    assert "records" not in rows[-1] and "train_loss" in rows[-1] and rows[-1]["train_loss"] is None


def test_local_parameters_move_only_with_noise(split, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with no training record still has its user vector moved by its device's noise,
    and two runs of the same seed end with different local parameters: the noise is there
    and does not come from the run seed (fails if the local noise were dropped)."""
    from fedrec.core.federation.driver import round_users

    c = config(rounds=1, eval_every=1)
    family = family_of("mf")
    silent = round_users(family, split, c, 1)[0]
    original = type(family).user_data

    def without_records(self, data_split, user: int, for_evaluation: bool = True):
        data = original(self, data_split, user, for_evaluation=for_evaluation)
        if user == silent:
            return replace(data, train_items=np.zeros(0, dtype=np.int64))
        return data

    monkeypatch.setattr(type(family), "user_data", without_records)
    first, second = run_federation(c, split), run_federation(c, split)
    from fedrec.core.training.local_round import new_local_parameters

    start = new_local_parameters("mf", split.n_items, c.dim, c.seed, silent)["user_embedding.weight"]
    moved = first.locals[silent]["user_embedding.weight"] - start
    assert np.linalg.norm(moved) > 0.5 * c.lr * c.clip * first.rows[-1]["record_ddg"]["local_noise_multiplier"]
    other = round_users(family, split, c, 1)[1]
    assert not np.allclose(first.locals[other]["user_embedding.weight"], second.locals[other]["user_embedding.weight"])
    assert not np.allclose(first.arrays["item_embedding.weight"], second.arrays["item_embedding.weight"])


def test_the_shared_step_is_the_decoded_sum_over_the_clients(split, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server steps with −lr·(decoded sum)/n: captured at the server optimiser and
    compared with the round's decoded modular sum."""
    seen: dict[str, object] = {}
    real_round = rd.record_round

    def spy(*args, **kwargs):
        out = real_round(*args, **kwargs)
        seen["out"] = out
        return out

    monkeypatch.setattr("fedrec.core.federation.record_rounds.record_round", spy)
    c = config(rounds=1, eval_every=1, server_lr=1.0)
    from fedrec.core.federation import record_rounds

    class Capture:
        def step(self, arrays, mean):
            seen["mean"] = mean
            return arrays

    records = RecordRounds(c, family_of("mf"), split, family_of("mf").initial_global(c, split))
    arrays = family_of("mf").initial_global(c, split)
    records.round(split, arrays, {}, Capture(), 1)
    out = seen["out"]
    assert isinstance(out, rd.RoundOutput) and record_rounds is not None
    for name, value in seen["mean"].items():
        np.testing.assert_allclose(value, -c.lr * out.shared_sum[name] / c.clients_per_round, rtol=1e-5, atol=1e-7)
    centred = out.modular_sum
    assert centred.min() >= -(1 << 47) and centred.max() < (1 << 47)


def test_a_run_past_its_plan_stops(split) -> None:
    c = config(rounds=2, eval_every=2)
    records = RecordRounds(c, family_of("mf"), split, family_of("mf").initial_global(c, split))
    records.rounds_done = 2
    assert not records.round_allowed()


@pytest.mark.parametrize("overrides, message", [
    (dict(noise_multiplier=1.0), "noise-multiplier is not supported"),
    (dict(epsilon=0.0), "needs --epsilon"),
    (dict(personal="head+tune", model="gmf"), "tune-epochs"),
    (dict(train_negatives="unseen-all"), "the record modes draw them per example"),
])
def test_bad_set_ups_are_refused_by_the_config(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_too_few_bits_are_refused_with_the_bits_needed(split) -> None:
    with pytest.raises(ValueError, match=r"use ddg-bits ≥ \d+"):
        run_federation(config(ddg_bits=20), split)


def test_the_flower_paths_refuse_it(tmp_path: Path) -> None:
    from fedrec.simulations.simulate import simulate

    with pytest.raises(ValueError, match="round driver only"):
        simulate(config(), tmp_path / "run")
    assert "round driver" in FLOWER_REFUSAL


# --- ledger rows and the audit's recompute --------------------------------------------------

@pytest.fixture(scope="module")
def driven(split):
    """Three rounds and one evaluation: the server's ledger entries, the last row, the final ε."""
    from fedrec.core.federation.private_rounds import PrivateRounds
    from fedrec.core.federation.server_step import initial_global, server_optimizer

    c = config()
    private = PrivateRounds(c, family_of(c.model), split.n_users)
    private.start(split)
    arrays, optimizer = initial_global(c, split), server_optimizer(c, split.n_items)
    for server_round in (1, 2, 3):
        arrays, row = private.round(split, arrays, {}, optimizer, server_round)
    final = private.count_evaluation(split)
    return c, private.records.ledger_entries, row, final


def _forged(entries, index: int, **changes):
    return [replace(e, **changes) if i == index else e for i, e in enumerate(entries)]


def test_ledger_rows_carry_the_mechanism_and_the_audit_recomputes_them(driven, tmp_path, write_ledger,
                                                                       audit_rows) -> None:
    import json

    c, entries, row, final = driven
    rows = write_ledger(tmp_path, entries)
    assert [(r.release, r.round) for r in rows] == [("train", 1), ("train", 2), ("train", 3), ("evaluate", 3)]
    assert all(r.who == "server" and r.unit == "record" and r.relation == "add-remove"
               and r.accountant == "ddg-zcdp" for r in rows)
    params = json.loads(rows[0].mechanism)
    assert {k: params[k] for k in ("scale", "sigma_share", "n_min", "bits", "clip")} == \
        {k: row["record_ddg"][k] for k in ("scale", "sigma_share", "n_min", "bits", "clip")}
    assert rows[2].epsilon == row["epsilon_max"] and rows[-1].epsilon == final <= c.epsilon * (1 + 1e-9)
    check, whos = audit_rows(rows)
    assert check.findings == [] and check.opacus_checked == 4
    assert whos[0].opacus[-1] == pytest.approx(final, rel=1e-9)


@pytest.mark.parametrize("change", ["sigma_share", "scale", "row_widths", "negatives"])
def test_an_audit_of_a_tampered_mechanism_fails(driven, tmp_path, change, write_ledger, audit_rows) -> None:
    """A forger who claims more noise, a finer grid, a smaller model or fewer negatives (less
    rounding slack) in a re-chained ledger is caught by the recompute."""
    import json

    _, entries, _, _ = driven
    params = json.loads(entries[1].mechanism)
    if change == "row_widths":
        params[change] = [1 for _ in params[change]]
    elif change == "negatives":
        params[change] = 1
    else:
        params[change] *= 1.5 if change == "sigma_share" else 0.5
    claimed = json.dumps(params, sort_keys=True, separators=(",", ":"))
    check, _ = audit_rows(write_ledger(tmp_path, _forged(entries, 1, mechanism=claimed)))
    assert any(f.seq == 2 and f.kind in ("invalid", "opacus") for f in check.findings), check.findings


def test_an_audit_of_a_tampered_epsilon_or_noise_multiplier_fails(driven, tmp_path, write_ledger, audit_rows) -> None:
    _, entries, _, _ = driven
    lowered = _forged(entries, 2, epsilon=entries[2].epsilon / 2)
    check, _ = audit_rows(write_ledger(tmp_path, lowered))
    assert any(f.kind == "opacus" and f.seq == 3 for f in check.findings)
    folder = tmp_path / "noise"
    folder.mkdir()
    check, _ = audit_rows(write_ledger(folder, _forged(entries, 0, noise_multiplier=entries[0].noise_multiplier * 2)))
    assert any(f.kind == "invalid" and f.seq == 1 and "noise_multiplier" in f.message for f in check.findings)


def test_a_row_without_its_parameters_is_invalid(driven) -> None:
    from fedrec.core.privacy.ledger_rows import check_entry

    _, entries, _, _ = driven
    check_entry(entries[0])
    with pytest.raises(ValueError, match="mechanism must be a JSON object"):
        check_entry(replace(entries[0], mechanism=""))
    with pytest.raises(ValueError, match="accounted by 'ddg-zcdp'"):
        check_entry(replace(entries[0], accountant="rdp"))
    with pytest.raises(ValueError, match="who must be 'server'"):
        check_entry(replace(entries[0], who="client:1"))
    with pytest.raises(ValueError, match="relation"):
        check_entry(replace(entries[0], relation="zero-out"))
