"""``dp user-distributed`` in the round driver: accounting, the emulated SecAgg sum, noise shares, refusals."""

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
from fedrec.core.federation.private_rounds import PrivateRounds
from fedrec.core.federation.server_step import initial_global, server_optimizer
from fedrec.core.privacy import distributed_mode
from fedrec.core.privacy.distributed_accounting import epsilon as ddg_epsilon
from fedrec.core.privacy.distributed_accounting import plan_distributed_dp, zcdp_epsilon
from fedrec.core.privacy.distributed_mode import FLOWER_REFUSAL, plan_for_split, rho_for_epsilon
from fedrec.core.privacy.plan import eval_noise, evaluation_rounds
from fedrec.core.privacy.quantisation import Quantiser, clip_to_norm, quantise, quantise_batch, reduce_modulo, rotate
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.secure_aggregation.config import SecAggConfig
from fedrec.secure_aggregation.in_process import run_round


@pytest.fixture(scope="module")
def split():
    return leave_one_out(load_dataset("synthetic", "", 0), 0)


def config(**overrides) -> RunConfig:
    values = dict(dataset="synthetic", model="mf", rounds=3, clients_per_round=20, dim=4, eval_every=3,
                  dp="user-distributed", epsilon=4.0, clip=1.0, lr=2.0, client_optimizer="sgd", server_lr=20.0)
    values.update(overrides)
    return RunConfig(**values)


def quantiser_of(row: dict) -> Quantiser:
    p = row["ddg"]
    return Quantiser(clip=p["clip"], gamma=p["gamma"], bits=p["bits"], dim=p["dim"], beta=p["beta"],
                     rotate=bool(p["rotate"]))


def test_a_run_finishes_and_reports_the_accountants_epsilon(split) -> None:
    c = config()
    rows = run_federation(c, split, evaluate=False).rows
    assert [r["round"] for r in rows] == [1, 2, 3]
    for t, row in enumerate(rows, start=1):
        p = row["ddg"]
        assert row["clients"] == 20 and p["n_min"] == 20 and p["bits"] == 20 and p["clip"] == 1.0
        # the reported ε is the accountant's for the row's parameters after t rounds
        assert row["epsilon_max"] == ddg_epsilon(p["sigma_share"], n_min=p["n_min"], rounds=t, delta=c.delta,
                                                 quantiser=quantiser_of(row))
    # the parameters are plan_distributed_dp's for the training share of the budget
    releases = evaluation_rounds(c)
    sigma_e = eval_noise(c, split.n_users)
    rho_train = rho_for_epsilon(c.epsilon, c.delta) - releases / (2 * sigma_e ** 2)
    ddg = plan_distributed_dp(zcdp_epsilon(rho_train, c.delta), delta=c.delta, rounds=3, n_min=20, n_clients=20,
                              clip=1.0, dim=rows[-1]["ddg"]["dim"], bits=20, target_wrap_probability=1e-9)
    assert rows[-1]["ddg"]["gamma"] == ddg.quantiser.gamma and rows[-1]["ddg"]["sigma_share"] == ddg.noise_std
    # training alone stays below the budget; training and the planned evaluations reach it at most
    assert rows[-1]["epsilon_max"] < c.epsilon


def test_the_evaluated_run_spends_at_most_the_budget(split) -> None:
    c = config()
    rows = run_federation(c, split).rows
    run = plan_for_split(c, split)
    final = rows[-1]
    assert final["evaluation"] == "exact (harness)" and 0 <= final["hr@10"] <= 1
    expected = zcdp_epsilon(3 * run.round_rho + 1 / (2 * run.eval_noise_multiplier ** 2), c.delta)
    assert final["epsilon_max"] == pytest.approx(expected, rel=1e-12)
    assert final["epsilon_max"] <= c.epsilon * (1 + 1e-9)


