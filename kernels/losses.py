"""Output losses fused with their gradients (logistic, squared error, Poisson), and the L2 penalty.

twin (logistic):      mlp.backends.numpy_backend.NumpyBackend._logistic_xent
twin (squared error): mlp.backends.numpy_backend.NumpyBackend._squared_error
twin (Poisson):       mlp.backends.numpy_backend.NumpyBackend._poisson_loss
                      (all three ``_cpu_losses.output_loss``, the same loss codes)
twin (L2 penalty):    mlp.backends.numpy_backend.NumpyBackend._l2_penalty (``_cpu_losses.l2_penalty``)

One kernel per loss and dtype, with or without per-sample weights (a
compile-time variant).  For a batch of N rows, ``z`` the output layer's
pre-activation (N, C) and ``t`` the targets (N, C), each element gives
``out(z) - t`` and its loss, in one read of ``z`` and ``t``:

=============  ===========  ===============================================
loss           ``out(z)``   per-row loss
=============  ===========  ===============================================
logistic       sigmoid      ``sum_j max(z, 0) - t z + log1p(exp(-|z|))``
squared error  identity     ``0.5 * mean_j (z - t)^2``
Poisson        exp          ``sum_j xlogy(t, t) - t z - t + exp(z)``
=============  ===========  ===============================================

With weights ``w`` and ``S = sum(w)`` the gradient row is
``w[i] * (out(z) - t) / S`` and the loss sum gains ``N * w[i] / S *
loss_i``; without, ``(out(z) - t) / N`` and ``loss_i``.  ``S`` is computed
by every block from all N weights in one fixed order
(``softmax._batch_weight_sum``), so a launch recorded in a CUDA graph stays
right when the batch's weights change between replays.  Exponentials are
taken in the input dtype (as the twins do), losses accumulated in float64;
statistics leave each block with one atomic per slot
(``softmax._flush_stats``): the loss sum, the rows whose every column is
predicted right (logistic only: ``(z > 0) == (t > 0.5)``), and the first
step with a non-finite loss.

Thread mapping: a group of TX threads per row, TX the smallest power of two
holding the row up to 32 (a warp), TY = 256 / TX rows per block, blocks
striding over rows.  The columns of a row are read ``tx, tx + TX, ...``, so
a warp reads 32 / TX whole adjacent rows, one contiguous span; a binary
output (C = 1) is one thread per row.  Rows are independent except for the
logistic hit ("every column right"), which a row group combines through a
flag in shared memory, double-buffered so that one barrier per pass
suffices (none when TX = 1).

The L2 penalty ``scales[row] * sum(params[:n]**2)`` is a grid-stride sum of
squares in float64; its scale is read from device memory, so a captured
launch follows a new scale between replays.

The kernels' bodies are device functions (``_loss_rows``, ``_l2_sum``)
that the stacked kernels (``stacked``) also run, once per model of a stack.

Every launcher takes ``stream`` (0 or a Numba stream), enqueues one kernel
and returns the number of launches.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, int64, void

from . import _scalar
from ._config import STATS_LOSS_SUM, check_float_dtype, device_function, kernel
from ._launch import capped_blocks, ceil_div, configured, placeholder
from .softmax import _batch_weight_sum, _block_sum, _flush_stats

#: the losses, by name, and the compile-time code each kernel is built for
LOGISTIC, SQUARED_ERROR, POISSON = 0, 1, 2
LOSSES = {"logistic": LOGISTIC, "squared_error": SQUARED_ERROR, "poisson": POISSON}
THREADS = 256  # threads per block, TX * TY
MAX_GROUP = 32  # at most a warp per row
BLOCKS_PER_SM = 8
L2_THREADS = 256


@device_function
def _logistic(z, t, one):
    """``(sigmoid(z) - t, loss, right)`` of one element, from ``e = exp(-|z|)`` (never overflows)."""
    e = math.exp(-abs(z))
    p = one / (one + e) if z >= 0 else e / (one + e)
    zd = np.float64(z)
    loss = max(zd, 0.0) - np.float64(t) * zd + math.log1p(np.float64(e))
    return p - t, loss, (z > 0) == (t > 0.5)


#: scikit-learn's binary log-loss of one element (the twin's ``_cpu_losses.clipped_logistic_loss``: one source)
_clipped_logistic = device_function(_scalar.clipped_logistic_loss)


@device_function
def _squared(z, t):
    """``(z - t, (z - t)^2)`` of one element, in float64 (the row's 0.5 / C is applied once per row)."""
    d = np.float64(z) - np.float64(t)
    return d, d * d


@device_function
def _poisson(z, t):
    """``(exp(z) - t, xlogy(t, t) - t z - t + exp(z))`` of one element."""
    e = math.exp(z)
    td = np.float64(t)
    xlogy = td * math.log(td) if td > 0 else 0.0
    return e - t, xlogy - td * np.float64(z) - td + np.float64(e)


def loss_kernel(dtype: Any, loss: str, weighted: bool = False):
    """The kernel of ``loss`` (a key of :data:`LOSSES`) for ``dtype``, launched with ``block = (TX, TY)``.

    Signature: ``(z, targets, weights, dz, stats, n, c, step, write_grad, inv_n, clip_eps)``: ``clip_eps`` > 0
    computes each element's logistic loss as scikit-learn does (see :func:`logistic_cross_entropy`; the
    regression losses ignore it).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, got {loss!r}")
    return _loss_kernel(check_float_dtype(dtype), LOSSES[loss], bool(weighted))


@device_function
def _loss_rows(z, targets, weights, dz, stats, n, c, step, write_grad, inv_n, clip_eps, kind, weighted, one):
    """The body of a loss kernel: this block's rows of one batch (blocks stride over the rows, block
    ``blockIdx.x`` of ``gridDim.x``; ``block = (TX, TY)``), their gradient and statistics.

    ``kind`` (a code of :data:`LOSSES`) and ``weighted`` are the calling
    kernel's compile-time constants, ``one`` is 1 in z's dtype; the other
    arguments are the kernel's (see :func:`loss_kernel`).
    """
    red_loss = cuda.shared.array(THREADS, np.float64)
    red_count = cuda.shared.array(THREADS, np.int64)
    wrong = cuda.shared.array((2, THREADS), np.int32)  # per row slot, two passes' worth
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    group = cuda.blockDim.x
    nt = group * cuda.blockDim.y
    slot = ty * group + tx
    wrong[0, slot] = 0
    wrong[1, slot] = 0
    grad_unit = inv_n  # a row's gradient scale per unit weight
    loss_unit = 1.0  # and its loss factor
    if weighted:
        grad_unit = 1.0 / _batch_weight_sum(weights, n, slot, nt, red_loss)
        loss_unit = n * grad_unit
    if kind == SQUARED_ERROR:
        loss_unit *= 0.5 / c  # the mean over the columns; the gradient is not divided by C
    cuda.syncthreads()  # the flags are cleared
    loss_sum = np.float64(0.0)
    hits = 0
    bad = 0
    flip = 0

    for base in range(cuda.blockIdx.x * cuda.blockDim.y, n, cuda.gridDim.x * cuda.blockDim.y):
        row = base + ty
        active = row < n
        right = True
        if active:
            scale = grad_unit
            factor = loss_unit
            if weighted:
                w = np.float64(weights[row])
                scale = w * grad_unit
                factor = w * loss_unit
            part = np.float64(0.0)
            for j in range(tx, c, group):
                if kind == LOGISTIC:
                    g, elem, ok = _logistic(z[row, j], targets[row, j], one)
                    if not ok:
                        right = False
                    if clip_eps > 0:
                        elem = _clipped_logistic(z[row, j], targets[row, j], one, clip_eps)
                elif kind == SQUARED_ERROR:
                    g, elem = _squared(z[row, j], targets[row, j])
                else:
                    g, elem = _poisson(z[row, j], targets[row, j])
                part += elem
                if write_grad != 0:
                    dz[row, j] = g * scale
            part *= factor
            loss_sum += part
            if not math.isfinite(part):
                bad = 1
        if kind == LOGISTIC:
            if group == 1:
                if active and right:
                    hits += 1
            else:
                # The flag of this pass is cleared by the row's first
                # thread after reading it; its next use is two passes on,
                # past the next barrier, so one barrier per pass suffices.
                if active and not right:
                    wrong[flip, ty] = 1
                cuda.syncthreads()
                if active and tx == 0:
                    if wrong[flip, ty] == 0:
                        hits += 1
                    wrong[flip, ty] = 0
                flip = 1 - flip

    _flush_stats(stats, step, loss_sum, hits, bad, slot, nt, red_loss, red_count)


@functools.lru_cache(maxsize=None)
def _loss_kernel(dt: np.dtype, kind: int, weighted: bool):
    DT = dt.type
    KIND = kind
    WEIGHTED = weighted

    def row_losses(z, targets, weights, dz, stats, n, c, step, write_grad, inv_n, clip_eps):
        _loss_rows(z, targets, weights, dz, stats, n, c, step, write_grad, inv_n, clip_eps, KIND, WEIGHTED, DT(1))

    nb = from_dtype(dt)
    signature = void(nb[:, ::1], nb[:, ::1], nb[::1], nb[:, ::1], float64[::1], int64, int64, float64, int64,
                     float64, float64)
    return kernel(signature, launch_bounds=THREADS)(row_losses)


@device_function
def _l2_sum(params, n, scales, row, stats):
    """The body of the L2 penalty kernel: this thread's share of ``sum(params[:n]**2)`` (a grid-stride
    loop over ``blockIdx.x`` and ``threadIdx.x``), reduced over the block, times ``scales[row]``, added to
    ``stats[STATS_LOSS_SUM]`` by one atomic per block; blocks of :data:`L2_THREADS` threads."""
    red = cuda.shared.array(L2_THREADS, np.float64)
    acc = np.float64(0.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = np.float64(params[i])
        acc += v * v
    total = _block_sum(acc, cuda.threadIdx.x, L2_THREADS, red)
    if cuda.threadIdx.x == 0:
        cuda.atomic.add(stats, STATS_LOSS_SUM, np.float64(scales[row]) * total)


@functools.lru_cache(maxsize=None)
def l2_penalty_kernel(dtype: Any):
    """``(params, n, scales, row, stats)``: ``stats[STATS_LOSS_SUM] += scales[row] * sum(params[:n]**2)``."""
    dt = check_float_dtype(dtype)

    def l2_penalty(params, n, scales, row, stats):
        _l2_sum(params, n, scales, row, stats)

    nb = from_dtype(dt)
    return kernel(void(nb[::1], int64, nb[::1], int64, float64[::1]), launch_bounds=L2_THREADS)(l2_penalty)


def row_block(c: int) -> tuple[int, int]:
    """``(TX, TY)``: the smallest power of two holding C columns, up to :data:`MAX_GROUP`; 256 threads a block."""
    group = 1
    while group < MAX_GROUP and group < c:
        group *= 2
    return group, THREADS // group


def selectable_kernels(dtype: Any) -> dict:
    """Every kernel this module's launchers can pick for ``dtype``, by name."""
    dt = check_float_dtype(dtype)
    picks = {f"{loss}{' weighted' if weighted else ''}": loss_kernel(dt, loss, weighted)
             for loss in LOSSES for weighted in (False, True)}
    picks["l2_penalty"] = l2_penalty_kernel(dt)
    return picks


