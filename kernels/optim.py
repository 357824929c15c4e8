"""Optimizer updates: one grid-stride pass over the flat parameter buffer per step.

twin (SGD):     mlp.backends.numpy_backend.NumpyBackend._sgd_step     (``_cpu_loops.sgd_update``)
twin (RMSprop): mlp.backends.numpy_backend.NumpyBackend._rmsprop_step (``_cpu_loops.rmsprop_update``)
twin (Adam/W):  mlp.backends.numpy_backend.NumpyBackend._adam_step    (``_cpu_loops.adam_update``)

The update rules are those of ``torch.optim`` and the expressions are written
in the twin's order, with scalars cast to the parameter dtype on the host
(Adam's bias corrections included, from ``mlp.backends.base.adam_constants``
via the caller).  L2 weight decay touches indices ``< n_decay`` only.  On a
GPU the compiler may fuse a multiply and an add into one FMA, so results can
differ from the twin in the last bit or so; never more.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from ._config import check_float_dtype, kernel
from ._launch import capped_blocks, ceil_div, configured

THREADS = 256
BLOCKS_PER_SM = 8


@functools.lru_cache(maxsize=None)
def sgd_kernel(dtype: Any):
    """``(p, g, buf, lr, momentum, wd, n_decay, use_momentum, nesterov)``."""
    dt = check_float_dtype(dtype)

    def sgd(p, g, buf, lr, momentum, wd, n_decay, use_momentum, nesterov):
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            d = g[i]
            if i < n_decay:
                d = d + wd * p[i]
            if use_momentum != 0:
                bi = momentum * buf[i] + d
                buf[i] = bi
                if nesterov != 0:
                    d = d + momentum * bi
                else:
                    d = bi
            p[i] = p[i] - lr * d

    nb = from_dtype(dt)
    vec = nb[::1]
    return kernel(void(vec, vec, vec, nb, nb, nb, int64, int64, int64), launch_bounds=THREADS)(sgd)


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(dtype: Any):
    """``(p, g, sq, buf, lr, alpha, one_minus_alpha, eps, momentum, wd, n_decay, use_momentum)``."""
    dt = check_float_dtype(dtype)

    def rmsprop(p, g, sq, buf, lr, alpha, one_minus_alpha, eps, momentum, wd, n_decay, use_momentum):
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
    sig = void(vec, vec, vec, vec, nb, nb, nb, nb, nb, nb, int64, int64)
    return kernel(sig, launch_bounds=THREADS)(rmsprop)


@functools.lru_cache(maxsize=None)
def adam_kernel(dtype: Any):
    """``(p, g, m, v, one_minus_b1, beta2, one_minus_b2, eps, step_size, bc2_sqrt, wd, decay_factor,
    decoupled, n_decay)``."""
    dt = check_float_dtype(dtype)

    def adam(p, g, m, v, one_minus_b1, beta2, one_minus_b2, eps, step_size, bc2_sqrt, wd, decay_factor,
             decoupled, n_decay):
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

    nb = from_dtype(dt)
    vec = nb[::1]
    sig = void(vec, vec, vec, vec, nb, nb, nb, nb, nb, nb, nb, nb, int64, int64)
    return kernel(sig, launch_bounds=THREADS)(adam)


def _grid(size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (capped_blocks(ceil_div(size, THREADS), BLOCKS_PER_SM), 1, 1), (THREADS, 1, 1)


def sgd_step(params, grads, buf, *, lr: float, momentum: float, nesterov: bool, weight_decay: float,
             n_decay: int) -> int:
    """In-place ``torch.optim.SGD`` step (dampening 0).  ``buf`` may be None when momentum is 0.

    Returns the number of kernel launches (1, or 0 for an empty buffer).
    """
    if buf is None and momentum != 0:
        raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
    if params.shape[0] == 0:
        return 0
    t = np.dtype(params.dtype).type
    grid, block = _grid(params.shape[0])
    configured(sgd_kernel(params.dtype), grid, block)(
        params, grads, grads if buf is None else buf, t(lr), t(momentum), t(weight_decay), int(n_decay),
        int(momentum != 0), int(bool(nesterov)),
    )
    return 1


def rmsprop_step(params, grads, square_avg, buf, *, lr: float, alpha: float, eps: float, momentum: float,
                 weight_decay: float, n_decay: int) -> int:
    """In-place ``torch.optim.RMSprop`` step (not centered).  Returns launches."""
    if buf is None and momentum > 0:
        raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
    if params.shape[0] == 0:
        return 0
    t = np.dtype(params.dtype).type
    grid, block = _grid(params.shape[0])
    configured(rmsprop_kernel(params.dtype), grid, block)(
        params, grads, square_avg, grads if buf is None else buf, t(lr), t(alpha), t(1 - alpha), t(eps),
        t(momentum), t(weight_decay), int(n_decay), int(momentum > 0),
    )
    return 1


def adam_step(params, grads, exp_avg, exp_avg_sq, *, beta1: float, beta2: float, eps: float, step_size: float,
              bc2_sqrt: float, weight_decay: float, decay_factor: float, decoupled: bool, n_decay: int) -> int:
    """In-place Adam (``decoupled=False``) or AdamW step.

    ``step_size``, ``bc2_sqrt`` and ``decay_factor`` are the host-side
    per-step scalars of ``mlp.backends.base.adam_constants``.  Returns launches.
    """
    if params.shape[0] == 0:
        return 0
    t = np.dtype(params.dtype).type
    grid, block = _grid(params.shape[0])
    configured(adam_kernel(params.dtype), grid, block)(
        params, grads, exp_avg, exp_avg_sq, t(1 - beta1), t(beta2), t(1 - beta2), t(eps), t(step_size),
        t(bc2_sqrt), t(weight_decay), t(decay_factor), int(bool(decoupled)), int(n_decay),
    )
    return 1
