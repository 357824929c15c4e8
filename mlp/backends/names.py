"""Names the whole package shares, defined once: the loss statistics' slots, the outputs and their losses,
the activations and their codes, and where each layer sits in a network's flat parameter buffer.

Plain Python and NumPy: the backends, the kernels' launchers, the model, the trainer and the estimators all
read these, and nothing here imports any of them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: labels and row indices
INDEX_DTYPE = np.dtype(np.int64)
STATS_LOSS_SUM = 0
STATS_CORRECT = 1
STATS_FIRST_NONFINITE_STEP = 2
STATS_SIZE = 3


# ------------------------------------------------------------------- outputs
#: The output layers, by name, and the loss each is trained with.  Each pairs an output activation with its
#: canonical loss, so the gradient with respect to the last layer's pre-activation is ``output - target``
#: (scaled by the sample weights): softmax with cross-entropy (integer labels), logistic with binary
#: cross-entropy per output (0/1 targets: binary and multilabel classification), identity with half the
#: squared error, and exp with half the Poisson deviance (scikit-learn's ``loss="poisson"``).
OUTPUTS = {"softmax": "cross_entropy", "logistic": "binary_cross_entropy", "identity": "squared_error",
           "exp": "poisson"}
#: the outputs whose predictions are classes (an accuracy is defined); the others are regressions
CLASSIFICATION_OUTPUTS = ("softmax", "logistic")
#: the targets each real-target output's loss is defined for (the Poisson deviance needs counts >= 0, the
#: logistic loss probabilities in [0, 1]); a softmax takes labels
TARGET_RANGES = {"softmax": (0.0, math.inf), "logistic": (0.0, 1.0), "identity": (-math.inf, math.inf),
                 "exp": (0.0, math.inf)}


def log_loss_eps(dtype: Any, clip: bool) -> float:
    """The ``clip_eps`` the log-loss operations take: with ``clip``, ``dtype``'s machine epsilon, so that
    they compute scikit-learn's log-losses, which clip each probability to ``[eps, 1 - eps]`` (a softmax
    row's loss then lies in ``[-log(1 - eps), -log(eps)]``; a logistic output's is computed from its
    probability, as scikit-learn's is); without, 0: the exact losses, from the logits.  The gradients are
    the same either way (scikit-learn's are not clipped)."""
    return float(np.finfo(dtype).eps) if clip else 0.0


# --------------------------------------------------------------- activations
#: The activations of an affine layer, by name; the code the underscored
#: operations (and ``mlp.kernels``) take is the name's index.
ACTIVATIONS = ("identity", "relu", "tanh", "logistic")


def activation_code(value: str | bool, name: str = "activation") -> int:
    """The code (index in :data:`ACTIVATIONS`) of an activation given by name, or by a bool for
    backward compatibility (True: relu, False: identity).

    Raises ``ValueError`` for an unknown name and ``TypeError`` for anything
    else, naming the argument ``name``.
    """
    if isinstance(value, (bool, np.bool_)):
        return ACTIVATIONS.index("relu" if value else "identity")
    if isinstance(value, str):
        if value in ACTIVATIONS:
            return ACTIVATIONS.index(value)
        raise ValueError(f"{name}: expected one of {ACTIVATIONS} (or a bool), got {value!r}")
    raise TypeError(f"{name}: expected one of {ACTIVATIONS} (or a bool), got {type(value).__name__} {value!r}")


def layer_layout(sizes: Sequence[int]) -> list[tuple[int, tuple[int, int], int, int]]:
    """Where each layer lives in a network's flat parameter buffer: ``(weights offset, (in, out), bias offset,
    out)`` per layer, every weight matrix first (row-major, ``(in, out)``), then every bias.  The one
    definition of the layout (``mlp.MLP``, the stacks and checkpoints all read it)."""
    shapes = list(zip(sizes[:-1], sizes[1:]))
    n_weights = sum(k * n for k, n in shapes)
    out, w_off, b_off = [], 0, n_weights
    for k, n in shapes:
        out.append((w_off, (int(k), int(n)), b_off, int(n)))
        w_off += k * n
        b_off += n
    return out


def _backward_activation(activation: str | bool | None, y: Any) -> int:
    """The activation code of a backward operation: ``activation`` (None: relu when the layer's output ``y`` is
    given, identity when not); every activation but the identity needs ``y`` for its derivative."""
    if activation is None:
        return activation_code(y is not None)
    act = activation_code(activation)
    if y is None and act != activation_code("identity"):
        raise ValueError(f"y: activation {ACTIVATIONS[act]!r} needs this layer's output y for its derivative, "
                         "got None")
    return act