def _launch(loss: str, z, targets, dz, stats, step: int, weights, stream, clip_eps: float = 0.0) -> int:
    n, c = z.shape
    if n == 0:
        return 0
    if c == 0:
        raise ValueError("z: expected at least one output column, got 0 columns")
    dt = np.dtype(z.dtype)
    weighted = weights is not None
    group, rows = row_block(c)
    blocks = capped_blocks(ceil_div(n, rows), BLOCKS_PER_SM)
    args = (z, targets, weights if weighted else placeholder(dt, 1), placeholder(dt, 2) if dz is None else dz,
            stats, n, c, float(step), int(dz is not None), 1.0 / n, float(clip_eps))
    configured(loss_kernel(dt, loss, weighted), (blocks, 1, 1), (group, rows, 1), stream)(*args)
    return 1


def logistic_cross_entropy(logits, targets, dlogits, stats, step: int = 0, weights=None, *, clip_eps: float = 0.0,
                           stream=0) -> int:
    """Sigmoid outputs and binary cross-entropy summed over the C columns (binary: C = 1; multilabel).

    twin: ``NumpyBackend._logistic_xent``.  logits, targets (in [0, 1]) and
    dlogits: (N, C) of one float dtype, dlogits None for statistics only;
    stats: float64 (``STATS_SIZE``,), gains the loss sum, the rows with every
    column right and the first non-finite step; weights: None or (N,) of
    the dtype; ``clip_eps`` > 0: each element's loss is scikit-learn's,
    from its probability clipped to ``[eps, 1 - eps]`` (:func:`_clipped_logistic`;
    the gradient is never clipped), 0: the exact loss from the logit.
    Returns the number of kernel launches (1).
    """
    return _launch("logistic", logits, targets, dlogits, stats, step, weights, stream, clip_eps)


