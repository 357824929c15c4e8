"""The NumPy backend: the CPU fallback and the reference every GPU kernel is checked against.

Matrix products go to NumPy's BLAS with preallocated outputs; every other
operation is a single Numba-compiled pass (``_cpu_loops``).  The semantics of
each method are those documented on :class:`mlp.backends.base.Backend`.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from ..kernels.scalars import (ADAM_BC2_SQRT, ADAM_BETA2, ADAM_DECAY_FACTOR, ADAM_EPS, ADAM_ONE_MINUS_BETA1,
                               ADAM_ONE_MINUS_BETA2, ADAM_STEP_SIZE, ADAM_WEIGHT_DECAY, RMSPROP_ALPHA, RMSPROP_EPS,
                               RMSPROP_LR, RMSPROP_MOMENTUM, RMSPROP_ONE_MINUS_ALPHA, RMSPROP_WEIGHT_DECAY,
                               SGD_LOOKAHEAD, SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY)
from . import _cpu_losses as losses
from . import _cpu_loops as loops
from . import _cpu_sparse as sparse
from . import _cpu_stacked as stacked
from .base import Backend, CSRMatrix, StackedLayer
from .names import log_loss_eps


class NumpyBackend(Backend):
    """Host arrays (``numpy.ndarray``), BLAS matrix products, fused Numba loops."""

    name = "numpy"
    stack_threads_help = True

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
        key = (shape, dtype)
        buf = cache.get(key)
        if buf is None:
            buf = cache[key] = np.empty(shape, dtype=dtype)
        return buf

    # ----------------------------------------------------------------- gather
    def _take_rows(self, X: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
        np.take(X, idx, axis=0, out=out)

    # ----------------------------------------------------------------- affine
    # int(act): a bool code (True is relu) would compile the loops a second time
    def _affine_forward(self, x, W, b, act, out) -> None:
        np.matmul(x, W, out=out)
        loops.bias_act_inplace(out, b, int(act))

    def _affine_backward(self, dy, x, W, y, dx, dW, db, act=1) -> None:
        dym = _masked_gradient(self, dy, y, db, act)
        np.matmul(x.T, dym, out=dW)
        if dx is not None:
            np.matmul(dym, W.T, out=dx)

    # ------------------------------------------------------------ sparse input
    # A CSR batch is a CSRMatrix (csr_batch_layout "csr"): the first layer's products run over its
    # non-zeros (_cpu_sparse), and no row of X is ever densified.
    def _new_csr_batch(self, X, rows) -> CSRMatrix:
        capacity = sparse.batch_capacity(X.indptr, rows)
        # indptr zeros: an unfilled batch is a valid one whose rows are empty
        return CSRMatrix(np.empty(capacity, X.dtype), np.empty(capacity, np.int64), np.zeros(rows + 1, np.int64),
                         (rows, X.shape[1]))

    def _take_rows_csr(self, X, idx, out) -> None:
        sparse.take_rows(X.indptr, X.indices, X.data, idx, out.indptr, out.indices, out.data)

    def _csr_affine_forward(self, x, W, b, act, out) -> None:
        sparse.affine_forward(x.indptr, x.indices, x.data, W, b, int(act), out)

    def _csr_affine_backward(self, dy, x, y, dW, db, act=1) -> None:
        sparse.affine_backward_dw(x.indptr, x.indices, x.data, _masked_gradient(self, dy, y, db, act), dW)

    # ---------------------------------------------------------------- softmax
    def _softmax(self, logits, out) -> None:
        loops.softmax_rows(logits, out)

    def _softmax_xent(self, logits, labels, dlogits, stats, step, weights=None, clip=False) -> None:
        exps = self._scratch(logits.shape, logits.dtype) if dlogits is None else dlogits
        loops.row_exps(logits, exps)
        loops.softmax_xent(logits, labels, exps, *_grad_args(dlogits, logits), stats, step,
                           *_weight_args(weights, logits), log_loss_eps(logits.dtype, clip))

    # ------------------------------------------------------------------ losses
    def _logistic_xent(self, logits, targets, dlogits, stats, step, weights=None, clip=False) -> None:
        _output_loss(losses.LOGISTIC, logits, targets, dlogits, stats, step, weights, log_loss_eps(logits.dtype, clip))

    def _squared_error(self, pred, targets, dpred, stats, step, weights=None) -> None:
        _output_loss(losses.SQUARED_ERROR, pred, targets, dpred, stats, step, weights)

    def _poisson_loss(self, logits, targets, dlogits, stats, step, weights=None) -> None:
        _output_loss(losses.POISSON, logits, targets, dlogits, stats, step, weights)

    def _l2_penalty(self, params, n, scales, row, stats) -> None:
        losses.l2_penalty(params, n, float(scales[row]), stats)

    # -------------------------------------------------------------- optimizers
    # The scalars of a step are one row of a host table, already in the
    # parameters' dtype (see Backend): unpacking it costs nothing here.
    def _sgd_step(self, params, grads, buf, scalars, row, nesterov, n_decay) -> None:
        t = scalars[row]
        momentum = t[SGD_MOMENTUM]
        if buf is None:
            buf, momentum = params[:0], momentum.dtype.type(0)
        loops.sgd_update(params, grads, buf, t[SGD_LR], momentum, nesterov, t[SGD_WEIGHT_DECAY], n_decay,
                         t[SGD_LOOKAHEAD])

    def _rmsprop_step(self, params, grads, square_avg, buf, scalars, row, n_decay) -> None:
        t = scalars[row]
        momentum = t[RMSPROP_MOMENTUM]
        if buf is None:
            buf, momentum = params[:0], momentum.dtype.type(0)
        loops.rmsprop_update(params, grads, square_avg, buf, t[RMSPROP_LR], t[RMSPROP_ALPHA],
                             t[RMSPROP_ONE_MINUS_ALPHA], t[RMSPROP_EPS], momentum, t[RMSPROP_WEIGHT_DECAY], n_decay)

    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, scalars, row, decoupled, n_decay) -> None:
        t = scalars[row]
        loops.adam_update(params, grads, exp_avg, exp_avg_sq, t[ADAM_ONE_MINUS_BETA1], t[ADAM_BETA2],
                          t[ADAM_ONE_MINUS_BETA2], t[ADAM_EPS], t[ADAM_STEP_SIZE], t[ADAM_BC2_SQRT],
                          t[ADAM_WEIGHT_DECAY], t[ADAM_DECAY_FACTOR], decoupled, n_decay)

    # ---------------------------------------------------------- stacked models
    # One Numba loop over the models, each running the single-model loop (see _cpu_stacked); the products
    # are NumPy's stacked matmul (one BLAS call per model, as the single model's).
    def _fill_stacked_stats(self, stats) -> None:
        stats[:] = self.new_stacked_stats(stats.shape[0])

    def _take_rows_stacked(self, X, idx, out) -> None:
        np.take(X, idx, axis=0, out=out)

    # The products go model by model: NumPy's stacked matmul does not call BLAS when the models' weights
    # are views of one (M, P) buffer (measured 10x slower than this loop), and one 2-D product per model
    # is also exactly the single model's product.
    def _affine_forward_stacked(self, x, W, b, act, out, rows=None) -> None:
        rows = _rows(x, rows)
        if _one_buffer(W, b):
            k, n = W.shape
            stacked.affine_forward(x, W.flat, W.offset, b.offset, k, n, int(act), out, rows)
            return
        for m in np.flatnonzero(rows >= 0):
            r = rows[m]
            np.matmul(x[m, :r], W[m], out=out[m, :r])
        stacked.bias_act(out, b, int(act), rows)

    def _affine_backward_stacked(self, dy, x, W, y, dx, dW, db, act=1, rows=None) -> None:
        rows = _rows(dy, rows)
        if _one_buffer(dW, db) and type(W) is StackedLayer and W.models == dW.models and W.offset == dW.offset \
                and W.shape == dW.shape:
            k, n = W.shape
            dym = self._scratch(dy.shape, dy.dtype)
            stacked.affine_backward(dy, x, W.flat, dW.flat, W.offset, db.offset, k, n, int(act),
                                    dy if y is None else y, y is not None, dym, dy if dx is None else dx,
                                    dx is not None, rows)
            return
        if y is not None and act:
            dym = self._scratch(dy.shape, dy.dtype)
            stacked.act_grad_colsum(dy, y, int(act), dym, db, rows)
        else:
            dym = dy
            stacked.colsum(dy, db, rows)
        for m in np.flatnonzero(rows >= 0):
            r = rows[m]
            np.matmul(x[m, :r].T, dym[m, :r], out=dW[m])
            if dx is not None:
                np.matmul(dym[m, :r], W[m].T, out=dx[m, :r])

    def _loss_stacked(self, output, logits, targets, dlogits, stats, step, weights, rows, clip=False) -> None:
        rows = _rows(logits, rows)
        # stand-ins with one (empty) model, so that the loop's [0] stays in bounds
        grad = (_absent(logits.dtype, 2)[None], False) if dlogits is None else (dlogits, True)
        w = (_absent(logits.dtype, 1)[None], False) if weights is None else (weights, True)
        eps = log_loss_eps(logits.dtype, clip)
        if output == "softmax":
            # into scratch, not dlogits: a stopped model's gradient rows are not written
            exps = self._scratch(logits.shape, logits.dtype)
            loops.row_exps(logits, exps)
            stacked.softmax_loss(logits, targets, exps, *grad, stats, step, *w, eps, rows)
        else:
            stacked.loss(_REAL_LOSSES[output], logits, targets, *grad, stats, step, *w, eps, rows)

    def _l2_penalty_stacked(self, params, n, scales, row, stats, rows) -> None:
        stacked.l2_penalty(params, n, scales, row, stats, _rows(params, rows))

    def _sgd_step_stacked(self, params, grads, buf, table, row, nesterov, n_decay, rows) -> None:
        stacked.sgd(params, grads, params if buf is None else buf, table, row, nesterov, n_decay, buf is not None,
                    _rows(params, rows))

    def _rmsprop_step_stacked(self, params, grads, square_avg, buf, table, row, n_decay, rows) -> None:
        stacked.rmsprop(params, grads, square_avg, params if buf is None else buf, table, row, n_decay,
                        buf is not None, _rows(params, rows))

    def _adam_step_stacked(self, params, grads, exp_avg, exp_avg_sq, table, row, decoupled, n_decay,
                           rows) -> None:
        stacked.adam(params, grads, exp_avg, exp_avg_sq, table, row, decoupled, n_decay,
                     _rows(params, rows))


def _masked_gradient(be: NumpyBackend, dy: np.ndarray, y: Any, db: np.ndarray, act: int) -> np.ndarray:
    """``dy * f'(y)`` (``dy`` itself for the identity or without ``y``: its derivative is 1), with its column
    sums written to ``db``; in the calling thread's scratch, never into ``dy``."""
    if y is not None and act:  # code 0, the identity, has derivative 1
        dym = be._scratch(dy.shape, dy.dtype)
        loops.act_grad_colsum(dy, y, int(act), dym, db)
        return dym
    loops.colsum(dy, db)
    return dy


