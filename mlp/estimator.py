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
  on the device), never densified whole (see :mod:`mlp.sparse`);
* the log-losses are computed from the logits (log-sum-exp, softplus)
  instead of clipping probabilities at machine epsilon, which only changes
  the reported loss of samples predicted wrong with a probability below
  about 1e-16 (2e-7 in float32).
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp.MLPClassifier and mlp.MLPRegressor need scikit-learn: "
                      "pip install 'numba-mlp[sklearn]'") from None

import collections
import contextlib
import contextvars
import copy
import hashlib
import json
import math
import warnings
from itertools import chain
from numbers import Integral, Real
from typing import Any, Iterable

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from ._validation import FLOAT_DTYPE_NAMES
from .backends import BACKEND_NAMES, Backend, get_backend
from .backends.base import ACTIVATIONS, STATS_LOSS_SUM
from .loop import TrainingLoop
from .runner import EpochPlan, Policy, train
from .model import MLP, output_activation
from .sparse import as_matrix, full_batch, is_sparse, to_backend
from .optim import Optimizer, ScikitAdam, ScikitSGD

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 validates through a method of BaseEstimator
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

try:
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # older scikit-learn passes iprint straight to SciPy
    def _get_additional_lbfgs_options_dict(key, value):
        return {key: value}

