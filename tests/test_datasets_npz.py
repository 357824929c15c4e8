"""Tests for mlp.datasets.load_npz: the user's own arrays from an .npz file."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlp import datasets


def good_arrays(n_train: int = 5, n_test: int = 3, n_features: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "X_train": rng.standard_normal((n_train, n_features)),
        "y_train": rng.integers(0, 3, size=n_train),
        "X_test": rng.standard_normal((n_test, n_features)),
        "y_test": rng.integers(0, 3, size=n_test),
    }


def save(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def assert_converted(X: np.ndarray, y: np.ndarray, X_given: np.ndarray, y_given: np.ndarray) -> None:
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape == X_given.shape
    assert y.dtype == np.int64 and y.flags.c_contiguous and y.shape == y_given.shape
    # float64 -> float32 rounds once: within half an ulp of float32.
    np.testing.assert_allclose(X, X_given, rtol=2.0**-24, atol=0)
    np.testing.assert_array_equal(y, y_given)


def test_train_and_test_arrays(tmp_path):
    arrays = good_arrays()
    (X, y), (X_test, y_test) = datasets.load_npz(save(tmp_path, **arrays))
    assert_converted(X, y, arrays["X_train"], arrays["y_train"])
    assert_converted(X_test, y_test, arrays["X_test"], arrays["y_test"])


def test_without_test_arrays_the_test_pair_is_none(tmp_path):
    arrays = good_arrays()
    path = save(tmp_path, X_train=arrays["X_train"], y_train=arrays["y_train"])
    (X, y), test = datasets.load_npz(str(path))
    assert test == (None, None)
    assert_converted(X, y, arrays["X_train"], arrays["y_train"])


def test_accepted_conversions_and_extra_arrays(tmp_path):
    X = np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(4, 3))
    y = np.array([0, 2, 1, 3], dtype=np.int8)
    path = save(tmp_path, X_train=X, y_train=y, X_test=np.array([[True, False, True]]),
                y_test=np.array([3], dtype=np.uint16), notes=np.array([1, 2]))
    (X_, y_), (X_test, y_test) = datasets.load_npz(path)
    assert_converted(X_, y_, X, y.astype(np.int64))
    assert_converted(X_test, y_test, np.array([[1.0, 0.0, 1.0]]), np.array([3]))


def test_bool_y_train_holds_class_labels(tmp_path):
    arrays = good_arrays()
    y, y_test = np.array([True, False, True, True, False]), np.array([False, True, True])
    (_, y_), (_, y_test_) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": y, "y_test": y_test}))
    assert y_.dtype == np.int64 and y_.tolist() == [1, 0, 1, 1, 0] and y_test_.tolist() == [0, 1, 1]


def test_the_dtype_of_y_train_decides_classification_or_regression(tmp_path):
    """Integer (or bool) y_train: class labels.  Floating y_train: regression targets, whatever its values,
    whole numbers included (scikit-learn's diabetes targets are such floats)."""
    arrays = good_arrays()
    whole = np.array([151.0, 75.0, 141.0, 206.0, 135.0])
    (_, y), (_, y_test) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": whole,
                                                              "y_test": np.array([25.0, 346.0, 90.0])}))
    assert y.dtype == np.float64 and y.tolist() == whole.tolist() and y_test.tolist() == [25.0, 346.0, 90.0]
    small = np.array([0.0, 1.0, 2.0, 1.0, 0.0])
    (_, y), (_, y_test) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": small,
                                                              "y_test": np.array([2.0, 0.0, 1.0])}))
    assert y.dtype == np.float64 and y_test.dtype == np.float64  # few whole numbers: still targets
    (_, y), (_, y_test) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": small.astype(np.int32),
                                                              "y_test": np.array([2, 0, 1])}))
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 1, 0]  # the same values as integers: labels


def test_real_valued_y_train_is_read_as_regression_targets(tmp_path):
    """A floating 1-D y_train, or any 2-D y_train, holds regression targets: float64 of the stored shape."""
    arrays = good_arrays()
    one = np.array([0.5, -1.25, 3.0, 2.0, 1e6])
    (X, y), (_, y_test) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": one,
                                                                "y_test": np.array([1, 2, 3], np.float32)}))
    assert y.dtype == np.float64 and y.shape == (5,) and y.flags.c_contiguous
    np.testing.assert_array_equal(y, one)
    assert y_test.dtype == np.float64 and y_test.tolist() == [1.0, 2.0, 3.0]
    two = np.arange(10, dtype=np.int16).reshape(5, 2)  # whole numbers: 2-D makes them targets
    (_, y), (_, y_test) = datasets.load_npz(save(tmp_path, **{**arrays, "y_train": two,
                                                              "y_test": np.ones((3, 2), np.float32)}))
    assert y.dtype == np.float64 and y.shape == (5, 2)
    np.testing.assert_array_equal(y, two)
    assert y_test.dtype == np.float64 and y_test.shape == (3, 2)


