"""Numba-compiled CPU loops for the output losses other than softmax, and the L2 penalty.

The NumPy backend's twins of ``mlp.kernels.losses``: each loss is one pass
over the rows computing the output (sigmoid, identity or exp), the gradient
with respect to the output layer's pre-activation ``z`` and the loss
statistics together.  Weighting, for a batch of N rows with per-sample
weights ``w`` (all 1 without weights) and ``S = sum(w)``:

* gradient row ``i``: ``w[i] * (out(z[i]) - t[i]) / S`` (``/ N`` unweighted);
* ``stats[STATS_LOSS_SUM] += N * w[i] / S * loss_i`` summed over the rows
  (the plain sum of the per-row losses unweighted), so that the loss sum
  divided by N is the weighted mean of the batch, as scikit-learn's MLPs
  compute it.

Exponentials are taken in the input dtype, as the kernels do; losses are
accumulated in float64.  ``error_model="numpy"``: see ``_cpu_loops``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mlp.kernels import _scalar
from mlp.kernels._compile_cache import jit_with_disk_cache

from .base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM

_jit = jit_with_disk_cache(njit, nogil=True, error_model="numpy")
# The loops a stacked operation (_cpu_stacked) runs model by model, inlined into it where it is compiled: a fit
# (a stack of one or of many) compiles only the stacked operations, not each loop again on its own (a call
# from Python still compiles a loop by itself).
_inline = jit_with_disk_cache(njit, nogil=True, error_model="numpy", inline="always")


@_inline
def batch_scales(weights, weighted, n):
    """``(gradient scale, loss factor)`` of a row of unit weight: ``(1/N, 1)``, or ``(1/S, N/S)`` with weights.

    ``S`` is summed in float64; weights summing to 0 give infinite scales,
    hence NaN gradients and losses (marked as a non-finite step).
    """
    if not weighted:
        return 1.0 / n, 1.0
    s = 0.0
    for i in range(n):
        s += weights[i]
    inv = 1.0 / s
    return inv, n * inv


@_inline
def add_stats(stats, step, loss_sum, correct, bad):
    """Add a batch's loss sum and hit count to ``stats``; record ``step`` when a loss was not finite."""
    stats[STATS_LOSS_SUM] += loss_sum
    stats[STATS_CORRECT] += correct
    if bad and step < stats[STATS_FIRST_NONFINITE_STEP]:
        stats[STATS_FIRST_NONFINITE_STEP] = step


#: the losses, as the codes :func:`output_loss` takes (the kernels' codes too)
LOGISTIC, SQUARED_ERROR, POISSON = 0, 1, 2


@_inline
def _logistic(z, t, one):
    """Sigmoid and binary cross-entropy of one element: ``(sigmoid(z) - t, loss, right)``.

    Stable for any ``z``: ``loss = max(z, 0) - t z + log1p(exp(-|z|))`` and
    the sigmoid from the same ``exp(-|z|)``, which never overflows; right
    when ``(z > 0) == (t > 0.5)``.
    """
    e = math.exp(-abs(z))
    p = one / (one + e) if z >= 0 else e / (one + e)
    zd = np.float64(z)
    loss = max(zd, 0.0) - np.float64(t) * zd + math.log1p(np.float64(e))
    return p - t, loss, (z > 0) == (t > 0.5)


#: scikit-learn's binary log-loss of one element (``mlp.kernels._scalar``: the kernels compile the same source)
clipped_logistic_loss = _inline(_scalar.clipped_logistic_loss)


@_inline
def log_loss_bounds(eps):
    """``(low, high)`` of a softmax row's loss: scikit-learn's ``[-log(1 - eps), -log(eps)]`` for
    ``eps`` > 0 (its probabilities clipped to ``[eps, 1 - eps]``), else unbounded."""
    if eps > 0:
        return -math.log(1.0 - eps), -math.log(eps)
    return -math.inf, math.inf


@_inline
def _squared(z, t):
    """``(z - t, (z - t)^2)`` in float64; the row's ``0.5 / C`` is applied once per row."""
    d = np.float64(z) - np.float64(t)
    return d, d * d