__all__ = ["MLPClassifier", "MLPRegressor", "ConvergenceWarning", "NotFittedError"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain large values and need "
               "to be preprocessed.")


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: scikit-learn's ``BaseMultilayerPerceptron``, on a backend."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions(set(BACKEND_NAMES)), Backend],
        "dtype": [StrOptions(set(FLOAT_DTYPE_NAMES)), None],
    }

    def _set_constructor_params(self, given: dict) -> None:
        """Store every constructor argument under its own name, unchanged (scikit-learn's rule for ``__init__``;
        validation happens in ``fit``)."""
        for name, value in given.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # ------------------------------------------------------------ structure
    def _hidden_sizes(self) -> list[int]:
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        for h in hidden:  # scikit-learn's fit fails with a TypeError on these too (in NumPy, building the weights)
            if isinstance(h, (bool, np.bool_)):
                raise TypeError(f"hidden_layer_sizes: expected integer layer sizes, got {hidden}: a bool is not a "
                                "layer size, an integer is required")
            if not isinstance(h, Integral):
                kind = type(h).__qualname__
                kind = kind if type(h).__module__ == "builtins" else f"{type(h).__module__}.{kind}"
                raise TypeError(f"hidden_layer_sizes: expected integer layer sizes, got {hidden}: "
                                f"'{kind}' object cannot be interpreted as an integer")
        return [int(h) for h in hidden]

    def _params_dtype(self, X_dtype: np.dtype, first_pass: bool) -> np.dtype:
        """The dtype of the weights and of the computation: ``dtype``, else the fitted weights', else X's."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if not first_pass:
            return np.asarray(self.coefs_[0]).dtype
        return np.dtype(X_dtype)

    def _network(self, dtype: np.dtype, backend: Backend, coefs: Any = None, intercepts: Any = None) -> MLP:
        """An :class:`mlp.MLP` holding ``coefs_`` and ``intercepts_`` (or the given lists), on ``backend``."""
        coefs = self.coefs_ if coefs is None else coefs
        intercepts = self.intercepts_ if intercepts is None else intercepts
        sizes = [np.shape(coefs[0])[0]] + [np.shape(c)[1] for c in coefs]
        model = MLP(sizes, dtype=dtype, activation=self.activation, output=self.out_activation_)
        model.set_weights(list(zip(coefs, intercepts)))
        return model.to(backend)

    def _store(self, model: MLP) -> None:
        """``coefs_`` and ``intercepts_`` from the network's parameters; the network then serves the predictions
        for as long as they hold what it holds (so that predicting changes nothing of the estimator).

        Where the backend keeps the parameters in host memory, ``coefs_`` and ``intercepts_`` are views of them:
        an edit in place is an edit of the network, and predictions need not compare anything.
        """
        self.coefs_, self.intercepts_, self._net_cache = _InferenceNetwork.serving(model, self._network_options())

    def _network_options(self) -> tuple:
        """What besides the weights shapes the inference network: the activations and the backend."""
        return self.activation, self.out_activation_, get_backend(self.backend)

    def _inference_network(self) -> MLP:
        """The network predictions run on: the one built from ``coefs_``/``intercepts_`` as they are now.

        The kept network is reused while ``coefs_`` and ``intercepts_`` are the
        views of its parameters it handed out, or hold the values it was built
        from (compared bit for bit: an edit in place counts as much as a new
        array), and while the activations and backend are the same; otherwise a
        new one is built from a snapshot of them.  An entry is never changed,
        only replaced whole, so a thread predicting meanwhile keeps a consistent
        network.
        """
        coefs, intercepts = [np.asarray(c) for c in self.coefs_], [np.asarray(b) for b in self.intercepts_]
        options = self._network_options()
        cache = getattr(self, "_net_cache", None)  # read once: another thread may replace it meanwhile
        if cache is None or not cache.holds(coefs, intercepts, options):
            snapshot = _InferenceNetwork.snapshot(coefs, intercepts)
            network = self._network(snapshot[0][0].dtype, options[2], *snapshot)
            cache = _InferenceNetwork(coefs + intercepts, snapshot[0] + snapshot[1], len(coefs), options, network)
            self._net_cache = cache
        return cache.network

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_net_cache", None)  # may hold device memory; rebuilt from coefs_ (see __setstate__)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "coefs_" not in state:
            return
        # A network on a host backend is built now, so that coefs_ become views of its parameters (predictions
        # then compare nothing); device memory waits for the first prediction, as do weights no network takes.
        try:
            backend = get_backend(self.backend)
            if _in_host_memory(backend, backend.empty(0, np.float32)):
                self._store(self._network(np.asarray(self.coefs_[0]).dtype, backend))
        except (RuntimeError, ValueError):
            pass

    # --------------------------------------------------------------- fitting
    def _initialize(self, y: np.ndarray, layer_units: list[int], dtype: np.dtype) -> None:
        """scikit-learn's fresh state: counters, output activation, Glorot-uniform weights, stopping state."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False))
            self.intercepts_.append(self._random_state.uniform(-bound, bound, fan_out).astype(dtype, copy=False))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
            else:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _targets(self, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """What the network's loss trains on: class indices for a softmax, real (n, outputs) rows otherwise."""
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(y, dtype=dtype)

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False) -> "_BaseMLP":
        if not incremental and _adopt_prefitted(self, X, y, sample_weight):
            return self
        X, y, sample_weight, dtype = self._begin_fit(X, y, sample_weight, incremental)
        backend = get_backend(self.backend)
        model = self._network(dtype, backend)
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(model, backend, X, y, sample_weight, incremental)
        else:
            self._fit_lbfgs(model, backend, X, y, sample_weight)
        self._end_fit()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def _begin_stochastic_fit(self, X: Any, y: Any, sample_weight: Any = None) -> "StochasticRun":
        """What ``fit`` does before an "sgd"/"adam" network's first epoch, for an engine that trains the network
        elsewhere (a stack, :mod:`mlp.search`): the parameters validated as ``fit`` validates them, the data,
        the initial weights, the validation split; raises what ``fit`` would raise there."""
        X, y, sample_weight, dtype = self._begin_fit(X, y, sample_weight, incremental=False)
        return StochasticRun(self, X, y, sample_weight, False, dtype)

    def _end_fit(self) -> None:
        if not all(np.isfinite(w).all() for w in chain(self.coefs_, self.intercepts_)):
            raise ValueError(_NON_FINITE)

    def _begin_fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> tuple:
        """scikit-learn's start of a fit: validated dense ``X`` and 2-D ``y`` (binarized for a classifier), the
        checked sample weights, the parameters' dtype; a first fit initialises the network from
        ``random_state``, and every fit re-seeds ``_random_state`` (the shuffles and the validation split)."""
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        dtype = self._params_dtype(X.dtype, first_pass)
        X = as_matrix(X, dtype)  # a sparse X stays sparse (CSR)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [X.shape[1]] + hidden + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        return X, y, sample_weight, dtype

    def _make_optimizer(self) -> Optimizer:
        if self.solver == "sgd":
            return ScikitSGD(lr=self.learning_rate_init, momentum=self.momentum, nesterov=self.nesterovs_momentum)
        return ScikitAdam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _fit_stochastic(self, model: MLP, backend: Backend, X: np.ndarray, y: np.ndarray, sample_weight: Any,
                        incremental: bool) -> None:
        run = StochasticRun(self, X, y, sample_weight, incremental, model.dtype)
        dev = backend.asarray
        loop = TrainingLoop.for_model(model, self._optimizer, backend, to_backend(backend, run.X_train, model.dtype),
                                      dev(run.targets), run.batch_size, cuda_graphs=backend.supports_graphs,
                                      weights=run.sw_train, l2_penalty=self.alpha > 0)
        X_val = None if run.X_val is None else to_backend(backend, run.X_val, model.dtype)
        try:
            train(loop, [run], validation_X=X_val, interrupt="warn")
        finally:
            loop.close()
        self._store(model)
        if run.early_stopping:
            self._best_coefs, self._best_intercepts = self.coefs_, self.intercepts_

    def _iteration_ends(self, time_step: int) -> None:
        """scikit-learn's ``iteration_ends``: the ``invscaling`` schedule of SGD."""
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._optimizer.lr = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's ``trigger_stopping``: stop, except that SGD's ``adaptive`` schedule first divides the
        learning rate by 5 until it falls to 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._optimizer.lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._optimizer.lr /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._optimizer.lr)
        return False

    def _fit_lbfgs(self, model: MLP, backend: Backend, X: np.ndarray, y: np.ndarray, sample_weight: Any) -> None:
        objective = _FullBatchObjective(model, backend, X, self._targets(y, model.dtype), sample_weight, self.alpha)
        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        # As scikit-learn, start SciPy from the weights in their own dtype: SciPy (1.17 here) then evaluates
        # the objective at parameters of that dtype, while L-BFGS-B's iterates are float64.
        result = scipy.optimize.minimize(
            objective, objective.packed().astype(model.dtype), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **_get_additional_lbfgs_options_dict("iprint", iprint)})
        self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
        self.loss_ = np.float64(result.fun)
        if self.dtype is None and model.dtype != np.float64:
            # scikit-learn keeps L-BFGS-B's float64 solution as the weights, whatever the data's dtype (so a
            # float32 fit predicts in float64); an explicit dtype keeps the weights in that dtype
            model = MLP(model.layer_sizes, dtype=np.float64, activation=model.activation, output=model.output)
            model.backend.copy_(model.params, np.asarray(result.x, dtype=np.float64))
            model = model.to(backend)
        else:
            objective.set(result.x)
        self._store(model)

    def _loss_grad_lbfgs(self, packed_coef_inter: np.ndarray, X: Any, y: np.ndarray, sample_weight: Any,
                         *scratch: Any) -> tuple[float, np.ndarray]:
        """scikit-learn's private objective of L-BFGS, same signature (the trailing scratch lists are ignored):
        loss and packed gradient at ``packed_coef_inter`` for binarized targets ``y``, computed on the backend.
        Sets ``coefs_``/``intercepts_`` to the packed values, as scikit-learn does."""
        check_is_fitted(self)
        dtype = np.asarray(self.coefs_[0]).dtype
        y = np.asarray(y)
        y = y.reshape(-1, 1) if y.ndim == 1 else y
        model = self._network(dtype, get_backend(self.backend))
        objective = _FullBatchObjective(model, model.backend, as_matrix(X, dtype), self._targets(y, dtype),
                                        sample_weight, self.alpha)
        loss, grad = objective(np.asarray(packed_coef_inter, dtype=np.float64))
        self._store(model)
        return loss, grad

    def _dense_input(self, X: Any) -> np.ndarray:
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        return as_matrix(X, np.asarray(self.coefs_[0]).dtype)

    def _forward_pass_fast(self, X: Any, check_input: bool = True) -> np.ndarray:
        """The output layer's values for ``X`` (n, n_outputs), in the weights' dtype."""
        X = self._dense_input(X) if check_input else as_matrix(X, np.asarray(self.coefs_[0]).dtype)
        return output_activation(self._inference_network().decision_function(X), self.out_activation_)

    # ---------------------------------------------------------------- misc
    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                                 "stochastic.")
        return True

    def to_mlp(self) -> MLP:
        """A copy of the fitted network as an :class:`mlp.MLP` on the host (its output layer is
        ``out_activation_``); for a classifier ``metadata["classes"]`` holds ``classes_`` when it can be
        written to a checkpoint (numbers, strings)."""
        check_is_fitted(self)
        model = copy.deepcopy(self._network(np.asarray(self.coefs_[0]).dtype, get_backend("numpy")))
        classes = getattr(self, "classes_", None)
        model.metadata = {}
        if classes is not None:
            try:
                model.metadata["classes"] = json.loads(json.dumps(np.asarray(classes).tolist()))
            except TypeError:
                pass
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class StochasticRun(Policy):
    """One estimator's "sgd"/"adam" fit as scikit-learn runs it, epoch by epoch: its :class:`~mlp.runner.Policy`.

    It owns everything of a fit but the arithmetic: the optimizer's rule and
    learning-rate schedule, the validation split, the batch size, each
    epoch's shuffle (from the estimator's ``_random_state``, as scikit-learn
    draws it), the per-step L2 terms, the loss curve, the stopping rule, the
    weights the fit ends with and the warnings.  :func:`mlp.runner.train`
    runs it, alone (one estimator's ``fit``) or beside many others (a stack
    of a search or an ensemble).  ``row_map``: where the fit's training rows
    sit in the data the loop holds (None: the loop holds exactly
    :attr:`X_train`); :attr:`validation_rows` likewise for the validation
    rows (default: rows of :attr:`X_val`).
    """

    def __init__(self, est: "_BaseMLP", X: np.ndarray, y: np.ndarray, sample_weight: Any, incremental: bool,
                 dtype: np.dtype) -> None:
        self.est, self.incremental = est, incremental
        if not incremental or not hasattr(est, "_optimizer"):
            est._optimizer = est._make_optimizer()
        if est.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        self.early_stopping = est.early_stopping
        self.sw_val = None
        if self.early_stopping:
            # scikit-learn stratifies only single-output classification
            stratify = y if is_classifier(est) and est.n_outputs_ == 1 else None
            # the positions ride along (extra arrays change nothing of the split): an engine that keeps
            # one copy of the data uses them as row indices
            positions = np.arange(X.shape[0], dtype=np.int64)
            if sample_weight is None:
                X_train, X_val, y_train, y_val, self.train_rows, self.val_rows = train_test_split(
                    X, y, positions, random_state=est._random_state, test_size=est.validation_fraction,
                    stratify=stratify)
                sw_train = None
            else:
                X_train, X_val, y_train, y_val, sw_train, self.sw_val, self.train_rows, self.val_rows = \
                    train_test_split(X, y, sample_weight, positions, random_state=est._random_state,
                                     test_size=est.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
            if is_classifier(est):
                y_val = est._label_binarizer.inverse_transform(y_val)
            self.X_val, self.y_val = as_matrix(X_val), y_val
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            self.X_val = self.y_val = self.val_rows = None
            self.train_rows = np.arange(X.shape[0], dtype=np.int64)
        self.X_train = as_matrix(X_train)
        self.targets = est._targets(y_train, dtype)
        self.sw_train = None if sw_train is None else np.ascontiguousarray(sw_train, dtype=dtype)
        self.n = n = X_train.shape[0]
        if est.batch_size == "auto":
            self.batch_size = min(200, n)
        else:
            if est.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            self.batch_size = int(np.clip(est.batch_size, 1, n))
        self.steps = math.ceil(n / self.batch_size)
        self.sample_idx = np.arange(n, dtype=np.int64)
        est.n_iter_ = 0
        self.done = False
        self.improved = False  # whether some epoch of this fit had the best validation score so far
        self.row_map: np.ndarray | None = None
        #: with ``isolated``, an error at the end of an epoch (a warning the caller made an error, say) ends this
        #: fit alone: it is kept in ``failure`` and the run is done (a stack's other fits go on)
        self.isolated = False
        self.failure: BaseException | None = None
        self.validation_rows = None if self.X_val is None else np.arange(self.X_val.shape[0], dtype=np.int64)

    def plan_epoch(self) -> EpochPlan:
        """The next epoch as the training loop takes it (see :meth:`plan`)."""
        order, decay, penalty = self.plan()
        weights = None if self.sw_train is None else self.sw_train[order]
        return EpochPlan(order if self.row_map is None else self.row_map[order], decay, penalty, weights)

    def end_epoch(self, totals: np.ndarray, steps_ran: int, val_logits: np.ndarray | None) -> bool:
        try:
            return self.record(float(totals[STATS_LOSS_SUM]), val_logits)
        except Exception as exc:
            if not self.isolated:
                raise
            self.failure, self.done = exc, True
            return False

    def final_weights(self):
        """The best epoch's weights with early stopping (or, when no epoch of this fit beat the best score of
        an earlier one, the earlier best); the last weights otherwise."""
        if not self.early_stopping or self.failure is not None:
            return "last"
        if self.improved:
            return "best"
        est = self.est
        return np.concatenate([np.ravel(w) for w in chain(est._best_coefs, est._best_intercepts)])

    def plan(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The next epoch: ``(order, weight_decay, penalty)``: the sample order (int64, rows of ``X_train``)
        and, per step, the weight decay ``alpha / S`` and the loss's L2 scale ``0.5 * alpha * b / S``, ``b``
        being the batch's size and ``S`` its sample-weight sum (``b`` without weights); None when alpha is 0."""
        est = self.est
        if est.shuffle:
            # sklearn.utils.shuffle(sample_idx, random_state=...) draws exactly this permutation (it shuffles
            # an arange with the same generator), without its parameter validation on every epoch
            self.sample_idx = self.sample_idx[est._random_state.permutation(self.n)]
        if est.alpha == 0:
            return self.sample_idx, None, None
        n, b = self.n, self.batch_size
        sizes = np.full(self.steps, b, dtype=np.float64)
        sizes[-1] = n - (self.steps - 1) * b
        if self.sw_train is None:
            sums = sizes
        else:
            sums = np.add.reduceat(np.asarray(self.sw_train, dtype=np.float64)[self.sample_idx], np.arange(0, n, b))
        return self.sample_idx, est.alpha / sums, 0.5 * est.alpha * sizes / sums

    def record(self, loss_sum: float, val_logits: np.ndarray | None = None) -> bool:
        """Record an epoch (``loss_sum``: the loss statistics' sum; ``val_logits``: the network's logits on
        ``X_val`` with early stopping); returns True when the weights are the best so far (keep them)."""
        est = self.est
        est.n_iter_ += 1
        est.loss_ = np.float64(loss_sum) / self.n  # a NumPy float, as scikit-learn's (and each loss_curve_ entry)
        est.t_ += self.n
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))
        best = self._update_no_improvement_count(val_logits)
        self.improved |= best
        est._iteration_ends(est.t_)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive "
                   "epochs.")
            if est._trigger_stopping(msg):
                self.done = True
                return best
            est._no_improvement_count = 0
        if self.incremental:
            self.done = True
        elif est.n_iter_ == est.max_iter:
            self.done = True
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        return best

    def _update_no_improvement_count(self, val_logits: np.ndarray | None) -> bool:
        est = self.est
        if self.early_stopping:
            score = self._validation_score(val_logits)
            est.validation_scores_.append(score)
            if est.verbose:
                print("Validation score: %f" % score)
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                return True
            return False
        if est.loss_curve_[-1] > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if est.loss_curve_[-1] < est.best_loss_:
            est.best_loss_ = est.loss_curve_[-1]
        return False

    def _validation_score(self, val_logits: np.ndarray) -> float:
        est = self.est
        y_pred = est._decode(output_activation(val_logits, est.out_activation_))
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(est._score_function(self.y_val, y_pred, sample_weight=self.sw_val))


