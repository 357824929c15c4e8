"""Hyperparameter searches and ensembles of ``mlp.MLPClassifier``/``MLPRegressor`` whose fits train together.

>>> from mlp import GridSearchCV, MLPClassifier
>>> search = GridSearchCV(MLPClassifier(max_iter=100), {"alpha": [1e-5, 1e-4, 1e-3],
...                                                     "learning_rate_init": [1e-3, 3e-3]}, cv=5)
>>> search.fit(X, y).best_params_

``mlp.GridSearchCV`` and ``mlp.RandomizedSearchCV`` are scikit-learn's
(same parameters, same ``cv_results_``, ``best_params_``, ``best_score_``,
``best_estimator_``, ``refit``, ``scoring``, any splitter as ``cv``), with
one difference in how the fits run: before scikit-learn's search loop
starts, every fit it will make (each candidate on each training fold) is
made at once by :func:`fit_many`, which trains the networks of one shape as
one stack (:mod:`mlp.stack`): one copy of the data on the device, each
model with its own rows, seed, hyperparameters and stopping.  The search
loop then finds each fit already made (same parameters, same data) and
only scores it.  Each stacked model ends with the weights its own fit would
have, so the results are those of scikit-learn's search over these
estimators one fit at a time.  Anything the stack cannot train (``lbfgs``,
an estimator inside a ``Pipeline``) simply trains in the search loop as
usual; the fits of a sparse X train one at a time, each batch by batch on
the sparse rows (a stack's batches are dense), with one
:class:`SparseInputWarning`.

``MLPEnsembleClassifier``/``MLPEnsembleRegressor`` train ``n_estimators``
copies of a network with different seeds (and bootstrap samples, if asked)
as one stack, and average their probabilities or predictions.

Large searches are split into chunks that fit the device's memory (a
warning says so); chunks are dispatched through joblib (``n_jobs``), so
``with joblib.parallel_backend("dask"):`` spreads them over a Dask
cluster's workers.
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp's searches and ensembles need scikit-learn: pip install 'numba-mlp[sklearn]'") from None

import contextlib
import math
import numbers
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .backends import Backend, get_backend
from .estimator import (_STOCHASTIC_SOLVERS, MLPClassifier, MLPRegressor, StochasticRun, _BaseMLP, _dense,
                        fit_fingerprint, serving_prefitted)
from .model import MLP
from .sparse import as_matrix, is_sparse
from .stack import StackedLoop, StackedNetwork, _optimizer_kind

__all__ = ["GridSearchCV", "RandomizedSearchCV", "MLPEnsembleClassifier", "MLPEnsembleRegressor", "fit_many",
           "StackSplitWarning", "SparseInputWarning"]


class StackSplitWarning(UserWarning):
    """A set of fits did not fit the device's memory as one stack and was split into several."""


# ---------------------------------------------------------------------------------------------------------
# Fitting many estimators at once
# ---------------------------------------------------------------------------------------------------------
def _model_bytes(est: _BaseMLP, layer_units: Sequence[int], batch: int, itemsize: int) -> int:
    """Device memory one model of a stack needs: parameters, gradients and two state buffers, and its
    batch's activations, their gradients and inputs."""
    params = sum(k * n + n for k, n in zip(layer_units[:-1], layer_units[1:]))
    acts = batch * (sum(layer_units) + sum(layer_units[1:]))
    return itemsize * (4 * params + 2 * acts)


