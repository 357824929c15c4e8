"""The matrix products of a search's stacks alone, as the NumPy backend computes them: the limit a stacked search
can reach on a CPU (``bench_search.py``'s ``stack-products`` rows).

Kept apart from the benchmark module so that tests can import it without the benchmarks' pytest marks.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mlp.loop import block_models


@dataclass(frozen=True)
class Stack:
    """One stack of the search: networks of ``layers`` trained on ``rows[m]`` rows each, ``batch`` rows a
    step (the last batch of a model padded to ``batch``, as the stack runs it), ``steps`` steps an epoch."""

    layers: tuple[int, ...]
    batch: int
    steps: int
    rows: tuple[int, ...]

    @property
    def models(self) -> int:
        return len(self.rows)


class StackProducts:
    """The 2-D matrix products the NumPy backend runs for a search's stacks, alone, as it runs them.

    Per epoch and step, for every layer and every model: forward ``x @ W``;
    backward, last layer first, ``x.T @ dy`` and (all layers but the first)
    ``dy @ W.T``, as ``mlp.backends._cpu_stacked.affine_forward`` and
    ``affine_backward`` compute them: NumPy's dot inside a compiled loop over
    the models (one BLAS call per model, the GIL released), ``W`` of model
    ``m`` read at its offset in the models' ``(M, P)`` parameter rows, the
    transposes as views, outputs preallocated; only the epilogues (bias,
    activation and its derivative, the bias gradient) are left out.
    ``exact=True`` uses each model's own rows in its last batch instead of the
    padded batch (what the stack and one fit at a time multiply).  With
    ``threads`` > 1 the models of a stack are cut into that many ranges, each
    running in a thread of its own, block by block as the stack's (:meth:`search`).
    """

    def __init__(self, stacks: Sequence[Stack], epochs: int, dtype: Any, exact: bool = False,
                 threads: int = 1) -> None:
        rng = np.random.default_rng(0)
        dt = np.dtype(dtype)
        self.epochs, self.exact, self.stacks, self.threads = epochs, exact, list(stacks), max(1, int(threads))
        self.arrays = []
        for st in self.stacks:
            M, B, sizes = st.models, st.batch, st.layers
            params = sum(k * n for k, n in zip(sizes[:-1], sizes[1:]))
            flat, grads = rng.standard_normal((M, params)).astype(dt), np.empty((M, params), dt)
            layers, off = [], 0
            for k, n in zip(sizes[:-1], sizes[1:]):
                flat[:, off:off + k * n] *= dt.type(1.0 / np.sqrt(k))  # keeps every layer's output of order 1
                layers.append((off, k, n))
                off += k * n
            acts = [rng.standard_normal((M, B, s)).astype(dt) for s in sizes]  # the input, then each output
            dy = [rng.standard_normal((M, B, s)).astype(dt) for s in sizes[1:]]  # gradient at each output
            dx = [np.empty((M, B, s), dt) for s in sizes[1:-1]]
            counts = np.array([[min(B, n - s * B) if exact else B for n in st.rows] for s in range(st.steps)],
                              dtype=np.int64)
            parts = min(self.threads, M)
            bounds = np.linspace(0, M, parts + 1).astype(int)
            size = block_models(sizes, B, dt.itemsize)
            ranges = [[(b, min(b + size, int(hi))) for b in range(int(lo), int(hi), size)]
                      for lo, hi in zip(bounds[:-1], bounds[1:])]
            self.arrays.append((flat, grads, layers, acts, dy, dx, counts, ranges))
        self.seconds: list[float] = []

    @staticmethod
    def _step(flat, grads, layers, acts, dy, dx, rows, models: tuple[int, int]) -> None:
        """One step's products of the models ``models`` (a range), model ``m`` on its first ``rows[m]`` rows."""
        forward, backward = _product_loops()
        lo, hi = models
        for i, (off, k, n) in enumerate(layers):
            forward(acts[i], flat, off, k, n, acts[i + 1], rows, lo, hi)
        for i in range(len(layers) - 1, -1, -1):
            off, k, n = layers[i]
            d = dx[i - 1] if i > 0 else dy[i]  # the first layer's dx is not computed (a stand-in, not written)
            backward(acts[i], dy[i], flat, grads, off, k, n, d, i > 0, rows, lo, hi)

    def search(self) -> None:
        """Every stack's products for every epoch, one stack after another (as ``fit_many`` trains them); each
        range of models runs in its thread block by block (:func:`mlp.loop.block_models`), each block every step
        of the epoch, the threads joined after each epoch: as a stack's blocks run."""
        def epoch(arrays: tuple, steps: int, blocks: list[tuple[int, int]]) -> None:
            flat, grads, layers, acts, dy, dx, counts, _ = arrays
            for models in blocks:
                for s in range(steps):
                    self._step(flat, grads, layers, acts, dy, dx, counts[s], models)

        pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        try:
            for st, arrays in zip(self.stacks, self.arrays):
                ranges = arrays[-1]
                for _ in range(self.epochs):
                    if pool is None or len(ranges) == 1:
                        for blocks in ranges:
                            epoch(arrays, st.steps, blocks)
                    else:
                        for done in [pool.submit(epoch, arrays, st.steps, blocks) for blocks in ranges]:
                            done.result()
        finally:
            if pool is not None:
                pool.shutdown()

    def __call__(self) -> None:
        start = time.perf_counter()
        self.search()
        self.seconds.append(time.perf_counter() - start)

    @property
    def products(self) -> int:
        """2-D products in one search."""
        return sum(self.epochs * st.steps * st.models * (3 * (len(st.layers) - 1) - 1) for st in self.stacks)


_LOOPS: tuple | None = None


def _product_loops() -> tuple:
    """``(forward, backward)``: the products of ``mlp.backends._cpu_stacked.affine_forward``/``affine_backward``
    for the models ``lo`` to ``hi``, compiled once per process (NumPy's dot in Numba, the GIL released)."""
    global _LOOPS
    if _LOOPS is None:
        from numba import njit

        @njit(nogil=True, cache=True)
        def forward(x, flat, off, k, n, out, rows, lo, hi):
            for m in range(lo, hi):
                r = rows[m]
                np.dot(x[m, :r], flat[m, off:off + k * n].reshape(k, n), out[m, :r])

        @njit(nogil=True, cache=True)
        def backward(x, g, flat, grads, off, k, n, dx, has_dx, rows, lo, hi):
            for m in range(lo, hi):
                r = rows[m]
                np.dot(x[m, :r].T, g[m, :r], grads[m, off:off + k * n].reshape(k, n))
                if has_dx:
                    np.dot(g[m, :r], flat[m, off:off + k * n].reshape(k, n).T, dx[m, :r])

        _LOOPS = (forward, backward)
    return _LOOPS


def padded(found: Sequence[Stack]) -> list[Stack]:
    """``found`` with the one-hidden-layer stacks of equal batches merged into one stack of the widest hidden
    layer: what padding the narrower models to the widest (one stack instead of one per shape) would
    multiply at least.  Deeper stacks stay as they are (a depth is its own group either way)."""
    merged: dict[tuple, list[Stack]] = {}
    rest = []
    for st in found:
        if len(st.layers) == 3:
            merged.setdefault((st.layers[0], st.layers[2], st.batch, st.steps), []).append(st)
        else:
            rest.append(st)
    out = [Stack((n_in, max(st.layers[1] for st in group), n_out), batch, steps,
                 tuple(r for st in group for r in st.rows)) for (n_in, n_out, batch, steps), group in merged.items()]
    return out + rest
