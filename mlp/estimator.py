"""A scikit-learn compatible classifier built on :class:`mlp.MLP` and :class:`mlp.Trainer`.

>>> from mlp import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(256,), epochs=20, random_state=0).fit(X, y)
>>> clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

scikit-learn is optional at run time.  When it can be imported,
:class:`MLPClassifier` derives from its ``ClassifierMixin`` and
``BaseEstimator`` and validates input with its own utilities, so ``clone``,
``Pipeline``, ``GridSearchCV``, estimator tags and the HTML repr behave as for
scikit-learn's estimators.  Without it, a small base class here provides
``get_params``, ``set_params`` and ``score``, and input is checked by the same
rules (lists and DataFrames converted, sparse matrices, NaN and infinity
rejected).

Training is :meth:`mlp.Trainer.fit`: this module only translates between
scikit-learn's conventions (arbitrary labels, ``max_iter``-style stopping,
``partial_fit``, ``warm_start``) and the library's model, optimizers and trainer.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from ._validation import check_float_dtype, check_int, check_real, describe
from .backends import Backend
from .model import MLP
from .optim import OPTIMIZERS, Optimizer, make_optimizer
from .trainer import EarlyStopping, History, Trainer

try:
    from sklearn.base import BaseEstimator as _EstimatorBase
    from sklearn.base import ClassifierMixin as _ClassifierBase
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.utils.multiclass import check_classification_targets as _sk_check_targets
    from sklearn.utils.validation import check_is_fitted as _sk_check_is_fitted

    try:
        from sklearn.utils.validation import validate_data as _sk_validate_data
    except ImportError:  # scikit-learn < 1.6 validates through a method of BaseEstimator
        def _sk_validate_data(estimator, *args, **kwargs):
            return estimator._validate_data(*args, **kwargs)

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

__all__ = ["MLPClassifier", "ConvergenceWarning", "NotFittedError", "HAVE_SKLEARN"]


# --------------------------------------------------------------------------
# Stand-ins used when scikit-learn is not installed
# --------------------------------------------------------------------------

if not HAVE_SKLEARN:

    class ConvergenceWarning(UserWarning):
        """Training stopped at the epoch limit while the loss was still improving."""

    class NotFittedError(ValueError, AttributeError):
        """The estimator was used before ``fit`` (or ``partial_fit``) was called."""

    class _EstimatorBase:
        """``get_params`` / ``set_params`` over the constructor's keyword arguments, and a short repr."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            signature = inspect.signature(cls.__init__)
            return sorted(p.name for p in signature.parameters.values()
                          if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            params = {}
            for name in self._get_param_names():
                value = getattr(self, name)
                if deep and hasattr(value, "get_params") and not isinstance(value, type):
                    params.update((f"{name}__{k}", v) for k, v in value.get_params().items())
                params[name] = value
            return params

        def set_params(self, **params: Any) -> "_EstimatorBase":
            valid = self._get_param_names()
            for key, value in params.items():
                name, _, sub = key.partition("__")
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                     f"valid parameters are {valid}")
                if sub:
                    getattr(self, name).set_params(**{sub: value})
                else:
                    setattr(self, name, value)
            return self

        def __getstate__(self) -> dict:
            return self.__dict__.copy()

        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state)

        def __repr__(self) -> str:
            defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
            changed = []
            for name in self._get_param_names():
                value = getattr(self, name)
                default = defaults.get(name, inspect.Parameter.empty)
                if isinstance(value, np.ndarray) or value is not default and value != default:
                    changed.append(f"{name}={value!r}")
            return f"{type(self).__name__}({', '.join(changed)})"

    class _ClassifierBase:
        """``score``: the accuracy of ``predict``."""

        def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
            correct = np.asarray(self.predict(X) == _plain_labels(y, "y"), dtype=np.float64)
            if sample_weight is None:
                return float(correct.mean())
            return float(np.average(correct, weights=np.asarray(sample_weight, dtype=np.float64)))


# --------------------------------------------------------------------------
# Input checks without scikit-learn (the same rules as its check_array)
# --------------------------------------------------------------------------


