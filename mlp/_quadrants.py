"""The quadrant problem, a generated toy dataset: which quadrant of the plane a point lies in.

2-D points uniform in [-1, 1]^2, labelled 0 for x > 0, y > 0; 1 for x < 0,
y > 0; 2 for x < 0, y < 0; 3 for x > 0, y < 0.  A point closer than
``margin`` to either axis is rejected and drawn again, which leaves a gap of
``2 * margin`` between the classes so that 100 % accuracy is attainable.
Reached through ``mlp.datasets.load("quadrants", ...)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Split = tuple[np.ndarray, np.ndarray]

#: Name of each class index.
CLASS_NAMES: tuple[str, ...] = ("upper right", "upper left", "lower left", "lower right")

#: The options :func:`quadrants` takes, with their defaults.
DEFAULTS: dict[str, Any] = {"n_train": 4000, "n_test": 1000, "seed": 0, "margin": 0.05}


def quadrants(
    n_train: int = 4000, n_test: int = 1000, seed: int | None = 0, margin: float = 0.05
) -> tuple[Split, Split]:
    """Generate the quadrant problem as ``((X_train, y_train), (X_test, y_test))``.

    Points are uniform in [-1, 1]^2 except near the axes: a point closer than
    ``margin`` to either axis is rejected and drawn again.  (Sampling each
    coordinate's magnitude uniformly in (margin, 1] with a random sign gives
    exactly that distribution without a loop, and is how it is done.)  Every
    coordinate satisfies ``|x| >= float32(margin)``.

    The training and test sets come from independent streams of one
    ``numpy.random.SeedSequence(seed)``, so each is a deterministic function
    of ``seed`` and its own size, and a larger set starts with the points of
    a smaller one.  ``seed=None`` draws fresh entropy.

    Returns ``X`` float32 of shape ``(n, 2)`` and ``y`` int64 of shape
    ``(n,)`` for each split.  Raises ``ValueError`` if ``n_train`` or
    ``n_test`` is not a non-negative integer, or ``margin`` not in [0, 1).
    """
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{arg} must be a non-negative integer, got {value!r}")
    if not (isinstance(margin, (int, float, np.floating)) and 0.0 <= margin < 1.0):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    train = _points(np.random.default_rng(train_seed), int(n_train), float(margin))
    test = _points(np.random.default_rng(test_seed), int(n_test), float(margin))
    return train, test


def _points(rng: np.random.Generator, n: int, margin: float) -> Split:
    # One row of draws per point, so the first k points do not depend on n.
    draws = rng.random((n, 4))
    magnitude = 1.0 - draws[:, :2] * (1.0 - margin)  # in (margin, 1]
    sign = np.where(draws[:, 2:] < 0.5, -1.0, 1.0)
    X = np.ascontiguousarray(magnitude * sign, dtype=np.float32)
    right, up = X[:, 0] > 0, X[:, 1] > 0
    y = np.where(up, np.where(right, 0, 1), np.where(right, 3, 2)).astype(np.int64)
    return X, y