class _InferenceNetwork:
    """A network kept for predictions, with what an estimator's ``coefs_`` + ``intercepts_`` held when it was made
    (``held``) and, per array, a read-only copy of its values then, or None where the array is a view of the
    network's own parameters in host memory (it cannot differ from them).  Never changed once made."""

    __slots__ = ("held", "copies", "n_coefs", "options", "network")

    def __init__(self, held: list, copies: list, n_coefs: int, options: tuple, network: MLP) -> None:
        self.held, self.copies, self.n_coefs = tuple(held), tuple(copies), n_coefs
        self.options, self.network = options, network

    @classmethod
    def serving(cls, model: MLP, options: tuple) -> tuple[list, list, "_InferenceNetwork"]:
        """``(coefs, intercepts, entry)`` for a network that now serves the predictions: views of its parameters
        where they are host memory, else host copies (with read-only copies of their values in the entry)."""
        if _in_host_memory(model.backend, model.params):
            Ws, bs = model.parameter_views()
            coefs, intercepts = [W.view() for W in Ws], [b.view() for b in bs]  # the network's own views stay its
            if all(a.base is model.params for a in chain(coefs, intercepts)):
                return coefs, intercepts, cls(coefs + intercepts, [None] * (len(Ws) + len(bs)), len(Ws), options,
                                              model)
        weights = model.get_weights()
        coefs, intercepts = [W for W, _ in weights], [b for _, b in weights]
        frozen = cls.snapshot(coefs, intercepts)
        return coefs, intercepts, cls(coefs + intercepts, frozen[0] + frozen[1], len(coefs), options, model)

    @staticmethod
    def snapshot(coefs: list, intercepts: list) -> tuple[tuple, tuple]:
        """Read-only copies of the arrays, as they are now."""
        def frozen(a: Any) -> np.ndarray:
            a = np.array(a, copy=True)
            a.flags.writeable = False
            return a

        return tuple(frozen(c) for c in coefs), tuple(frozen(b) for b in intercepts)

    def holds(self, coefs: list, intercepts: list, options: tuple) -> bool:
        """Whether ``coefs``/``intercepts`` (arrays) hold exactly the network's weights (dtypes, shapes, values)
        and ``options`` are its own."""
        if len(coefs) != self.n_coefs or len(coefs) + len(intercepts) != len(self.held):
            return False
        if not all(a == b for a, b in zip(options, self.options)):
            return False
        net = self.network
        for i, (a, held, copy) in enumerate(zip(chain(coefs, intercepts), self.held, self.copies)):
            if copy is not None:
                if not _same_bits(a, copy):
                    return False
            # a view of the network's parameters, unless replaced, reshaped or retyped in place, or a copy of it
            # (copy.deepcopy copies the views into arrays of their own)
            elif a is not held or a.base is not net.params or a.dtype != net.dtype or a.shape != _weight_shape(net, i):
                return False
        return True


