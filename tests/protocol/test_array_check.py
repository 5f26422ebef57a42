"""The shared wire-array check, by hand."""

import numpy as np

from fedrec.protocol.array_check import array_problem

SHAPES = {"a": (2, 3), "b": (2,)}


def test_matching_finite_arrays_pass() -> None:
    assert array_problem({"a": np.zeros((2, 3)), "b": np.ones(2)}, SHAPES) is None


def test_each_problem_is_named() -> None:
    assert "differ" in array_problem({"a": np.zeros((2, 3))}, SHAPES)
    assert "'a' has shape (3, 2)" in array_problem({"a": np.zeros((3, 2)), "b": np.ones(2)}, SHAPES)
    assert "'b' holds NaN" in array_problem({"a": np.zeros((2, 3)), "b": np.array([1.0, np.nan])}, SHAPES)
