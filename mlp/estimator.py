"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained on this package's backends.

>>> from mlp import MLPClassifier          # instead of: from sklearn.neural_network import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(100,), solver="adam", max_iter=200, random_state=0).fit(X, y)
>>> clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

The two classes take scikit-learn's constructor parameters with their
defaults and meanings, set the same attributes (``coefs_``, ``intercepts_``,
``n_iter_``, ``t_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
``out_activation_``, ...), build the same network (Glorot-uniform
initialisation drawn from ``random_state`` in scikit-learn's order; one
logistic output for a binary problem, logistic outputs for multilabel
targets, a softmax for several classes, identity or exp outputs for
regression) and apply the same update rules, stopping rule, learning-rate
schedules, warnings and errors.  From the same ``random_state`` they follow
scikit-learn's training trajectory (same initial weights, same shuffles,
same batches) up to floating-point rounding.

What runs differs: every step (gather of the batch, fused affine +
activation forward, the output loss fused with its gradient, backward, the
optimizer update) is one of the backend's operations, so the same code
trains on a GPU (``backend="cuda"``, hand-written CUDA kernels, each epoch
replayed as one CUDA graph) or the CPU (``backend="numpy"``).  ``lbfgs``
hands SciPy's L-BFGS-B the full-batch loss and gradient computed by the
backend on the flat parameter vector.

Deliberate differences, all documented on the classes:

* two parameters of this package's own: ``backend`` and ``dtype``;
* sparse ``X`` (CSR, or CSC converted once) stays sparse: it is trained on and predicted from batch by
  batch (on the CPU the first layer's products read the non-zeros; on a GPU each batch is densified
  on the device), never densified whole (see :mod:`mlp.sparse`).

The log-losses reported (``loss_``, ``loss_curve_``, and what reads them: the ``tol`` rule,
``learning_rate="adaptive"``, ``lbfgs``'s line search) are scikit-learn's, whose probabilities are
clipped to ``[eps, 1 - eps]`` (the loss operations' ``clip``); the gradients are not clipped, in
either.  ``mlp.Trainer`` reports the exact log-losses, from the logits.
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp.MLPClassifier and mlp.MLPRegressor need scikit-learn: "
                      "pip install 'numba-mlp[sklearn]'") from None

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .sklearn_base import _NON_FINITE, _STOCHASTIC_SOLVERS, _BaseMLP, validate_data  # noqa: F401
from .sklearn_run import StochasticRun  # noqa: F401  (the stochastic fit's policy, importable from here)

__all__ = ["MLPClassifier", "MLPRegressor", "ConvergenceWarning", "NotFittedError"]


_PARAMS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As scikit-learn's, with its defaults and meanings: ``activation`` in {"identity", "logistic",
        "tanh", "relu"}, ``solver`` in {"lbfgs", "sgd", "adam"}, ``alpha`` the L2 penalty added to the
        loss as ``0.5 * alpha * ||W||^2 / batch size``, ``learning_rate`` the schedule of "sgd"
        ({"constant", "invscaling", "adaptive"}) and ``learning_rate_init`` its first step size,
        ``max_iter`` epochs (iterations for "lbfgs"), ``n_iter_no_change`` an int or ``np.inf``.
    backend : {"auto", "numpy", "cuda"} or mlp.Backend, default "auto"
        Where to train and predict: "auto" uses a usable CUDA GPU, else NumPy.
    dtype : {"float32", "float64"} or None, default None
        Precision of the weights and of the computation.  None follows the data, as scikit-learn does
        (float32 stays float32, anything else becomes float64; "lbfgs" on float32 data computes in float32
        and keeps L-BFGS-B's float64 solution as the weights, so it predicts in float64).  "float32" is the
        fast choice on a GPU; with "lbfgs" it keeps the weights in float32 as well.

    Attributes
    ----------
    As scikit-learn's: ``coefs_``, ``intercepts_`` (host arrays; predictions use their current values, whether
    edited in place or assigned), ``n_features_in_``, ``feature_names_in_``, ``n_iter_`` (epochs of the last
    ``fit``), ``t_`` (samples seen by the solver), ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``loss_``,
    and for "sgd" and "adam": ``loss_curve_``, ``best_loss_``, ``validation_scores_``, ``best_validation_score_``.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier: scikit-learn's ``MLPClassifier``, trained on this package's backends.

    Binary problems have one logistic output unit, multilabel indicator targets one logistic unit per
    label (binary cross-entropy), several classes a softmax (cross-entropy).  Sparse ``X`` stays sparse
    (see :mod:`mlp.sparse`).
    """ + _PARAMS_DOC + """
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend="auto", dtype=None):
        self._set_constructor_params(locals())

    #: the classifier's loss, as scikit-learn names it (binary cross-entropy when the output is logistic)
    loss = "log_loss"

    _score_function = staticmethod(accuracy_score)

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[Any, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        # a boolean indicator matrix never upcasts float32 data
        return X, self._label_binarizer.transform(y).astype(bool)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPClassifier":
        """Fit the network to ``X`` (n_samples, n_features), dense or sparse, and labels ``y`` (n_samples,)
        or a multilabel indicator matrix; ``sample_weight`` (n_samples,) weighs each sample's loss."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> "MLPClassifier":
        """One epoch over ``(X, y)`` from the current weights and optimizer state ("sgd" and "adam" only).

        ``classes`` (every label the data will hold) is required on the first call.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted classes, shape (n_samples,) (or (n_samples, n_classes) for multilabel targets)."""
        check_is_fitted(self)
        return self._decode(self._forward_pass_fast(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor: scikit-learn's ``MLPRegressor``, trained on this package's backends.

    ``loss="squared_error"`` (half the squared error, identity output) or ``"poisson"`` (half the Poisson
    deviance, exp output); one or several outputs.  Sparse ``X`` stays sparse
    (see :mod:`mlp.sparse`).
    """ + _PARAMS_DOC

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints,
                                    "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend="auto", dtype=None):
        self._set_constructor_params(locals())

    _score_function = staticmethod(r2_score)

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[Any, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _decode(self, out: np.ndarray) -> np.ndarray:
        return out.ravel() if out.shape[1] == 1 else out

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPRegressor":
        """Fit the network to ``X`` (n_samples, n_features), dense or sparse, and real targets ``y``
        (n_samples,) or (n_samples, n_outputs); ``sample_weight`` (n_samples,) weighs each sample's loss."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPRegressor":
        """One epoch over ``(X, y)`` from the current weights and optimizer state ("sgd" and "adam" only)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n_samples,) for one output, else (n_samples, n_outputs); the weights' dtype."""
        check_is_fitted(self)
        return self._decode(self._forward_pass_fast(X))
