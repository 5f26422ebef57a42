"""``user-central`` with ``dp-groups``: cyclic groups, noise correlated across rounds, one GDP ε."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.families.registry import family_of
from fedrec.core.federation.driver import run_federation
from fedrec.core.federation.private_rounds import PrivateRounds
from fedrec.core.federation.server_step import initial_global
from fedrec.core.privacy import correlated_noise as cn
from fedrec.core.privacy.correlated_rounds import cyclic_groups, plan_correlated
from fedrec.core.privacy.distributed_mode import flatten


@pytest.fixture(scope="module")
def split():
    return leave_one_out(load_dataset("synthetic", "", 0), 0)


def config(**overrides) -> RunConfig:
    values = dict(dataset="synthetic", model="mf", rounds=6, dim=2, eval_every=3, dp="user-central", epsilon=4.0,
                  clip=1.0, lr=2.0, client_optimizer="sgd", server_lr=20.0, dp_groups=3, dp_mechanism="banded-mf")
    values.update(overrides)
    return RunConfig(**values)


class Capture:
    """A server optimiser that keeps what it is asked to step with."""

    def __init__(self) -> None:
        self.means: list[dict[str, np.ndarray]] = []

    def step(self, arrays, mean):
        self.means.append(mean)
        return arrays


def _delta_by_integration(mu: float, eps: float) -> float:
    grid = np.linspace(-40, 40, 400_001)
    return float(np.maximum(0.0, norm.pdf(grid, mu) - math.exp(eps) * norm.pdf(grid)).sum() * (grid[1] - grid[0]))


def test_groups_partition_the_users_and_repeat_cyclically() -> None:
    groups = cyclic_groups(10, 3, seed=7)
    assert sorted(itertools.chain.from_iterable(groups)) == list(range(10))
    assert [len(g) for g in groups] == [4, 3, 3]
    assert cyclic_groups(10, 3, seed=7) == groups != cyclic_groups(10, 3, seed=8)
    c = config()
    plan = plan_correlated(c, 10)
    assert plan.users(1) == plan.users(4) == list(plan.groups[0]) and plan.users(2) == list(plan.groups[1])


def test_the_plan_spends_the_budget_and_the_row_recomputes_it_independently(split) -> None:
    """ε of the whole run from the row's parameters: a dense C, the worst separated set by
    brute force, GDP composition with the evaluations, δ(ε) by numerical integration."""
    c = config()
    result = run_federation(c)
    last = result.rows[-1]
    params = last["correlated"]
    assert last["epsilon_max"] == pytest.approx(c.epsilon, rel=1e-6) and last["epsilon_max"] <= c.epsilon * (1 + 1e-9)
    dense = cn.toeplitz_matrix(np.array(params["coefficients"]), params["rounds"])
    gram = dense.T @ dense
    worst = max(gram[np.ix_(s, s)].sum() for size in range(1, 3) for s in itertools.combinations(range(6), size)
                if all(b - a >= params["groups"] for a, b in zip(s, s[1:])))
    mu_train = params["clip"] * math.sqrt(worst) / params["noise_std"]
    evaluations = 2  # rounds 3 and 6
    mu = math.sqrt(mu_train ** 2 + evaluations / params["eval_sigma"] ** 2)
    assert _delta_by_integration(mu, last["epsilon_max"]) == pytest.approx(c.delta, rel=1e-3)


def test_the_server_adds_the_streams_noise_to_the_clipped_sum(split, monkeypatch) -> None:
    """Two runs of the same round with different noise: their means differ by exactly the
    difference of the noises over n/g (training is seeded, the noise is not). Without the
    noise this fails (the means would be equal)."""
    c = config()
    family = family_of(c.model)
    drawn: list[np.ndarray] = []
    original = cn.NoiseStream.next

    def recording(self):
        noise = original(self)
        drawn.append(noise)
        return noise

    monkeypatch.setattr(cn.NoiseStream, "next", recording)
    means = []
    for _ in range(2):
        private = PrivateRounds(c, family, split.n_users)
        private.start(split)
        capture = Capture()
        arrays = initial_global(c, split)
        private.round(split, arrays, {}, capture, 1)
        names = sorted(arrays)
        means.append(flatten(capture.means[0], names))
    divisor = private.correlated.divisor
    assert np.linalg.norm(drawn[0] - drawn[1]) > 1.0
    np.testing.assert_allclose((means[0] - means[1]) * divisor, drawn[0] - drawn[1], atol=1e-3)
    clipped_sum = means[0] * divisor - drawn[0]
    assert np.linalg.norm(clipped_sum) <= len(private.correlated.users(1)) * c.clip * (1 + 1e-4)


def test_an_extra_evaluation_past_the_budget_is_not_counted(split) -> None:
    c = config()
    private = PrivateRounds(c, family_of(c.model), split.n_users)
    private.start(split)
    private.rounds_done = c.rounds
    private.evaluations_done = 2  # what the plan left room for
    before = private.count_evaluation(split)
    assert private.evaluations_done == 2 and before <= c.epsilon * (1 + 1e-9)


@pytest.mark.parametrize("overrides,message", [
    ({"dp_groups": 0}, "needs dp-groups ≥ 2"),
    ({"dp": "user-local"}, "user-central only"),
    ({"dp_mechanism": "tree"}, "unknown dp-mechanism"),
    ({"dp_groups": -1, "dp_mechanism": "gaussian"}, "dp-groups must be ≥ 0"),
    ({"adaptive_clip": True}, "not supported"),
])
def test_bad_settings_are_refused(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_a_budget_the_evaluations_exhaust_is_refused() -> None:
    c = config(epsilon=0.05, eval_every=1, eval_noise_multiplier=0.5)
    with pytest.raises(ValueError, match="alone spend the budget"):
        plan_correlated(c, 100)


def test_the_flower_server_refuses_dp_groups(tmp_path: Path) -> None:
    from fedrec.server.loop import _check_private_setup

    with pytest.raises(ValueError, match="round driver only"):
        _check_private_setup(config(), tmp_path, 1, 10, 10)


# --- ledger rows and the audit's recompute --------------------------------------------------

@pytest.fixture(scope="module")
def driven(split):
    """Six rounds, evaluations after rounds 3 and 6: the server's gdp rows, the last round's row."""
    from fedrec.core.federation.server_step import server_optimizer

    c = config()
    private = PrivateRounds(c, family_of(c.model), split.n_users)
    private.start(split)
    arrays, optimizer = initial_global(c, split), server_optimizer(c, split.n_items)
    final = None
    for server_round in range(1, 7):
        arrays, row = private.round(split, arrays, {}, optimizer, server_round)
        if server_round % 3 == 0:
            final = private.count_evaluation(split)
    return c, private.ledger_entries, row, final


def test_gdp_rows_are_written_and_the_audit_recomputes_them(driven, tmp_path, write_ledger, audit_rows) -> None:
    c, entries, row, final = driven
    rows = write_ledger(tmp_path, entries)
    check, whos = audit_rows(rows)
    assert [(r.release, r.round) for r in rows] == [("train", 1), ("train", 2), ("train", 3), ("evaluate", 3),
                                                    ("train", 4), ("train", 5), ("train", 6), ("evaluate", 6)]
    assert all(r.who == "server" and r.accountant == "gdp" and r.mode == "user-central" for r in rows)
    assert check.findings == [] and check.opacus_checked == len(rows)
    assert rows[-1].epsilon == final <= c.epsilon * (1 + 1e-9) and rows[-2].epsilon == row["epsilon_max"]
    assert whos[0].opacus[-1] == pytest.approx(final, rel=1e-9)


@pytest.mark.parametrize("change", ["noise_std", "coefficients", "groups"])
def test_an_audit_of_a_tampered_gdp_row_fails(driven, tmp_path, change, write_ledger, audit_rows) -> None:
    """More noise, a flatter factor or a wider separation claimed in a re-chained ledger: caught."""
    import json
    from dataclasses import replace

    _, entries, _, _ = driven
    params = json.loads(entries[1].mechanism)
    if change == "noise_std":
        params[change] *= 1.5
    elif change == "coefficients":
        params[change] = [params[change][0]] + [0.0] * (len(params[change]) - 1)
    else:
        params[change] += 3
    forged = [replace(e, mechanism=json.dumps(params, sort_keys=True, separators=(",", ":"))) if i == 1 else e
              for i, e in enumerate(entries)]
    check, _ = audit_rows(write_ledger(tmp_path, forged))
    assert any(f.seq == 2 for f in check.findings), check.findings


def test_a_gdp_row_without_its_parameters_is_invalid(driven) -> None:
    from dataclasses import replace

    from fedrec.core.privacy.ledger_rows import check_entry

    _, entries, _, _ = driven
    check_entry(entries[0])
    with pytest.raises(ValueError, match="mechanism must be a JSON object"):
        check_entry(replace(entries[0], mechanism=""))
    with pytest.raises(ValueError, match="the server's"):
        check_entry(replace(entries[0], who="client:3"))
