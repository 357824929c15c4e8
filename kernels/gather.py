"""Row gather ``out = X[idx]``: assembling a mini-batch from a dataset kept on the device.

twin: mlp.backends.numpy_backend.NumpyBackend._take_rows (``np.take(X, idx, axis=0)``)

X is 1-D or 2-D of any dtype Numba can type; idx is int64.  Rows are copied
by 2-D blocks whose x threads walk a row's columns (coalesced reads and
writes) and whose y threads stride over the output rows.  Negative indices
count from the end as in NumPy.  An index still out of range cannot raise on
the device without a synchronisation, so its output row is zero-filled
instead of read (NumPy would raise ``IndexError``).

``take_rows`` takes ``stream`` (0 or a Numba stream).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from ._config import kernel
from ._launch import capped_blocks, ceil_div, configured

COLS = 128  # block x: threads along a row
ROWS = 2  # block y: rows in flight per block
VEC_THREADS = 256
BLOCKS_PER_SM = 8


@functools.lru_cache(maxsize=None)
def take_rows_2d_kernel(dtype: Any):
    """``(X, idx, out)`` for 2-D X, launched with ``block = (COLS, ROWS)``."""
    dt = np.dtype(dtype)
    DT = dt.type

    def take_rows_2d(x, idx, out):
        n_src = x.shape[0]
        width = x.shape[1]
        for i in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, out.shape[0],
                       cuda.gridDim.y * cuda.blockDim.y):
            src = idx[i]
            if src < 0:
                src += n_src
            inside = src >= 0 and src < n_src
            for j in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, width,
                           cuda.gridDim.x * cuda.blockDim.x):
                out[i, j] = x[src, j] if inside else DT(0)

    nb = from_dtype(dt)
    return kernel(void(nb[:, ::1], int64[::1], nb[:, ::1]), launch_bounds=COLS * ROWS)(take_rows_2d)


@functools.lru_cache(maxsize=None)
def take_rows_1d_kernel(dtype: Any):
    """``(X, idx, out)`` for 1-D X (labels)."""
    dt = np.dtype(dtype)
    DT = dt.type

    def take_rows_1d(x, idx, out):
        n_src = x.shape[0]
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            src = idx[i]
            if src < 0:
                src += n_src
            out[i] = x[src] if src >= 0 and src < n_src else DT(0)

    nb = from_dtype(dt)
    return kernel(void(nb[::1], int64[::1], nb[::1]), launch_bounds=VEC_THREADS)(take_rows_1d)


def _plan(X_ndim: int, width: int, dtype: Any, b: int):
    """``(kernel, grid, block)`` gathering ``b`` rows of ``width`` elements (1-D X: width 1)."""
    dt = np.dtype(dtype)
    if X_ndim == 1:
        blocks = capped_blocks(ceil_div(b, VEC_THREADS), BLOCKS_PER_SM)
        return take_rows_1d_kernel(dt), (blocks, 1, 1), (VEC_THREADS, 1, 1)
    gx = min(ceil_div(width, COLS), 8)
    gy = min(capped_blocks(ceil_div(b, ROWS), max(1, BLOCKS_PER_SM // gx)), 65535)
    return take_rows_2d_kernel(dt), (gx, gy, 1), (COLS, ROWS, 1)


def take_rows(X, idx, out, *, stream=0) -> int:
    """``out[i] = X[idx[i]]`` for 1-D or 2-D X.  Returns the number of kernel launches."""
    b = idx.shape[0]
    if b == 0 or out.size == 0:
        return 0
    configured(*_plan(X.ndim, X.shape[X.ndim - 1], X.dtype, b), stream)(X, idx, out)
    return 1