@_inline
def _poisson(z, t):
    """Exp output and the Poisson deviance of one element: ``(exp(z) - t, xlogy(t, t) - t z - t + exp(z))``."""
    e = math.exp(z)
    td = np.float64(t)
    xlogy = td * math.log(td) if td > 0 else 0.0
    return e - t, xlogy - td * np.float64(z) - td + np.float64(e)


@_inline
def output_loss(kind, z, targets, dz, write_grad, stats, step, weights, weighted, clip_eps):
    """One pass over the rows of ``z`` (N, C): the gradient ``w (out(z) - t) / S`` into ``dz`` (when
    ``write_grad``) and the loss statistics, for the loss ``kind``.  ``clip_eps`` > 0
    (``names.log_loss_eps``): each logistic element's loss is scikit-learn's
    (:func:`clipped_logistic_loss`), its gradient unchanged; the regression losses ignore it.

    Per row: logistic ``sum_j`` of :func:`_logistic`, the row a hit when
    every column is right; squared error ``0.5 * mean_j (z - t)^2``, its
    gradient not divided by C (scikit-learn's); Poisson ``sum_j`` of
    :func:`_poisson`.  The regression losses count no hits.
    """
    n, c = z.shape
    grad_unit, loss_unit = batch_scales(weights, weighted, n)
    if kind == SQUARED_ERROR:
        loss_unit *= 0.5 / c
    one = z.dtype.type(1)
    loss_sum = 0.0
    correct = 0
    bad = False
    for i in range(n):
        w = weights[i] if weighted else 1.0
        g = w * grad_unit
        loss = 0.0
        right = True
        for j in range(c):
            if kind == LOGISTIC:
                d, elem, ok = _logistic(z[i, j], targets[i, j], one)
                if not ok:
                    right = False
                if clip_eps > 0:
                    elem = clipped_logistic_loss(z[i, j], targets[i, j], one, clip_eps)
            elif kind == SQUARED_ERROR:
                d, elem = _squared(z[i, j], targets[i, j])
            else:
                d, elem = _poisson(z[i, j], targets[i, j])
            loss += elem
            if write_grad:
                dz[i, j] = d * g
        loss *= w * loss_unit
        loss_sum += loss
        if kind == LOGISTIC and right:
            correct += 1
        if not math.isfinite(loss):
            bad = True
    add_stats(stats, step, loss_sum, correct, bad)


@_inline
def _square(params, i):
    v = np.float64(params[i])
    return v * v


@_inline
def _square_below(params, i, n):
    """``params[i] ** 2`` in float64 for ``i < n``, else 0 (adding it leaves a sum of squares as it was)."""
    return _square(params, i) if i < n else 0.0


@_inline
def l2_penalty(params, n, scale, stats):
    """``stats[STATS_LOSS_SUM] += scale * sum(params[:n]**2)``, squares summed in float64.

    Eight running sums (element ``i`` into sum ``i % 8``, added pairwise at the end): one running sum waits
    on each addition before the next, eight keep the adder busy (measured 2.5-2.8x faster on 9,472 weights);
    the order is fixed, so the result does not depend on where or how often it is computed.  The sums are
    scalars: nothing is allocated per call."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    whole = n - n % 8
    for i in range(0, whole, 8):
        a0 += _square(params, i)
        a1 += _square(params, i + 1)
        a2 += _square(params, i + 2)
        a3 += _square(params, i + 3)
        a4 += _square(params, i + 4)
        a5 += _square(params, i + 5)
        a6 += _square(params, i + 6)
        a7 += _square(params, i + 7)
    if whole < n:  # the last n % 8 elements, into the first sums
        a0 += _square_below(params, whole, n)
        a1 += _square_below(params, whole + 1, n)
        a2 += _square_below(params, whole + 2, n)
        a3 += _square_below(params, whole + 3, n)
        a4 += _square_below(params, whole + 4, n)
        a5 += _square_below(params, whole + 5, n)
        a6 += _square_below(params, whole + 6, n)
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    stats[STATS_LOSS_SUM] += scale * total
