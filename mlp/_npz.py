"""The user's own arrays, from an ``.npz`` file: :func:`load_npz`."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._validation import check_index_range, describe

PathLike = Union[str, "os.PathLike[str]"]
Split = tuple[np.ndarray, np.ndarray]
OptionalSplit = tuple[Optional[np.ndarray], Optional[np.ndarray]]

_REQUIRED = ("X_train", "y_train")
_OPTIONAL = ("X_test", "y_test")
_INT64_MAX = np.iinfo(np.int64).max
_LABELS = "integer class labels (an integer or bool dtype)"
_LABELS_OR_TARGETS = _LABELS[:-1] + ") or regression targets (a floating dtype)"
_KINDS = "the dtype decides: integer or bool for class labels, floating for regression targets"
#: class labels are indices 0..K-1, K the largest label plus one; at least this fraction of the K classes must
#: occur in y_train and y_test, so that a label far beyond the others (an identifier, a code) is refused rather
#: than read as that many classes (a label of 10**9 would make a network with a billion outputs)
MIN_CLASSES_PRESENT = 0.5


def load_npz(path: PathLike) -> tuple[Split, OptionalSplit]:
    """Load a dataset of one's own from an ``.npz`` file (as written by ``numpy.savez``).

    The file holds the arrays ``X_train`` and ``y_train``, and optionally
    ``X_test`` and ``y_test`` (both or neither); other arrays in it are
    ignored.  Nothing is unpickled: object arrays are refused.

    ``X_*`` are 2-D arrays of shape ``(n_samples, n_features)`` of real numbers
    (bool, integer or floating), all finite once converted to float32, with at
    least one sample and one feature; ``X_test`` has as many features as
    ``X_train``.  ``y_train`` says what the data is for, by its dtype and shape
    (never by its values):

    * class labels (classification): a 1-D integer or bool array, one label
      per row of ``X_train``, the classes numbered 0..K-1 (K the largest label
      plus one, over ``y_train`` and ``y_test``), at least half of them
      (:data:`MIN_CLASSES_PRESENT`) occurring;
    * regression targets: a 1-D floating array, whatever its values (whole
      numbers included), or any 2-D array of shape ``(n_samples, n_targets)``
      (one column per target).  They must be finite.

    ``y_test`` holds the same kind as ``y_train`` (by the same rule, and as
    many targets).

    Parameters
    ----------
    path:
        The ``.npz`` file.

    Returns
    -------
    ((X_train, y_train), (X_test, y_test))
        ``X`` C-contiguous ``float32`` of shape ``(n_samples, n_features)``;
        ``y`` C-contiguous: ``int64`` labels of shape ``(n_samples,)``, or
        ``float64`` targets of the shape stored.  ``X_test`` and ``y_test``
        are ``None`` when the file has no test arrays.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an ``.npz`` archive, a required array is missing,
        only one of ``X_test``/``y_test`` is present, or an array has the
        wrong number of dimensions, a mismatched length, feature or target
        count, NaN or infinite values, a ``y_test`` of another kind than
        ``y_train``, or (classification) labels that are negative or number
        far more classes than occur.  The message names the file and the array.
    TypeError
        If an array's dtype is not numeric as described above.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{path}: expected an .npz file (as written by numpy.savez), got a file numpy cannot read "
            f"as one ({exc})"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path}: expected an .npz file (as written by numpy.savez) holding X_train and y_train, "
            f"got a single {describe(archive)} (an .npy file)"
        )
    with archive:
        present = set(archive.files)
        missing = [key for key in _REQUIRED if key not in present]
        if missing:
            held = ", ".join(sorted(present)) if present else "no arrays"
            raise ValueError(
                f"{path}: missing {' and '.join(missing)}; expected the arrays X_train and y_train "
                f"(and optionally X_test and y_test), got {held}"
            )
        has_test = [key in present for key in _OPTIONAL]
        if any(has_test) and not all(has_test):
            given, absent = _OPTIONAL if has_test[0] else reversed(_OPTIONAL)
            raise ValueError(
                f"{path}: holds {given} but not {absent}; expected both X_test and y_test, or neither"
            )

        X_train = _features(archive, path, "X_train")
        y_given = _array(archive, path, "y_train", "biuf", _LABELS_OR_TARGETS, ndim=(1, 2))
        regression = _are_targets(y_given)
        if regression:
            y_train = _targets(y_given, path, "y_train", len(X_train))
        else:
            y_train = _labels(y_given, path, "y_train", len(X_train))
        if not has_test[0]:
            if not regression:
                _check_classes(path, y_train, None)
            return (X_train, y_train), (None, None)
        X_test = _features(archive, path, "X_test")
        if X_test.shape[1] != X_train.shape[1]:
            raise ValueError(
                f"{path}: X_test: expected {X_train.shape[1]} features (as many as X_train), "
                f"got {X_test.shape[1]} (array of shape {X_test.shape})"
            )
        if regression:
            y_test = _array(archive, path, "y_test", "biuf", "regression targets (a floating dtype)",
                            ndim=(y_train.ndim,))
            if y_test.ndim == 1 and not _are_targets(y_test):
                raise ValueError(f"{path}: y_test: expected regression targets, as y_train holds (dtype "
                                 f"{y_given.dtype}), got dtype {y_test.dtype} (integer class labels); {_KINDS}. "
                                 "Store y_train and y_test with the same kind of dtype")
            if y_test.shape[1:] != y_train.shape[1:]:
                raise ValueError(f"{path}: y_test: expected {y_train.shape[1]} targets per row (as many as "
                                 f"y_train), got {describe(y_test)}")
            y_test = _targets(y_test, path, "y_test", len(X_test))
        else:
            y_test = _array(archive, path, "y_test", "biuf", _LABELS, ndim=(1,))
            if _are_targets(y_test):
                raise ValueError(f"{path}: y_test: expected integer class labels, as y_train holds (dtype "
                                 f"{y_given.dtype}), got dtype {y_test.dtype} (regression targets); {_KINDS}. "
                                 "Store y_train and y_test with the same kind of dtype")
            y_test = _labels(y_test, path, "y_test", len(X_test))
            _check_classes(path, y_train, y_test)
    return (X_train, y_train), (X_test, y_test)


