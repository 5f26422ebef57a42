"""DP configuration: refusals with reasons, and σ derived from ε that meets ε."""

from __future__ import annotations

import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import epsilon
from fedrec.core.privacy.secure_random import SecureRandom


@pytest.mark.parametrize("kwargs, message", [
    ({"dp": "record", "epsilon": -1.0}, "epsilon must be > 0"),
    ({"dp": "record"}, "needs --epsilon"),
    ({"dp": "user-local", "epsilon": 1.0, "delta": 0.0}, "delta must be in"),
    ({"dp": "user-local", "epsilon": 1.0, "delta": 1.0}, "delta must be in"),
    ({"dp": "user-central", "epsilon": 1.0, "clip": 0.0}, "clip must be > 0"),
    ({"dp": "user-central", "noise_multiplier": -1.0}, "noise-multiplier must be > 0"),
    ({"dp": "sometimes"}, "unknown dp mode"),
    ({"dp": "record", "epsilon": 1.0, "accountant": "moments"}, "unknown accountant"),
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
    # the evaluations are part of it: training alone spends less than the budget
    train_only = epsilon([plan.planned_history(config, 1000)[0]], config.delta, config.accountant)
    assert train_only < spent


def test_describe_says_what_is_private() -> None:
    assert "nothing is private" in plan.describe(RunConfig(), 1000)
    line = plan.describe(RunConfig(dp="user-central", epsilon=8.0, rounds=20, clients_per_round=100), 1000)
    assert "unit = user" in line and "q=0.1" in line and "δ=1e-05" in line and "rdp" in line
    assert "relation = add-remove" in line and "evaluations noised" in line
    local = plan.describe(RunConfig(dp="user-local", epsilon=8.0, rounds=20), 1000)
    assert "relation = replace-one" in local and "sensitivity 2C" in local
    record = plan.describe(RunConfig(dp="record", epsilon=8.0, rounds=20), 1000)
    assert "relation = add-remove" in record and "public Poisson q=0.25" in record


def _replace_one_gaussian_epsilon(noise_std: float, bound: float, releases: int, delta: float) -> float:
    """dp_accounting's PLD of ``releases`` Gaussian releases under replace-one, each value of
    L2 norm ≤ ``bound`` (two values then differ by up to 2·bound; independent of fedrec's
    accounting)."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    one = pld.from_gaussian_mechanism(noise_std, sensitivity=bound, value_discretization_interval=1e-3,
                                      neighboring_relation=pld.NeighborRel.REPLACE_ONE)
    return float(one.self_compose(releases).get_epsilon_for_delta(delta))


def test_user_local_is_accounted_as_replace_one_and_its_epsilon_is_true() -> None:
    # The adversary sees one user's release alone: two datasets of that user give updates up
    # to 2C apart. With σ from ε=8 the true replace-one ε of the training releases must be ≤ 8
    # (before the fix it was accounted with sensitivity C: printed 7.97, true ≈ 45).
    config = RunConfig(dp="user-local", epsilon=8.0)
    sigma = plan.local_noise(config)
    true_eps = _replace_one_gaussian_epsilon(sigma * config.clip, config.clip, config.rounds, config.delta)
    assert true_eps <= 8.0
    # the old accounting (sensitivity C) added noise std σ_acc·C for the same printed ε: its true
    # replace-one ε is far above 8
    old_std = plan.training_step(config)[0] * config.clip
    assert _replace_one_gaussian_epsilon(old_std, config.clip, config.rounds, config.delta) > 2 * 8.0
    assert plan.training_step(config) == (sigma / 2, 1.0, 1)
    assert plan.RELATION["user-local"] == "replace-one" and plan.train_sensitivity(config.privacy) == 2 * config.clip
    fixed = RunConfig(dp="user-local", noise_multiplier=3.0, rounds=4)
    assert plan.training_step(fixed) == (1.5, 1.0, 1)


def test_record_schedule_does_not_depend_on_the_record_count() -> None:
    config = RunConfig(dp="record", epsilon=8.0, record_sample_rate=0.2, local_epochs=2, user_epochs=1)
    from fedrec.core.privacy.client_round import planned_step

    assert planned_step(config, 20) == planned_step(config, 500) == plan.training_step(config)
    sigma, q, steps = plan.training_step(config)
    assert q == 0.2 and steps == 3 * 5


def test_evaluation_releases_are_planned_and_budgeted() -> None:
    config = RunConfig(dp="user-central", epsilon=8.0, rounds=10, eval_every=5, clients_per_round=100)
    assert plan.evaluation_rounds(config) == 2
    sigma_e, q, steps = plan.evaluation_step(config, 1000)
    assert (q, steps) == (1.0, 1)
    # the derived σ_e spends EVAL_SHARE of the budget over the planned evaluations
    assert epsilon([(sigma_e, 1.0, 2)], config.delta, "rdp") == pytest.approx(plan.EVAL_SHARE * 8.0, rel=0.02)
    assert plan.eval_sensitivity(config.evaluation) == pytest.approx(2.0)  # four metrics in [0, 1]
    given = RunConfig(dp="user-central", epsilon=8.0, eval_noise_multiplier=50.0)
    assert plan.evaluation_step(given, 1000)[0] == 50.0
    doc = plan.privacy_plan(config, 1000)
    assert doc["relation"] == "add-remove" and doc["evaluate"]["releases"] == 2 and doc["budget"] == 8.0
    assert doc["planned_epsilon"] <= 8.0


def test_known_epsilons_of_the_subsampled_gaussian() -> None:
    # pinned values (σ=1, q=0.1, 100 steps, δ=1e-5): Opacus' RDP on integer orders 2–128 equals
    # dp_accounting's RdpAccountant on the same orders (7.97292151038054 both)
    assert epsilon([(1.0, 0.1, 100)], 1e-5, "rdp") == pytest.approx(7.972921510380547, rel=1e-9)
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
                                                        server_round, [history], SecureRandom(bytes(32)))
        history = histories[0]
        refused.append(releases[0].refused)
        assert releases[0].epsilon <= 4.0
    assert refused == [False, False, True]
