"""A stack of M networks of one shape: the training step's operations with the model index as a grid dimension.

twin (gather):      mlp.backends.numpy_backend.NumpyBackend._take_rows_stacked   (``np.take``)
twin (stats reset): mlp.backends.numpy_backend.NumpyBackend._fill_stacked_stats
twin (losses):      mlp.backends.numpy_backend.NumpyBackend._loss_stacked
                    (``_cpu_stacked.softmax_loss`` / ``_cpu_stacked.loss``)
twin (L2 penalty):  mlp.backends.numpy_backend.NumpyBackend._l2_penalty_stacked (``_cpu_stacked.l2_penalty``)
twin (SGD):         mlp.backends.numpy_backend.NumpyBackend._sgd_step_stacked   (``_cpu_stacked.sgd``)
twin (RMSprop):     mlp.backends.numpy_backend.NumpyBackend._rmsprop_step_stacked (``_cpu_stacked.rmsprop``)
twin (Adam/W):      mlp.backends.numpy_backend.NumpyBackend._adam_step_stacked  (``_cpu_stacked.adam``)

Every array has a leading model axis and model m's slice is exactly what
the single-model kernel takes.  A launch covers the whole stack: the grid's
y index is the model, and each block runs the single-model kernel's own
body (the device functions ``softmax._rows_small`` / ``softmax._rows_wide``,
``losses._loss_rows``, ``losses._l2_sum``, ``optim._sgd_update``,
``optim._rmsprop_update``, ``optim._adam_update``) on its model's slices, with ``blockIdx.x`` of
``gridDim.x`` striding over rows or elements as in the single-model launch.
So a model of a stack computes its loss, gradient and update with exactly
the arithmetic of its own fit's kernels; only the launches are shared.

Which models take part, and how many rows of its batch each has, is one
int64 per model, ``rows``: model m's batch is its first ``rows[m]`` rows
(the padding's gradient rows are zeroed and add nothing to its statistics),
and ``rows[m] == -1`` when it has stopped: a stopped model's arrays are
neither read nor written.  ``rows`` is a device array (a stack stages a
``(steps, M)`` table per epoch and passes row s of it at step s, so that a
captured epoch reads each step's values from device memory), or a host
array, which the launcher copies into a small device buffer of its stream
(``model_flags``; a capture admits no copy from host memory, so such a
launch cannot be captured).

The model index is ``blockIdx.y``, so a stack holds at most 65 535 models.
Every launcher takes ``stream`` (0 or a Numba stream) and returns the number
of kernel launches it made.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, int64, void

from . import gather, losses, optim, softmax
from ._config import (STATS_CORRECT, STATS_EMPTY, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM,
                      check_float_dtype, device_function, kernel)
from ._launch import capped_blocks, ceil_div, configured, placeholder, stream_key

#: the loss kernels' row mappings: softmax's one thread per row and TX threads per row, and the
#: real-target losses' (``losses``) TX threads per row
SOFTMAX_SMALL, SOFTMAX_WIDE, REAL = 0, 1, 2
#: ``output`` (as ``mlp.backends.base.OUTPUTS``) -> the loss of ``losses.LOSSES`` computing it (softmax: its own module)
REAL_OUTPUTS = {"logistic": "logistic", "identity": "squared_error", "exp": "poisson"}
MAX_MODELS = 65535  # the grid's y extent
STATS_THREADS = 32
_EMPTY_LOSS, _EMPTY_CORRECT, _EMPTY_STEP = STATS_EMPTY


# ------------------------------------------------------------ model flags
_flags: dict = {}
_flags_lock = threading.Lock()


def model_flags(values: np.ndarray, stream=0):
    """``values`` (M,) copied into this stream's int64 device buffer of M elements, which is returned.

    One buffer per (stream, M), made on first use and kept (as the
    placeholders of ``_launch``); launches on one stream run in order, so
    the next copy into it waits for the kernels reading the last.  The copy
    from pageable host memory has left ``values`` when this returns.
    """
    host = np.ascontiguousarray(values, dtype=np.int64)
    key = (stream_key(stream), host.shape[0])
    entry = _flags.get(key)
    if entry is None:
        with _flags_lock:
            entry = _flags.setdefault(key, (stream, cuda.device_array(host.shape[0], np.int64, stream=stream)))
    entry[1].copy_to_device(host, stream=stream)
    return entry[1]


def device_rows(rows, stream=0):
    """``rows`` (M,) int64 as a device array: itself when it is one, else copied by :func:`model_flags`."""
    return model_flags(rows, stream) if isinstance(rows, np.ndarray) else rows


def _check_models(m: int) -> None:
    if m > MAX_MODELS:
        raise ValueError(f"models: a stack launch holds at most {MAX_MODELS} models (the grid's y extent), got {m}")


# ---------------------------------------------------------------- gather
def take_rows(X, idx, out, *, stream=0) -> int:
    """``out[m, i] = X[idx[m, i]]`` for every model: one launch of ``gather``'s kernel on the flattened
    (M * B) rows.  X: (N,) or (N, F), idx: (M, B) int64, out: (M, B) or (M, B, F), all contiguous."""
    rows = idx.shape[0] * idx.shape[1]
    return gather.take_rows(X, idx.reshape(rows), out.reshape((rows,) + tuple(out.shape[2:])), stream=stream)


# ----------------------------------------------------------- stats reset
@functools.lru_cache(maxsize=None)
def reset_stats_kernel():
    """``(stats,)``: every row of ``stats`` (M, STATS_SIZE) set to ``STATS_EMPTY``."""

    def reset_stacked_stats(stats):
        for m in range(cuda.grid(1), stats.shape[0], cuda.gridsize(1)):
            stats[m, STATS_LOSS_SUM] = _EMPTY_LOSS
            stats[m, STATS_CORRECT] = _EMPTY_CORRECT
            stats[m, STATS_FIRST_NONFINITE_STEP] = _EMPTY_STEP

    return kernel(void(float64[:, ::1]), launch_bounds=STATS_THREADS)(reset_stacked_stats)


def reset_stats(stats, *, stream=0) -> int:
    """``stats[m] = STATS_EMPTY`` for every model (stopped ones too).  Returns launches."""
    if stats.shape[0] == 0:
        return 0
    blocks = capped_blocks(ceil_div(stats.shape[0], STATS_THREADS), 1)
    configured(reset_stats_kernel(), (blocks, 1, 1), (STATS_THREADS, 1, 1), stream)(stats)
    return 1


# ---------------------------------------------------------------- losses
@device_function
def _zero_padding(dz, n):
    """Zero rows ``n:`` of one model's gradient (B, C), this block's share of them."""
    b, c = dz.shape
    nt = cuda.blockDim.x * cuda.blockDim.y
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    for e in range(n * c + cuda.blockIdx.x * nt + tid, b * c, cuda.gridDim.x * nt):
        row = e // c
        dz[row, e - row * c] = 0


def loss_kernel(dtype: Any, mapping: int, kind: int = -1, weighted: bool = False, items: int = 0,
                warp: bool = False):
    """The stacked loss kernel running ``mapping`` (:data:`SOFTMAX_SMALL`, :data:`SOFTMAX_WIDE` with
    ``items`` and ``warp`` as ``softmax.rows_wide_kernel``, or :data:`REAL` with ``kind``, a code of
    ``losses.LOSSES``) per model; launched with grid ``(row blocks, M)`` and the single-model block.

    Signature: ``(z, targets, weights, dz, stats, rows, c, step, write_grad, clip_eps)``: z, dz (M, B, C);
    targets (M, B) int64 labels (softmax) or (M, B, C); weights (M, B) (or a placeholder); stats
    (M, STATS_SIZE); rows (M,) int64 (see the module docstring); ``clip_eps`` as :func:`loss`'s.
    """
    return _loss_kernel(check_float_dtype(dtype), int(mapping), int(kind), bool(weighted), int(items), bool(warp))


@functools.lru_cache(maxsize=None)
def _loss_kernel(dt: np.dtype, mapping: int, kind: int, weighted: bool, items: int, warp: bool):
    DT = dt.type
    MAPPING, KIND, WEIGHTED, ITEMS, WARP = mapping, kind, weighted, items, warp
    TILE = softmax.SMALL_ROWS * softmax.SMALL_STRIDE
    BATCH = softmax.SMALL_LOAD_BATCH
    WIDE = softmax.WIDE_THREADS
    SMALL, WIDE_ROWS = SOFTMAX_SMALL, SOFTMAX_WIDE

    def stacked_loss(z, targets, weights, dz, stats, rows, c, step, write_grad, clip_eps):
        model = cuda.blockIdx.y
        n = rows[model]
        if n < 0:
            return  # a stopped model; the whole block leaves together
        g = model if write_grad != 0 else 0  # an absent gradient is a one-model placeholder
        w = model if WEIGHTED else 0
        if n > 0:
            if MAPPING == SMALL:
                tile = cuda.shared.array(TILE, DT)
                vals = cuda.local.array(BATCH, DT)
                softmax._rows_small(z[model], targets[model], weights[w], dz[g], stats[model], n, c, step,
                                    write_grad, 1.0 / n, clip_eps, True, WEIGHTED, tile, vals)
            elif MAPPING == WIDE_ROWS:
                red_m = cuda.shared.array(WIDE, DT)
                xs = cuda.local.array(ITEMS, DT)
                softmax._rows_wide(z[model], targets[model], weights[w], dz[g], stats[model], n, c, step,
                                   write_grad, 1.0 / n, clip_eps, True, WEIGHTED, WARP, ITEMS, DT(0), red_m, xs)
            else:
                losses._loss_rows(z[model], targets[model], weights[w], dz[g], stats[model], n, c, step,
                                  write_grad, 1.0 / n, clip_eps, KIND, WEIGHTED, DT(1))
        if write_grad != 0:
            _zero_padding(dz[model], n)

    nb = from_dtype(dt)
    labels = int64[:, ::1] if mapping != REAL else nb[:, :, ::1]
    signature = void(nb[:, :, ::1], labels, nb[:, ::1], nb[:, :, ::1], float64[:, ::1], int64[::1], int64, float64,
                     int64, float64)
    if mapping == SOFTMAX_SMALL:
        bounds = softmax.SMALL_ROWS
    elif mapping == SOFTMAX_WIDE:  # as softmax's rows_wide
        bounds = (softmax.WIDE_THREADS, 2) if items > 8 else softmax.WIDE_THREADS
    else:
        bounds = losses.THREADS
    return kernel(signature, launch_bounds=bounds)(stacked_loss)


def _loss_plan(output: str, b: int, c: int, dt: np.dtype, weighted: bool):
    """``(kernel, row blocks, block)`` for batches of ``b`` rows and C outputs: the single-model
    launchers' own mapping and grid for one batch."""
    if output == "softmax":
        (blocks, _, _), block = softmax._grid(b, c, dt)
        if c <= softmax.SMALL_MAX_CLASSES:
            return loss_kernel(dt, SOFTMAX_SMALL, weighted=weighted), blocks, block
        items, warp = softmax.wide_variant(c, dt)
        return loss_kernel(dt, SOFTMAX_WIDE, weighted=weighted, items=items, warp=warp), blocks, block
    group, rows = losses.row_block(c)
    blocks = capped_blocks(ceil_div(b, rows), losses.BLOCKS_PER_SM)
    return loss_kernel(dt, REAL, losses.LOSSES[REAL_OUTPUTS[output]], weighted), blocks, (group, rows, 1)


