"""What ``mlp.MLPClassifier`` and ``mlp.MLPRegressor`` share: scikit-learn's ``BaseMultilayerPerceptron``,
on a backend (:class:`_BaseMLP`): parameter validation, the network built from ``coefs_``/``intercepts_``,
the start and end of a fit, and the predictions' forward pass.  The stochastic fit's rules are in
:mod:`mlp.sklearn_run`, L-BFGS in :mod:`mlp.lbfgs`, the fits a search made ahead in :mod:`mlp.fit_cache`.
"""

from __future__ import annotations

import copy
import json
from itertools import chain
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, is_classifier
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from . import fit_cache
from ._validation import FLOAT_DTYPE_NAMES
from .backends import BACKEND_NAMES, Backend, get_backend
from .backends.base import ACTIVATIONS
from .lbfgs import FullBatchObjective, fit_lbfgs
from .loop import TrainingLoop
from .model import MLP, output_activation
from .optim import Optimizer, ScikitAdam, ScikitSGD
from .prediction_network import PredictionNetwork, in_host_memory
from .runner import train
from .sklearn_run import StochasticRun
from .sparse import as_matrix, to_backend

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 validates through a method of BaseEstimator
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

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
        # a name, or NumPy's spelling of the same two dtypes (np.float32, np.dtype("float32"); float is float64)
        "dtype": [StrOptions(set(FLOAT_DTYPE_NAMES)), Options(type, {np.float32, np.float64, float}),
                  Options(np.dtype, {np.dtype(name) for name in FLOAT_DTYPE_NAMES}), None],
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
        self.coefs_, self.intercepts_, self._net_cache = PredictionNetwork.serving(model, self._network_options())

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
            snapshot = PredictionNetwork.snapshot(coefs, intercepts)
            network = self._network(snapshot[0][0].dtype, options[2], *snapshot)
            cache = PredictionNetwork(coefs + intercepts, snapshot[0] + snapshot[1], len(coefs), options, network)
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
            if in_host_memory(backend, backend.empty(0, np.float32)):
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
        if not incremental and fit_cache.adopt(self, X, y, sample_weight):
            return self
        X, y, sample_weight, dtype = self._begin_fit(X, y, sample_weight, incremental)
        backend = get_backend(self.backend)
        model = self._network(dtype, backend)
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(model, backend, X, y, sample_weight, incremental)
        else:
            fit_lbfgs(self, model, backend, X, y, sample_weight)
        self._end_fit()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def start_stacked_fit(self, X: Any, y: Any, sample_weight: Any = None) -> StochasticRun:
        """Begin a "sgd"/"adam" ``fit`` that a stack of networks trains (:func:`mlp.search.fit_many`): the
        parameters validated as ``fit`` validates them, the data, the initial weights and the validation
        split; raises what ``fit`` would raise there.  The returned run is the fit's policy for the epoch
        runner, with the seam a stack uses (``stack_key``, ``network``, ``optimizer``, ``targets_of``,
        ``finish``)."""
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
        if not first_pass and y.shape[1] != self.coefs_[-1].shape[1]:
            units = self.coefs_[-1].shape[1]
            raise ValueError(f"y has {y.shape[1]} output column(s), but this {type(self).__name__} was fitted with "
                             f"{units}: partial_fit and warm_start continue the fitted network (fit with "
                             "warm_start=False to start a new one on these targets)")
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
                                      weights=run.sw_train, l2_penalty=self.alpha > 0, clip_loss=True)
        X_val = None if run.X_val is None else to_backend(backend, run.X_val, model.dtype)
        try:
            train(loop, [run], validation_X=X_val, interrupt="warn")
        finally:
            loop.close()
        self._store(model)
        if run.early_stopping:
            self._best_coefs, self._best_intercepts = self.coefs_, self.intercepts_

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
        objective = FullBatchObjective(model, model.backend, as_matrix(X, dtype), self._targets(y, dtype),
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
