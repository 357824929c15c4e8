"""Numba-compiled CPU loops behind the NumPy backend's sparse input: a first layer that reads CSR rows.

A CSR matrix is ``(indptr, indices, data)``: row ``r`` holds ``data[p]`` in column ``indices[p]`` for
``p`` in ``range(indptr[r], indptr[r + 1])``, and zeros elsewhere.  For a batch ``x`` of such rows,
a layer ``W`` (k, n), ``b`` (n,) with activation ``f``:

* :func:`take_rows`           the rows ``idx`` of X copied into a CSR batch (their non-zeros only);
* :func:`affine_forward`      ``out[i] = f(sum_p data[p] * W[indices[p]] + b)`` over row i's non-zeros;
* :func:`affine_backward_dw`  ``dW = x.T @ g``: ``dW[indices[p]] += data[p] * g[i]`` over row i's non-zeros
  (``g = dy * f'(y)`` and ``db``, its column sums, come from ``_cpu_loops.act_grad_colsum``);
* :func:`densify_rows`        ``out[i]`` = row ``idx[i]`` of X, dense: the twin of the device kernel
  ``kernels/sparse.py``, which densifies a batch on the GPU.

Each product touches the non-zeros only (non-zeros x n multiply-adds), never a dense copy of X.  Sums
are in the arrays' dtype, as BLAS's are for the dense layers; a row's terms are added in the order of
its non-zeros (columns increasing in a canonical matrix).  Like the other loops these release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mlp.kernels._compile_cache import jit_with_disk_cache

from ._cpu_loops import bias_act_row

_jit = jit_with_disk_cache(njit, nogil=True, error_model="numpy")


@_jit
def take_rows(indptr, indices, data, idx, out_indptr, out_indices, out_data):
    """The rows ``idx`` (in range, int64) of X into the batch ``(out_indptr, out_indices, out_data)``; the
    batch's arrays must have room for those rows' non-zeros."""
    pos = 0
    out_indptr[0] = 0
    for i in range(idx.shape[0]):
        r = idx[i]
        for p in range(indptr[r], indptr[r + 1]):
            out_indices[pos] = indices[p]
            out_data[pos] = data[p]
            pos += 1
        out_indptr[i + 1] = pos


@_jit
def affine_forward(indptr, indices, data, W, b, act, out):
    """out = f(x @ W + b) for the CSR batch x, row by row: each non-zero adds its value times a row of W,
    then the bias and activation code ``act`` are applied while the row is in cache."""
    rows, n = out.shape
    zero = out.dtype.type(0)
    for i in range(rows):
        row = out[i]
        for j in range(n):
            row[j] = zero
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            w = W[indices[p]]
            for j in range(n):
                row[j] += v * w[j]
        bias_act_row(row, b, act)


@_jit
def affine_backward_dw(indptr, indices, data, g, dW):
    """dW = x.T @ g for the CSR batch x (g: (rows, n)): zeroed, then each non-zero (i, c) adds its value
    times g[i] to row c of dW (rows of W no sample of the batch touches get zeros, as in the dense product)."""
    k, n = dW.shape
    zero = dW.dtype.type(0)
    for c in range(k):
        for j in range(n):
            dW[c, j] = zero
    for i in range(g.shape[0]):
        gi = g[i]
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            row = dW[indices[p]]
            for j in range(n):
                row[j] += v * gi[j]


@_jit
def densify_rows(indptr, indices, data, idx, out):
    """out[i] = row idx[i] of X, dense (repeated columns add up); a negative index counts from the end and
    an index still out of range gives a row of zeros (as the device kernel, which cannot raise)."""
    n_src = indptr.shape[0] - 1
    zero = out.dtype.type(0)
    for i in range(idx.shape[0]):
        row = out[i]
        for j in range(row.shape[0]):
            row[j] = zero
        r = idx[i]
        if r < 0:
            r += n_src
        if r < 0 or r >= n_src:
            continue
        for p in range(indptr[r], indptr[r + 1]):
            row[indices[p]] += data[p]


def batch_capacity(indptr: np.ndarray, rows: int) -> int:
    """The most non-zeros any ``rows`` rows of a CSR matrix hold (its ``rows`` longest rows): the room a batch
    buffer needs."""
    lengths = np.diff(indptr)
    if rows >= lengths.shape[0]:
        return int(lengths.sum())
    if rows <= 0:
        return 0
    return int(np.partition(lengths, lengths.shape[0] - rows)[lengths.shape[0] - rows:].sum())
