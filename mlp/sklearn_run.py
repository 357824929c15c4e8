"""scikit-learn's stochastic fit ("sgd", "adam") as a policy of the epoch runner: :class:`StochasticRun`.

Everything of an ``MLPClassifier``/``MLPRegressor`` fit but the arithmetic:
the optimizer's rule and learning-rate schedules, the validation split, the
batch size, each epoch's shuffle (drawn from the estimator's random state as
scikit-learn draws it), the per-step L2 terms, the loss curve, the stopping
rule, the weights the fit ends with and the warnings.  The estimator's own
``fit`` runs it alone; a search or an ensemble runs many in one stack through
the seam at the end of the class (:meth:`StochasticRun.stack_key`,
:meth:`~StochasticRun.network`, :meth:`~StochasticRun.targets_of`,
:meth:`~StochasticRun.finish`).
"""

from __future__ import annotations

import math
import warnings
from itertools import chain
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from .backends import get_backend
from .backends.base import STATS_LOSS_SUM
from .model import MLP, output_activation
from .runner import EpochPlan, Policy
from .sparse import as_matrix


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

    def __init__(self, est: Any, X: np.ndarray, y: np.ndarray, sample_weight: Any, incremental: bool,
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
        #: the ``verbose`` lines of this fit: printed as they come (None), or kept here for the caller to print
        #: (a stack's fits run side by side: printed as they come, their lines would interleave)
        self.output: list[str] | None = None
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
            self._say("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))
        best = self._update_no_improvement_count(val_logits)
        self.improved |= best
        self._iteration_ends(est.t_)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive "
                   "epochs.")
            if self._trigger_stopping(msg):
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
                self._say("Validation score: %f" % score)
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

    def _say(self, line: str) -> None:
        """A ``verbose`` line, as scikit-learn prints it (see ``output``)."""
        if self.output is None:
            print(line)
        else:
            self.output.append(line)

    def _validation_score(self, val_logits: np.ndarray) -> float:
        est = self.est
        y_pred = est._decode(output_activation(val_logits, est.out_activation_))
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(est._score_function(self.y_val, y_pred, sample_weight=self.sw_val))

    def _iteration_ends(self, time_step: int) -> None:
        """scikit-learn's ``iteration_ends``: the ``invscaling`` schedule of SGD."""
        est = self.est
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            est._optimizer.lr = float(est.learning_rate_init) / (time_step + 1) ** est.power_t

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's ``trigger_stopping``: stop, except that SGD's ``adaptive`` schedule first divides the
        learning rate by 5 until it falls to 1e-6."""
        est = self.est
        if est.solver != "sgd" or est.learning_rate != "adaptive":
            if est.verbose:
                self._say(msg + " Stopping.")
            return True
        if est._optimizer.lr <= 1e-6:
            if est.verbose:
                self._say(msg + " Learning rate too small. Stopping.")
            return True
        est._optimizer.lr /= 5.0
        if est.verbose:
            self._say(msg + " Setting learning rate to %f" % est._optimizer.lr)
        return False

    # ------------------------------------------------ the seam a stack uses
    def stack_key(self) -> tuple:
        """What the fits of one stack share: the network's shape (layer sizes, activation, output, dtype), the
        optimizer's rule and launch flags, the batch size and steps per epoch, the classes (their encoding of
        the targets), whether samples are weighted, and the backend."""
        est = self.est
        return (type(est), tuple(np.shape(c) for c in est.coefs_), est.activation, est.out_activation_,
                np.asarray(est.coefs_[0]).dtype.str, est._optimizer.group_key(), self.batch_size, self.steps,
                None if not hasattr(est, "classes_") else repr(np.asarray(est.classes_).tolist()),
                self.sw_train is not None, str(est.backend))

    def network(self, backend: Any) -> MLP:
        """The fit's network at its initial weights, on ``backend``."""
        est = self.est
        return est._network(np.asarray(est.coefs_[0]).dtype, backend)

    @property
    def optimizer(self) -> Any:
        """The fit's optimizer (its rule, hyperparameters, schedule and state)."""
        return self.est._optimizer

    def targets_of(self, y: Any) -> np.ndarray:
        """What the loss trains on for labels or targets ``y`` of the whole data set (encoded as this fit
        encodes its own: the classes it saw)."""
        est = self.est
        dtype = np.asarray(est.coefs_[0]).dtype
        if is_classifier(est):
            y_all = est._label_binarizer.transform(np.asarray(y))
            y_all = y_all.reshape(len(y_all), -1)
        else:
            y_all = np.asarray(y, dtype=dtype).reshape(np.shape(y)[0], -1)
        return est._targets(y_all, dtype)

    def finish(self, params: np.ndarray, backend: Any) -> None:
        """End the fit with the flat parameters ``params`` (host): the estimator's weights, as its own fit ends
        (raises what that raises: non-finite weights)."""
        est = self.est
        model = self.network(get_backend("numpy"))
        model.backend.copy_(model.params, params)
        est._store(model.to(backend))
        if self.early_stopping:
            est._best_coefs, est._best_intercepts = est.coefs_, est.intercepts_
        est._end_fit()