def _one_buffer(W: Any, b: Any) -> bool:
    """Whether a layer's weights and biases are :class:`StackedLayer` views of one stack's buffer (the compiled
    products read them there); plain arrays take the loop over models in Python."""
    return type(W) is StackedLayer and type(b) is StackedLayer and W.same_models(b)


def _rows(a: np.ndarray, rows: Any) -> np.ndarray:
    """The contract's ``rows`` as the stacked loops take them, an int64 array (M,): every row of every model
    of ``a`` (M, B, ...) when ``rows`` is None."""
    if rows is None:
        return np.full(a.shape[0], a.shape[1], dtype=np.int64)
    if type(rows) is np.ndarray and rows.dtype == np.int64:  # the training loop's rows, as they are
        return rows
    return np.asarray(rows, dtype=np.int64)


#: the stacked loss loop's codes of the real-target outputs
_REAL_LOSSES = {"logistic": losses.LOGISTIC, "identity": losses.SQUARED_ERROR, "exp": losses.POISSON}

# Typed stand-ins for an absent gradient output or weights, one per dtype, never read or written:
# the loops have one signature whether or not those are given.
_ABSENT: dict = {}


def _absent(dtype: Any, ndim: int) -> np.ndarray:
    key = (np.dtype(dtype), ndim)
    a = _ABSENT.get(key)
    if a is None:
        a = _ABSENT[key] = np.empty((0,) * ndim, dtype=key[0])
    return a


def _grad_args(dz: Any, z: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(gradient output, write_grad)`` for the loss loops."""
    return (_absent(z.dtype, 2), False) if dz is None else (dz, True)


def _weight_args(weights: Any, z: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(weights, weighted)`` for the loss loops."""
    return (_absent(z.dtype, 1), False) if weights is None else (weights, True)


def _output_loss(kind: int, z, targets, dz, stats, step: int, weights, clip_eps: float = 0.0) -> None:
    losses.output_loss(kind, z, targets, *_grad_args(dz, z), stats, step, *_weight_args(weights, z), clip_eps)
