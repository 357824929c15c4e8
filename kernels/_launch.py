"""Host-side launch helpers: configured-launch cache, placeholder arrays, grid sizes.

Building ``kernel[grid, block]`` allocates a launch-configuration object (and
Numba warns about small grids while doing so); the launchers here build each
one once per (kernel, grid, block) and reuse it.  Under the simulator
``kernel[grid, block]`` mutates and returns the kernel itself, so nothing is
cached there.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
from numba import cuda

from ._config import ON_SIMULATOR, sm_count

_configured: dict = {}
_configured_lock = threading.Lock()
_MAX_CONFIGURED = 4096


def configured(kern, grid, block):
    """``kern[grid, block]``, built once and reused (not on the simulator)."""
    if ON_SIMULATOR:
        return kern[grid, block]
    key = (id(kern), grid, block)
    launch = _configured.get(key)
    if launch is None:
        with warnings.catch_warnings():
            # Small grids are deliberate for small layers; Numba's
            # low-occupancy warning would fire on every new shape.
            warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result")
            launch = kern[grid, block]
        with _configured_lock:
            if len(_configured) >= _MAX_CONFIGURED:
                _configured.clear()
            _configured[key] = (kern, launch)  # keep kern alive so id() stays unique
        return launch
    return launch[1]


_placeholders: dict = {}


def placeholder(dtype, ndim: int):
    """A tiny device array standing in for an argument a kernel variant ignores.

    Every kernel has one fixed signature, so an unused array argument still
    needs an array of the declared dtype and rank; it is never read or written.
    """
    key = (np.dtype(dtype), ndim)
    arr = _placeholders.get(key)
    if arr is None:
        arr = _placeholders[key] = cuda.to_device(np.zeros((1,) * ndim, dtype=key[0]))
    return arr


#: Upper bound on the grid of every grid-stride kernel when set.  Tests set
#: it to 1 or 2 so that each grid-stride loop runs more than one iteration.
MAX_GRID_BLOCKS: int | None = None


def capped_blocks(work_blocks: int, blocks_per_sm: int) -> int:
    """Blocks for a grid-stride kernel: enough to fill the device, never more than needed."""
    blocks = min(work_blocks, sm_count() * blocks_per_sm)
    if MAX_GRID_BLOCKS is not None:
        blocks = min(blocks, MAX_GRID_BLOCKS)
    return max(1, blocks)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