def _weight_shape(net: MLP, i: int) -> tuple:
    """The shape of the ``i``-th array of ``coefs_ + intercepts_`` for ``net``."""
    sizes = net.layer_sizes
    return (sizes[i], sizes[i + 1]) if i < net.n_layers else (sizes[i - net.n_layers + 1],)


def _in_host_memory(backend: Backend, a: Any) -> bool:
    """Whether ``a``, an array of ``backend``, is host memory (the backend's host view of it is itself)."""
    return backend.to_numpy(a) is a


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtypes, shapes and values; floats compared by their bits (so -0.0 differs from 0.0 and a NaN is
    equal to itself), without copying either array."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):
        bits = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.view(bits), b.view(bits)))
    return bool(np.array_equal(a, b))


#: fits already made by a stacked engine (mlp.search): each fingerprint's outcomes, in order; see _adopt_prefitted
_PREFITTED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mlp_prefitted", default=None)
_SERVED = object()  # the table's key counting the fits served


def _param_key(value: Any) -> str:
    """A parameter's value as a fit sees it: a ``RandomState`` by its state (scikit-learn's ``clone`` gives every
    fit a copy in the same state), anything else by its ``repr``."""
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state()
        h = hashlib.blake2b(np.ascontiguousarray(keys).tobytes(), digest_size=16)
        return f"RandomState({kind}, {h.hexdigest()}, {pos}, {has_gauss}, {cached!r})"
    return repr(value)


