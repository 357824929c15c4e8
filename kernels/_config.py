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

from ._compile_cache import jit_with_disk_cache  # noqa: E402

#: True when kernels run on Numba's CUDA simulator rather than a GPU.
ON_SIMULATOR: bool = bool(cuda.config.ENABLE_CUDASIM)

#: Numba's on-disk kernel cache (``__pycache__`` beside each module, or
#: ``NUMBA_CACHE_DIR``; kernels compile in memory where neither is writable,
#: see ``_compile_cache``).  Set ``MLP_KERNEL_CACHE=0`` to compile afresh.
USE_DISK_CACHE: bool = os.environ.get("MLP_KERNEL_CACHE", "1") not in ("0", "")

#: Streaming multiprocessors assumed under the simulator.  Small on purpose:
#: grids capped at a few blocks per SM then exercise every grid-stride loop.
SIMULATED_SM_COUNT = 2

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# The training statistics buffer ``stats``: float64, STATS_SIZE slots.  The
# softmax cross-entropy kernels add to it, ``fill.reset_stats`` empties it.
# The same names and values as the backend contract's (``mlp.backends.base``);
# kernels never import the library, so they are repeated here.
#: slot holding the sum of the per-row losses
STATS_LOSS_SUM = 0
#: slot holding the number of rows whose argmax equals the label (correct predictions)
STATS_CORRECT = 1
#: slot holding the first (smallest) step whose loss was not finite; +inf when none
STATS_FIRST_NONFINITE_STEP = 2
STATS_SIZE = 3
#: the value of an empty ``stats`` buffer, slot by slot
STATS_EMPTY = (0.0, 0.0, float("inf"))


def device_function(fn):
    """A device function inlined into its callers (NVVM ``alwaysinline``).

    Used for code shared by several kernels.  Kernels refer to it as a module
    global, never through a factory's closure, so the disk cache still keys
    them by value; inlining lets the caller's compile-time constants unroll
    its loops.  The simulator's ``cuda.jit`` has no ``forceinline``.
    """
    if ON_SIMULATOR:
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, forceinline=True)(fn)


def kernel(signature, *, launch_bounds=None):
    """``cuda.jit`` for a kernel compiled eagerly for one signature.

    One explicit signature makes the dispatcher skip argument-type dispatch
    at launch (it has a single overload), which trims per-launch overhead.
    The caller must therefore pass exactly the declared types.
    """
    options = {}
    if not ON_SIMULATOR and launch_bounds is not None:
        options["launch_bounds"] = launch_bounds
    jit = jit_with_disk_cache(cuda.jit, signature, **options) if USE_DISK_CACHE else cuda.jit(signature, **options)

    def build(fn):
        global kernels_built
        kernels_built += 1
        return jit(fn)

    return build


#: Kernels built (compiled, or loaded from the disk cache) in this process so
#: far, counted by :func:`kernel`: a check that warm-up work is not repeated.
kernels_built = 0


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
