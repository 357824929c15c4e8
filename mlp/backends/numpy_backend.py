"""The NumPy backend: the CPU fallback and the reference every GPU kernel is checked against.

Matrix products go to NumPy's BLAS with preallocated outputs; every other
operation is a single Numba-compiled pass (``_cpu_loops``).  The semantics of
each method are those documented on :class:`mlp.backends.base.Backend`.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from . import _cpu_loops as loops
from .base import Backend


class NumpyBackend(Backend):
    """Host arrays (``numpy.ndarray``), BLAS matrix products, fused Numba loops."""

    name = "numpy"

    def __init__(self) -> None:
        # Per-thread scratch for the masked gradient of affine_backward, so a
        # training step allocates nothing and two threads never share one.
        self._local = threading.local()

    # ------------------------------------------------------------------ arrays
    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            from . import host_copy  # device arrays of any backend (Numba, CuPy, ...) come to the host

            a = host_copy(a)
        return np.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def empty(self, shape: int | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape: int | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def _copy(self, dst: np.ndarray, src: Any) -> None:
        np.copyto(dst, self.asarray(src), casting="same_kind")

    def _fill(self, a: np.ndarray, value: float) -> None:
        a.fill(value)

    def _fill_stats(self, stats: np.ndarray) -> None:
        stats[:] = self.new_stats()

    def _scratch(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        cache = getattr(self._local, "scratch", None)
        if cache is None:
            cache = self._local.scratch = {}
        key = (shape, np.dtype(dtype))
        buf = cache.get(key)
        if buf is None:
            buf = cache[key] = np.empty(shape, dtype=dtype)
        return buf

    # ----------------------------------------------------------------- gather
    def _take_rows(self, X: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
        np.take(X, idx, axis=0, out=out)

    # ----------------------------------------------------------------- affine
    def _affine_forward(self, x, W, b, relu, out) -> None:
        np.matmul(x, W, out=out)
        loops.bias_act_inplace(out, b, relu)

    def _affine_backward(self, dy, x, W, y, dx, dW, db) -> None:
        if y is not None:
            dym = self._scratch(dy.shape, dy.dtype)
            loops.relu_mask_colsum(dy, y, dym, db)
        else:
            dym = dy
            loops.colsum(dy, db)
        np.matmul(x.T, dym, out=dW)
        if dx is not None:
            np.matmul(dym, W.T, out=dx)

    # ---------------------------------------------------------------- softmax
    def _softmax(self, logits, out) -> None:
        loops.softmax_rows(logits, out)

    def _softmax_xent(self, logits, labels, dlogits, stats, step) -> None:
        write_grad = dlogits is not None
        if not write_grad:
            dlogits = np.empty((1, 1), dtype=logits.dtype)  # typed placeholder, never written
        loops.softmax_xent(logits, labels, dlogits, write_grad, stats, step)

    # -------------------------------------------------------------- optimizers
    # The scalars of a step are one row of a host table, already in the
    # parameters' dtype (see Backend): unpacking it costs nothing here.
    def _sgd_step(self, params, grads, buf, scalars, row, nesterov, n_decay) -> None:
        lr, momentum, wd = scalars[row]
        if buf is None:
            buf, momentum = params[:0], momentum.dtype.type(0)
        loops.sgd_update(params, grads, buf, lr, momentum, nesterov, wd, n_decay)

    def _rmsprop_step(self, params, grads, square_avg, buf, scalars, row, n_decay) -> None:
        lr, alpha, one_minus_alpha, eps, momentum, wd = scalars[row]
        if buf is None:
            buf, momentum = params[:0], momentum.dtype.type(0)
        loops.rmsprop_update(params, grads, square_avg, buf, lr, alpha, one_minus_alpha, eps, momentum, wd,
                             n_decay)

    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, scalars, row, decoupled, n_decay) -> None:
        loops.adam_update(params, grads, exp_avg, exp_avg_sq, *scalars[row], decoupled, n_decay)