def fit_fingerprint(est: "_BaseMLP", X: Any, y: Any, sample_weight: Any) -> tuple:
    """What identifies a fit: the estimator's class and parameters, and the bytes of its data (taken before
    the fit: fitting advances a ``RandomState`` parameter)."""
    def digest(a: Any) -> str | None:
        if a is None:
            return None
        if is_sparse(a):  # its canonical CSR arrays: never densified
            a = as_matrix(a)
            h = hashlib.blake2b(digest_size=16)
            h.update(str(("csr", a.shape, a.dtype.str)).encode())
            for part in (a.indptr, a.indices, a.data):
                h.update(np.ascontiguousarray(part, dtype=np.int64 if part.dtype.kind in "iu" else None).tobytes())
            return h.hexdigest()
        a = np.ascontiguousarray(np.asarray(a))
        h = hashlib.blake2b(digest_size=16)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
        return h.hexdigest()

    params = tuple(sorted((k, _param_key(v)) for k, v in est.get_params(deep=False).items()))
    return type(est), params, digest(X), digest(y), digest(sample_weight)


def _adopt_prefitted(est: "_BaseMLP", X: Any, y: Any, sample_weight: Any) -> bool:
    """Inside :func:`serving_prefitted`, a fit that was already made (same parameters, same data) takes the next
    outcome recorded for it instead of training: the fitted state (True), or the exception that fit raised
    (raised here, as the fit itself would).  False when there is none left, or when ``warm_start`` continues
    an estimator already fitted."""
    table = _PREFITTED.get()
    if not table or (est.warm_start and hasattr(est, "coefs_")):
        return False
    queue = table.get(fit_fingerprint(est, X, y, sample_weight))
    if not queue:
        return False
    outcome = queue.popleft()  # each outcome serves one fit: duplicates of a fit get their own draws
    table[_SERVED] += 1
    if isinstance(outcome, BaseException):
        raise outcome
    params = est.get_params(deep=False)
    for key, value in outcome.__dict__.items():
        if key not in params:
            setattr(est, key, value)
    if isinstance(est.random_state, np.random.RandomState):  # the fit advanced its own generator: so does this one
        est.random_state.set_state(outcome.random_state.get_state())
        est._random_state = est.random_state
    return True