def _one_round(split, c: RunConfig, encode=None):
    """One user-distributed round with every client's (flat update, encoded vector) kept."""
    family = family_of(c.model)
    private = PrivateRounds(c, family, split.n_users)
    private.start(split)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    private.observe_encoding = lambda flat, encoded: seen.append((flat.copy(), encoded.copy()))
    arrays = initial_global(c, split)
    private.round(split, arrays, {}, server_optimizer(c, split.n_items), 1)
    return private, seen


def test_the_emulated_sum_equals_the_secagg_rounds_sum(split) -> None:
    c = config(clients_per_round=8, dim=2)
    private, seen = _one_round(split, c)
    assert len(seen) == 8
    bits = private.distributed.quantiser.bits
    length = private.distributed.quantiser.encoded_dim
    inputs = {node + 1: np.mod(encoded, 1 << bits).astype(np.uint64) for node, (_, encoded) in enumerate(seen)}
    secagg = SecAggConfig(num_clients=8, neighbourhood_size=7, threshold=5, modulus_bits=bits, vector_length=length)
    unmasked = run_round(secagg, inputs).total
    assert private.last_modular_sum.dtype == np.int64
    np.testing.assert_array_equal(reduce_modulo(unmasked.astype(np.int64), bits), private.last_modular_sum)


def _carries_a_noise_share(run, flat: np.ndarray, encoded: np.ndarray, seed: int) -> bool:
    """Whether ``encoded`` is the update's rounding plus a discrete Gaussian of std σ_share
    (the rounding alone moves each coordinate by less than 1 grid unit)."""
    q = run.quantiser
    scaled = rotate(clip_to_norm(flat, q.clip) / q.gamma, seed)
    residual = reduce_modulo(encoded - np.round(scaled).astype(np.int64), q.bits).astype(np.float64)
    return bool(np.all(residual == np.round(residual))
                and abs(residual.std() / run.share_std - 1) < 0.1 and abs(residual.mean()) < 0.2 * run.share_std)


def test_nothing_unnoised_leaves_a_client(split) -> None:
    c = config(clients_per_round=8, dim=2)
    private, seen = _one_round(split, c)
    seed = distributed_mode.rotation_seed(c.seed, 1)
    assert seen and all(_carries_a_noise_share(private.distributed, flat, encoded, seed) for flat, encoded in seen)
    assert any(np.linalg.norm(flat) > 0 for flat, _ in seen)


def test_the_noise_check_fails_without_the_noise_share(split, monkeypatch) -> None:
    """The check above is not vacuous: an encoding without its share fails it."""
    def noiseless(updates, run, seed, rngs):
        return reduce_modulo(quantise_batch(updates, run.quantiser, 0.0, rngs, seed), run.quantiser.bits)

    monkeypatch.setattr("fedrec.core.federation.private_rounds.encode_updates", noiseless)
    c = config(clients_per_round=8, dim=2)
    private, seen = _one_round(split, c)
    seed = distributed_mode.rotation_seed(c.seed, 1)
    assert seen and not any(_carries_a_noise_share(private.distributed, flat, encoded, seed) for flat, encoded in seen)


