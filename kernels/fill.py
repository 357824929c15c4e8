"""Filling and converting copies: ``zeros``, ``fill_``, the ``stats`` reset, dtype conversion.

twin: mlp.backends.numpy_backend.NumpyBackend._fill (``ndarray.fill``),
      ``_fill_stats`` (``STATS_EMPTY``: ``[0, 0, inf]``) and ``_copy``
      (``np.copyto``, same-kind casting)

Each is a grid-stride loop over a flat (1-D, contiguous) view; the caller
reshapes.  Kernels are compiled per dtype on first use.  Every launcher takes
``stream`` (0, the default stream, or a Numba stream) and enqueues nothing
else.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, void

from ._config import STATS_CORRECT, STATS_EMPTY, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM, kernel
from ._launch import capped_blocks, ceil_div, configured

THREADS = 256
BLOCKS_PER_SM = 8
_EMPTY_LOSS, _EMPTY_CORRECT, _EMPTY_STEP = STATS_EMPTY


@functools.lru_cache(maxsize=None)
def fill_kernel(dtype: Any):
    """``(a, value)``: every element of the flat array ``a`` set to ``value``."""
    dt = np.dtype(dtype)

    def fill(a, value):
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            a[i] = value

    nb = from_dtype(dt)
    return kernel(void(nb[::1], nb), launch_bounds=THREADS)(fill)


@functools.lru_cache(maxsize=None)
def convert_kernel(src_dtype: Any, dst_dtype: Any):
    """``(src, dst)``: ``dst[i] = src[i]`` converted to dst's dtype (flat arrays)."""
    src_dt, dst_dt = np.dtype(src_dtype), np.dtype(dst_dtype)
    DST = dst_dt.type

    def convert(src, dst):
        for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            dst[i] = DST(src[i])

    return kernel(void(from_dtype(src_dt)[::1], from_dtype(dst_dt)[::1]), launch_bounds=THREADS)(convert)


@functools.lru_cache(maxsize=None)
def reset_stats_kernel():
    """``(stats,)``: ``stats = STATS_EMPTY``, written by one thread."""

    def reset_stats(stats):
        if cuda.grid(1) == 0:
            stats[STATS_LOSS_SUM] = _EMPTY_LOSS
            stats[STATS_CORRECT] = _EMPTY_CORRECT
            stats[STATS_FIRST_NONFINITE_STEP] = _EMPTY_STEP

    return kernel(void(float64[::1]))(reset_stats)


def _grid(size: int):
    return (capped_blocks(ceil_div(size, THREADS), BLOCKS_PER_SM), 1, 1), (THREADS, 1, 1)


_STATS_GRID = ((1, 1, 1), (32, 1, 1))


def fill(flat, value, *, stream=0) -> int:
    """Set every element of a flat contiguous device array to ``value``.  Returns launches."""
    if flat.size == 0:
        return 0
    configured(fill_kernel(flat.dtype), *_grid(flat.size), stream)(flat, np.dtype(flat.dtype).type(value))
    return 1


def convert(src_flat, dst_flat, *, stream=0) -> int:
    """``dst = src`` with dtype conversion, both flat, contiguous and of one size.  Returns launches."""
    if dst_flat.size == 0:
        return 0
    configured(convert_kernel(src_flat.dtype, dst_flat.dtype), *_grid(dst_flat.size), stream)(src_flat, dst_flat)
    return 1


def reset_stats(stats, *, stream=0) -> int:
    """``stats[:] = STATS_EMPTY`` (``[0, 0, inf]``) on the device.  Returns launches."""
    configured(reset_stats_kernel(), *_STATS_GRID, stream)(stats)
    return 1