def _is_sparse(X: Any) -> bool:
    # scipy.sparse matrices and arrays, recognised without importing scipy
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _column_names(X: Any) -> np.ndarray | None:
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = list(columns)
    if names and all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def _plain_features(X: Any, dtype: np.dtype | None) -> np.ndarray:
    """``X`` as a C-contiguous, finite 2-D array of ``dtype`` with at least one row and one column.

    ``dtype=None`` keeps float32 data as they are and converts anything else to float64.
    """
    if _is_sparse(X):
        raise TypeError(f"X: sparse input ({type(X).__name__}) is not supported; the network needs dense "
                        "data: convert it with X.toarray()")
    try:
        arr = np.asarray(X)
    except Exception as exc:
        raise TypeError(f"X: expected a 2-D array-like of numbers, got {type(X).__name__} ({exc})") from None
    if arr.dtype.kind == "c":
        raise ValueError("X: complex data is not supported")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X: expected numbers, got values of dtype {arr.dtype} ({exc})") from None
    if arr.ndim != 2:
        hint = (": reshape it with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a "
                "single sample" if arr.ndim == 1 else "")
        raise ValueError(f"X: expected a 2-D array, got a {arr.ndim}-D array of shape {arr.shape}{hint}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"X: expected at least one sample and one feature, got shape {arr.shape}")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        if np.isnan(arr).any():
            raise ValueError("Input X contains NaN.")
        raise ValueError(f"Input X contains infinity or a value too large for dtype({arr.dtype.name!r}).")
    return arr


def _plain_labels(y: Any, name: str) -> np.ndarray:
    """``y`` as a 1-D array (a column vector is flattened), NaN-free."""
    if y is None:
        raise ValueError(f"{name}: this estimator requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got an array of shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return arr


def _plain_check_targets(y: np.ndarray) -> None:
    """Reject targets that are not class labels (floats with fractional parts, complex numbers)."""
    if y.dtype.kind == "c" or (y.dtype.kind == "f" and np.any(y != np.round(y))):
        raise ValueError("Unknown label type: continuous. The targets of a classifier must be class labels "
                         "(integers or strings), not continuous values.")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """The constructor arguments, checked and normalised (made by :meth:`MLPClassifier._settings`)."""

    hidden: tuple[int, ...]
    optimizer: str
    learning_rate: float
    weight_decay: float
    momentum: float
    batch_size: int
    epochs: int
    tol: float
    n_iter_no_change: int
    early_stopping: bool
    validation_fraction: float
    shuffle: bool
    warm_start: bool
    dtype: np.dtype | None
    verbose: int

    def make_optimizer(self) -> Optimizer:
        kwargs: dict[str, Any] = {"lr": self.learning_rate, "weight_decay": self.weight_decay}
        if self.optimizer == "sgd":
            kwargs["momentum"] = self.momentum
        return make_optimizer(self.optimizer, **kwargs)


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {describe(value)}")
    return bool(value)


def _as_generator(random_state: Any) -> np.random.Generator:
    """A NumPy Generator from ``random_state``: None (fresh entropy), an int, a RandomState or a Generator."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(check_int(random_state, "random_state", minimum=0))
    raise TypeError(f"random_state: expected None, a non-negative integer, a numpy RandomState or "
                    f"Generator, got {describe(random_state)}")


def _unique_labels(labels: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.unique(labels)
    except TypeError:
        raise ValueError(f"{name}: labels must be all numbers or all strings, not a mix of types") from None


def _stratified_split(y: np.ndarray, n_classes: int, fraction: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` holding out ``fraction`` of each class.

    ``y`` holds class indices in [0, n_classes).  The number held out in total
    is ``round(fraction * n)``, shared between classes in proportion to their
    sizes (largest remainders first, ties broken at random); every class keeps
    at least one training sample.
    """
    counts = np.bincount(y, minlength=n_classes)
    exact = fraction * counts
    quota = np.floor(exact).astype(np.int64)
    missing = int(round(fraction * y.size)) - int(quota.sum())
    if missing > 0:
        order = np.lexsort((rng.random(n_classes), -(exact - quota)))
        quota[order[:missing]] += 1
    quota = np.minimum(quota, np.maximum(counts - 1, 0))
    if quota.sum() == 0:
        raise ValueError(f"validation_fraction: {fraction} of {y.size} samples leaves no sample to validate on "
                         "(every class keeps at least one for training); use more data, a larger "
                         "validation_fraction, or early_stopping=False")
    held_out = np.zeros(y.size, dtype=bool)
    for c in np.flatnonzero(quota):
        members = np.flatnonzero(y == c)
        held_out[rng.choice(members, size=int(quota[c]), replace=False)] = True
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def _json_safe(values: np.ndarray) -> list | None:
    items = values.tolist()
    try:
        json.dumps(items)
    except TypeError:
        return None
    return items


# --------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------


class MLPClassifier(_ClassifierBase, _EstimatorBase):
    """Multilayer perceptron classifier with scikit-learn's estimator interface.

    Hidden layers are affine + ReLU, the output layer a softmax over one unit
    per class (two for a binary problem), trained on the mean cross-entropy by
    :class:`mlp.Trainer` with the optimizer named by ``optimizer``.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Units in each hidden layer; ``()`` gives a softmax regression.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}, default "adam"
        Update rule (see :mod:`mlp.optim`).
    learning_rate : float, default 1e-3
        Step size of the optimizer (> 0).
    weight_decay : float, default 0.0
        L2 decay of the weights (never the biases): added to the gradient for
        "adam", "sgd" and "rmsprop", decoupled for "adamw".
    momentum : float, default 0.9
        Momentum of "sgd", in [0, 1); ignored by the other optimizers.
    batch_size : int, default 128
        Samples per step (the whole set when it holds fewer).
    epochs : int, default 200
        The most passes over the data one ``fit`` makes (scikit-learn's ``max_iter``).
    tol : float, default 1e-4
        The improvement that counts: training stops once the training loss
        (or, with ``early_stopping``, the validation accuracy) has not
        improved by more than ``tol`` for ``n_iter_no_change`` epochs.
    n_iter_no_change : int, default 10
        Epochs without improvement before training stops.
    early_stopping : bool, default False
        Hold out a stratified ``validation_fraction`` of the training data,
        stop on its accuracy, and end with the weights of the best epoch.
    validation_fraction : float, default 0.1
        In (0, 1); used only with ``early_stopping``.
    shuffle : bool, default True
        Shuffle the samples every epoch.
    warm_start : bool, default False
        ``fit`` continues from the fitted weights instead of starting anew
        (with a fresh optimizer, as scikit-learn does).
    dtype : {"float32", "float64"} or None, default None
        Precision of the weights and of the computation.  None follows the
        training data, as scikit-learn does: float32 data train in float32,
        anything else in float64.  "float32" is the fast choice on a GPU.
    backend : {"auto", "numpy", "cuda"} or mlp.Backend, default "auto"
        Where to train: "auto" uses a usable CUDA GPU, else NumPy.
    random_state : None, int, numpy RandomState or Generator, default None
        Seeds the initial weights, the shuffling and the validation split.
        An int makes runs repeatable (bit for bit on the NumPy backend);
        None draws fresh entropy.
    verbose : bool or int, default False
        Print one line per epoch to stderr.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; output unit ``i`` scores ``classes_[i]``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Column names seen in ``fit``, when ``X`` was a DataFrame with string column names.
    n_iter_ : int
        Epochs trained so far (counted across ``warm_start`` fits and ``partial_fit`` calls).
    loss_ : float
        Mean training cross-entropy of the last epoch.
    loss_curve_ : list of float
        Mean training cross-entropy of every epoch.
    best_loss_ : float or None
        Lowest entry of ``loss_curve_``; None with ``early_stopping``.
    validation_scores_ : list of float or None
        Validation accuracy of every epoch with ``early_stopping``, else None.
    best_validation_score_ : float or None
        Best entry of ``validation_scores_``; None without ``early_stopping``.
    coefs_, intercepts_ : lists of ndarray
        Host copies of each layer's weights, shape (in, out), and biases, shape (out,).
    """

    def __init__(
        self,
        hidden_layer_sizes: Union[int, Sequence[int]] = (100,),
        *,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        batch_size: int = 128,
        epochs: int = 200,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        shuffle: bool = True,
        warm_start: bool = False,
        dtype: str | None = None,
        backend: Union[str, Backend] = "auto",
        random_state: Any = None,
        verbose: Union[bool, int] = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.shuffle = shuffle
        self.warm_start = warm_start
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ parameters
    def _settings(self) -> _Settings:
        """Check every constructor argument (scikit-learn defers this to ``fit``)."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (Sequence, np.ndarray)):
            raise TypeError(f"hidden_layer_sizes: expected an int or a sequence of ints, got {describe(hidden)}")
        hidden = tuple(check_int(h, f"hidden_layer_sizes[{i}]", minimum=1) for i, h in enumerate(hidden))
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        verbose = self.verbose
        if not isinstance(verbose, (bool, np.bool_)):
            verbose = check_int(verbose, "verbose", minimum=0)
        return _Settings(
            hidden=hidden,
            optimizer=self.optimizer.lower(),
            learning_rate=check_real(self.learning_rate, "learning_rate", minimum=0.0, min_inclusive=False),
            weight_decay=check_real(self.weight_decay, "weight_decay", minimum=0.0),
            momentum=check_real(self.momentum, "momentum", minimum=0.0, maximum=1.0, max_inclusive=False),
            batch_size=check_int(self.batch_size, "batch_size", minimum=1),
            epochs=check_int(self.epochs, "epochs", minimum=1),
            tol=check_real(self.tol, "tol", minimum=0.0),
            n_iter_no_change=check_int(self.n_iter_no_change, "n_iter_no_change", minimum=1),
            early_stopping=_check_flag(self.early_stopping, "early_stopping"),
            validation_fraction=check_real(self.validation_fraction, "validation_fraction", minimum=0.0,
                                           maximum=1.0, min_inclusive=False, max_inclusive=False),
            shuffle=_check_flag(self.shuffle, "shuffle"),
            warm_start=_check_flag(self.warm_start, "warm_start"),
            dtype=None if self.dtype is None else check_float_dtype(self.dtype, "dtype"),
            verbose=int(bool(verbose)),
        )

    # ------------------------------------------------------------ input data
    def _check_X(self, X: Any, dtype: np.dtype | None, reset: bool) -> np.ndarray:
        """``X`` as a C-contiguous 2-D array of ``dtype`` (None: float32 stays float32, the rest becomes float64).

        With ``reset`` this records ``n_features_in_`` (and ``feature_names_in_``),
        otherwise it checks ``X`` against them.
        """
        if HAVE_SKLEARN:
            dtype = [np.float64, np.float32] if dtype is None else dtype
            return _sk_validate_data(self, X, reset=reset, dtype=dtype, order="C")
        arr = _plain_features(X, dtype)
        names = _column_names(X)
        if reset:
            self.n_features_in_ = arr.shape[1]
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            if arr.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {arr.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            fitted_names = getattr(self, "feature_names_in_", None)
            if names is not None and fitted_names is not None and not np.array_equal(names, fitted_names):
                raise ValueError("X: the feature names differ from those seen in fit "
                                 f"({list(fitted_names)}), got {list(names)}")
        return arr

    def _check_X_y(self, X: Any, y: Any, dtype: np.dtype | None,
                   reset: bool) -> tuple[np.ndarray, np.ndarray]:
        if HAVE_SKLEARN:
            dtype = [np.float64, np.float32] if dtype is None else dtype
            X, y = _sk_validate_data(self, X, y, reset=reset, dtype=dtype, order="C")
            _sk_check_targets(y)
            return X, y
        y = _plain_labels(y, "y")
        X = self._check_X(X, dtype, reset)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"y: expected one label per sample of X ({X.shape[0]}), got {y.shape[0]}")
        _plain_check_targets(y)
        return X, y

    def _encode(self, y: np.ndarray) -> np.ndarray:
        """Class indices (int64) of labels ``y``, all of which must be in :attr:`classes_`."""
        classes = self.classes_
        try:
            idx = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
            unknown = classes[idx] != y
        except TypeError:
            raise ValueError(f"y: labels of another type than classes_ ({classes.dtype}): "
                             f"got {describe(y)}") from None
        if np.any(unknown):
            extra = _unique_labels(y[unknown], "y")
            raise ValueError(f"y: labels {extra.tolist()[:10]} are not among the classes {classes.tolist()}")
        return idx.astype(np.int64)

    # -------------------------------------------------------------- training
    def _start(self, settings: _Settings, classes: np.ndarray, dtype: np.dtype, model: MLP | None = None) -> None:
        """Fresh learned state for ``classes`` (sorted labels, at least two).

        The network is ``model`` if given, else a new ``dtype`` network seeded from ``random_state``.
        """
        if classes.size < 2:
            raise ValueError(f"y: a classifier needs at least 2 classes to learn, got 1 class "
                             f"({classes.tolist()[0]!r})")
        self.classes_ = classes
        self._rng = _as_generator(self.random_state)
        if model is None:
            sizes = (self.n_features_in_, *settings.hidden, classes.size)
            model = MLP(sizes, seed=int(self._rng.integers(2**31 - 1)), dtype=dtype)
        self._model = model
        self._optimizer: Optimizer | None = None
        self.n_iter_ = 0
        self.loss_curve_: list[float] = []
        self.loss_ = math.nan
        self.best_loss_: float | None = None
        self.validation_scores_: list[float] | None = None
        self.best_validation_score_: float | None = None

    def _check_architecture(self, settings: _Settings) -> None:
        wanted = (self.n_features_in_, *settings.hidden, self.classes_.size)
        model = self._model
        dtype = model.dtype if settings.dtype is None else settings.dtype
        if tuple(model.layer_sizes) != wanted or model.dtype != dtype:
            raise ValueError(
                f"the fitted network has layers {tuple(model.layer_sizes)} ({model.dtype.name}), but the "
                f"parameters ask for {wanted} ({dtype.name}); to continue training, keep "
                "hidden_layer_sizes and dtype unchanged, or set warm_start=False to start a new network")

    def _train(self, X: np.ndarray, y: np.ndarray, settings: _Settings, epochs: int, stop: bool) -> History:
        """Run the trainer for at most ``epochs`` epochs; ``stop`` enables the stopping rules."""
        validation_data = None
        stopper = None
        if stop and settings.early_stopping:
            train, held_out = _stratified_split(y, self.classes_.size, settings.validation_fraction, self._rng)
            validation_data = (X[held_out], y[held_out])
            X, y = X[train], y[train]
            stopper = EarlyStopping(patience=settings.n_iter_no_change, min_delta=settings.tol,
                                    monitor="val_accuracy", restore_best=True)
        elif stop:
            stopper = EarlyStopping(patience=settings.n_iter_no_change, min_delta=settings.tol,
                                    monitor="loss", restore_best=False)
        trainer = Trainer(self._model, self._optimizer, backend=self.backend, batch_size=settings.batch_size,
                          seed=int(self._rng.integers(2**31 - 1)))
        history = trainer.fit(X, y, epochs=epochs, validation_data=validation_data, early_stopping=stopper,
                              shuffle=settings.shuffle, verbose=2 if settings.verbose else 0)
        self.n_iter_ += len(history)
        self.loss_curve_.extend(history["loss"])
        self.loss_ = self.loss_curve_[-1]
        if validation_data is not None:
            self.validation_scores_ = (self.validation_scores_ or []) + history["val_accuracy"]
            self.best_validation_score_ = max(self.validation_scores_)
        self.best_loss_ = None if settings.early_stopping else min(self.loss_curve_)
        return history

    def fit(self, X: Any, y: Any) -> "MLPClassifier":
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,) of any type; returns ``self``.

        Stops after ``epochs`` epochs, or earlier when the monitored figure
        (training loss, or validation accuracy with ``early_stopping``) has
        not improved by ``tol`` for ``n_iter_no_change`` epochs.  Ending at the
        epoch limit without that happening emits a ``ConvergenceWarning``.
        """
        settings = self._settings()
        resume = settings.warm_start and self.__sklearn_is_fitted__()
        if resume:
            self._check_architecture(settings)
            X, y = self._check_X_y(X, y, self._model.dtype, reset=False)
        else:
            X, y = self._check_X_y(X, y, settings.dtype, reset=True)
            self._start(settings, _unique_labels(y, "y"), X.dtype)
        labels = self._encode(y)
        self._optimizer = settings.make_optimizer()
        history = self._train(X, labels, settings, settings.epochs, stop=True)
        if not history.stopped_early and len(history) == settings.epochs:
            monitored = "validation accuracy" if settings.early_stopping else "training loss"
            warnings.warn(
                f"{type(self).__name__}: stopped at the limit of epochs={settings.epochs} while the "
                f"{monitored} was still improving by more than tol={settings.tol:g}; the model may not have "
                "converged (raise epochs, or adjust learning_rate or tol)",
                ConvergenceWarning, stacklevel=2)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "MLPClassifier":
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer state; returns ``self``.

        ``classes`` (every label the data will ever hold) is required on the
        first call, when the estimator is not fitted yet; later calls may omit
        it or must pass the same set.  The stopping rules do not apply.
        """
        settings = self._settings()
        first = not self.__sklearn_is_fitted__()
        if first and classes is None:
            raise ValueError("classes: the first call to partial_fit must list every class (classes=...), "
                             "since later batches may hold labels this one lacks")
        if not first:
            self._check_architecture(settings)
        X, y = self._check_X_y(X, y, settings.dtype if first else self._model.dtype, reset=first)
        if classes is not None:
            given = _unique_labels(np.asarray(classes).ravel(), "classes")
            if not first and not np.array_equal(given, self.classes_):
                raise ValueError(f"classes: expected the classes of the earlier calls, {self.classes_.tolist()}, "
                                 f"got {given.tolist()}")
        if first:
            self._start(settings, given, X.dtype)
        labels = self._encode(y)
        if self._optimizer is not None:
            fresh = settings.make_optimizer()
            if type(fresh) is not type(self._optimizer) or fresh.get_config() != self._optimizer.get_config():
                self._optimizer = fresh  # the optimizer's parameters changed since the last call
        else:
            self._optimizer = settings.make_optimizer()
        self._train(X, labels, settings, 1, stop=False)
        return self

    # ------------------------------------------------------------ prediction
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def _require_fitted(self) -> None:
        if HAVE_SKLEARN:
            _sk_check_is_fitted(self)
        elif not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call fit or "
                                 "partial_fit before using it")

    def _logits(self, X: Any) -> np.ndarray:
        """The network's outputs for ``X``, shape (n_samples, n_classes), as float64."""
        self._require_fitted()
        X = self._check_X(X, self._model.dtype, reset=False)
        return self._model.decision_function(X).astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (float64): the logits, shape (n_samples, n_classes); for two classes, shape (n_samples,),
        the log-odds of ``classes_[1]`` against ``classes_[0]``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of the class probabilities (float64), shape (n_samples, n_classes), columns as ``classes_``."""
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (float64; rows sum to 1), shape (n_samples, n_classes), columns as ``classes_``."""
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each sample, shape (n_samples,), values from ``classes_``."""
        best = np.argmax(self._logits(X), axis=1)
        return self.classes_[best]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Host copies of each layer's weight matrix, shape (in, out)."""
        self._require_fitted()
        return [W for W, _ in self._model.get_weights()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Host copies of each layer's bias vector, shape (out,)."""
        self._require_fitted()
        return [b for _, b in self._model.get_weights()]

    # --------------------------------------------------------- conversions
    def to_mlp(self) -> MLP:
        """A copy of the fitted network as an :class:`mlp.MLP` on the host.

        Output unit ``i`` scores ``classes_[i]``; ``metadata["classes"]`` holds
        the labels when they can be written to a checkpoint (numbers, strings):
        ``model.save(path, metadata=model.metadata)`` keeps them, and
        :meth:`from_mlp` finds them there.
        """
        self._require_fitted()
        model = copy.deepcopy(self._model)  # MLP copies hold host parameters
        classes = _json_safe(self.classes_)
        model.metadata = {"classes": classes} if classes is not None else {}
        return model

    @classmethod
    def from_mlp(cls, model: MLP, classes: Any = None, **params: Any) -> "MLPClassifier":
        """A fitted estimator predicting with (a copy of) ``model``.

        ``classes`` labels the model's outputs in order (default: the model's
        ``metadata["classes"]``, as written by :meth:`to_mlp`); it needs one
        distinct label per output.  ``classes_`` is sorted as in scikit-learn,
        so the output units are reordered to match when ``classes`` is not.
        ``params`` are further constructor arguments; ``hidden_layer_sizes``
        and ``dtype`` come from the model.  With ``warm_start=True`` a later
        ``fit`` continues training it, as does ``partial_fit``.
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model: expected an mlp.MLP, got {type(model).__name__}")
        if classes is None:
            classes = model.metadata.get("classes")
            if classes is None:
                raise ValueError("classes: expected the label of each of the model's outputs; the model's "
                                 "metadata holds none")
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.size != model.n_classes:
            raise ValueError(f"classes: expected {model.n_classes} labels (one per output of the model), "
                             f"got {describe(classes)}")
        if _unique_labels(classes, "classes").size != classes.size:
            raise ValueError(f"classes: expected distinct labels, got {classes.tolist()}")
        for name, value in (("hidden_layer_sizes", tuple(model.layer_sizes[1:-1])), ("dtype", model.dtype.name)):
            if name in params:
                raise TypeError(f"{name}: set by the model ({value!r}); do not pass it to from_mlp")
        estimator = cls(hidden_layer_sizes=tuple(model.layer_sizes[1:-1]), dtype=model.dtype.name, **params)
        order = np.argsort(classes, kind="stable")
        weights = model.get_weights()
        W, b = weights[-1]
        weights[-1] = (W[:, order], b[order])
        copy = MLP(model.layer_sizes, seed=model.seed, dtype=model.dtype)
        copy.set_weights(weights)
        estimator.n_features_in_ = model.n_features
        estimator._start(estimator._settings(), classes[order], model.dtype, model=copy)
        return estimator
