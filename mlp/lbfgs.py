"""scikit-learn's ``solver="lbfgs"``: SciPy's L-BFGS-B on the full-batch loss and gradient a backend computes.

Forward, loss and backward run on the backend over the whole data set (kept
there); only the flat parameter vector goes to the device and the gradient
vector (and three loss statistics) come back per evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.optimize
from sklearn.utils.optimize import _check_optimize_result

from .backends import Backend
from .backends.base import STATS_LOSS_SUM
from .model import MLP
from .sparse import full_batch, is_sparse

try:
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # older scikit-learn passes iprint straight to SciPy
    def _get_additional_lbfgs_options_dict(key, value):
        return {key: value}


class FullBatchObjective:
    """The full-batch loss and gradient of a network at a flat parameter vector, for L-BFGS.

    Forward, loss and backward run on the backend over the whole data set
    (kept there); only the parameter vector goes to the device and the
    gradient vector (and three loss statistics) come back per evaluation.
    The L2 term ``0.5 * alpha * ||W||^2 / S`` (``S`` the sample-weight sum)
    and its gradient are added on the host, from the vector it already holds.
    """

    def __init__(self, model: MLP, backend: Backend, X: np.ndarray, targets: np.ndarray, sample_weight: Any,
                 alpha: float) -> None:
        self.model, self.backend, self.alpha = model, backend, float(alpha)
        self.n = X.shape[0]
        # a sparse X stays sparse (on a GPU, densified whole only when that is small: see mlp.sparse.full_batch)
        self.X = full_batch(model, X) if is_sparse(X) else backend.asarray(X, dtype=model.dtype)
        self.backend = backend = model.backend
        self.targets = backend.asarray(targets)
        self.weights = None if sample_weight is None else backend.asarray(
            np.ascontiguousarray(sample_weight), dtype=model.dtype)
        self.weight_sum = float(self.n if sample_weight is None else np.sum(sample_weight, dtype=np.float64))
        self.workspace = model.new_workspace(self.n)
        self.stats = backend.new_stats()
        model.grads  # noqa: B018  (allocates the gradient buffer)

    def packed(self) -> np.ndarray:
        """The current parameters as a float64 vector (weights first, then biases: scikit-learn's packing)."""
        return np.asarray(self.backend.to_numpy(self.model.params), dtype=np.float64).copy()

    def set(self, theta: np.ndarray) -> None:
        self.backend.copy_(self.model.params, np.asarray(theta).astype(self.model.dtype))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        model, be = self.model, self.backend
        self.set(theta)
        be._fill_stats(self.stats)
        logits = model.forward(self.X, self.workspace)
        # scikit-learn's objective: its log-losses clip the probabilities (the gradient is not bounded)
        model.loss_into(logits, self.targets, self.workspace.dlogits[0], self.stats, 0, self.weights, clip=True)
        model.backward(self.X, self.workspace)
        grad = np.asarray(be.to_numpy(model.grads), dtype=np.float64).copy()
        loss = float(be.to_numpy(self.stats)[STATS_LOSS_SUM]) / self.n
        w = theta[:model.n_weights]
        loss += 0.5 * self.alpha * float(np.dot(w, w)) / self.weight_sum
        grad[:model.n_weights] += self.alpha * w / self.weight_sum
        return loss, grad


def fit_lbfgs(est: Any, model: MLP, backend: Backend, X: Any, y: np.ndarray, sample_weight: Any) -> None:
    """Fit ``model`` (the estimator's network at its initial weights, on ``backend``) by L-BFGS-B as scikit-learn
    does, and store the result in ``est`` (its weights, ``n_iter_`` and ``loss_``)."""
    objective = FullBatchObjective(model, backend, X, est._targets(y, model.dtype), sample_weight, est.alpha)
    iprint = 1 if est.verbose is True or est.verbose >= 1 else -1
    # As scikit-learn, start SciPy from the weights in their own dtype: SciPy (1.17 here) then evaluates
    # the objective at parameters of that dtype, while L-BFGS-B's iterates are float64.
    result = scipy.optimize.minimize(
        objective, objective.packed().astype(model.dtype), method="L-BFGS-B", jac=True,
        options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol,
                 **_get_additional_lbfgs_options_dict("iprint", iprint)})
    est.n_iter_ = _check_optimize_result("lbfgs", result, est.max_iter)
    est.loss_ = np.float64(result.fun)
    if est.dtype is None and model.dtype != np.float64:
        # scikit-learn keeps L-BFGS-B's float64 solution as the weights, whatever the data's dtype (so a
        # float32 fit predicts in float64); an explicit dtype keeps the weights in that dtype
        model = MLP(model.layer_sizes, dtype=np.float64, activation=model.activation, output=model.output)
        model.backend.copy_(model.params, np.asarray(result.x, dtype=np.float64))
        model = model.to(backend)
    else:
        objective.set(result.x)
    est._store(model)
