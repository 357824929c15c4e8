"""The naive affine forward product: one thread per output, the baseline the tiled kernels are measured against.

twin: mlp.backends.numpy_backend.NumpyBackend._affine_forward (``np.matmul``
then bias and ReLU), the same twin as ``mlp.kernels.gemm``'s forward product.

Each thread walks one row of x and one column of W straight from global
memory: no shared memory, no reuse between threads.  It is kept readable and
never used by the library; ``bench/bench_kernels.py`` times it and
``tests/test_kernels_naive.py`` checks it against the twin.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from mlp.kernels._config import check_float_dtype, kernel
from mlp.kernels._launch import ceil_div, configured

BLOCK = (32, 8, 1)  # 32 columns (one warp: coalesced W reads and stores) by 8 rows


@functools.lru_cache(maxsize=None)
def naive_kernel(dtype: Any):
    """``(x, w, bias, out, m, n, k, relu)``: ``out = relu?(x @ w + bias)``, one thread per output."""
    dt = check_float_dtype(dtype)
    DT = dt.type

    def affine_naive(x, w, bias, out, m, n, k, relu):
        col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        if row < m and col < n:
            s = DT(0)
            for kk in range(k):
                s = cuda.fma(x[row, kk], w[kk, col], s)
            v = s + bias[col]
            if relu != 0:
                v = v if v > DT(0) else DT(0)
            out[row, col] = v

    nb = from_dtype(dt)
    sig = void(nb[:, ::1], nb[:, ::1], nb[::1], nb[:, ::1], int64, int64, int64, int64)
    return kernel(sig)(affine_naive)


def affine_forward(x, W, b, relu: bool, out, *, stream=0) -> int:
    """``out = relu?(x @ W + b)`` with the naive kernel; shapes as ``mlp.kernels.gemm.affine_forward``.

    Returns the number of kernel launches (1, or 0 for an empty output).
    """
    m, k = x.shape
    n = W.shape[1]
    if m == 0 or n == 0:
        return 0
    grid = (ceil_div(n, BLOCK[0]), ceil_div(m, BLOCK[1]), 1)
    configured(naive_kernel(np.dtype(x.dtype)), grid, BLOCK, stream)(x, W, b, out, m, n, k, int(bool(relu)))
    return 1