def _array(
    archive: np.lib.npyio.NpzFile, path: Path, key: str, kinds: str, what: str, ndim: tuple[int, ...]
) -> np.ndarray:
    """Read ``key``; check that its dtype kind is one of ``kinds`` (described by ``what``) and its ndim."""
    try:
        array = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # Object arrays land here too: reading them would need pickle.
        raise ValueError(f"{path}: {key}: expected a numeric array stored without pickle, "
                         f"got one numpy cannot read that way ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: {key}: expected a .npy array inside the archive, "
                         f"got raw {describe(array)}")
    if array.dtype.kind not in kinds:
        raise TypeError(f"{path}: {key}: expected {what}, got dtype {array.dtype}")
    if array.ndim not in ndim:
        columns = "n_features" if key.startswith("X") else "n_targets"
        shapes = {1: "(n_samples,)", 2: f"(n_samples, {columns})"}
        expected = " or ".join(f"a {d}-D array of shape {shapes[d]}" for d in ndim)
        raise ValueError(f"{path}: {key}: expected {expected}, got {describe(array)}")
    return array


def _features(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    array = _array(archive, path, key, "biuf", "real numbers (bool, integer or floating dtype)", ndim=(2,))
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: {key}: expected at least one sample and one feature, "
                         f"got an empty array of shape {array.shape}")
    with np.errstate(over="ignore"):  # values beyond the float32 range become inf, reported below
        X = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(X)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        value = array[row, col]
        overflow = " (beyond the float32 range)" if np.isfinite(value) else ""
        bad = np.size(X) - np.count_nonzero(finite)
        raise ValueError(f"{path}: {key}: expected finite values, got {bad} NaN or infinite entries, "
                         f"the first {value}{overflow} at [{row}, {col}]")
    return X


def _are_targets(y: np.ndarray) -> bool:
    """Whether ``y`` holds regression targets rather than class labels: by its dtype and shape, never its values
    (see :func:`load_npz`)."""
    return y.ndim == 2 or y.dtype.kind == "f"


def _check_length(array: np.ndarray, path: Path, key: str, n_samples: int, what: str) -> None:
    if len(array) != n_samples:
        raise ValueError(f"{path}: {key}: expected {n_samples} {what} (one per row of X{key[1:]}), "
                         f"got {len(array)}")


def _targets(array: np.ndarray, path: Path, key: str, n_samples: int) -> np.ndarray:
    _check_length(array, path, key, n_samples, "rows of targets")
    targets = np.ascontiguousarray(array, dtype=np.float64)
    finite = np.isfinite(targets)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        where = index[0] if len(index) == 1 else list(index)
        raise ValueError(f"{path}: {key}: expected finite regression targets, got {targets[index]} at {where}")
    return targets


def _labels(array: np.ndarray, path: Path, key: str, n_samples: int) -> np.ndarray:
    _check_length(array, path, key, n_samples, "labels")
    check_index_range(array, None, f"{path}: {key}", "class labels")
    if array.size and array.max() > _INT64_MAX:
        raise ValueError(f"{path}: {key}: expected labels that fit int64, got {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _check_classes(path: Path, y_train: np.ndarray, y_test: np.ndarray | None) -> None:
    """Refuse labels that number far more classes than occur (see :data:`MIN_CLASSES_PRESENT`)."""
    labelled = [("y_train", y_train)] + ([] if y_test is None else [("y_test", y_test)])
    key, held = max(labelled, key=lambda pair: pair[1].max())
    largest = int(held.max())
    present = np.unique(np.concatenate([labels for _, labels in labelled])).size
    if largest + 1 > present / MIN_CLASSES_PRESENT:
        where = "y_train" if y_test is None else "y_train and y_test"
        raise ValueError(
            f"{path}: {key}: label {largest} (at index {int(np.argmax(held))}) makes {largest + 1} classes "
            f"0..{largest}, of which {present} occur in {where}; expected class labels 0..K-1 with at least "
            f"{MIN_CLASSES_PRESENT:.0%} of the K classes present. Number the classes 0..K-1, e.g. "
            f"classes, y = np.unique(y, return_inverse=True) over {where} together"
        )
