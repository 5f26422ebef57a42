"""FedOptOnUpdates: aggregation of updates, server learning rate, dropped bad updates."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message, MessageType, MetricRecord, RecordDict

from fedrec.core.federation.aggregation import ServerOptimizer
from fedrec.protocol.wire import ARRAYS, METRICS, NUM_EXAMPLES, TRAIN_LOSS
from fedrec.server.strategy.fedopt_updates import FedOptOnUpdates, arrays_to_numpy, numpy_to_arrays

GLOBAL = {"item_embedding.weight": np.zeros((3, 2), dtype=np.float32),
          "item_bias.weight": np.zeros((3, 1), dtype=np.float32)}


def _reply(update: dict[str, np.ndarray], examples: int, loss: float = 0.5) -> Message:
    content = RecordDict({ARRAYS: numpy_to_arrays(update),
                          METRICS: MetricRecord({NUM_EXAMPLES: examples, TRAIN_LOSS: loss})})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def _strategy(kind: str = "fedavg-slr", lr: float = 2.0) -> FedOptOnUpdates:
    strategy = FedOptOnUpdates(ServerOptimizer(kind, lr), min_available_nodes=1, min_train_nodes=1)
    strategy._current = {k: v.copy() for k, v in GLOBAL.items()}  # as configure_train would set it
    return strategy


def _update(value: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, value) for k, v in GLOBAL.items()}


def test_weighted_mean_times_server_learning_rate() -> None:
    strategy = _strategy(lr=2.0)
    arrays, metrics = strategy.aggregate_train(1, [_reply(_update(1.0), 1, 0.2), _reply(_update(4.0), 3, 0.6)])
    # mean = (1·1 + 3·4) / 4 = 3.25; x = 0 + 2 · 3.25 = 6.5
    new = arrays_to_numpy(arrays)
    assert np.allclose(new["item_embedding.weight"], 6.5)
    assert metrics[NUM_EXAMPLES] == 4
    assert metrics[TRAIN_LOSS] == pytest.approx((0.2 * 1 + 0.6 * 3) / 4)


@pytest.mark.parametrize("bad", ["nan", "inf", "shape", "keys", "dtype"])
def test_unusable_updates_are_dropped_and_the_rest_aggregated(bad: str) -> None:
    broken = _update(100.0)
    if bad == "nan":
        broken["item_bias.weight"][0, 0] = np.nan
    elif bad == "inf":
        broken["item_embedding.weight"][1, 1] = np.inf
    elif bad == "shape":
        broken["item_embedding.weight"] = np.zeros((4, 2), dtype=np.float32)
    elif bad == "dtype":
        broken = {k: v.astype(np.float64) for k, v in broken.items()}
    else:
        broken["user_embedding.weight"] = np.zeros((1, 2), dtype=np.float32)
    strategy = _strategy(kind="fedavg")
    arrays, metrics = strategy.aggregate_train(1, [_reply(broken, 10), _reply(_update(1.0), 1)])
    new = arrays_to_numpy(arrays)
    assert np.allclose(new["item_embedding.weight"], 1.0)  # the broken update did not count
    assert metrics[NUM_EXAMPLES] == 1


def test_a_round_with_only_bad_updates_leaves_the_model_alone() -> None:
    broken = _update(1.0)
    broken["item_bias.weight"][:] = np.nan
    arrays, _ = _strategy().aggregate_train(1, [_reply(broken, 5)])
    assert arrays is None


def test_aggregate_before_configure_is_an_error() -> None:
    strategy = FedOptOnUpdates(ServerOptimizer("fedavg"))
    with pytest.raises(RuntimeError):
        strategy.aggregate_train(1, [])


def test_an_overflowing_step_keeps_the_previous_model() -> None:
    huge = _update(3e38)  # finite, but 2 × 3e38 overflows float32
    with np.errstate(over="ignore"):
        arrays, _ = _strategy(lr=2.0).aggregate_train(1, [_reply(huge, 1)])
    assert arrays is None


def test_a_round_with_fewer_valid_updates_than_the_minimum_is_skipped() -> None:
    strategy = FedOptOnUpdates(ServerOptimizer("fedavg", 1.0), min_valid_updates=2,
                               min_available_nodes=1, min_train_nodes=1)
    strategy._current = {k: v.copy() for k, v in GLOBAL.items()}
    broken = _update(1.0)
    broken["item_bias.weight"][:] = np.nan
    arrays, metrics = strategy.aggregate_train(3, [_reply(broken, 5), _reply(_update(1.0), 1)])
    assert arrays is None and metrics is None and strategy.skipped_rounds == [3]
    arrays, _ = strategy.aggregate_train(4, [_reply(_update(1.0), 1), _reply(_update(3.0), 1)])
    assert np.allclose(arrays_to_numpy(arrays)["item_embedding.weight"], 2.0)
    with pytest.raises(ValueError, match="min_valid_updates"):
        FedOptOnUpdates(ServerOptimizer("fedavg"), min_valid_updates=0)