def loss(output: str, logits, targets, dlogits, stats, step: int, weights, rows, *, clip_eps: float = 0.0,
         stream=0) -> int:
    """The output layer's loss, statistics and gradient of every training model's batch.

    twin: ``NumpyBackend._loss_stacked``.  output: ``"softmax"`` (targets
    (M, B) int64 labels), ``"logistic"``, ``"identity"`` (squared error) or
    ``"exp"`` (Poisson), targets (M, B, C); logits and dlogits (M, B, C)
    of one float dtype, dlogits None for statistics only; stats float64
    (M, STATS_SIZE), model m's row accumulated as the single-model kernel
    accumulates; weights None or (M, B) of the dtype; rows (M,) int64 (device or
    host).  Model m's batch is its first ``rows[m]`` rows; its gradient
    rows past them are zeroed; -1: stopped.  ``clip_eps`` > 0:
    scikit-learn's log-losses, as ``softmax.softmax_cross_entropy`` and
    ``losses.logistic_cross_entropy`` take it (the regression losses
    ignore it).  Returns launches (1; 0 for an empty stack or batch).
    """
    m, b, c = logits.shape
    if m == 0 or b == 0:
        return 0
    _check_models(m)
    dt = np.dtype(logits.dtype)
    weighted = weights is not None
    kern, blocks, block = _loss_plan(output, b, c, dt, weighted)
    rows = device_rows(rows, stream)
    args = (logits, targets, weights if weighted else placeholder(dt, 2), placeholder(dt, 3) if dlogits is None
            else dlogits, stats, rows, c, float(step), int(dlogits is not None), float(clip_eps))
    configured(kern, (blocks, m, 1), block, stream)(*args)
    return 1


