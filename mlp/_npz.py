"""The user's own arrays, from an ``.npz`` file: :func:`load_npz`."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._validation import describe

PathLike = Union[str, "os.PathLike[str]"]
Split = tuple[np.ndarray, np.ndarray]
OptionalSplit = tuple[Optional[np.ndarray], Optional[np.ndarray]]

_REQUIRED = ("X_train", "y_train")
_OPTIONAL = ("X_test", "y_test")
_INT64_MAX = np.iinfo(np.int64).max


def load_npz(path: PathLike) -> tuple[Split, OptionalSplit]:
    """Load a dataset of one's own from an ``.npz`` file (as written by ``numpy.savez``).

    The file holds the arrays ``X_train`` and ``y_train``, and optionally
    ``X_test`` and ``y_test`` (both or neither); other arrays in it are
    ignored.  Nothing is unpickled: object arrays are refused.

    ``X_*`` are 2-D arrays of shape ``(n_samples, n_features)`` of real numbers
    (bool, integer or floating), all finite once converted to float32, with at
    least one sample and one feature; ``X_test`` has as many features as
    ``X_train``.  ``y_*`` are 1-D arrays of non-negative integer class labels,
    one per row of the matching ``X``; floating-point labels are accepted
    when every value is a whole number.

    Parameters
    ----------
    path:
        The ``.npz`` file.

    Returns
    -------
    ((X_train, y_train), (X_test, y_test))
        ``X`` C-contiguous ``float32`` of shape ``(n_samples, n_features)``,
        ``y`` C-contiguous ``int64`` of shape ``(n_samples,)``.  ``X_test``
        and ``y_test`` are ``None`` when the file has no test arrays.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an ``.npz`` archive, a required array is missing,
        only one of ``X_test``/``y_test`` is present, or an array has the
        wrong number of dimensions, a mismatched length or feature count,
        NaN or infinite features, or labels that are negative or not whole
        numbers.  The message names the file and the array.
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
        y_train = _labels(archive, path, "y_train", len(X_train))
        if not has_test[0]:
            return (X_train, y_train), (None, None)
        X_test = _features(archive, path, "X_test")
        if X_test.shape[1] != X_train.shape[1]:
            raise ValueError(
                f"{path}: X_test: expected {X_train.shape[1]} features (as many as X_train), "
                f"got {X_test.shape[1]} (array of shape {X_test.shape})"
            )
        y_test = _labels(archive, path, "y_test", len(X_test))
    return (X_train, y_train), (X_test, y_test)


def _array(
    archive: np.lib.npyio.NpzFile, path: Path, key: str, kinds: str, what: str, ndim: int
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
    if array.ndim != ndim:
        shape = "(n_samples, n_features)" if ndim == 2 else "(n_samples,)"
        raise ValueError(f"{path}: {key}: expected a {ndim}-D array of shape {shape}, got {describe(array)}")
    return array


def _features(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    array = _array(archive, path, key, "biuf", "real numbers (bool, integer or floating dtype)", ndim=2)
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


def _labels(archive: np.lib.npyio.NpzFile, path: Path, key: str, n_samples: int) -> np.ndarray:
    array = _array(archive, path, key, "iuf",
                   "integer class labels (an integer or floating dtype holding whole numbers)", ndim=1)
    if len(array) != n_samples:
        raise ValueError(f"{path}: {key}: expected {n_samples} labels (one per row of X{key[1:]}), "
                         f"got {len(array)}")
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            index = int(np.argmin(whole))
            raise ValueError(f"{path}: {key}: expected integer class labels, "
                             f"got {array[index]} at index {index}")
    if array.size and array.min() < 0:
        index = int(np.argmin(array))
        raise ValueError(f"{path}: {key}: expected non-negative class labels, "
                         f"got {array[index]} at index {index}")
    if array.size and array.max() > _INT64_MAX:
        raise ValueError(f"{path}: {key}: expected labels that fit int64, got {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)
