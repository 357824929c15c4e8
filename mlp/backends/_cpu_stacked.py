"""Numba loops behind the NumPy backend's stacked operations: many models of one shape at once.

Each loop runs, model by model, the very loop the single-model operation
runs (``_cpu_loops``, ``_cpu_losses``), so a model of a stack computes its
epilogues, losses and updates with exactly the arithmetic of its own fit;
only the calls from Python are shared.  The matrix products are NumPy's
stacked ``matmul`` (one BLAS call per model).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mlp.kernels._compile_cache import jit_with_disk_cache
from ..kernels.scalars import (ADAM_BC2_SQRT, ADAM_BETA2, ADAM_DECAY_FACTOR, ADAM_EPS, ADAM_ONE_MINUS_BETA1,
                               ADAM_ONE_MINUS_BETA2, ADAM_STEP_SIZE, ADAM_WEIGHT_DECAY, RMSPROP_ALPHA, RMSPROP_EPS,
                               RMSPROP_LR, RMSPROP_MOMENTUM, RMSPROP_ONE_MINUS_ALPHA, RMSPROP_WEIGHT_DECAY,
                               SGD_LOOKAHEAD, SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY)
from . import _cpu_loops as loops
from . import _cpu_losses as losses

_jit = jit_with_disk_cache(njit, nogil=True, error_model="numpy")


# rows (M,) int64, as the backend contract's stacked operations take them: model m's batch is its first
# rows[m] rows; rows[m] < 0: model m does not train (none of its arrays is read or written).
@_jit
def bias_act(out, b, act, rows):
    """out: (M, B, n), b: (M, n)."""
    for m in range(out.shape[0]):
        if rows[m] >= 0:
            loops.bias_act_inplace(out[m][:rows[m]], b[m], act)


@_jit
def act_grad_colsum(dy, y, act, dym, db, rows):
    """dym[m] = dy[m] * act'(y[m]); db[m] = column sums of dym[m] (model m's first rows[m] rows)."""
    for m in range(dy.shape[0]):
        r = rows[m]
        if r >= 0:
            loops.act_grad_colsum(dy[m][:r], y[m][:r], act, dym[m][:r], db[m])


@_jit
def colsum(dy, db, rows):
    for m in range(dy.shape[0]):
        if rows[m] >= 0:
            loops.colsum(dy[m][:rows[m]], db[m])


# The loss loops: logits (M, B, C); labels (M, B) or targets (M, B, C); dlogits like the logits, or a
# (1, 0, 0) stand-in when write_grad is False; weights (M, B), or a (1, 0) stand-in when not weighted;
# stats (M, STATS_SIZE); rows (M,): model m's batch is its first rows[m] rows (a shorter last batch
# is padded to B: the padding's gradient rows are zeroed and it adds nothing to the statistics).
# kind (real targets): a loss code of _cpu_losses (LOGISTIC, SQUARED_ERROR, POISSON); softmax_loss takes
# int64 labels.
@_jit
def loss(kind, logits, targets, dlogits, write_grad, stats, step, weights, weighted, clip_eps, rows):
    for m in range(logits.shape[0]):
        r = rows[m]
        if r < 0:
            continue
        dz = dlogits[m, :r] if write_grad else dlogits[0]
        w = weights[m, :r] if weighted else weights[0]
        losses.output_loss(kind, logits[m, :r], targets[m, :r], dz, write_grad, stats[m], step, w, weighted,
                           clip_eps)
        if write_grad:
            dlogits[m, r:] = 0


@_jit
def softmax_loss(logits, labels, exps, dlogits, write_grad, stats, step, weights, weighted, clip_eps, rows):
    """exps: ``exp(logits - row max)`` (``_cpu_loops.row_exps``), as the single-model loop takes it."""
    for m in range(logits.shape[0]):
        r = rows[m]
        if r < 0:
            continue
        dz = dlogits[m, :r] if write_grad else dlogits[0]
        w = weights[m, :r] if weighted else weights[0]
        loops.softmax_xent(logits[m, :r], labels[m, :r], exps[m, :r], dz, write_grad, stats[m], step, w, weighted,
                           clip_eps)
        if write_grad:
            dlogits[m, r:] = 0


@_jit
def l2_penalty(params, n, scales, row, stats, rows):
    """stats[m, loss] += scales[m, row] * sum(params[m, :n] ** 2) for every model that trains."""
    for m in range(params.shape[0]):
        if rows[m] >= 0:
            losses.l2_penalty(params[m], n, scales[m, row], stats[m])


@_jit
def sgd(params, grads, buf, table, row, nesterov, n_decay, use_momentum, rows):
    for m in range(params.shape[0]):
        if rows[m] < 0:
            continue
        t = table[m, row]
        lr, momentum, wd, lookahead = t[SGD_LR], t[SGD_MOMENTUM], t[SGD_WEIGHT_DECAY], t[SGD_LOOKAHEAD]
        if use_momentum:
            loops.sgd_update(params[m], grads[m], buf[m], lr, momentum, nesterov, wd, n_decay, lookahead)
        else:
            loops.sgd_update(params[m], grads[m], params[m][:0], lr, momentum * 0, nesterov, wd, n_decay,
                             lookahead)


@_jit
def rmsprop(params, grads, square_avg, buf, table, row, n_decay, use_momentum, rows):
    for m in range(params.shape[0]):
        if rows[m] < 0:
            continue
        t = table[m, row]
        momentum = t[RMSPROP_MOMENTUM] if use_momentum else t[RMSPROP_MOMENTUM] * 0
        loops.rmsprop_update(params[m], grads[m], square_avg[m], buf[m] if use_momentum else params[m][:0],
                             t[RMSPROP_LR], t[RMSPROP_ALPHA], t[RMSPROP_ONE_MINUS_ALPHA], t[RMSPROP_EPS], momentum,
                             t[RMSPROP_WEIGHT_DECAY], n_decay)


@_jit
def adam(params, grads, exp_avg, exp_avg_sq, table, row, decoupled, n_decay, rows):
    for m in range(params.shape[0]):
        if rows[m] < 0:
            continue
        t = table[m, row]
        loops.adam_update(params[m], grads[m], exp_avg[m], exp_avg_sq[m], t[ADAM_ONE_MINUS_BETA1], t[ADAM_BETA2],
                          t[ADAM_ONE_MINUS_BETA2], t[ADAM_EPS], t[ADAM_STEP_SIZE], t[ADAM_BC2_SQRT],
                          t[ADAM_WEIGHT_DECAY], t[ADAM_DECAY_FACTOR], decoupled, n_decay)


# The products of a stack, model by model, each on its own rows: W (k, n) and b (n,) of model m read at their
# offsets of its row of the flat (M, P) parameters, the batch's rows x[m, :rows[m]]; NumPy's dot inside the
# compiled loop calls BLAS with the GIL released, so the stack's models (or ranges of them in threads) go
# through every product without returning to Python.  A stack of one runs exactly this too.
@_jit
def affine_forward(x, params, w_off, b_off, k, n, act, out, rows):
    """out[m, :r] = act(x[m, :r] @ W_m + b_m) for every model that trains, r = rows[m]."""
    for m in range(x.shape[0]):
        r = rows[m]
        if r <= 0:  # not training, or no row (BLAS is not asked for a product over nothing)
            continue
        o = out[m, :r]
        np.dot(x[m, :r], params[m, w_off:w_off + k * n].reshape(k, n), o)
        loops.bias_act_inplace(o, params[m, b_off:b_off + n], act)


@_jit
def affine_backward(dy, x, params, grads, w_off, b_off, k, n, act, y, has_y, dym, dx, has_dx, rows):
    """For every model that trains: g = dy * act'(y) (``dym``; dy itself without y or for the identity), db its
    column sums, dW = x.T @ g, and with ``has_dx`` dx = g @ W.T, on the model's first rows[m] rows."""
    for m in range(dy.shape[0]):
        r = rows[m]
        if r < 0:
            continue
        db = grads[m, b_off:b_off + n]
        G = grads[m, w_off:w_off + k * n].reshape(k, n)
        if r == 0:  # no row: no gradient (BLAS is not asked for a product over nothing)
            G[:] = 0
            db[:] = 0
            continue
        if has_y and act != 0:
            g = dym[m, :r]
            loops.act_grad_colsum(dy[m, :r], y[m, :r], act, g, db)
        else:
            g = dy[m, :r]
            loops.colsum(g, db)
        np.dot(x[m, :r].T, g, G)
        if has_dx:
            np.dot(g, params[m, w_off:w_off + k * n].reshape(k, n).T, dx[m, :r])