def squared_error(pred, targets, dpred, stats, step: int = 0, weights=None, *, stream=0) -> int:
    """Identity outputs and half the squared error averaged over the C columns.

    twin: ``NumpyBackend._squared_error``.  As :func:`logistic_cross_entropy`,
    but no hits are counted and the gradient ``w (pred - t) / S`` is not
    divided by C.
    """
    return _launch("squared_error", pred, targets, dpred, stats, step, weights, stream)


def poisson_loss(logits, targets, dlogits, stats, step: int = 0, weights=None, *, stream=0) -> int:
    """Exp outputs and the Poisson deviance summed over the C columns; targets >= 0.

    twin: ``NumpyBackend._poisson_loss``.  As :func:`logistic_cross_entropy`,
    but no hits are counted.  ``exp(z)`` past the dtype's range is inf: the
    loss is then marked non-finite.
    """
    return _launch("poisson", logits, targets, dlogits, stats, step, weights, stream)


def l2_penalty(params, n: int, scales, row: int, stats, *, stream=0) -> int:
    """``stats[STATS_LOSS_SUM] += scales[row] * sum(params[:n]**2)``; twin ``NumpyBackend._l2_penalty``.

    params: flat float32/float64, ``n <= params.size`` (the weights, stored
    first), scales: 1-D of the params' dtype on the device (a captured launch
    reads the current value), row: an index into it.  Returns launches (0
    when ``n`` is 0).
    """
    if n <= 0:
        return 0
    blocks = capped_blocks(ceil_div(n, L2_THREADS), BLOCKS_PER_SM)
    configured(l2_penalty_kernel(np.dtype(params.dtype)), (blocks, 1, 1), (L2_THREADS, 1, 1), stream)(
        params, int(n), scales, int(row), stats)
    return 1