def test_the_encoding_is_the_noiseless_one_plus_a_discrete_gaussian_draw(split) -> None:
    run = plan_for_split(config(clients_per_round=8, dim=2), split)
    update = np.random.default_rng(0).normal(size=run.quantiser.dim) * 0.01
    key = bytes(range(32))
    noised = distributed_mode.encode_update(update, run, 7, SecureRandom(key))
    plain = quantise(update, run.quantiser, 0.0, SecureRandom(key), 7)  # same coins, no share
    draw = reduce_modulo(noised - plain, run.quantiser.bits)
    assert np.count_nonzero(draw) > 0.99 * draw.size
    assert draw.std() == pytest.approx(run.share_std, rel=0.1)


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    ({"model": "item-knn"}, "model item-knn: not supported yet"),
    ({"model": "sasrec", "dim": 32}, "model sasrec: not supported yet"),
    ({"noise_multiplier": 1.0}, "--noise-multiplier is not supported"),
    ({"epsilon": 0.0}, "user-distributed needs --epsilon"),
    ({"catalogue": "items.txt", "dataset": "deployment", "min_nodes": 1}, "needs min-nodes ≥ 2"),
    ({"ddg_bits": 3}, "ddg-bits must be in 4..48"),
    ({"ddg_min_clients": -1}, "ddg-min-clients must be ≥ 0"),
    ({"ddg_wrap_probability": 0.0}, "ddg-wrap-probability must be in"),
])
def test_unsupported_set_ups_are_refused_at_validation(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        config(**overrides)


def test_flower_simulation_refuses_the_mode(tmp_path: Path) -> None:
    from fedrec.simulations.simulate import simulate

    with pytest.raises(ValueError, match="runs only in the Flower-free round driver"):
        simulate(config(), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_the_server_loop_refuses_the_mode(tmp_path: Path) -> None:
    from fedrec.server.loop import _check_private_setup

    with pytest.raises(ValueError) as error:
        _check_private_setup(config(), tmp_path, 1, 2, 100)
    assert str(error.value) == FLOWER_REFUSAL


def test_more_min_clients_than_sampled_is_refused_at_start(split) -> None:
    with pytest.raises(ValueError, match="ddg-min-clients = 30 exceeds the 20 clients sampled per round"):
        run_federation(config(ddg_min_clients=30), split)


def test_a_modulus_too_small_is_refused_at_start_with_the_reason(split) -> None:
    with pytest.raises(ValueError, match="ddg-bits = 6 cannot hold 20 clients"):
        run_federation(config(ddg_bits=6), split)


def test_a_dropout_allowance_over_provisions_each_share(split) -> None:
    full = plan_for_split(config(), split)
    allowance = plan_for_split(config(ddg_min_clients=15), split)
    assert allowance.n_min == 15 and full.n_min == 20
    # fewer counted shares: each carries more noise, in update units
    assert allowance.share_std * allowance.quantiser.gamma > full.share_std * full.quantiser.gamma
    assert allowance.epsilon(3, 1) <= 4.0 * (1 + 1e-9)
    assert replace(config(), ddg_min_clients=0).ddg_min_clients == 0


# --- ledger rows and the audit's recompute --------------------------------------------------

@pytest.fixture(scope="module")
def driven(split):
    """A 3-round run with one evaluation: its ledger entries (rows of the server's accountant)."""
    c = config()
    family = family_of(c.model)
    private = PrivateRounds(c, family, split.n_users)
    private.start(split)
    arrays, optimizer = initial_global(c, split), server_optimizer(c, split.n_items)
    for server_round in (1, 2, 3):
        arrays, row = private.round(split, arrays, {}, optimizer, server_round)
    final = private.count_evaluation(split)
    return c, private.ledger_entries, row, final


def test_ledger_rows_carry_the_mechanism_and_the_audit_recomputes_their_epsilon(split, driven, tmp_path, write_ledger,
                                                                             audit_rows) -> None:
    import json

    c, entries, row, final = driven
    rows = write_ledger(tmp_path, entries)
    assert [(r.release, r.round) for r in rows] == [("train", 1), ("train", 2), ("train", 3), ("evaluate", 3)]
    params = json.loads(rows[0].mechanism)
    for key in ("gamma", "sigma_share", "n_min", "bits", "clip", "beta", "rounds"):
        assert params[key] == row["ddg"][key]
    assert all(r.who == "server" and r.relation == "zero-out" and r.accountant == "ddg-zcdp" for r in rows)
    assert rows[2].epsilon == row["epsilon_max"] and rows[-1].epsilon == final <= c.epsilon * (1 + 1e-9)
    check, whos = audit_rows(rows)
    assert check.findings == [] and check.opacus_checked == 4
    # the train rows' ε is distributed_accounting.epsilon of their parameters
    q = Quantiser(clip=params["clip"], gamma=params["gamma"], bits=params["bits"], dim=params["dim"],
                  beta=params["beta"], rotate=bool(params["rotate"]))
    assert whos[0].opacus[:3] == [ddg_epsilon(params["sigma_share"], n_min=params["n_min"], rounds=t, delta=c.delta,
                                              quantiser=q) for t in (1, 2, 3)]


def _forged(entries, index: int, **changes):
    return [replace(e, **changes) if i == index else e for i, e in enumerate(entries)]


def test_an_audit_of_a_tampered_sigma_fails(split, driven, tmp_path, write_ledger, audit_rows) -> None:
    """A forger who re-chains the ledger with a larger σ_share (more noise claimed) is caught
    by the recompute, whether or not the row's noise multiplier was changed to match."""
    import json
    import math

    _, entries, _, _ = driven
    params = json.loads(entries[1].mechanism)
    params["sigma_share"] *= 1.5
    claimed = json.dumps(params, sort_keys=True, separators=(",", ":"))
    alone = _forged(entries, 1, mechanism=claimed)
    matched = _forged(entries, 1, mechanism=claimed,
                      noise_multiplier=math.sqrt(params["n_min"]) * params["sigma_share"] / entries[1].sensitivity)
    for number, forged in enumerate((alone, matched)):
        folder = tmp_path / str(number)
        folder.mkdir()
        check, _ = audit_rows(write_ledger(folder, forged))
        kinds = {(f.kind, f.seq) for f in check.findings}
        assert ("opacus", 2) in kinds, check.findings


def test_an_audit_of_a_tampered_noise_multiplier_fails(split, driven, tmp_path, write_ledger, audit_rows) -> None:
    _, entries, _, _ = driven
    check, _ = audit_rows(write_ledger(tmp_path, _forged(entries, 0, noise_multiplier=entries[0].noise_multiplier * 2)))
    assert any(f.kind == "invalid" and f.seq == 1 and "noise_multiplier" in f.message for f in check.findings)


def test_a_row_without_its_parameters_is_invalid(split, driven) -> None:
    from fedrec.core.privacy.ledger_rows import check_entry

    _, entries, _, _ = driven
    with pytest.raises(ValueError, match="mechanism must be a JSON object"):
        check_entry(replace(entries[0], mechanism=""))
    with pytest.raises(ValueError, match="accounted by 'ddg-zcdp'"):
        check_entry(replace(entries[0], accountant="rdp"))
    with pytest.raises(ValueError, match="only the distributed modes. rows carry"):
        check_entry(replace(entries[0], mode="user-central", relation="add-remove", accountant="rdp"))


def test_a_ledger_written_before_the_mechanism_column_reads_verifies_and_refuses_ddg_rows(driven, tmp_path) -> None:
    import sqlite3

    from fedrec.core.privacy import ledger as ledger_file
    from fedrec.core.privacy.ledger_chain import verify_chain

    path = tmp_path / ledger_file.LEDGER_FILE
    db = sqlite3.connect(path)
    db.executescript(ledger_file._SCHEMA.replace("    mechanism TEXT NOT NULL DEFAULT '',\n", ""))
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("format", ledger_file.FORMAT), ("version", ledger_file.VERSION)])
    db.commit()
    db.close()
    _, entries, _, _ = driven
    central = replace(entries[0], mode="user-central", relation="add-remove", accountant="rdp", mechanism="",
                      budget=None)
    with ledger_file.PrivacyLedger(path, run_id="driver-0") as ledger:
        ledger.append([central])
        with pytest.raises(ledger_file.LedgerError, match="predates the mechanism column"):
            ledger.append(entries[:1])
    rows = ledger_file.read_ledger(path)
    assert [r.mechanism for r in rows] == [""] and verify_chain(rows) == []