# ------------------------------------------------------------ L2 penalty
@functools.lru_cache(maxsize=None)
def l2_penalty_kernel(dtype: Any):
    """``(params, n, scales, row, stats, rows)``: ``stats[m, STATS_LOSS_SUM] += scales[m, row] *
    sum(params[m, :n]**2)`` for every model that trains (``rows[m] >= 0``); grid ``(chunks, M)``."""
    dt = check_float_dtype(dtype)

    def stacked_l2_penalty(params, n, scales, row, stats, rows):
        model = cuda.blockIdx.y
        if rows[model] >= 0:
            losses._l2_sum(params[model], n, scales[model], row, stats[model])

    nb = from_dtype(dt)
    signature = void(nb[:, ::1], int64, nb[:, ::1], int64, float64[:, ::1], int64[::1])
    return kernel(signature, launch_bounds=losses.L2_THREADS)(stacked_l2_penalty)


def l2_penalty(params, n: int, scales, row: int, stats, rows, *, stream=0) -> int:
    """twin ``NumpyBackend._l2_penalty_stacked``.  params (M, P), scales (M, steps) of the params' dtype,
    stats float64 (M, STATS_SIZE), rows (M,) int64 (-1: stopped).  Returns launches (0 when ``n`` is 0)."""
    models = params.shape[0]
    if n <= 0 or models == 0:
        return 0
    _check_models(models)
    blocks = capped_blocks(ceil_div(n, losses.L2_THREADS), losses.BLOCKS_PER_SM)
    configured(l2_penalty_kernel(np.dtype(params.dtype)), (blocks, models, 1), (losses.L2_THREADS, 1, 1), stream)(
        params, int(n), scales, int(row), stats, device_rows(rows, stream))
    return 1


