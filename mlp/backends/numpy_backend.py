"""The NumPy backend: the CPU fallback and the reference every GPU kernel is checked against.

Matrix products go to NumPy's BLAS with preallocated outputs; every other
operation is a single Numba-compiled pass (``_cpu_loops``).  The semantics of
each method are those documented on :class:`mlp.backends.base.Backend`.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Sequence

import numpy as np

from . import _cpu_loops as loops
from .base import Backend, adam_constants


class NumpyBackend(Backend):
    """Host arrays (``numpy.ndarray``), BLAS matrix products, fused Numba loops."""

    name = "numpy"

    def __init__(self) -> None:
        # Per-thread scratch for the masked gradient of affine_backward, so a
        # training step allocates nothing and two threads never share one.
        self._local = threading.local()

    # ------------------------------------------------------------------ arrays
    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        if hasattr(a, "copy_to_host"):  # a Numba device array
            a = a.copy_to_host()
        elif hasattr(a, "get") and type(a).__module__.startswith("cupy"):
            a = a.get()
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
        stats[0] = 0.0
        stats[1] = 0.0
        stats[2] = math.inf

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
    def _sgd_step(self, params, grads, buf, lr, momentum, nesterov, weight_decay, n_decay) -> None:
        t = params.dtype.type
        if buf is None:
            if momentum != 0:
                raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
            buf = params[:0]
        loops.sgd_update(params, grads, buf, t(lr), t(momentum), nesterov, t(weight_decay), n_decay)

    def _rmsprop_step(self, params, grads, square_avg, buf, lr, alpha, eps, momentum, weight_decay,
                      n_decay) -> None:
        t = params.dtype.type
        if buf is None:
            if momentum > 0:
                raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
            buf = params[:0]
        loops.rmsprop_update(params, grads, square_avg, buf, t(lr), t(alpha), t(1 - alpha), t(eps),
                             t(momentum), t(weight_decay), n_decay)

    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step,
                   weight_decay, decoupled, n_decay) -> None:
        t = params.dtype.type
        c = adam_constants(lr, beta1, beta2, step, weight_decay)
        loops.adam_update(params, grads, exp_avg, exp_avg_sq, t(1 - beta1), t(beta2), t(1 - beta2),
                          t(eps), t(c.step_size), t(c.bc2_sqrt), t(weight_decay), t(c.decay_factor),
                          decoupled, n_decay)
