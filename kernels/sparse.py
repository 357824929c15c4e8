"""A batch of sparse rows densified on the device: ``out[i] = X[idx[i]]`` for a CSR matrix X.

twin: mlp.backends._cpu_sparse.densify_rows (the NumPy loop over indptr/indices/data)

The CUDA backend keeps a sparse X on the device as its three CSR arrays
(``indptr`` (rows + 1,) and ``indices`` int64, ``data`` float32 or float64)
and, every step, scatters the batch's rows into a preallocated dense
``(B, features)`` buffer with this kernel; the first layer's products then
run on that buffer as on dense input.  One block per output row (a
grid-stride loop over the rows): its threads zero the row, wait for each
other, then add the row's non-zeros at their columns (an atomic add, so a
repeated column adds up as in the twin; a canonical matrix has none).
Negative indices count from the end; an index still out of range gives a
row of zeros (it cannot raise on the device without a synchronisation).
Repeated indices in a batch are independent output rows.

``take_rows_dense`` takes ``stream`` (0 or a Numba stream).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from ._config import check_float_dtype, kernel
from ._launch import capped_blocks, configured

THREADS = 128  # threads per block: one block writes one output row at a time
BLOCKS_PER_SM = 8


@functools.lru_cache(maxsize=None)
def densify_rows_kernel(dtype: Any):
    """``(indptr, indices, data, idx, out)``, launched with ``block = (THREADS,)``."""
    dt = check_float_dtype(dtype)
    DT = dt.type

    def densify_rows(indptr, indices, data, idx, out):
        n_src = indptr.shape[0] - 1
        width = out.shape[1]
        t = cuda.threadIdx.x
        step = cuda.blockDim.x
        for i in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):  # the same trip count for every thread
            for j in range(t, width, step):
                out[i, j] = DT(0)
            cuda.syncthreads()  # the whole row is zero before any non-zero lands in it
            src = idx[i]
            if src < 0:
                src += n_src
            if src >= 0 and src < n_src:
                for p in range(indptr[src] + t, indptr[src + 1], step):
                    cuda.atomic.add(out, (i, indices[p]), data[p])

    nb = from_dtype(dt)
    return kernel(void(int64[::1], int64[::1], nb[::1], int64[::1], nb[:, ::1]),
                  launch_bounds=THREADS)(densify_rows)


def _plan(dtype: Any, rows: int):
    """``(kernel, grid, block)`` densifying ``rows`` rows."""
    return densify_rows_kernel(np.dtype(dtype)), (capped_blocks(rows, BLOCKS_PER_SM), 1, 1), (THREADS, 1, 1)


def take_rows_dense(indptr, indices, data, idx, out, *, stream=0) -> int:
    """``out[i] = X[idx[i]]`` densified, for the CSR matrix ``(indptr, indices, data)``; ``out`` (B, features).
    Returns the number of kernel launches (0 for an empty batch)."""
    rows = idx.shape[0]
    if rows == 0 or out.size == 0:
        return 0
    configured(*_plan(out.dtype, rows), stream)(indptr, indices, data, idx, out)
    return 1