# ------------------------------------------------------------ optimizers
@functools.lru_cache(maxsize=None)
def sgd_kernel(dtype: Any):
    """``(p, g, buf, table, row, n_decay, use_momentum, nesterov, rows)``: ``optim.sgd_kernel``'s update of
    every model that trains (``rows[m] >= 0``), its scalars from ``table[m, row]``; grid ``(chunks, M)``."""
    dt = check_float_dtype(dtype)

    def stacked_sgd(p, g, buf, table, row, n_decay, use_momentum, nesterov, rows):
        model = cuda.blockIdx.y
        if rows[model] >= 0:
            optim._sgd_update(p[model], g[model], buf[model], table[model], row, n_decay, use_momentum, nesterov)

    nb = from_dtype(dt)
    mat = nb[:, ::1]
    signature = void(mat, mat, mat, nb[:, :, ::1], int64, int64, int64, int64, int64[::1])
    return kernel(signature, launch_bounds=optim.THREADS)(stacked_sgd)


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(dtype: Any):
    """``(p, g, sq, buf, table, row, n_decay, use_momentum, rows)``: ``optim.rmsprop_kernel``'s update of every
    model that trains (``rows[m] >= 0``), its scalars from ``table[m, row]``; grid ``(chunks, M)``."""
    dt = check_float_dtype(dtype)

    def stacked_rmsprop(p, g, sq, buf, table, row, n_decay, use_momentum, rows):
        model = cuda.blockIdx.y
        if rows[model] >= 0:
            optim._rmsprop_update(p[model], g[model], sq[model], buf[model], table[model], row, n_decay,
                                  use_momentum)

    nb = from_dtype(dt)
    mat = nb[:, ::1]
    signature = void(mat, mat, mat, mat, nb[:, :, ::1], int64, int64, int64, int64[::1])
    return kernel(signature, launch_bounds=optim.THREADS)(stacked_rmsprop)


