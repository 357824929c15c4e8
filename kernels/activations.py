"""The activations of the affine layer on the device: the function, and its derivative from the output.

twin: ``mlp.backends._cpu_loops`` (``bias_act_inplace`` for the function,
``act_grad_colsum`` for the derivative), called by the NumPy backend's
``_affine_forward`` / ``_affine_backward``.

An activation is named by its code, the index of its name in
:data:`ACTIVATIONS`; the library's table (``mlp.backends.base.ACTIVATIONS``)
holds the same names in the same order (this package never imports the
library, so the table is repeated; a test checks the two agree).

The backward pass needs ``f'(z)`` where the forward stored only ``y = f(z)``,
so each derivative is written in terms of ``y``: identity 1, relu
``[y > 0]``, tanh ``1 - y*y``, logistic ``y*(1 - y)``.  No pre-activation is
kept and no transcendental function is evaluated in the backward pass.

The kernels (``gemm``) take the code as a compile-time constant: these
functions are inlined, and the branches on ``act`` fold away.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from ._config import device_function

#: Activation names; the code of each is its index.
ACTIVATIONS = ("identity", "relu", "tanh", "logistic")
IDENTITY, RELU, TANH, LOGISTIC = range(len(ACTIVATIONS))

#: A digest of this file (an odd positive int64).  Numba's disk cache keys a
#: kernel by its own module's file and the values its closure holds, not by
#: the modules it inlines code from: a kernel calling these functions holds
#: this value in its closure, so that editing them rebuilds the kernel rather
#: than loading stale code.
SOURCE_DIGEST = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16) | 1


@device_function
def activate(v, act, zero, one):
    """``f(v)`` for activation code ``act``; ``zero`` and ``one`` are of ``v``'s dtype (no promotion).

    logistic: ``1 / (1 + exp(-v))`` for ``v >= 0``, ``exp(v) / (1 + exp(v))``
    below, so exp never overflows (at -1000 it underflows to 0, and the
    result is 0, not 1/inf).
    """
    if act == RELU:
        return v if v > zero else zero
    if act == TANH:
        return math.tanh(v)
    if act == LOGISTIC:
        if v >= zero:
            return one / (one + math.exp(-v))
        e = math.exp(v)
        return e / (one + e)
    return v


@device_function
def grad_from_output(g, y, act, zero, one):
    """``g * f'(z)`` for activation code ``act``, with ``f'(z)`` computed from the output ``y = f(z)``.

    relu selects rather than multiplies, so a NaN in ``y`` masks (as the twin
    does) and an infinite ``g`` under a zero mask gives 0, not NaN.
    """
    if act == RELU:
        return g if y > zero else zero
    if act == TANH:
        return g * (one - y * y)
    if act == LOGISTIC:
        return g * (y * (one - y))
    return g
