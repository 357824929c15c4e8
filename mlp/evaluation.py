"""How well a model does on data: :func:`evaluate` (loss, accuracy and R²), on any backend."""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from .backends import Backend
from .backends.base import CLASSIFICATION_OUTPUTS, STATS_CORRECT, STATS_LOSS_SUM
from .model import MLP, output_activation

def has_accuracy(model: MLP) -> bool:
    """Whether ``model``'s output classifies (softmax, logistic), so that it has an accuracy."""
    return model.output in CLASSIFICATION_OUTPUTS


def evaluate(model: MLP, X: Any, y: Any, backend: Union[str, Backend, None] = None) -> dict[str, float]:
    """The model's mean loss, accuracy and R² on ``(X, y)``: ``{"loss": ..., "accuracy": ..., "r2": ...}``.

    X: (N, n_features) real array.  y: what the model's output is trained on
    (:meth:`mlp.MLP.check_targets`): (N,) integer labels for a softmax
    output, (N, n_outputs) real targets (or (N,) for one output) otherwise.
    ``loss`` is the mean of the output's loss (:attr:`mlp.MLP.loss`; half the
    mean squared error for an identity output).  ``accuracy`` is the fraction
    of rows predicted right for a classification output (softmax: the largest
    logit is the label; logistic: every output on the right side of 0.5) and
    NaN for regression.  ``r2`` is the coefficient of determination of a
    regression output's predictions (:func:`r2_score`), NaN for classification.

    Needs no optimizer.  ``backend``: where to compute (default: where the
    model is); the model is moved there.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected an mlp.MLP, got {type(model).__name__}")
    if backend is not None:
        model.to(backend)
    be = model.backend
    Xd = model._as_input(X, "X")  # a sparse X stays sparse: evaluated chunk by chunk of its rows
    yh = model.check_targets(y, Xd.shape[0], "y")
    outputs = None if has_accuracy(model) else np.empty((Xd.shape[0], model.n_outputs), dtype=model.dtype)
    result = _evaluate_on_device(model, Xd, be.asarray(yh, dtype=yh.dtype), outputs)
    result["r2"] = math.nan if outputs is None else r2_score(yh, outputs)
    return result


def _evaluate_on_device(model: MLP, Xd: Any, yd: Any, outputs: np.ndarray | None = None) -> dict[str, float]:
    """``loss`` and ``accuracy`` (NaN for regression) of validated data already on the model's backend.

    With ``outputs``, a host array (N, n_outputs), the output layer's values are also copied there.
    """
    be = model.backend
    stats = be.new_stats()
    n = Xd.shape[0]
    for start, logits in model._logits_chunks(Xd):  # buffers of this call's own: threads may share model
        stop = start + logits.shape[0]
        model.loss_into(logits, yd[start:stop], None, stats, 0)
        if outputs is not None:
            outputs[start:stop] = output_activation(be.to_numpy(logits), model.output)
    totals = be.to_numpy(stats)
    accuracy = float(totals[STATS_CORRECT]) / n if has_accuracy(model) else math.nan
    return {"loss": float(totals[STATS_LOSS_SUM]) / n, "accuracy": accuracy}


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The coefficient of determination R² of predictions ``y_pred`` of ``y_true``, (N,) or (N, k) host arrays.

    ``1 - sum((y - pred)**2) / sum((y - mean(y))**2)`` per column, averaged
    over the columns, in float64: scikit-learn's ``r2_score`` (its default
    ``multioutput="uniform_average"``), a constant column counting 1 when
    predicted exactly and 0 otherwise.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    residual = ((y_true - y_pred) ** 2).sum(axis=0)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    constant = total == 0
    per_column = np.where(constant, (residual == 0).astype(np.float64),
                          1.0 - residual / np.where(constant, 1.0, total))
    return float(per_column.mean())