def _memory_budget(backend: Backend) -> int:
    """Bytes a stack may use: half the free device memory on a GPU, a quarter of the RAM on the host."""
    if backend.name == "cuda":
        try:
            from numba import cuda

            return int(cuda.current_context().get_memory_info().free) // 2
        except Exception:  # the simulator reports no memory: the host's budget applies
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def fit_many(estimators: Sequence[_BaseMLP], X: Any, y: Any, rows: Sequence[np.ndarray],
             sample_weight: Any = None, *, n_jobs: int | None = None, max_stack: int | None = None,
             progress: bool | None = None) -> list[_BaseMLP]:
    """Fit ``estimators[i]`` on the rows ``rows[i]`` of ``(X, y)``; returns the fitted estimators.

    The result is what ``estimators[i].fit(X[rows[i]], y[rows[i]], sample_weight[rows[i]])`` gives, but
    the "sgd"/"adam" fits that share a network shape (layer sizes, activation, output, dtype, solver,
    batch size and batches per epoch) train as one stack.  ``max_stack`` caps the models of a stack (default:
    what fits half the free device memory, or a quarter of the RAM).  Stacks are dispatched through joblib
    with ``n_jobs`` workers (each shape's stack is split so that every worker has one); inside
    ``joblib.parallel_backend("dask")`` they run on a Dask cluster.  ``progress`` shows a bar per stack over
    its models' epochs with the lowest training loss so far (default: on a terminal, without workers).
    A sparse X (CSR, or converted to CSR once) is never densified: its fits train one at a time, shared out
    among the workers, with one :class:`SparseInputWarning`.
    """
    estimators = list(estimators)
    if len(rows) != len(estimators):
        raise ValueError(f"rows: expected one index array per estimator ({len(estimators)}), got {len(rows)}")
    for i, est in enumerate(estimators):
        if not isinstance(est, _BaseMLP):
            raise TypeError(f"estimators[{i}]: expected an mlp.MLPClassifier or mlp.MLPRegressor, "
                            f"got {type(est).__name__}")
    if max_stack is not None and (not isinstance(max_stack, numbers.Integral) or max_stack < 1):
        raise ValueError(f"max_stack: expected None or an integer >= 1, got {max_stack!r}")
    rows = [np.asarray(r, dtype=np.int64) for r in rows]
    workers = effective_n_jobs(n_jobs)
    if is_sparse(X):
        X = as_matrix(X)  # CSR once (a CSC X would be indexed by rows for every fit)
        chunks = _sparse_chunks(estimators, workers)
    else:
        chunks = _plan_chunks(estimators, X, rows, max_stack, workers)
    if progress is None:
        progress = sys.stderr.isatty()
    show = bool(progress) and workers == 1  # one bar per chunk, shown where it trains
    # the cores left to each worker step ranges of a stack's models in threads (host backends)
    threads = max(1, (os.cpu_count() or 1) // workers)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_chunk)([estimators[i] for i in chunk], X, y, [rows[i] for i in chunk], sample_weight, show,
                            threads)
        for chunk in chunks)
    fitted: list[Any] = [None] * len(estimators)
    for chunk, done in zip(chunks, results):
        for i, est in zip(chunk, done):
            fitted[i] = est
    return fitted


class SparseInputWarning(UserWarning):
    """Fits of a sparse X train one at a time: a stack's batches are dense."""


def _sparse_chunks(estimators: Sequence[_BaseMLP], workers: int) -> list[list[int]]:
    """A sparse X: every fit trains on its own, batch by batch and never densified (a stack gathers dense
    batches of every model, so X would be densified); the fits are shared out among the workers.  One
    warning says so when some fit could otherwise have been stacked."""
    if any(est.solver in _STOCHASTIC_SOLVERS for est in estimators) and len(estimators) > 1:
        warnings.warn(f"X is sparse: its {len(estimators)} fits train one at a time, each batch by batch on the "
                      "sparse rows, instead of as stacks (a stack's batches are dense: X would be densified)",
                      SparseInputWarning, stacklevel=3)
    return [list(map(int, c)) for c in np.array_split(np.arange(len(estimators)), min(workers, len(estimators)))
            if len(c)]


