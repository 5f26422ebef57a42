"""The stacked store of a cohort node's user vectors."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from fedrec.client.state import CohortVectorStore

SHAPES = {"user_embedding.weight": (1, 3)}


def test_vectors_survive_a_new_store_over_the_same_state() -> None:
    state = RecordDict()
    store = CohortVectorStore(state, [2, 5, 8, 11], SHAPES)
    assert store.load_many([5, 11]) == [None, None]
    store.save_many([11, 5], [{"user_embedding.weight": np.full((1, 3), 1.5, np.float32)},
                              {"user_embedding.weight": np.full((1, 3), -2.0, np.float32)}])
    again = CohortVectorStore(state, [2, 5, 8, 11], SHAPES)  # what the next round sees
    five, eight, eleven = again.load_many([5, 8, 11])
    assert eight is None
    np.testing.assert_array_equal(five["user_embedding.weight"], np.full((1, 3), -2.0))
    np.testing.assert_array_equal(eleven["user_embedding.weight"], np.full((1, 3), 1.5))


def test_users_the_node_does_not_hold_are_refused() -> None:
    store = CohortVectorStore(RecordDict(), [2, 5, 8], SHAPES)
    with pytest.raises(KeyError):
        store.load_many([3])
    with pytest.raises(KeyError):
        store.load_many([9])
    with pytest.raises(ValueError, match="sorted"):
        CohortVectorStore(RecordDict(), [5, 2], SHAPES)


def test_a_store_of_other_shapes_is_refused() -> None:
    state = RecordDict()
    CohortVectorStore(state, [0, 1], SHAPES).save_many([0], [{"user_embedding.weight": np.zeros((1, 3), np.float32)}])
    with pytest.raises(ValueError, match="shapes"):
        CohortVectorStore(state, [0, 1], {"user_embedding.weight": (1, 4)})
    with pytest.raises(ValueError, match="shapes"):
        CohortVectorStore(state, [0, 1, 2], SHAPES)