@contextlib.contextmanager
def serving_prefitted(outcomes: Iterable[tuple[tuple, Any]]):
    """Within the block, ``fit`` of an estimator whose fingerprint (see :func:`fit_fingerprint`) is among
    ``outcomes`` (``(fingerprint, fitted estimator or the exception its fit raised)`` pairs) takes the next
    outcome recorded under it, each at most once."""
    table: dict[Any, Any] = {_SERVED: 0}
    for key, outcome in outcomes:
        table.setdefault(key, collections.deque()).append(outcome)
    token = _PREFITTED.set(table)
    try:
        yield _Served(table)
    finally:
        _PREFITTED.reset(token)


class _Served:
    """How many fits :func:`serving_prefitted` has served so far (``count``)."""

    def __init__(self, table: dict) -> None:
        self._table = table

    @property
    def count(self) -> int:
        return self._table[_SERVED]


def _dense(X: Any, dtype: np.dtype) -> np.ndarray:
    """``X`` as a C-contiguous dense array of ``dtype``: what a stack trains on (``mlp.search`` trains the fits of
    a sparse X one at a time instead, each batch by batch)."""
    if sp.issparse(X):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=dtype)


class _FullBatchObjective:
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
        model.loss_into(logits, self.targets, self.workspace.dlogits[0], self.stats, 0, self.weights)
        model.backward(self.X, self.workspace)
        grad = np.asarray(be.to_numpy(model.grads), dtype=np.float64).copy()
        loss = float(be.to_numpy(self.stats)[STATS_LOSS_SUM]) / self.n
        w = theta[:model.n_weights]
        loss += 0.5 * self.alpha * float(np.dot(w, w)) / self.weight_sum
        grad[:model.n_weights] += self.alpha * w / self.weight_sum
        return loss, grad


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
