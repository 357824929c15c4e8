"""Compile options and device facts shared by every kernel module.

Kernels are specialised per dtype and tile shape by factory functions whose
closures hold only plain constants (ints, bools, NumPy scalar types), so that
Numba's on-disk cache can key them by value and reuse them across processes.
A closure that captured another jitted function would defeat that cache (the
function's identity changes every run), so shared device code is written
inline instead.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run
as Python threads; options the simulator does not accept are dropped here.
"""

from __future__ import annotations

import functools
import os

import numpy as np

# numba-cuda 0.30 registers an overload for ``np.row_stack`` when its CUDA
# target first loads, and NumPy 2.5 removed that alias of ``np.vstack``: on
# such an install every kernel compilation fails with an AttributeError.
# Restore the alias (with its original meaning) before anything compiles.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402

#: True when kernels run on Numba's CUDA simulator rather than a GPU.
ON_SIMULATOR: bool = bool(cuda.config.ENABLE_CUDASIM)

#: Numba's on-disk kernel cache (``__pycache__`` beside each module, or
#: ``NUMBA_CACHE_DIR``).  Set ``MLP_KERNEL_CACHE=0`` to compile afresh.
USE_DISK_CACHE: bool = os.environ.get("MLP_KERNEL_CACHE", "1") not in ("0", "")

#: Streaming multiprocessors assumed under the simulator.  Small on purpose:
#: grids capped at a few blocks per SM then exercise every grid-stride loop.
SIMULATED_SM_COUNT = 2

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def kernel(signature, *, launch_bounds=None):
    """``cuda.jit`` for a kernel compiled eagerly for one signature.

    One explicit signature makes the dispatcher skip argument-type dispatch
    at launch (it has a single overload), which trims per-launch overhead.
    The caller must therefore pass exactly the declared types.
    """
    options = {"cache": USE_DISK_CACHE}
    if not ON_SIMULATOR and launch_bounds is not None:
        options["launch_bounds"] = launch_bounds
    return cuda.jit(signature, **options)


@functools.lru_cache(maxsize=None)
def sm_count() -> int:
    """Number of streaming multiprocessors of the current device."""
    if ON_SIMULATOR:
        return SIMULATED_SM_COUNT
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def check_float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"expected dtype float32 or float64, got {dt}")
    return dt
