"""Tests for :mod:`fedrec.core.federation.aggregation`: the weighted mean and the server optimisers."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.federation.aggregation import ServerOptimizer, weighted_mean


def arrays(**values) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}


# --- weighted mean -----------------------------------------------------------------


def test_weighted_mean_by_hand() -> None:
    updates = [arrays(a=[1.0, 2.0], b=[[0.0]]), arrays(a=[3.0, 6.0], b=[[4.0]])]
    mean = weighted_mean(updates, [1.0, 3.0])
    # a: (1·1 + 3·3) / 4 = 2.5, (1·2 + 3·6) / 4 = 5;  b: (1·0 + 3·4) / 4 = 3
    np.testing.assert_allclose(mean["a"], [2.5, 5.0])
    np.testing.assert_allclose(mean["b"], [[3.0]])
    assert mean["a"].dtype == np.float32
    assert list(mean) == ["a", "b"]


def test_weighted_mean_of_three_with_integer_weights() -> None:
    updates = [arrays(w=[0.5]), arrays(w=[-1.0]), arrays(w=[2.0])]
    # (10·0.5 + 20·(−1) + 70·2) / 100 = (5 − 20 + 140) / 100 = 1.25
    np.testing.assert_allclose(weighted_mean(updates, [10, 20, 70])["w"], [1.25])


def test_weighted_mean_of_one_update_is_that_update() -> None:
    update = arrays(x=[[1.5, -2.0], [0.25, 4.0]])
    np.testing.assert_array_equal(weighted_mean([update], [7.0])["x"], update["x"])


def test_weighted_mean_does_not_modify_its_inputs() -> None:
    updates = [arrays(a=[1.0]), arrays(a=[3.0])]
    weighted_mean(updates, [1.0, 1.0])
    np.testing.assert_array_equal(updates[0]["a"], [1.0])
    np.testing.assert_array_equal(updates[1]["a"], [3.0])


@pytest.mark.parametrize(
    "second",
    [
        arrays(a=[1.0, 2.0]),  # missing b
        arrays(a=[1.0, 2.0], b=[1.0], c=[0.0]),  # extra c
        arrays(a=[1.0, 2.0], c=[1.0]),  # c instead of b
        arrays(a=[1.0, 2.0, 3.0], b=[1.0]),  # a has the wrong shape
        arrays(a=[[1.0, 2.0]], b=[1.0]),  # a has the wrong rank
    ],
)
def test_weighted_mean_rejects_mismatched_keys_or_shapes(second) -> None:
    first = arrays(a=[0.0, 0.0], b=[0.0])
    with pytest.raises(ValueError, match="keys or shape"):
        weighted_mean([first, second], [1.0, 1.0])
    with pytest.raises(ValueError, match="keys or shape"):
        weighted_mean([second, first], [1.0, 1.0])


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0], [-2.0, 1.0]])
def test_weighted_mean_rejects_non_positive_total_weight(weights) -> None:
    with pytest.raises(ValueError, match="sum to zero"):
        weighted_mean([arrays(a=[1.0]), arrays(a=[2.0])], weights)


def test_weighted_mean_rejects_empty_and_miscounted_input() -> None:
    with pytest.raises(ValueError, match="no updates"):
        weighted_mean([], [])
    with pytest.raises(ValueError, match="one weight per update"):
        weighted_mean([arrays(a=[1.0])], [1.0, 2.0])


# --- server optimisers -------------------------------------------------------------

X = arrays(w=[1.0, 1.0, 1.0], b=[0.5])
DELTA = arrays(w=[0.5, -2.0, 0.0], b=[1.0])


def test_fedavg_adds_the_mean_update() -> None:
    new = ServerOptimizer("fedavg").step(X, DELTA)
    # x + Δ
    np.testing.assert_allclose(new["w"], [1.5, -1.0, 1.0])
    np.testing.assert_allclose(new["b"], [1.5])
    assert new["w"].dtype == np.float32


def test_fedavg_ignores_a_server_learning_rate() -> None:
    optimizer = ServerOptimizer("fedavg", lr=5.0)
    assert optimizer.lr == 1.0
    np.testing.assert_allclose(optimizer.step(X, DELTA)["w"], [1.5, -1.0, 1.0])


def test_fedavg_slr_scales_the_mean_update() -> None:
    new = ServerOptimizer("fedavg-slr", lr=2.0).step(X, DELTA)
    # x + 2Δ = [1 + 1, 1 − 4, 1 + 0], 0.5 + 2
    np.testing.assert_allclose(new["w"], [2.0, -3.0, 1.0])
    np.testing.assert_allclose(new["b"], [2.5])


def test_step_does_not_modify_the_inputs() -> None:
    x, delta = {k: v.copy() for k, v in X.items()}, {k: v.copy() for k, v in DELTA.items()}
    ServerOptimizer("fedavg-slr", lr=3.0).step(x, delta)
    for k in X:
        np.testing.assert_array_equal(x[k], X[k])
        np.testing.assert_array_equal(delta[k], DELTA[k])


def test_fedadam_first_and_second_step_by_hand() -> None:
    optimizer = ServerOptimizer("fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    first = optimizer.step(X, DELTA)
    # m = (1 − β1)Δ = 0.1·[0.5, −2, 0] = [0.05, −0.2, 0]
    # v = (1 − β2)Δ² = 0.01·[0.25, 4, 0] = [0.0025, 0.04, 0],  √v = [0.05, 0.2, 0]
    # x + η m / (√v + τ) = 1 + 0.1·[0.05/0.051, −0.2/0.201, 0]
    #                    = [1.0980392, 0.9004975, 1.0]
    np.testing.assert_allclose(first["w"], [1.0980392, 0.9004975, 1.0], rtol=1e-6)
    # b: m = 0.1, √v = 0.1 → 0.5 + 0.1·0.1/0.101 = 0.5990099
    np.testing.assert_allclose(first["b"], [0.5990099], rtol=1e-6)
    np.testing.assert_allclose(optimizer.state["m"]["w"], [0.05, -0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(optimizer.state["v"]["w"], [0.0025, 0.04, 0.0], rtol=1e-6)

    second = optimizer.step(first, DELTA)
    # m = 0.9·0.05 + 0.1·0.5 = 0.095,  v = 0.99·0.0025 + 0.01·0.25 = 0.004975, √v = 0.0705337
    # w[0] = 1.0980392 + 0.1·0.095 / 0.0715337 = 1.2308438
    assert second["w"][0] == pytest.approx(1.2308438, rel=1e-6)
    assert second["w"].dtype == np.float32


def test_fedadam_step_has_about_the_server_lr_as_size() -> None:
    # with |Δ| ≫ τ the first step is ≈ η·sign(Δ) whatever the scale of Δ
    optimizer = ServerOptimizer("fedadam", lr=0.01, tau=1e-9)
    new = optimizer.step(arrays(w=[0.0, 0.0]), arrays(w=[1000.0, -0.001]))
    np.testing.assert_allclose(new["w"], [0.01, -0.01], rtol=1e-5)


def test_step_rejects_mismatched_keys() -> None:
    with pytest.raises(ValueError, match="different keys"):
        ServerOptimizer("fedavg").step(X, arrays(w=[0.0, 0.0, 0.0]))


def test_unknown_server_optimiser() -> None:
    with pytest.raises(ValueError, match="unknown server optimiser 'fedsgd'"):
        ServerOptimizer("fedsgd")


def test_server_learning_rate_applies_only_to_the_scaled_parameters() -> None:
    from fedrec.core.federation.aggregation import ServerOptimizer

    optimizer = ServerOptimizer("fedavg-slr", 10.0, scaled=frozenset({"table"}))
    x = {"table": np.zeros(2, dtype=np.float32), "dense": np.zeros(2, dtype=np.float32)}
    d = {"table": np.ones(2, dtype=np.float32), "dense": np.ones(2, dtype=np.float32)}
    new = optimizer.step(x, d)
    assert np.allclose(new["table"], 10.0) and np.allclose(new["dense"], 1.0)
