"""DP configuration: refusals with reasons, and σ derived from ε that meets ε."""

from __future__ import annotations

import pytest

from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import epsilon
from fedrec.core.run_config import RunConfig


@pytest.mark.parametrize("kwargs, message", [
    ({"dp": "record", "epsilon": -1.0}, "epsilon must be > 0"),
    ({"dp": "record"}, "needs --epsilon"),
    ({"dp": "user-local", "epsilon": 1.0, "delta": 0.0}, "delta must be in"),
    ({"dp": "user-local", "epsilon": 1.0, "delta": 1.0}, "delta must be in"),
    ({"dp": "user-central", "epsilon": 1.0, "clip": 0.0}, "clip must be > 0"),
    ({"dp": "user-central", "noise_multiplier": -1.0}, "noise-multiplier must be > 0"),
    ({"dp": "sometimes"}, "unknown dp mode"),
    ({"dp": "record", "epsilon": 1.0, "accountant": "moments"}, "unknown accountant"),
    ({"dp": "record", "epsilon": 1.0, "executor": "cohort"}, "per-client"),
])
def test_bad_privacy_configs_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_delta_must_be_below_one_over_the_number_of_units() -> None:
    config = RunConfig(dp="user-central", epsilon=8.0, delta=0.01)
    with pytest.raises(ValueError, match=r"below 1/n .*100 users"):
        plan.check_against_data(config, 100)
    plan.check_against_data(config, 50)  # 0.01 < 1/50
    record = RunConfig(dp="record", epsilon=8.0, delta=0.01)
    with pytest.raises(ValueError, match="records of the largest user"):
        plan.check_against_data(record, 1000, [20, 150, 30])


def test_a_sigma_that_cannot_meet_the_budget_is_refused() -> None:
    config = RunConfig(dp="user-central", epsilon=1.0, noise_multiplier=0.3, rounds=50, clients_per_round=100)
    with pytest.raises(ValueError, match="disagree"):
        plan.check_against_data(config, 1000)
    # a σ large enough for the budget is accepted: the budget simply never binds
    plan.check_against_data(RunConfig(dp="user-central", epsilon=8.0, noise_multiplier=5.0, rounds=50,
                                      clients_per_round=100), 1000)


@pytest.mark.parametrize("mode", ["user-central", "user-local", "record"])
def test_sigma_derived_from_epsilon_spends_at_most_epsilon_and_nearly_all_of_it(mode: str) -> None:
    config = RunConfig(dp=mode, epsilon=4.0, rounds=10, clients_per_round=50)
    spent = plan.planned_epsilon(config, 1000, [40, 60, 80])
    assert 0.97 * 4.0 <= spent <= 4.0


def test_describe_says_what_is_private() -> None:
    assert "nothing is private" in plan.describe(RunConfig(), 1000)
    line = plan.describe(RunConfig(dp="user-central", epsilon=8.0, rounds=20, clients_per_round=100), 1000)
    assert "unit = user" in line and "q=0.1" in line and "δ=1e-05" in line and "rdp" in line


def test_known_epsilons_of_the_subsampled_gaussian() -> None:
    # pinned values of Opacus' accountants (σ=1, q=0.1, 100 steps, δ=1e-5)
    assert epsilon([(1.0, 0.1, 100)], 1e-5, "rdp") == pytest.approx(7.8993, abs=1e-3)
    assert epsilon([(1.0, 0.1, 100)], 1e-5, "prv") == pytest.approx(7.057, abs=1e-2)
    # composition is order-free and split runs compose to the whole
    assert epsilon([(1.0, 0.1, 40), (1.0, 0.1, 60)], 1e-5, "rdp") == pytest.approx(
        epsilon([(1.0, 0.1, 100)], 1e-5, "rdp"))
    # the plain Gaussian mechanism (q = 1), once: ε grows as σ shrinks
    assert epsilon([(2.0, 1.0, 1)], 1e-5, "rdp") < epsilon([(1.0, 1.0, 1)], 1e-5, "rdp")
    assert epsilon([(0.0, 0.5, 1)], 1e-5, "rdp") == float("inf")


def test_participations_plan_sigma_for_fewer_rounds_and_the_budget_then_refuses() -> None:
    from fedrec.core.data.loaders import load_dataset
    from fedrec.core.data.split import leave_one_out
    from fedrec.core.privacy.client_round import private_train_users
    from fedrec.server.loop import initial_global_arrays

    every = RunConfig(dp="user-local", epsilon=4.0, rounds=20)
    two = RunConfig(dp="user-local", epsilon=4.0, rounds=20, dp_participations=2)
    assert plan.local_noise(two) < plan.local_noise(every)  # planned for 2 releases, not 20
    with pytest.raises(ValueError, match="dp-participations"):
        RunConfig(dp="user-local", epsilon=4.0, rounds=20, dp_participations=21)
    split = leave_one_out(load_dataset("synthetic", "", 0))
    arrays = initial_global_arrays(two, split.n_items)
    history: list = []
    refused = []
    for server_round in (1, 2, 3):
        _, releases, histories, _ = private_train_users(two, arrays, [None], [split.user_data(5, False)],
                                                        server_round, [history])
        history = histories[0]
        refused.append(releases[0].refused)
        assert releases[0].epsilon <= 4.0
    assert refused == [False, False, True]
