"""Numba-compiled CPU loops behind the NumPy backend.

BLAS does the matrix products; these loops do everything else in a single pass
each (bias + activation epilogue, activation derivative + bias gradient,
softmax with cross-entropy, optimizer updates), so that a training step costs
little more than its matrix products.  ``error_model="numpy"`` drops Python's
division-by-zero checks, which otherwise stop LLVM from vectorising the loops.

Scalars are passed already cast to the array's dtype, so float32 updates are
computed in float32, in the same order as ``torch.optim``'s documented rules.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mlp.kernels._compile_cache import jit_with_disk_cache

from ._cpu_losses import add_stats, batch_scales, log_loss_bounds
from .base import ACTIVATIONS

_jit = jit_with_disk_cache(njit, nogil=True, error_model="numpy")
# The loops a stacked operation (_cpu_stacked) runs model by model, inlined into it where it is compiled: a fit
# (a stack of one or of many) compiles only the stacked operations, not each loop again on its own (a call
# from Python still compiles a loop by itself).
_inline = jit_with_disk_cache(njit, nogil=True, error_model="numpy", inline="always")


# Activation codes (indices of ACTIVATIONS), as the kernels number them too.
_RELU, _TANH, _LOGISTIC = (ACTIVATIONS.index(a) for a in ("relu", "tanh", "logistic"))


@_inline
def _logistic(v, one):
    # exp of a non-positive argument only, so nothing overflows at extreme inputs
    if v >= 0:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


@_inline
def bias_act_row(row, b, act):
    """row[j] = f(row[j] + b[j]) for activation code ``act`` (an index of ``ACTIVATIONS``).

    The branch on ``act`` sits outside the inner loops, so each stays a plain
    loop LLVM can vectorise.
    """
    m = row.shape[0]
    zero = row.dtype.type(0)
    one = row.dtype.type(1)
    if act == _RELU:
        for j in range(m):
            v = row[j] + b[j]
            row[j] = v if v > zero else zero
    elif act == _TANH:
        for j in range(m):
            row[j] = math.tanh(row[j] + b[j])
    elif act == _LOGISTIC:
        for j in range(m):
            row[j] = _logistic(row[j] + b[j], one)
    else:
        for j in range(m):
            row[j] = row[j] + b[j]


@_inline
def bias_act_inplace(out, b, act):
    """out[i, j] = f(out[i, j] + b[j]) for activation code ``act``, row by row (:func:`bias_act_row`)."""
    for i in range(out.shape[0]):
        bias_act_row(out[i], b, act)


@_inline
def act_grad_colsum(dy, y, act, dym, db):
    """dym = dy * f'(z), with f'(z) of activation code ``act`` computed from the output y = f(z),
    and db = column sums of dym (float64 accumulation).

    f'(z): relu [y > 0] (a select, so NaN in y masks), tanh 1 - y*y,
    logistic y*(1 - y), identity 1.
    """
    n, m = dy.shape
    acc = np.zeros(m, dtype=np.float64)
    zero = dy.dtype.type(0)
    one = dy.dtype.type(1)
    for i in range(n):
        if act == _RELU:
            for j in range(m):
                v = dy[i, j] if y[i, j] > zero else zero
                dym[i, j] = v
                acc[j] += v
        elif act == _TANH:
            for j in range(m):
                v = dy[i, j] * (one - y[i, j] * y[i, j])
                dym[i, j] = v
                acc[j] += v
        elif act == _LOGISTIC:
            for j in range(m):
                v = dy[i, j] * (y[i, j] * (one - y[i, j]))
                dym[i, j] = v
                acc[j] += v
        else:
            for j in range(m):
                v = dy[i, j]
                dym[i, j] = v
                acc[j] += v
    for j in range(m):
        db[j] = acc[j]


@_inline
def colsum(dy, db):
    n, m = dy.shape
    acc = np.zeros(m, dtype=np.float64)
    for i in range(n):
        for j in range(m):
            acc[j] += dy[i, j]
    for j in range(m):
        db[j] = acc[j]


@_jit
def softmax_rows(logits, out):
    n, c = logits.shape
    for i in range(n):
        mx = logits[i, 0]
        for j in range(1, c):
            if logits[i, j] > mx:
                mx = logits[i, j]
        # each exponential computed once, kept in ``out`` (of the logits' dtype, as exp's result: exact)
        s = 0.0
        for j in range(c):
            e = math.exp(logits[i, j] - mx)
            out[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            out[i, j] = out[i, j] * inv


@_jit
def _shift_rows(logits, out):
    """out[i] = logits[i] - max(logits[i]) (2-D; NumPy's max along a short last axis is several times
    slower than this loop)."""
    n, c = logits.shape
    for i in range(n):
        mx = logits[i, 0]
        for j in range(1, c):
            if logits[i, j] > mx:
                mx = logits[i, j]
        for j in range(c):
            out[i, j] = logits[i, j] - mx


def row_exps(logits: np.ndarray, out: np.ndarray) -> None:
    """``out = exp(logits - max of its row)`` over the last axis, 2-D or 3-D (``out`` may be ``logits``);
    a row holding an infinity gives NaN, as the loss it feeds then is, and no warning.  Exponentials that
    underflow to 0 are what a softmax expects: no warning, and no error where NumPy is set to raise on
    floating-point errors (``np.seterr(all="raise")``)."""
    if logits.ndim == 3 and logits.flags.c_contiguous and out.flags.c_contiguous:  # a stack's: one call
        _shift_rows(logits.reshape(-1, logits.shape[2]), out.reshape(-1, out.shape[2]))
    elif logits.ndim == 3:
        for m in range(logits.shape[0]):
            _shift_rows(logits[m], out[m])
    else:
        _shift_rows(logits, out)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        np.exp(out, out=out)


@_inline
def softmax_xent(logits, labels, exps, dlogits, write_grad, stats, step, weights, weighted, clip_eps):
    """One pass per row: max and argmax, log-sum-exp, loss, gradient.

    ``exps``: ``exp(logits - row max)``, computed by the caller with NumPy's
    vectorised ``exp`` (:func:`row_exps`; the exponentials are most of a
    softmax's cost, and this loop cannot vectorise them); it may be
    ``dlogits`` itself.  Accumulates [sum of losses, correct count, first
    non-finite step] into stats.  With ``weighted``, row i's gradient is
    scaled by ``w[i] / S`` instead of ``1 / N`` and its loss by
    ``N * w[i] / S`` (see ``_cpu_losses``).  With ``clip_eps`` > 0
    (``names.log_loss_eps``) a row's loss is held to scikit-learn's bounds
    (``_cpu_losses.log_loss_bounds``) before it is scaled (NaN stays NaN);
    its gradient is not.
    """
    n, c = logits.shape
    grad_unit, loss_unit = batch_scales(weights, weighted, n)
    low, high = log_loss_bounds(clip_eps)
    loss_sum = 0.0
    correct = 0
    bad = False
    for i in range(n):
        mx = logits[i, 0]
        arg = 0
        for j in range(1, c):
            if logits[i, j] > mx:
                mx = logits[i, j]
                arg = j
        lab = labels[i]
        if lab < 0 or lab >= c:
            # Never index outside the row: the loss and the gradient row are
            # NaN, so the non-finite slot of stats records this step.
            loss_sum += math.nan
            bad = True
            if write_grad:
                for j in range(c):
                    dlogits[i, j] = math.nan
            continue
        z_lab = logits[i, lab]
        s = 0.0
        for j in range(c):
            s += exps[i, j]
        w = weights[i] if weighted else 1.0
        raw = mx + math.log(s) - z_lab
        if raw < low:
            raw = low
        elif raw > high:
            raw = high
        loss = raw * (w * loss_unit)
        loss_sum += loss
        if arg == lab:
            correct += 1
        if not math.isfinite(loss):
            bad = True
        if write_grad:
            inv_s = 1.0 / s
            g = w * grad_unit
            for j in range(c):
                p = exps[i, j] * inv_s
                if j == lab:
                    p -= 1.0
                dlogits[i, j] = p * g
    add_stats(stats, step, loss_sum, correct, bad)


@_inline
def sgd_update(p, g, buf, lr, momentum, nesterov, wd, n_decay, lookahead):
    use_momentum = momentum != 0
    for i in range(p.size):
        d = g[i]
        if i < n_decay:
            d = d + wd * p[i]
        if use_momentum:
            bi = momentum * buf[i] + d
            buf[i] = bi
            if nesterov:
                d = d + lookahead * bi
            else:
                d = bi
        p[i] = p[i] - lr * d


@_inline
def rmsprop_update(p, g, sq, buf, lr, alpha, one_minus_alpha, eps, momentum, wd, n_decay):
    use_momentum = momentum > 0
    for i in range(p.size):
        d = g[i]
        if i < n_decay:
            d = d + wd * p[i]
        s = alpha * sq[i] + one_minus_alpha * d * d
        sq[i] = s
        avg = math.sqrt(s) + eps
        if use_momentum:
            bi = momentum * buf[i] + d / avg
            buf[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * (d / avg)


@_inline
def adam_update(p, g, m, v, one_minus_b1, beta2, one_minus_b2, eps, step_size, bc2_sqrt,
                wd, decay_factor, decoupled, n_decay):
    for i in range(p.size):
        d = g[i]
        pi = p[i]
        if i < n_decay:
            if decoupled:
                pi = pi * decay_factor
            else:
                d = d + wd * pi
        mi = m[i] + one_minus_b1 * (d - m[i])
        m[i] = mi
        vi = beta2 * v[i] + one_minus_b2 * d * d
        v[i] = vi
        p[i] = pi - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))
