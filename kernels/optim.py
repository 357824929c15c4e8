"""Optimizer updates: one grid-stride pass over the flat parameter buffer per step.

twin (SGD):     mlp.backends.numpy_backend.NumpyBackend._sgd_step     (``_cpu_loops.sgd_update``)
twin (RMSprop): mlp.backends.numpy_backend.NumpyBackend._rmsprop_step (``_cpu_loops.rmsprop_update``)
twin (Adam/W):  mlp.backends.numpy_backend.NumpyBackend._adam_step    (``_cpu_loops.adam_update``)

The update rules are those of ``torch.optim`` and the expressions are written
in the twin's order.  Every floating-point scalar of a step (learning rate,
momentum, Adam's step size and bias correction, ...) is read from row ``row``
of a ``scalars`` table in device memory, computed on the host in float64 and
cast to the parameter dtype by the caller (``mlp.backends.base``'s
``*_scalars``; the columns are listed on each kernel).  A launch captured in
a CUDA graph therefore bakes in only the table's address and the row: the
host rewrites the table between replays, and a new learning rate or the next
step's bias corrections take effect.  Flags that change the code path
(momentum on/off, Nesterov, decoupled decay) and ``n_decay`` are launch
arguments.  L2 weight decay touches indices ``< n_decay`` only.  On a GPU
the compiler may fuse a multiply and an add into one FMA, so results can
differ from the twin in the last bit or so; never more.  The SGD and Adam
kernels' bodies are device functions (``_sgd_update``, ``_adam_update``)
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

THREADS = 256
BLOCKS_PER_SM = 8


@device_function
def _sgd_update(p, g, buf, scalars, row, n_decay, use_momentum, nesterov):
    """The SGD update of one flat buffer, a grid-stride loop over ``blockIdx.x`` and ``threadIdx.x``: the
    body of :func:`sgd_kernel`, whose arguments it takes."""
    lr = scalars[row, 0]
    momentum = scalars[row, 1]
    wd = scalars[row, 2]
    lookahead = scalars[row, 3]
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
    one_minus_b1 = scalars[row, 0]
    beta2 = scalars[row, 1]
    one_minus_b2 = scalars[row, 2]
    eps = scalars[row, 3]
    step_size = scalars[row, 4]
    bc2_sqrt = scalars[row, 5]
    wd = scalars[row, 6]
    decay_factor = scalars[row, 7]
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


@functools.lru_cache(maxsize=None)
def sgd_kernel(dtype: Any):
    """``(p, g, buf, scalars, row, n_decay, use_momentum, nesterov)``; scalars columns: lr, momentum, wd,
    lookahead (Nesterov's coefficient: the momentum itself, except in the step after a learning-rate change
    under scikit-learn's velocity rule, see ``mlp.optim.ScikitSGD``)."""
    dt = check_float_dtype(dtype)

    def sgd(p, g, buf, scalars, row, n_decay, use_momentum, nesterov):
        _sgd_update(p, g, buf, scalars, row, n_decay, use_momentum, nesterov)

    nb = from_dtype(dt)
    vec = nb[::1]
    return kernel(void(vec, vec, vec, nb[:, ::1], int64, int64, int64, int64), launch_bounds=THREADS)(sgd)


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(dtype: Any):
    """``(p, g, sq, buf, scalars, row, n_decay, use_momentum)``; scalars columns: lr, alpha,
    1 - alpha, eps, momentum, wd."""
    dt = check_float_dtype(dtype)

    def rmsprop(p, g, sq, buf, scalars, row, n_decay, use_momentum):
        lr = scalars[row, 0]
        alpha = scalars[row, 1]
        one_minus_alpha = scalars[row, 2]
        eps = scalars[row, 3]
        momentum = scalars[row, 4]
        wd = scalars[row, 5]
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

    nb = from_dtype(dt)
    vec = nb[::1]
    sig = void(vec, vec, vec, vec, nb[:, ::1], int64, int64, int64)
    return kernel(sig, launch_bounds=THREADS)(rmsprop)


@functools.lru_cache(maxsize=None)
def adam_kernel(dtype: Any):
    """``(p, g, m, v, scalars, row, decoupled, n_decay)``; scalars columns: 1 - beta1, beta2,
    1 - beta2, eps, step size ``lr / (1 - beta1**t)``, ``sqrt(1 - beta2**t)``, wd, ``1 - lr * wd``."""
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