@functools.lru_cache(maxsize=None)
def adam_kernel(dtype: Any):
    """``(p, g, m, v, table, row, decoupled, n_decay, rows)``: ``optim.adam_kernel``'s update of every
    model that trains (``rows[m] >= 0``), its scalars from ``table[m, row]``; grid ``(chunks, M)``."""
    dt = check_float_dtype(dtype)

    def stacked_adam(p, g, m, v, table, row, decoupled, n_decay, rows):
        model = cuda.blockIdx.y
        if rows[model] >= 0:
            optim._adam_update(p[model], g[model], m[model], v[model], table[model], row, decoupled, n_decay)

    nb = from_dtype(dt)
    mat = nb[:, ::1]
    signature = void(mat, mat, mat, mat, nb[:, :, ::1], int64, int64, int64, int64[::1])
    return kernel(signature, launch_bounds=optim.THREADS)(stacked_adam)


def _optimizer_grid(params) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    _check_models(params.shape[0])
    (chunks, _, _), block = optim._grid(params.shape[1])
    return (chunks, params.shape[0], 1), block


def sgd_step(params, grads, buf, table, row: int, *, nesterov: bool, n_decay: int, rows, stream=0) -> int:
    """twin ``NumpyBackend._sgd_step_stacked``: in-place ``torch.optim.SGD`` steps of every training model.

    params, grads, buf (or None: no momentum) (M, P); table (M, steps, SGD_COLUMNS) of the params' dtype;
    rows (M,) int64 (-1: stopped).  Returns launches (0 for empty parameters).
    """
    if params.size == 0:
        return 0
    configured(sgd_kernel(params.dtype), *_optimizer_grid(params), stream)(
        params, grads, grads if buf is None else buf, table, int(row), int(n_decay), int(buf is not None),
        int(nesterov), device_rows(rows, stream))
    return 1


def rmsprop_step(params, grads, square_avg, buf, table, row: int, *, n_decay: int, rows, stream=0) -> int:
    """twin ``NumpyBackend._rmsprop_step_stacked``: in-place ``torch.optim.RMSprop`` steps of every training
    model; params, grads, square_avg, buf (or None: no momentum) (M, P); table (M, steps, RMSPROP_COLUMNS);
    rows (M,) int64 (-1: stopped).  Returns launches (0 for empty parameters)."""
    if params.size == 0:
        return 0
    configured(rmsprop_kernel(params.dtype), *_optimizer_grid(params), stream)(
        params, grads, square_avg, grads if buf is None else buf, table, int(row), int(n_decay),
        int(buf is not None), device_rows(rows, stream))
    return 1


def adam_step(params, grads, exp_avg, exp_avg_sq, table, row: int, *, decoupled: bool, n_decay: int,
              rows, stream=0) -> int:
    """twin ``NumpyBackend._adam_step_stacked``: in-place Adam (``decoupled=False``) or AdamW steps of every
    model that trains; arrays (M, P), table (M, steps, ADAM_COLUMNS), rows (M,) int64.  Returns launches."""
    if params.size == 0:
        return 0
    configured(adam_kernel(params.dtype), *_optimizer_grid(params), stream)(
        params, grads, exp_avg, exp_avg_sq, table, int(row), int(decoupled), int(n_decay), device_rows(rows, stream))
    return 1
