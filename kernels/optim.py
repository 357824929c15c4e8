"""Optimizer updates: one grid-stride pass over the flat parameter buffer per step.

twin (SGD):     mlp.backends.numpy_backend.NumpyBackend._sgd_step     (``_cpu_loops.sgd_update``)
twin (RMSprop): mlp.backends.numpy_backend.NumpyBackend._rmsprop_step (``_cpu_loops.rmsprop_update``)
twin (Adam/W):  mlp.backends.numpy_backend.NumpyBackend._adam_step    (``_cpu_loops.adam_update``)

The update rules are those of ``torch.optim`` and the expressions are written
in the twin's order.  Every floating-point scalar of a step (learning rate,
momentum, Adam's step size and bias correction, ...) is read from row ``row``
of a ``scalars`` table in device memory, computed on the host in float64 and
cast to the parameter dtype by the caller (``mlp.optim``; the columns are
named in ``scalars``).  A launch captured in
a CUDA graph therefore bakes in only the table's address and the row: the
host rewrites the table between replays, and a new learning rate or the next
step's bias corrections take effect.  Flags that change the code path
(momentum on/off, Nesterov, decoupled decay) and ``n_decay`` are launch
arguments.  L2 weight decay touches indices ``< n_decay`` only.  On a GPU
the compiler may fuse a multiply and an add into one FMA, so results can
differ from the twin in the last bit or so; never more.  Each kernel's body
is a device function (``_sgd_update``, ``_rmsprop_update``, ``_adam_update``)
that the stacked updates (``stacked``) also run, once per model of a stack.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from ._config import check_float_dtype, device_function, kernel
from ._launch import capped_blocks, ceil_div, configured
from .scalars import (ADAM_BC2_SQRT, ADAM_BETA2, ADAM_DECAY_FACTOR, ADAM_EPS, ADAM_ONE_MINUS_BETA1,
                      ADAM_ONE_MINUS_BETA2, ADAM_STEP_SIZE, ADAM_WEIGHT_DECAY, RMSPROP_ALPHA, RMSPROP_EPS,
                      RMSPROP_LR, RMSPROP_MOMENTUM, RMSPROP_ONE_MINUS_ALPHA, RMSPROP_WEIGHT_DECAY, SGD_LOOKAHEAD,
                      SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY)

THREADS = 256
BLOCKS_PER_SM = 8


@device_function
def _sgd_update(p, g, buf, scalars, row, n_decay, use_momentum, nesterov):
    """The SGD update of one flat buffer, a grid-stride loop over ``blockIdx.x`` and ``threadIdx.x``: the
    body of :func:`sgd_kernel`, whose arguments it takes."""
    lr = scalars[row, SGD_LR]
    momentum = scalars[row, SGD_MOMENTUM]
    wd = scalars[row, SGD_WEIGHT_DECAY]
    lookahead = scalars[row, SGD_LOOKAHEAD]
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i]
        if i < n_decay:
            d = d + wd * p[i]
        if use_momentum != 0:
            bi = momentum * buf[i] + d
            buf[i] = bi
            if nesterov != 0:
                d = d + lookahead * bi
            else:
                d = bi
        p[i] = p[i] - lr * d


@device_function
def _adam_update(p, g, m, v, scalars, row, decoupled, n_decay):
    """The Adam/AdamW update of one flat buffer, a grid-stride loop over ``blockIdx.x`` and ``threadIdx.x``:
    the body of :func:`adam_kernel`, whose arguments it takes."""
    one_minus_b1 = scalars[row, ADAM_ONE_MINUS_BETA1]
    beta2 = scalars[row, ADAM_BETA2]
    one_minus_b2 = scalars[row, ADAM_ONE_MINUS_BETA2]
    eps = scalars[row, ADAM_EPS]
    step_size = scalars[row, ADAM_STEP_SIZE]
    bc2_sqrt = scalars[row, ADAM_BC2_SQRT]
    wd = scalars[row, ADAM_WEIGHT_DECAY]
    decay_factor = scalars[row, ADAM_DECAY_FACTOR]
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i]
        pi = p[i]
        if i < n_decay:
            if decoupled != 0:
                pi = pi * decay_factor
            else:
                d = d + wd * pi
        mi = m[i] + one_minus_b1 * (d - m[i])
        m[i] = mi
        vi = beta2 * v[i] + one_minus_b2 * d * d
        v[i] = vi
        p[i] = pi - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


@device_function
def _rmsprop_update(p, g, sq, buf, scalars, row, n_decay, use_momentum):
    """The RMSprop update of one flat buffer, a grid-stride loop over ``blockIdx.x`` and ``threadIdx.x``: the
    body of :func:`rmsprop_kernel`, whose arguments it takes."""
    lr = scalars[row, RMSPROP_LR]
    alpha = scalars[row, RMSPROP_ALPHA]
    one_minus_alpha = scalars[row, RMSPROP_ONE_MINUS_ALPHA]
    eps = scalars[row, RMSPROP_EPS]
    momentum = scalars[row, RMSPROP_MOMENTUM]
    wd = scalars[row, RMSPROP_WEIGHT_DECAY]
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i]
        if i < n_decay:
            d = d + wd * p[i]
        s = alpha * sq[i] + one_minus_alpha * d * d
        sq[i] = s
        avg = math.sqrt(s) + eps
        if use_momentum != 0:
            bi = momentum * buf[i] + d / avg
            buf[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * (d / avg)


@functools.lru_cache(maxsize=None)
def sgd_kernel(dtype: Any):
    """``(p, g, buf, scalars, row, n_decay, use_momentum, nesterov)``; scalars columns: ``SGD_COLUMNS``."""
    dt = check_float_dtype(dtype)

    def sgd(p, g, buf, scalars, row, n_decay, use_momentum, nesterov):
        _sgd_update(p, g, buf, scalars, row, n_decay, use_momentum, nesterov)

    nb = from_dtype(dt)
    vec = nb[::1]
    return kernel(void(vec, vec, vec, nb[:, ::1], int64, int64, int64, int64), launch_bounds=THREADS)(sgd)


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(dtype: Any):
    """``(p, g, sq, buf, scalars, row, n_decay, use_momentum)``; scalars columns: ``RMSPROP_COLUMNS``."""
    dt = check_float_dtype(dtype)

    def rmsprop(p, g, sq, buf, scalars, row, n_decay, use_momentum):
        _rmsprop_update(p, g, sq, buf, scalars, row, n_decay, use_momentum)

    nb = from_dtype(dt)
    vec = nb[::1]
    sig = void(vec, vec, vec, vec, nb[:, ::1], int64, int64, int64)
    return kernel(sig, launch_bounds=THREADS)(rmsprop)


@functools.lru_cache(maxsize=None)
def adam_kernel(dtype: Any):
    """``(p, g, m, v, scalars, row, decoupled, n_decay)``; scalars columns: ``ADAM_COLUMNS``."""
    dt = check_float_dtype(dtype)

    def adam(p, g, m, v, scalars, row, decoupled, n_decay):
        _adam_update(p, g, m, v, scalars, row, decoupled, n_decay)

    nb = from_dtype(dt)
    vec = nb[::1]
    sig = void(vec, vec, vec, vec, nb[:, ::1], int64, int64, int64)
    return kernel(sig, launch_bounds=THREADS)(adam)


def _grid(size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (capped_blocks(ceil_div(size, THREADS), BLOCKS_PER_SM), 1, 1), (THREADS, 1, 1)


def sgd_step(params, grads, buf, scalars, row: int, *, nesterov: bool, n_decay: int, stream=0) -> int:
    """In-place ``torch.optim.SGD`` step (dampening 0); momentum is used exactly when ``buf`` is not None.

    Returns the number of kernel launches (1, or 0 for an empty buffer).
    """
    if params.shape[0] == 0:
        return 0
    grid, block = _grid(params.shape[0])
    configured(sgd_kernel(params.dtype), grid, block, stream)(
        params, grads, grads if buf is None else buf, scalars, row, n_decay, int(buf is not None), int(nesterov))
    return 1


def rmsprop_step(params, grads, square_avg, buf, scalars, row: int, *, n_decay: int, stream=0) -> int:
    """In-place ``torch.optim.RMSprop`` step (not centered); momentum exactly when ``buf`` is not None."""
    if params.shape[0] == 0:
        return 0
    grid, block = _grid(params.shape[0])
    configured(rmsprop_kernel(params.dtype), grid, block, stream)(
        params, grads, square_avg, grads if buf is None else buf, scalars, row, n_decay, int(buf is not None))
    return 1


def adam_step(params, grads, exp_avg, exp_avg_sq, scalars, row: int, *, decoupled: bool, n_decay: int,
              stream=0) -> int:
    """In-place Adam (``decoupled=False``) or AdamW step.  Returns launches."""
    if params.shape[0] == 0:
        return 0
    grid, block = _grid(params.shape[0])
    configured(adam_kernel(params.dtype), grid, block, stream)(
        params, grads, exp_avg, exp_avg_sq, scalars, row, int(decoupled), n_decay)
    return 1