@pytest.mark.parametrize("labels, test, held", [
    (np.array([0, 1, 2, 10**9, 1]), np.array([0, 1, 2]), "y_train"),
    (np.array([0, 1, 2, 1, 0]), np.array([0, 9, 2]), "y_test"),
    (np.array([3, 9, 9, 3, 3]), None, "y_train"),
], ids=["billion", "in-y_test", "two-of-ten"])
def test_labels_far_beyond_the_classes_present_are_refused(tmp_path, labels, test, held):
    """Labels are class indices 0..K-1, K the largest plus one: at least half of the K classes must occur in
    y_train and y_test, so that a label such as 10**9 is an error, not a network with a billion outputs."""
    arrays = {**good_arrays(), "y_train": labels}
    if test is None:
        del arrays["X_test"], arrays["y_test"]
    else:
        arrays["y_test"] = test
    path = save(tmp_path, **arrays)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            datasets.load_npz(path)
        assert tracemalloc.get_traced_memory()[1] < 4_000_000
    finally:
        tracemalloc.stop()
    message, largest = str(info.value), int(max(labels.max(), -1 if test is None else test.max()))
    assert message.startswith(f"{path}: {held}: ") and f"label {largest}" in message
    assert f"{largest + 1} classes" in message and "np.unique(" in message and "return_inverse=True" in message


def test_labels_with_up_to_half_of_the_classes_absent_are_accepted(tmp_path):
    path = save(tmp_path, **{**good_arrays(), "y_train": np.array([0, 2, 4, 6, 6]), "y_test": np.array([8, 0, 2])})
    (_, y), (_, y_test) = datasets.load_npz(path)  # 5 of the 9 classes 0..8 occur
    assert y.max() == 6 and y_test.max() == 8


def without(arrays: dict, *keys: str) -> dict:
    return {key: value for key, value in arrays.items() if key not in keys}


def changed(**changes) -> dict:
    return {**good_arrays(), **changes}