def _plan_chunks(estimators: Sequence[_BaseMLP], X: Any, rows: Sequence[np.ndarray], max_stack: int | None,
                 workers: int) -> list[list[int]]:
    """Indices of ``estimators`` in chunks: fits of one network shape together, split so that each chunk fits
    the memory budget (a warning says so when that splits a shape) and every worker gets a share."""
    n_features = np.shape(X)[1]
    shapes: dict[tuple, list[int]] = {}
    for i, est in enumerate(estimators):
        if est.solver not in _STOCHASTIC_SOLVERS:
            shapes.setdefault(("alone", i), []).append(i)
            continue
        batch = min(200, len(rows[i])) if est.batch_size == "auto" else min(int(est.batch_size), len(rows[i]))
        key = (type(est), tuple(est._hidden_sizes()), est.activation, est.solver, batch, str(est.dtype),
               str(est.backend))
        shapes.setdefault(key, []).append(i)
    chunks, split = [], False
    for key, members in shapes.items():
        if key[0] == "alone":
            chunks.append(members)
            continue
        est = estimators[members[0]]
        budget = _memory_budget(get_backend(est.backend)) - int(np.prod(np.shape(X))) * 8
        size = _model_bytes(est, [n_features, *est._hidden_sizes(), 10], key[4], 8)
        cap = max(1, budget // max(size, 1))
        if max_stack is not None:
            cap = min(cap, max_stack)
        parts = max(-(-len(members) // cap), min(workers, len(members)))
        split |= -(-len(members) // cap) > 1
        chunks.extend(np.array_split(np.asarray(members), parts))
    chunks = [list(map(int, c)) for c in chunks if len(c)]
    if split:
        warnings.warn(f"{len(estimators)} fits need more memory than one stack may use"
                      + ("" if max_stack is None else f" (or more than max_stack={max_stack} models)")
                      + f": training them as {len(chunks)} stacks", StackSplitWarning, stacklevel=3)
    return chunks


def _fit_chunk(estimators: list[_BaseMLP], X: Any, y: Any, rows: list[np.ndarray], sample_weight: Any,
               progress: bool, threads: int = 1) -> list[_BaseMLP]:
    """Fit a chunk's estimators: the stochastic ones grouped into stacks, any other one on its own."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(e.max_iter for e in estimators), unit="epoch", leave=False,
                   desc=f"{len(estimators)} models x epochs", file=sys.stderr, dynamic_ncols=True)
    groups: dict[tuple, list] = {}
    for est, r in zip(estimators, rows):
        Xm, ym = _safe_indexing(X, r), _safe_indexing(y, r)
        swm = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), r)
        if est.solver not in _STOCHASTIC_SOLVERS or is_sparse(Xm):  # on its own (see _sparse_chunks)
            est.fit(Xm, ym, sample_weight=swm)
            if bar is not None:
                bar.update(est.max_iter)
            continue
        Xv, yv, swv, dtype = est._begin_fit(Xm, ym, swm, incremental=False)
        run = StochasticRun(est, Xv, yv, swv, False, dtype)
        key = (type(est), tuple(np.shape(c) for c in est.coefs_), est.activation, est.out_activation_,
               np.dtype(dtype).str, _optimizer_kind(est._optimizer), run.batch_size, run.steps,
               None if not hasattr(est, "classes_") else repr(np.asarray(est.classes_).tolist()),
               swv is not None, str(est.backend))
        groups.setdefault(key, []).append((est, run, r))
    best_loss = math.inf
    for members in groups.values():
        best_loss = min(best_loss, _train_stack(members, X, y, bar, threads))
    if bar is not None:
        bar.close()
    return estimators


def _train_stack(members: list[tuple[_BaseMLP, StochasticRun, np.ndarray]], X: Any, y: Any, bar: Any,
                 threads: int = 1) -> float:
    """Train one stack to the end of every member's fit; returns the lowest training loss reached.

    With ``threads`` > 1 on a host backend, ranges of the models step in threads, each product on one
    BLAS thread (many small products gain more from a core each than from two cores sharing each)."""
    ests = [m[0] for m in members]
    runs = [m[1] for m in members]
    first = ests[0]
    dtype = np.asarray(first.coefs_[0]).dtype
    backend = get_backend(first.backend)
    host = get_backend("numpy")
    X_all = _dense(_as_matrix(X), dtype)
    if is_classifier(first):
        y_all = first._label_binarizer.transform(np.asarray(y))
        y_all = y_all.reshape(len(y_all), -1)
    else:
        y_all = np.asarray(y, dtype=dtype).reshape(np.shape(y)[0], -1)
    targets = first._targets(y_all, dtype)
    net = StackedNetwork([e._network(dtype, host) for e in ests], backend)
    loop = StackedLoop(net, [e._optimizer for e in ests], backend, backend.asarray(X_all, dtype=dtype),
                       backend.asarray(targets), runs[0].batch_size, runs[0].steps,
                       weighted=runs[0].sw_train is not None, l2_penalty=any(e.alpha > 0 for e in ests),
                       threads=threads)
    train_rows = [r[run.train_rows] for (_, run, r) in members]
    val_rows = [None if run.val_rows is None else r[run.val_rows] for (_, run, r) in members]
    best: list[np.ndarray | None] = [None] * len(ests)
    lowest = math.inf
    blas: Any = contextlib.nullcontext()
    if len(loop.parts) > 1:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(limits=1, user_api="blas")
    try:
        with blas:
            while not all(run.done for run in runs):
                epoch_lowest, ran = _stack_epoch(loop, net, ests, runs, train_rows, val_rows, best)
                lowest = min(lowest, epoch_lowest)
                if bar is not None:
                    bar.update(ran)
                    bar.set_postfix_str(f"best loss {lowest:.4g}", refresh=False)
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")
    finally:
        loop.close()
    final = net.params_numpy()
    for m, (est, run) in enumerate(zip(ests, runs)):
        model = MLP(net.layer_sizes, dtype=dtype, activation=net.activation, output=net.output)
        if run.early_stopping and run.improved:
            model.backend.copy_(model.params, best[m])
        elif run.early_stopping:
            model.set_weights(list(zip(est._best_coefs, est._best_intercepts)))
        else:
            model.backend.copy_(model.params, final[m])
        est._store(model.to(backend))
        if run.early_stopping:
            est._best_coefs, est._best_intercepts = est.coefs_, est.intercepts_
        est._end_fit()
    if bar is not None:  # the epochs the models that stopped early did not need
        bar.update(sum(max(0, est.max_iter - est.n_iter_) for est in ests))
    return lowest


def _stack_epoch(loop: StackedLoop, net: StackedNetwork, ests: list[_BaseMLP], runs: list[StochasticRun],
                 train_rows: list[np.ndarray], val_rows: list[np.ndarray | None], best: list) -> tuple[float, int]:
    """One epoch of every member still training: plan, stage, run, record; returns the lowest loss and how
    many members trained."""
    orders, decays, penalties, weights = [], [], [], []
    for m, run in enumerate(runs):
        if run.done:
            orders.append(None), decays.append(None), penalties.append(None), weights.append(None)
            continue
        order, decay, penalty = run.plan_epoch()
        orders.append(train_rows[m][order])
        decays.append(decay)
        penalties.append(penalty)
        weights.append(None if run.sw_train is None else run.sw_train[order])
    loop.stage(orders, decays, penalties, weights if loop.weights is not None else None)
    sums = loop.epoch()
    wanted = [val_rows[m] if orders[m] is not None and runs[m].early_stopping else None for m in range(len(runs))]
    logits = loop.logits(wanted) if any(w is not None for w in wanted) else [None] * len(runs)
    params, lowest = None, math.inf
    for m, run in enumerate(runs):
        if orders[m] is None:
            continue
        if run.end_epoch(float(sums[m]), logits[m]):
            params = net.params_numpy() if params is None else params
            best[m] = params[m].copy()
        lowest = min(lowest, ests[m].loss_)
    return lowest, sum(o is not None for o in orders)


def _as_matrix(X: Any) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(X):
        return X.toarray()
    return np.asarray(X)


# ---------------------------------------------------------------------------------------------------------
# Searches
# ---------------------------------------------------------------------------------------------------------
class _StackedSearch:
    """What mlp's searches add to scikit-learn's: every fit made up front by :func:`fit_many`."""

    def _stacked_fit(self, sk_fit, X: Any, y: Any = None, **params: Any):
        estimator = self.estimator
        if not isinstance(estimator, _BaseMLP):
            return sk_fit(X, y, **params)
        groups = params.get("groups")
        sample_weight = params.get("sample_weight")
        cv = check_cv(self.cv, y, classifier=is_classifier(estimator))
        splits = [(np.asarray(train), np.asarray(test)) for train, test in cv.split(X, y, groups)]
        saved = {"cv": self.cv, "n_jobs": self.n_jobs}
        fixed_seed = self._fix_candidates()
        try:
            candidates = list(self._candidate_list())
            jobs, job_rows = [], []
            for cand in candidates:
                for train, _ in splits:
                    jobs.append(clone(estimator).set_params(**cand))
                    job_rows.append(train)
            fitted = fit_many(jobs, X, y, job_rows, sample_weight, n_jobs=self.n_jobs,
                              progress=self.verbose > 0 if self.verbose else None)
            table = {}
            for est, train in zip(fitted, job_rows):
                sw = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), train)
                table[fit_fingerprint(est, _safe_indexing(X, train), _safe_indexing(y, train), sw)] = est
            # scikit-learn's loop over the same splits (a list) finds every fit made; nothing to parallelise
            self.cv, self.n_jobs = splits, None
            with serving_prefitted(table):
                return sk_fit(X, y, **params)
        finally:
            self.cv, self.n_jobs = saved["cv"], saved["n_jobs"]
            if fixed_seed is not None:
                self.random_state = fixed_seed

    def _fix_candidates(self) -> Any:
        return None


class GridSearchCV(_StackedSearch, _SkGridSearchCV):
    """scikit-learn's ``GridSearchCV``; over an ``mlp.MLPClassifier``/``MLPRegressor`` every candidate on
    every fold trains at once, stacked (see :mod:`mlp.search`).  Same parameters, same results."""

    def _candidate_list(self):
        from sklearn.model_selection import ParameterGrid

        return ParameterGrid(self.param_grid)

    def fit(self, X: Any, y: Any = None, **params: Any) -> "GridSearchCV":
        """As scikit-learn's ``GridSearchCV.fit`` (``groups``, ``sample_weight`` and other fit parameters
        included); returns ``self``."""
        return self._stacked_fit(super().fit, X, y, **params)


class RandomizedSearchCV(_StackedSearch, _SkRandomizedSearchCV):
    """scikit-learn's ``RandomizedSearchCV``; over an ``mlp.MLPClassifier``/``MLPRegressor`` every sampled
    candidate on every fold trains at once, stacked (see :mod:`mlp.search`).

    A ``random_state`` that is None or a ``RandomState`` is turned into one integer seed per ``fit``, so
    that the candidates trained up front are those the search evaluates.
    """

    def _candidate_list(self):
        from sklearn.model_selection import ParameterSampler

        return ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)

    def _fix_candidates(self) -> Any:
        if isinstance(self.random_state, numbers.Integral):
            return None
        saved = self.random_state
        self.random_state = int(check_random_state(saved).randint(np.iinfo(np.int32).max))
        return saved

    def fit(self, X: Any, y: Any = None, **params: Any) -> "RandomizedSearchCV":
        """As scikit-learn's ``RandomizedSearchCV.fit``; returns ``self``."""
        return self._stacked_fit(super().fit, X, y, **params)


# ---------------------------------------------------------------------------------------------------------
# Ensembles
# ---------------------------------------------------------------------------------------------------------
class _BaseEnsemble(BaseEstimator):
    def __init__(self, estimator: Any = None, n_estimators: int = 10, *, bootstrap: bool = False,
                 max_samples: float | int | None = None, random_state: Any = None, n_jobs: int | None = None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.bootstrap = bootstrap
        self.max_samples = max_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _members(self, X: Any, y: Any, sample_weight: Any) -> None:
        if not isinstance(self.n_estimators, numbers.Integral) or self.n_estimators < 1:
            raise ValueError(f"n_estimators: expected an integer >= 1, got {self.n_estimators!r}")
        base = self.estimator if self.estimator is not None else self._default()
        if not isinstance(base, _BaseMLP):
            raise TypeError(f"estimator: expected an mlp.MLPClassifier or mlp.MLPRegressor, got "
                            f"{type(base).__name__}")
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=None,
                             ensure_all_finite=True)
        n = np.shape(X)[0]
        rs = check_random_state(self.random_state)
        size = n
        if self.max_samples is not None:
            size = int(self.max_samples * n) if isinstance(self.max_samples, float) else int(self.max_samples)
            if not 1 <= size <= n:
                raise ValueError(f"max_samples: expected a fraction in (0, 1] or a count in [1, {n}], got "
                                 f"{self.max_samples!r}")
        members, rows = [], []
        for _ in range(self.n_estimators):
            seed = int(rs.randint(np.iinfo(np.int32).max))
            members.append(clone(base).set_params(random_state=seed))
            rows.append(rs.randint(0, n, size) if self.bootstrap else
                        (np.sort(rs.permutation(n)[:size]) if size < n else np.arange(n)))
        self.estimators_ = fit_many(members, X, y, rows, sample_weight, n_jobs=self.n_jobs)
        self.estimators_samples_ = rows
        self.n_features_in_ = np.shape(X)[1]


class MLPEnsembleClassifier(ClassifierMixin, _BaseEnsemble):
    """``n_estimators`` copies of an ``mlp.MLPClassifier`` (default: its defaults), each with its own seed and,
    with ``bootstrap=True``, its own bootstrap sample (``max_samples`` rows), trained at once as a stack;
    ``predict_proba`` averages the members' probabilities."""

    @staticmethod
    def _default() -> _BaseMLP:
        return MLPClassifier()

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPEnsembleClassifier":
        """Fit every member; returns ``self``."""
        self._members(X, y, sample_weight)
        classes = [tuple(np.asarray(e.classes_).tolist()) for e in self.estimators_]
        if len(set(classes)) != 1:
            raise ValueError("y: the members saw different classes (a bootstrap sample missed a class); use "
                             "more samples per member (max_samples) or bootstrap=False")
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' class probabilities, averaged: (n_samples, n_classes)."""
        check_is_fitted(self)
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """The class of highest average probability."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class MLPEnsembleRegressor(RegressorMixin, _BaseEnsemble):
    """``n_estimators`` copies of an ``mlp.MLPRegressor`` (default: its defaults), each with its own seed and,
    with ``bootstrap=True``, its own bootstrap sample, trained at once as a stack; predictions are averaged."""

    @staticmethod
    def _default() -> _BaseMLP:
        return MLPRegressor()

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPEnsembleRegressor":
        """Fit every member; returns ``self``."""
        self._members(X, y, sample_weight)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The members' predictions, averaged."""
        check_is_fitted(self)
        return np.mean([e.predict(X) for e in self.estimators_], axis=0)
