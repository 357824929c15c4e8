"""The backend contract, stacks: the operations of a training step over M models of one shape at once.

Part of :class:`mlp.backends.base.Backend` (a base class of it).  The defaults run the single-model
operations model by model, so any backend is correct; a backend overrides them with operations over
the whole stack.
"""

from __future__ import annotations

import math
from abc import ABC
from typing import Any

import numpy as np

from .names import STATS_FIRST_NONFINITE_STEP, STATS_SIZE


def _stack_rows(models: int, batch: int, rows: Any):
    """``(m, rows of model m)`` for every model of a stack that trains (see the stacked operations)."""
    for m in range(models):
        r = batch if rows is None else int(rows[m])
        if r >= 0:
            yield m, r


class StackedOps(ABC):
    """The stacked operations of the backend contract (see the comment below)."""

    # --------------------------------------------------------- stacked models
    # M models of one shape trained at once (``mlp.loop``): every array has a leading model axis and model
    # m's slice is exactly what the single-model operation takes, so a model of a stack computes what its
    # own fit would.  The defaults here run the single-model operations model by model (correct on any
    # backend); a backend overrides them with operations over the whole stack.
    #   x (M, B, k), W (M, k, n), b (M, n), y/out (M, B, n); idx (M, B) int64; params (M, P);
    #   stats (M, STATS_SIZE); optimizer tables (M, steps, columns); L2 scales (M, steps).
    #   On a device backend W/b (and dW/db) are :class:`StackedLayer` views of the (M, P) buffers.
    #   rows (M,) int64, an array of this backend (a device backend also takes a host array, copied at
    #   the launch: not capturable in a CUDA graph): model m's batch is its first rows[m] rows (a shorter
    #   last batch is padded); rows[m] == -1: model m has stopped training, and none of its arrays is read
    #   or written (it is frozen).  None (products only): every row of every model.
    #: whether several host threads stepping disjoint ranges of a stack's models run faster (a host backend's
    #: work runs on the calling thread; a device's is queued on one stream, where threads gain nothing)
    stack_threads_help: bool = False

    def new_stacked_stats(self, models: int) -> Any:
        """A fresh ``(models, STATS_SIZE)`` accumulator (see :meth:`new_stats`)."""
        stats = np.zeros((models, STATS_SIZE))
        stats[:, STATS_FIRST_NONFINITE_STEP] = math.inf
        return self.asarray(stats, dtype=np.float64)

    def _fill_stacked_stats(self, stats: Any) -> None:
        for m in range(stats.shape[0]):
            self._fill_stats(stats[m])

    def _take_rows_stacked(self, X: Any, idx: Any, out: Any) -> None:
        for m in range(idx.shape[0]):
            self._take_rows(X, idx[m], out[m])

    def _host_rows(self, rows: Any) -> Any:
        return None if rows is None else np.asarray(self.to_numpy(rows) if self.is_array(rows) else rows)

    # The products of model m use its first rows[m] rows only, exactly as its own fit's shorter last batch.
    def _affine_forward_stacked(self, x: Any, W: Any, b: Any, act: int, out: Any, rows: Any = None) -> None:
        for m, r in _stack_rows(x.shape[0], x.shape[1], self._host_rows(rows)):
            self._affine_forward(x[m, :r], W[m], b[m], act, out[m, :r])

    def _affine_backward_stacked(self, dy: Any, x: Any, W: Any, y: Any, dx: Any, dW: Any, db: Any,
                                 act: int = 1, rows: Any = None) -> None:
        for m, r in _stack_rows(dy.shape[0], dy.shape[1], self._host_rows(rows)):
            self._affine_backward(dy[m, :r], x[m, :r], W[m], None if y is None else y[m, :r],
                                  None if dx is None else dx[m, :r], dW[m], db[m], act)

    def _loss_stacked(self, output: str, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any, rows: Any, clip: bool = False) -> None:
        """The output layer's loss (``output`` as :data:`OUTPUTS`) of every training model's batch;
        a padded row's gradient is zero.  ``clip``: scikit-learn's log-losses, whose probabilities are
        clipped (see :meth:`softmax_cross_entropy_into`)."""
        op = {"softmax": self._softmax_xent, "logistic": self._logistic_xent, "identity": self._squared_error,
              "exp": self._poisson_loss}[output]
        options = {"clip": clip} if clip else {}
        for m, r in _stack_rows(logits.shape[0], logits.shape[1], self._host_rows(rows)):
            dz = None if dlogits is None else dlogits[m, :r]
            w = None if weights is None else weights[m, :r]
            op(logits[m, :r], targets[m, :r], dz, stats[m], step, w, **options)
            if dlogits is not None and r < dlogits.shape[1]:
                self._fill(dlogits[m, r:], 0)

    def _training(self, rows: Any) -> np.ndarray:
        return np.flatnonzero(self._host_rows(rows) >= 0)

    def _l2_penalty_stacked(self, params: Any, n: int, scales: Any, row: int, stats: Any, rows: Any) -> None:
        for m in self._training(rows):
            self._l2_penalty(params[m], n, scales[m], row, stats[m])

    def _sgd_step_stacked(self, params: Any, grads: Any, buf: Any, table: Any, row: int, nesterov: bool,
                          n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._sgd_step(params[m], grads[m], None if buf is None else buf[m], table[m], row, nesterov, n_decay)

    def _rmsprop_step_stacked(self, params: Any, grads: Any, square_avg: Any, buf: Any, table: Any, row: int,
                              n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._rmsprop_step(params[m], grads[m], square_avg[m], None if buf is None else buf[m], table[m], row,
                               n_decay)

    def _adam_step_stacked(self, params: Any, grads: Any, exp_avg: Any, exp_avg_sq: Any, table: Any, row: int,
                           decoupled: bool, n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._adam_step(params[m], grads[m], exp_avg[m], exp_avg_sq[m], table[m], row, decoupled, n_decay)
