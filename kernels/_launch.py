"""Host-side launch helpers: configured-launch cache, placeholder arrays, grid sizes.

Building ``kernel[grid, block, stream]`` allocates a launch-configuration
object (and Numba warns about small grids while doing so); the launchers here
build each one once per (kernel, grid, block, stream) and reuse it.  Under the
simulator ``kernel[grid, block, stream]`` mutates and returns the kernel
itself, so a launch there configures the kernel when it is made, one launch
at a time.

Nothing here is ever evicted.  A captured CUDA graph replays the kernels and
the device buffers its launches named, so every cached launch, placeholder
and scratch buffer must outlive any graph that may use it; the caches are
keyed by shape, and a network has a handful of shapes, so they stay small.
A program that creates a fresh stream for every launch would grow them
without bound: make streams once and reuse them.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
from numba import cuda

from ._config import ON_SIMULATOR, sm_count

_configured: dict = {}
_configured_lock = threading.Lock()


def stream_key(stream) -> int:
    """Identity of a launch stream for cache keys: 0 for the default stream, else the object's id.

    The id is only unique while the object lives, so whoever keys by it keeps
    the stream object alive next to the entry.
    """
    return 0 if not stream else id(stream)


#: One simulated launch at a time (see :class:`_SimulatedLaunch`).
_simulator_lock = threading.Lock()


class _SimulatedLaunch:
    """A launch configuration under Numba's CUDA simulator, applied when the launch is made.

    The simulator's ``kernel[grid, block, stream]`` sets the grid on the kernel
    object itself and returns it, so a launch kept for later (the matrix
    products' recipes keep theirs) would run with whatever grid the kernel was
    given last; and the simulator runs one kernel at a time, on the calling
    host thread.  Each call here configures the kernel and runs it under one
    lock: launches from several host threads then run one after another, as
    launches on one stream of a GPU do.
    """

    __slots__ = ("kern", "grid", "block", "stream")

    def __init__(self, kern, grid, block, stream) -> None:
        self.kern, self.grid, self.block, self.stream = kern, grid, block, stream

    def __call__(self, *args) -> None:
        with _simulator_lock:
            self.kern[self.grid, self.block, self.stream](*args)


def configured(kern, grid, block, stream=0):
    """``kern[grid, block, stream]``, built once and reused (on the simulator: configured at each call).

    ``stream`` is 0 (the default stream) or a Numba stream; the cache entry
    holds the kernel and the stream so that the ids in its key stay theirs.
    """
    if ON_SIMULATOR:
        return _SimulatedLaunch(kern, grid, block, stream)
    key = (id(kern), grid, block, stream_key(stream))
    entry = _configured.get(key)
    if entry is None:
        with warnings.catch_warnings():
            # Small grids are deliberate for small layers; Numba's
            # low-occupancy warning would fire on every new shape.
            warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result")
            launch = kern[grid, block, stream]
        with _configured_lock:
            entry = _configured.setdefault(key, (kern, stream, launch))
    return entry[2]


def prepared(kern, grid, block, stream=0):
    """:func:`configured`, with the kernel's code also loaded into the current context.

    For a launch built ahead of its first use (the matrix products' launch
    recipes), so that the launch itself, possibly during CUDA-graph capture,
    neither builds nor loads anything.
    """
    for overload in kern.overloads.values():  # empty under the simulator
        overload.bind()
    return configured(kern, grid, block, stream)


_placeholders: dict = {}
_placeholders_lock = threading.Lock()


def placeholder(dtype, ndim: int):
    """A tiny device array standing in for an argument a kernel variant ignores.

    Every kernel has one fixed signature, so an unused array argument still
    needs an array of the declared dtype and rank; it is never read or
    written, so it is allocated without a copy (nothing is enqueued on any
    stream).  Allocated on first use and kept: launch recipes and captured
    graphs refer to it.
    """
    key = (np.dtype(dtype), ndim)
    arr = _placeholders.get(key)
    if arr is None:
        with _placeholders_lock:
            arr = _placeholders.get(key)
            if arr is None:
                arr = _placeholders[key] = cuda.device_array((1,) * ndim, dtype=key[0])
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
