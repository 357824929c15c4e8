"""Tests for the generated quadrants problem, reached through mlp.datasets.load("quadrants")."""

from __future__ import annotations

import numpy as np
import pytest

from mlp import datasets


def test_quadrants_shapes_and_labels():
    (X, y), (X_test, y_test) = datasets.load("quadrants")
    assert X.shape == (4000, 2) and X_test.shape == (1000, 2)
    for X_, y_ in ((X, y), (X_test, y_test)):
        assert X_.dtype == np.float32 and X_.flags.c_contiguous
        assert y_.dtype == np.int64 and y_.shape == (len(X_),)
        assert np.all(np.abs(X_) <= 1)
        x0, x1 = X_[:, 0], X_[:, 1]
        expected = np.select([(x0 > 0) & (x1 > 0), (x0 < 0) & (x1 > 0), (x0 < 0) & (x1 < 0)], [0, 1, 2], 3)
        np.testing.assert_array_equal(y_, expected)
    # Uniform over four equal areas: each class count is 1000 +- 27 (one
    # standard deviation); 150 is over five.
    assert np.all(np.abs(np.bincount(y, minlength=4) - 1000) < 150)


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.3])
def test_quadrants_margin(margin):
    (X, _), _ = datasets.load("quadrants", n_train=5000, margin=margin)
    smallest = np.abs(X).min(axis=0)
    assert np.all(smallest >= np.float32(margin))
    # The band next to the margin is populated: with 5000 points, the chance
    # that none falls within 0.02 of it is below 1e-40.
    assert np.all(smallest < margin + 0.02)
    assert np.all(X != 0)


def test_quadrants_determinism():
    first = datasets.load("quadrants", n_train=50, n_test=20, seed=3)
    again = datasets.load("quadrants", n_train=50, n_test=20, seed=3)
    other = datasets.load("quadrants", n_train=50, n_test=20, seed=4)
    more = datasets.load("quadrants", n_train=80, n_test=20, seed=3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][0], other[0][0])
    # Each set depends on the seed and its own size only, and grows by appending.
    np.testing.assert_array_equal(first[1][0], more[1][0])
    np.testing.assert_array_equal(first[0][0], more[0][0][:50])


@pytest.mark.parametrize(
    "options, expected",
    [({"n_train": -1}, "n_train"), ({"n_test": 2.5}, "n_test"), ({"margin": 1.0}, "margin")],
)
def test_quadrants_rejects_bad_options(options, expected):
    with pytest.raises(ValueError, match=expected):
        datasets.load("quadrants", **options)


def test_quadrants_empty():
    (X, y), (X_test, y_test) = datasets.load("quadrants", n_train=0, n_test=0)
    assert X.shape == (0, 2) and y.shape == (0,) and X_test.shape == (0, 2) and y_test.dtype == np.int64