BAD_FILES = {
    "no-X_train": (without(good_arrays(), "X_train"), ValueError,
                   ["missing X_train;", "expected the arrays X_train and y_train",
                    "got X_test, y_test, y_train"]),
    "no-train": (without(good_arrays(), "X_train", "y_train"), ValueError, ["missing X_train and y_train"]),
    "only-X_test": (without(good_arrays(), "y_test"), ValueError,
                    ["holds X_test but not y_test; expected both X_test and y_test, or neither"]),
    "only-y_test": (without(good_arrays(), "X_test"), ValueError, ["holds y_test but not X_test"]),
    "X-1d": (changed(X_train=np.zeros(5)), ValueError,
             ["X_train: expected a 2-D array of shape (n_samples, n_features), got array of shape (5,)"]),
    "X-3d": (changed(X_test=np.zeros((3, 4, 1))), ValueError, ["X_test: expected a 2-D array", "(3, 4, 1)"]),
    "X-empty": (changed(X_train=np.zeros((0, 4)), y_train=np.zeros(0, int)), ValueError,
                ["X_train: expected at least one sample and one feature", "(0, 4)"]),
    "y-3d": (changed(y_train=np.zeros((5, 3, 1))), ValueError,
             ["y_train: expected a 1-D array of shape (n_samples,) or a 2-D array of shape (n_samples, n_targets), "
              "got array of shape (5, 3, 1)"]),
    "y_test-2d-for-labels": (changed(y_test=np.zeros((3, 1), int)), ValueError,
                             ["y_test: expected a 1-D array of shape (n_samples,), got array of shape (3, 1)"]),
    "train-lengths": (changed(y_train=np.zeros(4, int)), ValueError,
                      ["y_train: expected 5 labels (one per row of X_train), got 4"]),
    "test-lengths": (changed(y_test=np.zeros(6, int)), ValueError,
                     ["y_test: expected 3 labels (one per row of X_test), got 6"]),
    "features": (changed(X_test=np.zeros((3, 7))), ValueError,
                 ["X_test: expected 4 features (as many as X_train), got 7"]),
    "nan": (changed(X_train=np.where(np.eye(5, 4) == 1, np.nan, 0.0)), ValueError,
            ["X_train: expected finite values, got 4 NaN or infinite entries, the first nan at [0, 0]"]),
    "inf": (changed(X_test=np.array([[0, 0, 0, 0], [0, 0, -np.inf, 0], [0, 0, 0, 0]])), ValueError,
            ["X_test: expected finite values", "the first -inf at [1, 2]"]),
    "float32-overflow": (changed(X_train=np.full((5, 4), 1e39)), ValueError,
                         ["X_train: expected finite values", "(beyond the float32 range)"]),
    "float-y_test-for-labels": (changed(y_test=np.array([0, 1.5, 2])), ValueError,
                                ["y_test: expected integer class labels, as y_train holds (dtype int64), got dtype "
                                 "float64 (regression targets)", "Store y_train and y_test with the same kind"]),
    "integer-y_test-for-targets": (changed(y_train=np.linspace(0, 1, 5), y_test=np.array([0, 1, 2])), ValueError,
                                   ["y_test: expected regression targets, as y_train holds (dtype float64), got "
                                    "dtype int64 (integer class labels)"]),
    "nan-target": (changed(y_train=np.array([0.5, np.nan, 1, 2, 0])), ValueError,
                   ["y_train: expected finite regression targets, got nan at 1"]),
    "inf-target-2d": (changed(y_train=np.array([[0.5, 1]] * 4 + [[2, -np.inf]])), ValueError,
                      ["y_train: expected finite regression targets, got -inf at [4, 1]"]),
    "target-rows": (changed(y_train=np.zeros((4, 2))), ValueError,
                    ["y_train: expected 5 rows of targets (one per row of X_train), got 4"]),
    "test-target-columns": (changed(y_train=np.zeros((5, 2)), y_test=np.zeros((3, 3))), ValueError,
                            ["y_test: expected 2 targets per row (as many as y_train), got array of shape (3, 3)"]),
    "test-targets-1d-vs-2d": (changed(y_train=np.linspace(0, 1, 5), y_test=np.zeros((3, 1))), ValueError,
                              ["y_test: expected a 1-D array of shape (n_samples,), got array of shape (3, 1)"]),
    "negative-label": (changed(y_train=np.array([0, 1, 2, -1, 0])), ValueError,
                       ["y_train: expected class labels >= 0, got values in [-1, 2]"]),
    "huge-label": (changed(y_train=np.array([0, 1, 2**63, 1, 0], dtype=np.uint64)), ValueError,
                   ["y_train: expected labels that fit int64, got 9223372036854775808"]),
    "complex-X": (changed(X_train=np.zeros((5, 4), complex)), TypeError,
                  ["X_train: expected real numbers (bool, integer or floating dtype), got dtype complex128"]),
    "string-labels": (changed(y_test=np.array(["a", "b", "c"])), TypeError,
                      ["y_test: expected integer class labels", "got dtype <U1"]),
    "object-array": (changed(y_train=np.array([0, 1, None, 1, 0], dtype=object)), ValueError,
                     ["y_train: expected a numeric array stored without pickle"]),
}


@pytest.mark.parametrize("arrays, error, expected", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_bad_arrays_name_the_key_the_expected_and_the_given(tmp_path, arrays, error, expected):
    path = save(tmp_path, **arrays)
    with pytest.raises(error) as info:
        datasets.load_npz(path)
    assert type(info.value) is error
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none.npz'}: no such file"):
        datasets.load_npz(tmp_path / "none.npz")


def test_text_file_is_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("X_train,y_train\n1,2\n")
    with pytest.raises(ValueError, match="expected an .npz file") as info:
        datasets.load_npz(path)
    assert str(path) in str(info.value)


def test_npy_file_is_not_an_npz(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)
    assert "expected an .npz file (as written by numpy.savez) holding X_train and y_train" in str(info.value)
    assert "got a single array of shape (2, 3) and dtype float64 (an .npy file)" in str(info.value)


def test_zip_member_that_is_not_an_array(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X_train", b"1 2 3")
        archive.writestr("y_train.npy", b"")
    with pytest.raises(ValueError, match="X_train: expected a .npy array inside the archive, got raw bytes"):
        datasets.load_npz(path)
