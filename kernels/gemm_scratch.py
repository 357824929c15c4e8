"""Per-shape state of the ``gemm`` launchers: split-K scratch and configured launches.

A :class:`GemmWorkspace` keeps, per product shape and stream, the launch a
recipe configures (kernel, grid, stream) and the split-K scratch it needs,
and never evicts either, so captured CUDA graphs stay valid; a first eager
launch makes them, since nothing may be allocated during graph capture.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from ._launch import ceil_div, placeholder, prepared, stream_key
from .gemm_kernel import TILES, VARIANTS, gemm_kernel
from .gemm_plan import plan


@dataclass(frozen=True)
class _Recipe:
    """Everything about a launch that depends only on the shapes, options and stream."""

    launch: Any  # the configured kernel
    k_chunk: int
    partial: Any  # split-K partial tiles, or a placeholder
    partial_colsum: Any
    tickets: Any
    spare_2d: Any  # placeholders for an absent mask
    spare_1d: Any  # ... and an absent bias or column-sum output


class GemmWorkspace:
    """Split-K scratch and launch recipes for the products of one owner (a backend, say).

    Shapes are the generic product's ``m, n, k`` (``gemm_kernel.product_shape``).
    Partial tiles are kept per (dtype, splits, m, n, stream), tickets as one
    int32 per output tile per stream (zero between launches: the reducing
    block resets its own), recipes per (variant, activation, dtype, shapes,
    options, stream).  Nothing is ever evicted: captured CUDA graphs point at
    these buffers, so they live as long as the workspace.  A network needs a
    few entries per layer and batch size (three products each), so the
    workspace stays small.

    The scratch of a stream is shared by every product launched on that
    stream, which runs them one after another, whichever host threads
    launched them; products on two streams, which may run at the same time,
    never share scratch.  A shape's first launch allocates everything it
    needs, so that its later launches (during graph capture, for one)
    allocate nothing.
    """

    def __init__(self) -> None:
        self._partials: dict = {}
        self._tickets: dict = {}
        self._recipes: dict = {}
        self._lock = threading.Lock()

    def partials(self, dtype, splits: int, m: int, n: int, stream=0):
        """``(partial tiles (splits, m, n), partial column sums (splits, n) float64)`` of ``stream``'s
        products, allocated once."""
        key = (np.dtype(dtype), splits, m, n, stream_key(stream))
        entry = self._partials.get(key)
        if entry is None:
            with self._lock:
                entry = self._partials.get(key)
                if entry is None:
                    # the stream is kept with its buffers so that its id in the key stays its own
                    entry = self._partials[key] = (stream, (
                        cuda.device_array((splits, max(m, 1), n), dtype=key[0]),
                        cuda.device_array((splits, n), dtype=np.float64),
                    ))
        return entry[1]

    def tickets(self, count: int, stream=0):
        """At least ``count`` zeroed int32 tickets of ``stream``'s products (grown, never shrunk; zeroed on
        ``stream``).

        A grown array replaces the old one for new recipes; recipes made
        earlier keep (and keep alive) the array they were made with.
        """
        key = stream_key(stream)
        entry = self._tickets.get(key)
        if entry is None or entry[1].shape[0] < count:
            with self._lock:
                entry = self._tickets.get(key)
                if entry is None or entry[1].shape[0] < count:
                    entry = self._tickets[key] = (stream, cuda.to_device(
                        np.zeros(max(count, 1024), dtype=np.int32), stream=stream))
        return entry[1]

    def reserve(self, dtype, splits: int, m: int, n: int, tiles: int, stream=0) -> None:
        """Allocate the scratch of a split-K product of ``m x n`` outputs in ``tiles`` tiles on ``stream`` now."""
        if splits > 1:
            self.partials(dtype, splits, m, n, stream)
            self.tickets(tiles, stream)

    def recipe(self, variant_name: str, act: int, dt: np.dtype, m: int, n: int, k: int, config: str,
               split_k: int | None, stream=0) -> _Recipe:
        """The launch of one product on ``stream``, made (and its scratch allocated) on first request."""
        key = (variant_name, act, dt, m, n, k, config, split_k, stream_key(stream))
        r = self._recipes.get(key)
        if r is None:
            r = _make_recipe(self, variant_name, act, dt, m, n, k, config, split_k, stream)
            with self._lock:
                # the stream object is kept with the recipe so that its id in the key stays its own
                r = self._recipes.setdefault(key, (r, stream))[0]
            return r
        return r[0]


def _make_recipe(ws: GemmWorkspace, variant_name, act, dt, m, n, k, config, split_k, stream) -> _Recipe:
    config, splits = plan(m, n, k, config, split_k, dt, variant_name)
    cfg = TILES[config]
    grid_m = max(1, ceil_div(m, cfg.bm))
    grid_n = ceil_div(n, cfg.bn)
    if splits > 1:
        k_chunk = ceil_div(ceil_div(k, cfg.bk), splits) * cfg.bk
        splits = ceil_div(k, k_chunk)
    else:
        k_chunk = k
    if splits > 1:
        ws.reserve(dt, splits, m, n, grid_m * grid_n, stream)
        partial, partial_cs = ws.partials(dt, splits, m, n, stream)
        tickets = ws.tickets(grid_m * grid_n, stream)
    else:
        partial, partial_cs = placeholder(dt, 3), placeholder(np.float64, 2)
        tickets = placeholder(np.int32, 1)
    launch = prepared(gemm_kernel(dt, config, VARIANTS[variant_name], act), (grid_m, grid_n, splits),
                      (cfg.threads, 1, 1), stream)
    return _Recipe(launch, k_chunk, partial, partial_cs, tickets, placeholder(dt, 2), placeholder(dt, 1))
