"""The optimizers' scalars tables: their columns, named once for every reader, and the formulas of a row.

An optimizer (``mlp.optim``) computes the floating-point scalars of each
update on the host and stages them as one row of a table; the NumPy loops
(``mlp.backends``) and the CUDA kernels (``optim``, ``stacked``) read a row
by these positions.  The formulas below compute a row in float64 on the host
(as ``torch.optim`` does on its non-capturable path); the optimizers of
``mlp.optim`` call them and the backends' public update operations too.
This module is plain Python (no Numba), so importing it costs nothing; the
kernels read the positions as compile-time constants.
"""

from __future__ import annotations

import math

#: torch.optim.SGD: ``lookahead`` is Nesterov's coefficient on the new buffer (the momentum itself, except
#: right after a learning-rate change under scikit-learn's velocity rule: see ``mlp.optim.ScikitSGD``)
SGD_COLUMNS = ("lr", "momentum", "weight_decay", "lookahead")
#: torch.optim.RMSprop (not centered)
RMSPROP_COLUMNS = ("lr", "alpha", "one_minus_alpha", "eps", "momentum", "weight_decay")
#: torch.optim.Adam/AdamW at update t: ``step_size = lr / (1 - beta1**t)``, ``bc2_sqrt = sqrt(1 - beta2**t)``,
#: ``decay_factor = 1 - lr * weight_decay`` (AdamW's decoupled decay)
ADAM_COLUMNS = ("one_minus_beta1", "beta2", "one_minus_beta2", "eps", "step_size", "bc2_sqrt", "weight_decay",
                "decay_factor")

#: each update rule's columns, by the rule's name
COLUMNS = {"sgd": SGD_COLUMNS, "rmsprop": RMSPROP_COLUMNS, "adam": ADAM_COLUMNS}

SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY, SGD_LOOKAHEAD = range(len(SGD_COLUMNS))
(RMSPROP_LR, RMSPROP_ALPHA, RMSPROP_ONE_MINUS_ALPHA, RMSPROP_EPS, RMSPROP_MOMENTUM,
 RMSPROP_WEIGHT_DECAY) = range(len(RMSPROP_COLUMNS))
(ADAM_ONE_MINUS_BETA1, ADAM_BETA2, ADAM_ONE_MINUS_BETA2, ADAM_EPS, ADAM_STEP_SIZE, ADAM_BC2_SQRT,
 ADAM_WEIGHT_DECAY, ADAM_DECAY_FACTOR) = range(len(ADAM_COLUMNS))


def sgd_scalars(lr: float, momentum: float, weight_decay: float, lookahead: float | None = None) -> tuple[float, ...]:
    """SGD's row (``SGD_COLUMNS``).  With ``d = g + weight_decay * p`` (weights only) the update is
    ``buf = momentum * buf + d``, then ``p -= lr * (d + lookahead * buf)`` (Nesterov) or ``p -= lr * buf``;
    ``lookahead`` defaults to ``momentum``."""
    return (lr, momentum, weight_decay, momentum if lookahead is None else lookahead)


def rmsprop_scalars(lr: float, alpha: float, eps: float, momentum: float, weight_decay: float) -> tuple[float, ...]:
    """RMSprop's row (``RMSPROP_COLUMNS``): ``s = alpha * s + (1 - alpha) * d**2``, ``a = sqrt(s) + eps``, then
    ``buf = momentum * buf + d / a`` and ``p -= lr * buf`` (or ``p -= lr * d / a`` without momentum)."""
    return (lr, alpha, 1 - alpha, eps, momentum, weight_decay)


def adam_scalars(lr: float, beta1: float, beta2: float, eps: float, step: int,
                 weight_decay: float) -> tuple[float, ...]:
    """Adam's and AdamW's row (``ADAM_COLUMNS``) at update ``step`` (from 1): ``m += (1 - beta1) * (d - m)``,
    ``v = beta2 * v + (1 - beta2) * d**2``, ``p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)`` with
    ``step_size = lr / (1 - beta1**step)`` and ``bc2_sqrt = sqrt(1 - beta2**step)``; AdamW scales the weights
    by ``decay_factor = 1 - lr * weight_decay`` instead of adding the decay to ``d``."""
    return (1 - beta1, beta2, 1 - beta2, eps, lr / (1 - beta1**step), math.sqrt(1 - beta2**step),
            weight_decay, 1 - lr * weight_decay)
