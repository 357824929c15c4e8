"""Scalar arithmetic the CUDA kernels and their CPU twins share, written once as plain Python.

Each function here is compiled twice: as a CUDA device function by the kernels (``device_function``) and as
an inlined Numba function by the NumPy backend's loops (``mlp.backends._cpu_losses``), so that the two compute
one formula.  This module imports nothing but the standard library and NumPy: the CPU loops load it without
Numba's CUDA target.
"""

from __future__ import annotations

import math

import numpy as np


def clipped_logistic_loss(z, t, one, eps):
    """scikit-learn's binary log-loss of one element: the probability ``1 / (1 + exp(-z))`` in z's dtype
    (``one`` is 1 in that dtype), clipped to ``[eps, 1 - eps]``, then ``-(t log p + (1 - t) log(1 - p))`` in
    float64, a term whose factor is 0 being 0 (``xlogy``).  Where ``|z|`` is large, ``1 - p`` loses digits,
    as it does in scikit-learn."""
    p = min(max(np.float64(one / (one + math.exp(-z))), eps), 1.0 - eps)
    td = np.float64(t)
    loss = 0.0
    if td != 0.0:
        loss -= td * math.log(p)
    if td != 1.0:
        loss -= (1.0 - td) * math.log(1.0 - p)
    return loss
