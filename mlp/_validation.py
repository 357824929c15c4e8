"""Input checks at the library's boundary.

Public entry points (``MLP``, ``Trainer``, the optimizers, the CLI) validate
their arguments here once, with messages that name the argument, what was
expected and what was given; the code below them then trusts its inputs.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

#: the floating-point dtypes the library computes in (the kernels keep their own copy: they import nothing of ``mlp``)
FLOAT_DTYPE_NAMES = ("float32", "float64")
FLOAT_DTYPES = tuple(np.dtype(name) for name in FLOAT_DTYPE_NAMES)


def describe(a: Any) -> str:
    shape = getattr(a, "shape", None)
    if shape is not None and hasattr(a, "dtype"):
        return f"array of shape {tuple(shape)} and dtype {a.dtype}"
    return f"{type(a).__name__} {a!r}" if isinstance(a, (numbers.Number, str)) else type(a).__name__


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected one of {FLOAT_DTYPE_NAMES}, got {dtype!r}") from None
    if dt.name not in FLOAT_DTYPE_NAMES:
        raise TypeError(f"{name}: expected one of {FLOAT_DTYPE_NAMES}, got {dt.name}")
    return dt


def check_float_array(a: Any, name: str) -> None:
    """Raise ``TypeError`` unless the array ``a`` (of any backend) holds float32 or float64."""
    if np.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_real(value: Any, name: str, minimum: float | None = None, maximum: float | None = None,
               min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    lo_ok = minimum is None or (value >= minimum if min_inclusive else value > minimum)
    hi_ok = maximum is None or (value <= maximum if max_inclusive else value < maximum)
    if not (lo_ok and hi_ok):
        lo = "-inf" if minimum is None else f"{minimum}"
        hi = "inf" if maximum is None else f"{maximum}"
        interval = f"{'[' if min_inclusive else '('}{lo}, {hi}{']' if max_inclusive else ')'}"
        raise ValueError(f"{name}: expected a value in {interval}, got {value}")
    return value


def check_layer_sizes(layer_sizes: Any, min_outputs: int = 2) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
        raise TypeError(f"layer_sizes: expected a sequence of positive integers, got {describe(layer_sizes)}")
    if len(layer_sizes) < 2:
        raise ValueError(
            f"layer_sizes: expected at least two sizes (inputs and outputs), got {list(layer_sizes)}")
    sizes = []
    for i, s in enumerate(layer_sizes):
        sizes.append(check_int(s, f"layer_sizes[{i}]", minimum=1))
    if sizes[-1] < min_outputs:
        raise ValueError(f"layer_sizes: expected at least {min_outputs} outputs in the last layer (a softmax "
                         f"needs two classes), got {sizes[-1]}")
    return tuple(sizes)


def check_features(X: Any, n_features: int, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """A host array of shape (N, n_features), N >= 1, finite, converted to ``dtype``."""
    if hasattr(X, "__cuda_array_interface__") and not isinstance(X, np.ndarray):
        raise TypeError(f"{name}: expected a host array here, got a device array ({type(X).__name__})")
    if hasattr(X, "nnz") and hasattr(X, "tocsr"):  # scipy.sparse (NumPy would see one object)
        raise TypeError(f"{name}: expected a dense array here, got a scipy.sparse matrix of shape {tuple(X.shape)} "
                        f"({name}.toarray() densifies it)")
    arr = _real_array(X, name, "a real numeric array")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n_samples, {n_features}), got {describe(arr)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array of shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(
            f"{name}: expected {n_features} features (the model's input size), got {arr.shape[1]} "
            f"(array of shape {arr.shape})")
    return _finite(arr, dtype, name, "values")


def check_targets(t: Any, n_samples: int, n_outputs: int, dtype: np.dtype, name: str = "y") -> np.ndarray:
    """Real-valued targets as a C-contiguous ``(n_samples, n_outputs)`` host array of ``dtype``, finite.

    A 1-D array is one output; 0/1 indicator rows (multilabel) are real targets too.
    """
    arr = _real_array(t, name, "real-valued targets")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape != (n_samples, n_outputs):
        raise ValueError(f"{name}: expected targets of shape ({n_samples}, {n_outputs}) (one row per sample, one "
                         f"column per output), got {describe(np.asarray(t))}")
    return _finite(arr, dtype, name, "targets")


def _real_array(x: Any, name: str, what: str) -> np.ndarray:
    """``x`` as a NumPy array of bool, integer or floating dtype; a ``TypeError`` expecting ``what`` if not."""
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name}: expected {what}, got {type(x).__name__} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected {what}, got dtype {arr.dtype}")
    return arr


def _finite(arr: np.ndarray, dtype: np.dtype, name: str, what: str) -> np.ndarray:
    """``arr`` as a C-contiguous array of ``dtype``; a ``ValueError`` if any of its ``what`` is NaN or infinite."""
    arr = np.ascontiguousarray(arr, dtype=dtype)
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{name}: expected finite {what}, got {arr.size - np.count_nonzero(finite)} NaN or "
                         "infinite entries")
    return arr


def check_labels(y: Any, n_samples: int, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class labels in [0, n_classes) as an int64 host array of length n_samples."""
    try:
        arr = np.asarray(y)
    except Exception as exc:
        raise TypeError(f"{name}: expected a 1-D array of integer labels, got {type(y).__name__} ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {n_samples} labels, got {describe(arr)}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per sample of X), got {arr.shape[0]}")
    if arr.dtype.kind in "iu":
        labels = arr.astype(np.int64, copy=False)
    elif arr.dtype.kind == "f" and first_non_integer(arr) is None:
        labels = arr.astype(np.int64)
    else:
        raise TypeError(
            f"{name}: expected integer class labels 0..{n_classes - 1}, got dtype {arr.dtype}"
            + (" (use mlp.MLPClassifier for arbitrary label values)" if arr.dtype.kind in "OUSb" else ""))
    check_index_range(labels, n_classes, name, "labels", f"the model has {n_classes} outputs")
    return np.ascontiguousarray(labels)


def first_non_integer(a: np.ndarray) -> int | None:
    """The flat index of the first value of the float host array ``a`` that is not a whole number (NaN and
    infinities included), or None when they all are: such an array holds integer labels."""
    whole = np.isfinite(a) & (a == np.round(a))
    return None if whole.all() else int(np.argmin(whole.ravel()))


def check_index_range(values: np.ndarray, stop: int | None, name: str, what: str, why: str | None = None) -> None:
    """Raise ``ValueError`` unless every value of the integer host array ``values`` lies in ``[0, stop)``
    (``stop`` None: is non-negative).

    The one range check of labels and row indices: the message says ``what`` was expected in which range,
    ``why`` that range (when given), and the range of the values given.
    """
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or (stop is not None and hi >= stop):
            expected = ">= 0" if stop is None else f"in [0, {stop - 1}]"
            reason = f" ({why})" if why else ""
            raise ValueError(f"{name}: expected {what} {expected}{reason}, got values in [{lo}, {hi}]")
