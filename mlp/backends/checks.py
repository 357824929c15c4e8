"""The checks the backends' public operations make of what they are given: shapes, dtypes, layouts, outputs.

Each raises ``ValueError``/``TypeError`` naming the argument, what was
expected and what was given.  The underscored operations check nothing: their
callers validated once.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._validation import check_float_array


def _describe(a: Any) -> str:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"array of shape {tuple(shape)} and dtype {dtype}"


def check_matrix(a: Any, name: str, rows: int | None = None, cols: int | None = None) -> None:
    """Raise unless ``a`` is a 2-D float array with the given extents."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {_describe(a)}")
    check_float_array(a, name)
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} rows, got {_describe(a)}")
    if cols is not None and shape[1] != cols:
        raise ValueError(f"{name}: expected {cols} columns, got {_describe(a)}")


def check_vector(a: Any, name: str, size: int | None = None, dtype: Any = None) -> None:
    """Raise unless ``a`` is a 1-D array of the given size (and dtype)."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"{name}: expected a 1-D array, got {_describe(a)}")
    if size is not None and shape[0] != size:
        raise ValueError(f"{name}: expected {size} elements, got {_describe(a)}")
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")


def check_same_dtype(ref: Any, ref_name: str, **others: Any) -> None:
    for name, a in others.items():
        if a is not None and np.dtype(a.dtype) != np.dtype(ref.dtype):
            raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {a.dtype}")


def is_c_contiguous(a: Any) -> bool:
    """Whether ``a`` (a NumPy array, a Numba device array or a CuPy array) is C-contiguous."""
    flags = getattr(a, "flags", None)
    if flags is not None:
        return bool(flags["C_CONTIGUOUS"])
    test = getattr(a, "is_c_contiguous", None)
    return True if test is None else bool(test())


def check_out(out: Any, name: str, shape: Sequence[int], dtype: Any) -> None:
    """Raise unless a caller-supplied output buffer has exactly this shape and dtype, C-contiguous."""
    if tuple(getattr(out, "shape", ())) != tuple(shape) or np.dtype(out.dtype) != np.dtype(dtype) \
            or not is_c_contiguous(out):
        raise ValueError(
            f"{name}: expected a C-contiguous output of shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
            f"got {_describe(out)}"
        )
