"""A scikit-learn classifier built on :class:`mlp.MLP` and :class:`mlp.Trainer`.

>>> from mlp import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(256,), epochs=20, random_state=0).fit(X, y)
>>> clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

The class derives from scikit-learn's ``BaseEstimator`` and ``ClassifierMixin``
and validates its parameters and data with scikit-learn's own utilities, so
``clone``, ``Pipeline``, ``GridSearchCV`` and ``check_estimator`` treat it as
one of scikit-learn's.  scikit-learn is the optional extra ``sklearn``.

Training runs one :meth:`mlp.Trainer.fit` epoch at a time and stops by
scikit-learn's rule (:meth:`MLPClassifier._record_epoch`).
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp.MLPClassifier needs scikit-learn: pip install 'numba-mlp[sklearn]'") from None

import copy
import json
import math
import sys
import warnings
from numbers import Integral, Real
from typing import Any, Sequence, Union

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted

from ._validation import FLOAT_DTYPE_NAMES, check_int, describe
from .backends import BACKEND_NAMES, Backend
from .model import MLP
from .optim import OPTIMIZERS, Optimizer, make_optimizer
from .trainer import Trainer

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 validates through a method of BaseEstimator
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["MLPClassifier", "ConvergenceWarning", "NotFittedError"]


class MLPClassifier(ClassifierMixin, BaseEstimator):
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
    tol, n_iter_no_change : float, default 1e-4; int, default 10
        scikit-learn's stopping rule: an epoch counts as no improvement when
        the training loss is not below ``best_loss_ - tol`` (with
        ``early_stopping``: the validation accuracy not above
        ``best_validation_score_ + tol``); training stops once more than
        ``n_iter_no_change`` such epochs have come in a row.
    early_stopping : bool, default False
        Hold out a stratified ``validation_fraction`` of the training data,
        stop on its accuracy, and end with the weights of the best epoch.
        ``partial_fit`` does not support it.
    validation_fraction : float, default 0.1
        In (0, 1); used only with ``early_stopping``.
    shuffle : bool, default True
        Shuffle the samples every epoch.
    warm_start : bool, default False
        ``fit`` continues from the fitted weights and stopping state instead
        of starting anew (with a fresh optimizer, as scikit-learn does).
    dtype : {"float32", "float64"} or None, default None
        Precision of the weights and of the computation.  None follows the
        training data, as scikit-learn does: float32 data train in float32,
        anything else in float64.  "float32" is the fast choice on a GPU.
    backend : {"auto", "numpy", "cuda"} or mlp.Backend, default "auto"
        Where to train: "auto" uses a usable CUDA GPU, else NumPy.
    random_state : None, int or numpy RandomState, default None
        Seeds the initial weights, the shuffling and the validation split.
        An int makes runs repeatable (bit for bit on the NumPy backend).
    verbose : bool or int, default False
        Print one line per epoch to stderr.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; output unit ``i`` scores ``classes_[i]``.
    n_features_in_, feature_names_in_
        Number of features seen in ``fit``, and their names when ``X`` was a
        DataFrame with string column names.
    n_iter_ : int
        Epochs trained so far (counted across ``warm_start`` fits and ``partial_fit`` calls).
    loss_, loss_curve_ : float, list of float
        Mean training cross-entropy of the last epoch, and of every epoch.
    best_loss_ : float or None
        Lowest entry of ``loss_curve_``; None with ``early_stopping``.
    validation_scores_, best_validation_score_ : list of float or None, float or None
        Validation accuracy of every epoch with ``early_stopping``, and the
        best of them; None without ``early_stopping``.
    coefs_, intercepts_ : lists of ndarray
        Host copies of each layer's weights, shape (in, out), and biases, shape (out,).
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "shuffle": ["boolean"],
        "warm_start": ["boolean"],
        "dtype": [StrOptions(set(FLOAT_DTYPE_NAMES)), None],
        "backend": [StrOptions(set(BACKEND_NAMES)), Backend],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

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

    # ------------------------------------------------------------ set-up
    def _layer_sizes(self) -> tuple[int, ...]:
        """``(n_features_in_, *hidden_layer_sizes, n_classes)`` as the parameters ask for them."""
        hidden = self.hidden_layer_sizes
        hidden = (hidden,) if isinstance(hidden, Integral) else tuple(hidden)
        hidden = tuple(check_int(h, f"hidden_layer_sizes[{i}]", minimum=1) for i, h in enumerate(hidden))
        return (self.n_features_in_, *hidden, self.classes_.size)

    def _make_optimizer(self) -> Optimizer:
        kwargs: dict[str, Any] = {"lr": self.learning_rate, "weight_decay": self.weight_decay}
        if self.optimizer == "sgd":
            kwargs["momentum"] = self.momentum
        return make_optimizer(self.optimizer, **kwargs)

    def _seed(self) -> int:
        return int(self._random_state.randint(2**31 - 1))

    def _start(self, classes: np.ndarray, dtype: np.dtype, model: MLP | None = None) -> None:
        """Fresh learned state for ``classes`` (sorted labels); the network is ``model``, or a new one."""
        if classes.size < 2:
            raise ValueError(f"y: a classifier needs at least 2 classes to learn, got 1 class "
                             f"({classes.tolist()[0]!r})")
        self.classes_ = classes
        self._random_state = check_random_state(self.random_state)
        self._model = model if model is not None else MLP(self._layer_sizes(), seed=self._seed(), dtype=dtype)
        self._optimizer: Optimizer | None = None
        self.n_iter_ = 0
        self.loss_curve_: list[float] = []
        self.loss_ = math.nan
        self._reset_stopping()

    def _reset_stopping(self) -> None:
        """The stopping state as scikit-learn initialises it, for the current ``early_stopping``."""
        self._no_improvement_count = 0
        self._best_weights: list | None = None
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _check_data(self, X: Any, y: Any, *, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """``X`` and ``y`` checked by scikit-learn; ``X`` as a C-contiguous float array.

        A new network takes the ``dtype`` parameter (None: float32 stays
        float32, the rest becomes float64); a fitted one, its own dtype.
        """
        dtype = self._model.dtype if not reset else [np.float64, np.float32] if self.dtype is None else self.dtype
        X, y = validate_data(self, X, y, reset=reset, dtype=dtype, order="C")
        check_classification_targets(y)
        return X, y

    def _prepare(self, X: Any, y: Any, first: bool, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Checked ``X`` and class indices of ``y``; starts a new network when ``first``, else checks the fitted one."""
        if not first:
            wanted = self._layer_sizes()
            dtype = self._model.dtype if self.dtype is None else np.dtype(self.dtype)
            if self._model.layer_sizes != wanted or self._model.dtype != dtype:
                raise ValueError(
                    f"the fitted network has layers {self._model.layer_sizes} ({self._model.dtype.name}), but "
                    f"the parameters ask for {wanted} ({dtype.name}); to continue training, keep "
                    "hidden_layer_sizes and dtype unchanged, or set warm_start=False to start a new network")
        X, y = self._check_data(X, y, reset=first)
        if first:
            self._start(unique_labels(y) if classes is None else classes, X.dtype)
        elif (self.validation_scores_ is not None) != self.early_stopping:
            self._reset_stopping()  # early_stopping was switched since the last fit
        return X, self._encode(y)

    def _encode(self, y: np.ndarray) -> np.ndarray:
        """Class indices (int64) of labels ``y``, all of which must be in :attr:`classes_`."""
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y: labels {np.unique(y[unknown]).tolist()[:10]} are not among the classes "
                             f"{self.classes_.tolist()}")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    # ------------------------------------------------------------ training
    def _trainer(self) -> Trainer:
        return Trainer(self._model, self._optimizer, backend=self.backend, batch_size=self.batch_size,
                       seed=self._seed())

    def _record_epoch(self, loss: float, validation_score: float | None = None) -> bool:
        """Record one epoch and apply scikit-learn's stopping rule; True when training should stop.

        As scikit-learn's ``_update_no_improvement_count``: the count of epochs
        without improvement grows unless the figure beats the best so far by
        more than ``tol`` (then it restarts at 0); the best so far moves on any
        improvement, however small.  Stop once the count exceeds ``n_iter_no_change``.
        """
        self.n_iter_ += 1
        self.loss_ = loss
        self.loss_curve_.append(loss)
        if validation_score is None:
            no_better = loss > self.best_loss_ - self.tol
            self._no_improvement_count = self._no_improvement_count + 1 if no_better else 0
            self.best_loss_ = min(self.best_loss_, loss)  # the best moves on any decrease
        else:
            self.validation_scores_.append(validation_score)
            no_better = validation_score < self.best_validation_score_ + self.tol
            self._no_improvement_count = self._no_improvement_count + 1 if no_better else 0
            if validation_score > self.best_validation_score_:
                self.best_validation_score_ = validation_score
                self._best_weights = self._model.get_weights()
        if self.verbose:
            scores = "" if validation_score is None else f"  validation accuracy {validation_score:.4f}"
            print(f"epoch {self.n_iter_}: loss {loss:.6f}{scores}", file=sys.stderr, flush=True)
        return self._no_improvement_count > self.n_iter_no_change

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> "MLPClassifier":
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,) of any type; returns ``self``.

        At most ``epochs`` epochs, fewer when the stopping rule (see ``tol``)
        ends training; ending at the limit emits a ``ConvergenceWarning``.
        """
        X, labels = self._prepare(X, y, first=not (self.warm_start and self.__sklearn_is_fitted__()))
        validation_data = None
        if self.early_stopping:
            X, X_val, labels, y_val = train_test_split(X, labels, test_size=self.validation_fraction,
                                                       stratify=labels, random_state=self._random_state)
            validation_data = (X_val, y_val)
        self._optimizer = self._make_optimizer()
        stopped = False

        def after_epoch(history) -> bool:
            nonlocal stopped
            record = history.records[-1]
            stopped = self._record_epoch(record["loss"], record["val_accuracy"] if self.early_stopping else None)
            return stopped

        # One fit for all epochs (on a GPU the epochs after the first replay one captured graph);
        # scikit-learn's stopping rule ends it from the epoch callback.
        self._trainer().fit(X, labels, epochs=self.epochs, validation_data=validation_data, shuffle=self.shuffle,
                            verbose=0, on_epoch_end=after_epoch)
        if not stopped:
            monitored = "validation accuracy" if self.early_stopping else "training loss"
            warnings.warn(
                f"{type(self).__name__}: stopped at the limit of epochs={self.epochs} while the {monitored} "
                f"was still improving by more than tol={self.tol:g}; the model may not have converged "
                "(raise epochs, or adjust learning_rate or tol)", ConvergenceWarning, stacklevel=2)
        if self.early_stopping:
            self._model.set_weights(self._best_weights)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "MLPClassifier":
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer state; returns ``self``.

        ``classes`` (every label the data will ever hold) is required on the
        first call, when the estimator is not fitted yet; later calls may omit
        it or must pass the same set.  The epoch counts towards the stopping
        state (``best_loss_``), but never stops training.
        """
        if self.early_stopping:
            raise ValueError("early_stopping: partial_fit does not support early_stopping=True (it holds out "
                             "no validation data); set early_stopping=False")
        first = not self.__sklearn_is_fitted__()
        if classes is not None:
            classes = unique_labels(classes)
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes: expected the classes of the earlier calls, {self.classes_.tolist()}, "
                                 f"got {classes.tolist()}")
        elif first:
            raise ValueError("classes: the first call to partial_fit must list every class (classes=...), "
                             "since later batches may hold labels this one lacks")
        X, labels = self._prepare(X, y, first, classes)
        fresh = self._make_optimizer()
        if type(fresh) is not type(self._optimizer) or fresh.get_config() != self._optimizer.get_config():
            self._optimizer = fresh  # the first call, or the optimizer's parameters changed since the last one
        history = self._trainer().fit(X, labels, epochs=1, shuffle=self.shuffle, verbose=0)
        self._record_epoch(history["loss"][0])
        return self

    # ------------------------------------------------------------ prediction
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def _logits(self, X: Any) -> np.ndarray:
        """The network's outputs for ``X``, shape (n_samples, n_classes), as float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self._model.dtype, order="C")
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
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each sample, shape (n_samples,), values from ``classes_``."""
        best = np.argmax(self._logits(X), axis=1)  # checks that the estimator is fitted
        return self.classes_[best]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Host copies of each layer's weight matrix, shape (in, out)."""
        check_is_fitted(self)
        return [W for W, _ in self._model.get_weights()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Host copies of each layer's bias vector, shape (out,)."""
        check_is_fitted(self)
        return [b for _, b in self._model.get_weights()]

    # ------------------------------------------------------------ conversions
    def to_mlp(self) -> MLP:
        """A copy of the fitted network as an :class:`mlp.MLP` on the host.

        Output unit ``i`` scores ``classes_[i]``; ``metadata["classes"]`` holds
        the labels when they can be written to a checkpoint (numbers, strings):
        ``model.save(path, metadata=model.metadata)`` keeps them, and
        :meth:`from_mlp` finds them there.
        """
        check_is_fitted(self)
        model = copy.deepcopy(self._model)  # MLP copies hold host parameters
        classes = self.classes_.tolist()
        try:
            json.dumps(classes)
        except TypeError:
            classes = None
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
        if unique_labels(classes).size != classes.size:
            raise ValueError(f"classes: expected distinct labels, got {classes.tolist()}")
        for name, value in (("hidden_layer_sizes", tuple(model.layer_sizes[1:-1])), ("dtype", model.dtype.name)):
            if name in params:
                raise TypeError(f"{name}: set by the model ({value!r}); do not pass it to from_mlp")
        estimator = cls(hidden_layer_sizes=tuple(model.layer_sizes[1:-1]), dtype=model.dtype.name, **params)
        order = np.argsort(classes, kind="stable")
        weights = model.get_weights()
        W, b = weights[-1]
        weights[-1] = (W[:, order], b[order])
        network = MLP(model.layer_sizes, seed=model.seed, dtype=model.dtype)
        network.set_weights(weights)
        estimator.n_features_in_ = model.n_features
        estimator._start(classes[order], model.dtype, model=network)
        return estimator
