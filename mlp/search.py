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

A fit fails on its own, as it would one fit at a time (parameters its
``fit`` rejects, a validation set too small, weights that became
non-finite): the other networks of its stack train on, and the search loop
finds, for that fit, the exception it raised, which scikit-learn's own
error handling turns into ``error_score``, a ``FitFailedWarning`` or, with
``error_score="raise"``, the error itself.  Each fit made up front serves
one fit of the loop, so duplicate candidates drawn from
``random_state=None`` get fits of their own, as in scikit-learn.

``MLPEnsembleClassifier``/``MLPEnsembleRegressor`` train ``n_estimators``
copies of a network with different seeds (and bootstrap samples, if asked)
as one stack, and average their probabilities or predictions.

Large searches are split into chunks that fit the device's memory (a
warning says so); chunks are dispatched through joblib (``n_jobs``, by
scikit-learn's ``Parallel``: the workers apply the caller's warning filters
and scikit-learn configuration), so ``with joblib.parallel_backend("dask"):``
spreads them over a Dask cluster's workers.
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
from joblib import effective_n_jobs
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.parallel import Parallel, delayed  # joblib's, passing on scikit-learn's config and warning filters
from sklearn.utils.validation import check_is_fitted, validate_data

from .backends import Backend, get_backend
from .estimator import (_STOCHASTIC_SOLVERS, MLPClassifier, MLPRegressor, StochasticRun, _BaseMLP, _dense,
                        fit_fingerprint, serving_prefitted)
from .model import MLP
from .loop import TrainingLoop
from .network import Networks
from .runner import train
from .sparse import as_matrix, is_sparse

__all__ = ["GridSearchCV", "RandomizedSearchCV", "MLPEnsembleClassifier", "MLPEnsembleRegressor", "fit_many",
           "StackSplitWarning", "StackingWarning", "SparseInputWarning"]


#: the environment variable that sets how many threads each worker's stacks step in on a host backend
STACK_THREADS_ENV = "MLP_STACK_THREADS"


def stack_threads(workers: int) -> int:
    """Threads each of ``workers`` worker processes steps a stack's models in (ranges of the models, on a host
    backend): ``MLP_STACK_THREADS`` when set, else the cores left to each worker (at least one)."""
    value = os.environ.get(STACK_THREADS_ENV, "").strip()
    if not value:
        return max(1, (os.cpu_count() or 1) // workers)
    threads = int(value) if value.isdigit() else 0
    if threads < 1:
        raise ValueError(f"{STACK_THREADS_ENV}: expected a whole number of threads >= 1, got {value!r}")
    return threads


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


def fit_many(estimators: Sequence[_BaseMLP], X: Any, y: Any, rows: Sequence[np.ndarray],
             sample_weight: Any = None, *, n_jobs: int | None = None, max_stack: int | None = None,
             progress: bool | None = None, return_exceptions: bool = False) -> list[Any]:
    """Fit ``estimators[i]`` on the rows ``rows[i]`` of ``(X, y)``; returns the fitted estimators.

    The result is what ``estimators[i].fit(X[rows[i]], y[rows[i]], sample_weight[rows[i]])`` gives, but
    the "sgd"/"adam" fits that share a network shape (layer sizes, activation, output, dtype, solver,
    batch size and batches per epoch) train as one stack.  ``max_stack`` caps the models of a stack (default:
    what fits half the free device memory, or a quarter of the RAM).  Stacks are dispatched through joblib
    with ``n_jobs`` workers (each shape's stack is split so that every worker has one); inside
    ``joblib.parallel_backend("dask")`` they run on a Dask cluster.  ``progress`` shows a bar per stack over
    its models' epochs with the lowest training loss so far (default: on a terminal, without workers).
    On a host backend each worker steps ranges of a stack's models in threads: as many as the cores left to
    it, or the environment variable ``MLP_STACK_THREADS`` (:func:`stack_threads`).
    The workers apply the caller's warning filters and scikit-learn configuration.
    A sparse X (CSR, or converted to CSR once) is never densified: its fits train one at a time, shared out
    among the workers, with one :class:`SparseInputWarning`.

    Each fit succeeds or fails on its own, as its own ``fit`` would: one that raises (parameters its ``fit``
    rejects, a validation set too small, weights that became non-finite) leaves every other fit, those of its
    stack included, to finish.  Then the first failed fit's exception (in the order of ``estimators``) is
    raised; with ``return_exceptions=True`` it takes that estimator's place in the returned list instead.
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
    outcomes = _fit_datasets(estimators, [(X, y, sample_weight)], [0] * len(estimators), rows, n_jobs, max_stack,
                             progress)
    if not return_exceptions:
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return outcomes


def _fit_datasets(estimators: Sequence[_BaseMLP], datasets: Sequence[tuple], which: Sequence[int],
                  rows: Sequence[np.ndarray], n_jobs: int | None, max_stack: int | None, progress: bool | None,
                  stacklevel: int = 4) -> list[Any]:
    """Fit ``estimators[i]`` on the rows ``rows[i]`` of ``datasets[which[i]]`` (an ``(X, y, sample_weight)``),
    the fits of one dataset and one network shape stacked; returns each fit's outcome (the fitted estimator or
    the exception its fit raised).  Stacks of every dataset go through one joblib dispatch."""
    workers = effective_n_jobs(n_jobs)
    # with fewer datasets than workers, each dataset's stacks are split so that every worker has one
    split_for = workers if len(datasets) < workers else 1
    chunks: list[tuple[int, list[int]]] = []
    datasets = list(datasets)
    for d, (X, y, sw) in enumerate(datasets):
        members = [i for i in range(len(estimators)) if which[i] == d]
        if is_sparse(X):
            datasets[d] = (as_matrix(X), y, sw)  # CSR once (a CSC X would be indexed by rows for every fit)
            planned = _sparse_chunks([estimators[i] for i in members], split_for, stacklevel)
        else:
            planned = _plan_chunks([estimators[i] for i in members], X, [rows[i] for i in members], max_stack,
                                   split_for, stacklevel)
        chunks.extend((d, [members[j] for j in chunk]) for chunk in planned)
    if progress is None:
        progress = sys.stderr.isatty()
    show = bool(progress) and workers == 1  # one bar per chunk, shown where it trains
    threads = stack_threads(workers)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_chunk)([estimators[i] for i in chunk], datasets[d][0], datasets[d][1], [rows[i] for i in chunk],
                            datasets[d][2], show, threads)
        for d, chunk in chunks)
    outcomes: list[Any] = [None] * len(estimators)
    for (_, chunk), done in zip(chunks, results):
        for i, outcome in zip(chunk, done):
            outcomes[i] = outcome
    return outcomes


class SparseInputWarning(UserWarning):
    """Fits of a sparse X train one at a time: a stack's batches are dense."""


def _sparse_chunks(estimators: Sequence[_BaseMLP], workers: int, stacklevel: int = 5) -> list[list[int]]:
    """A sparse X: every fit trains on its own, batch by batch and never densified (a stack gathers dense
    batches of every model, so X would be densified); the fits are shared out among the workers.  One
    warning says so when some fit could otherwise have been stacked."""
    if any(est.solver in _STOCHASTIC_SOLVERS for est in estimators) and len(estimators) > 1:
        warnings.warn(f"X is sparse: its {len(estimators)} fits train one at a time, each batch by batch on the "
                      "sparse rows, instead of as stacks (a stack's batches are dense: X would be densified)",
                      SparseInputWarning, stacklevel=stacklevel)
    return [list(map(int, c)) for c in np.array_split(np.arange(len(estimators)), min(workers, len(estimators)))
            if len(c)]


def _plan_chunks(estimators: Sequence[_BaseMLP], X: Any, rows: Sequence[np.ndarray], max_stack: int | None,
                 workers: int, stacklevel: int = 5) -> list[list[int]]:
    """Indices of ``estimators`` in chunks: fits of one network shape together, split so that each chunk fits
    the memory budget (a warning says so when that splits a shape) and every worker gets a share."""
    n_features = np.shape(X)[1]
    shapes: dict[tuple, list[int]] = {}
    for i, est in enumerate(estimators):
        try:
            key = _stack_shape(est, len(rows[i]))
        except Exception:  # parameters its fit rejects: it fails on its own, as its fit does, in _fit_chunk
            key = None
        shapes.setdefault(("alone", i) if key is None else key, []).append(i)
    chunks, split = [], False
    for key, members in shapes.items():
        if key[0] == "alone":
            chunks.append(members)
            continue
        est = estimators[members[0]]
        budget = get_backend(est.backend).memory_budget() - int(np.prod(np.shape(X))) * 8
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
                      + f": training them as {len(chunks)} stacks", StackSplitWarning, stacklevel=stacklevel)
    return chunks


def _stack_shape(est: _BaseMLP, n_rows: int) -> tuple | None:
    """What the fits of one stack share before their data is seen (None: a fit that trains alone); raises
    what reading parameters that ``fit`` rejects raises."""
    if est.solver not in _STOCHASTIC_SOLVERS:
        return None
    get_backend(est.backend)
    batch = min(200, n_rows) if est.batch_size == "auto" else min(int(est.batch_size), n_rows)
    return (type(est), tuple(est._hidden_sizes()), est.activation, est.solver, batch, str(est.dtype),
            str(est.backend))


def _fit_chunk(estimators: list[_BaseMLP], X: Any, y: Any, rows: list[np.ndarray], sample_weight: Any,
               progress: bool, threads: int = 1) -> list[Any]:
    """Fit a chunk's estimators: the stochastic ones grouped into stacks, any other one on its own.  Returns each
    one's outcome: the fitted estimator, or the exception its fit raised."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(e.max_iter for e in estimators), unit="epoch", leave=False,
                   desc=f"{len(estimators)} models x epochs", file=sys.stderr, dynamic_ncols=True)
    outcomes: list[Any] = list(estimators)
    groups: dict[tuple, list] = {}
    for i, (est, r) in enumerate(zip(estimators, rows)):
        Xm, ym = _safe_indexing(X, r), _safe_indexing(y, r)
        swm = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), r)
        try:
            if est.solver not in _STOCHASTIC_SOLVERS or is_sparse(Xm):  # on its own (see _sparse_chunks)
                est.fit(Xm, ym, sample_weight=swm)
                if bar is not None:
                    bar.update(est.max_iter)
                continue
            run = est._begin_stochastic_fit(Xm, ym, swm)
        except Exception as exc:  # what this fit raises on its own; the others go on
            outcomes[i] = exc
            continue
        key = (type(est), tuple(np.shape(c) for c in est.coefs_), est.activation, est.out_activation_,
               np.asarray(est.coefs_[0]).dtype.str, est._optimizer.group_key(), run.batch_size, run.steps,
               None if not hasattr(est, "classes_") else repr(np.asarray(est.classes_).tolist()),
               run.sw_train is not None, str(est.backend))
        groups.setdefault(key, []).append((i, est, run, r))
    best_loss = math.inf
    with config_context(skip_parameter_validation=True):  # as inside fit: its inner calls are not re-validated
        for members in groups.values():
            best_loss = min(best_loss, _train_stack(members, X, y, bar, threads, outcomes))
    if bar is not None:
        bar.close()
    return outcomes


def _train_stack(members: list[tuple[int, _BaseMLP, StochasticRun, np.ndarray]], X: Any, y: Any, bar: Any,
                 threads: int, outcomes: list[Any]) -> float:
    """Train one stack to the end of every member's fit; returns the lowest training loss reached.

    ``members`` are ``(index, estimator, run, rows)``; a member whose fit raises (at the end of an epoch, or
    its weights non-finite at the end) is frozen, and the exception is its outcome (``outcomes[index]``).
    With ``threads`` > 1 on a host backend, ranges of the models step in threads, each product on one
    BLAS thread (many small products gain more from a core each than from two cores sharing each)."""
    ests = [m[1] for m in members]
    runs = [m[2] for m in members]
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
    net = Networks.stack([e._network(dtype, host) for e in ests], backend)
    loop = TrainingLoop(net, [e._optimizer for e in ests], backend, backend.asarray(X_all, dtype=dtype),
                        backend.asarray(targets), runs[0].batch_size, runs[0].steps,
                        weighted=runs[0].sw_train is not None, l2_penalty=any(e.alpha > 0 for e in ests),
                        cuda_graphs=True, threads=threads)
    for (_, _, run, r) in members:  # each fit's rows of the one copy of the data the stack holds
        run.row_map = r[run.train_rows]
        run.validation_rows = None if run.val_rows is None else r[run.val_rows]
        run.isolated = True  # an error at the end of an epoch ends this fit alone
    lowest = [math.inf]

    def progress(trained: Sequence[int]) -> None:
        lowest[0] = min([lowest[0], *(ests[m].loss_ for m in trained if runs[m].failure is None)])
        if bar is not None:
            bar.update(len(trained))
            bar.set_postfix_str(f"best loss {lowest[0]:.4g}", refresh=False)

    blas: Any = contextlib.nullcontext()
    if len(loop.parts) > 1:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(limits=1, user_api="blas")
    try:
        with blas:
            train(loop, runs, after_epoch=progress, interrupt="warn")
    finally:
        loop.close()
    final = net.params_numpy()
    for m, (index, est, run, _) in enumerate(members):
        if run.failure is not None:
            outcomes[index] = run.failure
            continue
        try:
            model = MLP(net.layer_sizes, dtype=dtype, activation=first.activation, output=net.output)
            model.backend.copy_(model.params, final[m])
            est._store(model.to(backend))
            if run.early_stopping:
                est._best_coefs, est._best_intercepts = est.coefs_, est.intercepts_
            est._end_fit()
        except Exception as exc:  # e.g. its weights became non-finite: its fit fails as its own would
            outcomes[index] = exc
    if bar is not None:  # the epochs the models that stopped early did not need
        bar.update(sum(max(0, est.max_iter - est.n_iter_) for est in ests))
    return lowest[0]


def _as_matrix(X: Any) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(X):
        return X.toarray()
    return np.asarray(X)


# ---------------------------------------------------------------------------------------------------------
# Searches
# ---------------------------------------------------------------------------------------------------------
class StackingWarning(UserWarning):
    """Some fits of an ``mlp`` search trained one at a time instead of stacked (the message says why)."""


def _final_mlp(estimator: Any) -> tuple[_BaseMLP | None, str]:
    """The ``mlp`` network a search fits: the estimator itself (prefix ``""``), or the last step of a
    ``Pipeline`` (prefix ``"<step name>__"``, its parameters' prefix in the search's grid); None otherwise."""
    if isinstance(estimator, _BaseMLP):
        return estimator, ""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and estimator.steps and isinstance(estimator.steps[-1][1], _BaseMLP):
        return estimator.steps[-1][1], estimator.steps[-1][0] + "__"
    return None, ""


class _StackedSearch:
    """What mlp's searches add to scikit-learn's: every fit made up front, stacked (see :mod:`mlp.search`)."""

    def _stacked_fit(self, sk_fit, X: Any, y: Any = None, **params: Any):
        final, prefix = _final_mlp(self.estimator)
        if final is None:
            return sk_fit(X, y, **params)
        if prefix and set(params) - {"groups"}:
            warnings.warn(f"{type(self).__name__}: fit parameters {sorted(set(params) - {'groups'})} go to the "
                          "pipeline's steps: its fits train one at a time, not stacked", StackingWarning, stacklevel=3)
            return sk_fit(X, y, **params)
        groups = params.get("groups")
        sample_weight = params.get("sample_weight")
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = [(np.asarray(train), np.asarray(test)) for train, test in cv.split(X, y, groups)]
        saved = {"cv": self.cv, "n_jobs": self.n_jobs}
        fixed_seed = self._fix_candidates()
        try:
            jobs, keys, which, rows, datasets = self._jobs(final, prefix, X, y, sample_weight, splits)
            alone = sum(getattr(job, "solver", None) not in _STOCHASTIC_SOLVERS for job in jobs)
            if alone:
                warnings.warn(f"{type(self).__name__}: {alone} of {len(jobs)} fits use solver='lbfgs' (full-batch "
                              "L-BFGS-B, one network at a time): they train one at a time, not stacked",
                              StackingWarning, stacklevel=3)
            outcomes = _fit_datasets(jobs, datasets, which, rows, self.n_jobs, None,
                                     self.verbose > 0 if self.verbose else None)
            # scikit-learn's loop over the same splits (a list) finds every fit made, or the error it raised
            # (then scikit-learn's own error handling scores it error_score, warns or raises); nothing to
            # parallelise
            self.cv, self.n_jobs = splits, None
            with serving_prefitted(zip(keys, outcomes)) as served:
                result = sk_fit(X, y, **params)
                found = served.count
            expected = len(jobs)
            if found < expected:
                warnings.warn(f"{type(self).__name__}: {expected - found} of {expected} fits trained one at a time "
                              "instead of stacked: the data their network was given differed from the data it "
                              "was stacked on (a preprocessing step whose output is not the same from one fit to "
                              "the next?)", StackingWarning, stacklevel=3)
            return result
        finally:
            self.cv, self.n_jobs = saved["cv"], saved["n_jobs"]
            if fixed_seed is not None:
                self.random_state = fixed_seed

    def _jobs(self, final: _BaseMLP, prefix: str, X: Any, y: Any, sample_weight: Any, splits: list) -> tuple:
        """Every fit the search loop will make, as ``fit_many`` takes them: the networks (clones with each
        candidate's values), the fingerprint the loop's fit will have, and its data: one dataset per fold, or
        with a pipeline one per fold and distinct setting of the steps before the network (those steps fitted
        and applied here once for all the candidates that share them)."""
        jobs, keys, which, rows, datasets = [], [], [], [], []
        index: dict[tuple, int] = {}
        for cand in self._candidate_list():
            # as scikit-learn's _fit_and_score: a clone given copies of the candidate's values (a RandomState
            # among them starts every fit in the same state)
            values = clone(cand, safe=False)
            own = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)} if prefix else values
            steps = {k: v for k, v in values.items() if prefix and not k.startswith(prefix)}
            for f, (train, _) in enumerate(splits):
                y_train = _safe_indexing(y, train)
                sw = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), train)
                if prefix:
                    key = (f, tuple(sorted((k, repr(v)) for k, v in steps.items())))
                    if key not in index:
                        head = clone(self.estimator[:-1]).set_params(**steps)
                        Xt = head.fit_transform(_safe_indexing(X, train), y_train)
                        index[key] = len(datasets)
                        datasets.append((Xt, y_train, None))
                    d = index[key]
                    data_rows = np.arange(np.shape(datasets[d][0])[0])
                    X_fit = datasets[d][0]
                else:
                    if not datasets:
                        datasets.append((X, y, sample_weight))
                    d, data_rows, X_fit = 0, train, _safe_indexing(X, train)
                job = clone(final).set_params(**own)
                keys.append(fit_fingerprint(job, X_fit, y_train, sw))
                jobs.append(job)
                which.append(d)
                rows.append(np.asarray(data_rows, dtype=np.int64))
        return jobs, keys, which, rows, datasets

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

    #: the kind of network the ensemble averages
    _member: type = _BaseMLP

    def _members(self, X: Any, y: Any, sample_weight: Any) -> None:
        if not isinstance(self.n_estimators, numbers.Integral) or self.n_estimators < 1:
            raise ValueError(f"n_estimators: expected an integer >= 1, got {self.n_estimators!r}")
        base = self.estimator if self.estimator is not None else self._member()
        if not isinstance(base, self._member):
            raise TypeError(f"estimator: {type(self).__name__} averages the networks of an "
                            f"mlp.{self._member.__name__}, got {type(base).__name__}")
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
        self._check_rows(y, rows)
        self.estimators_ = fit_many(members, X, y, rows, sample_weight, n_jobs=self.n_jobs)
        self.estimators_samples_ = rows
        self.n_features_in_ = np.shape(X)[1]

    def _check_rows(self, y: np.ndarray, rows: list[np.ndarray]) -> None:
        """Refuse members' rows that cannot make the ensemble's model (nothing to refuse by default)."""


class MLPEnsembleClassifier(ClassifierMixin, _BaseEnsemble):
    """``n_estimators`` copies of an ``mlp.MLPClassifier`` (default: its defaults), each with its own seed and,
    with ``bootstrap=True``, its own bootstrap sample (``max_samples`` rows), trained at once as a stack;
    ``predict_proba`` averages the members' probabilities.  Every member must see every class of ``y``."""

    _member = MLPClassifier

    def _check_rows(self, y: np.ndarray, rows: list[np.ndarray]) -> None:
        classes = unique_labels(y)
        for i, r in enumerate(rows):
            seen = unique_labels(_safe_indexing(y, r))
            if len(seen) != len(classes):
                how = (f"a bootstrap sample of {len(r)} rows (drawn with replacement)" if self.bootstrap else
                       f"a subsample of {len(r)} of the {len(y)} rows (max_samples={self.max_samples!r}, drawn "
                       "without replacement)")
                raise ValueError(f"y: member {i} would train on {how}, which holds the classes {seen.tolist()} "
                                 f"of y's {classes.tolist()}; every member must see every class: use more rows "
                                 "per member (max_samples)" + (" or bootstrap=False" if self.bootstrap else ""))

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPEnsembleClassifier":
        """Fit every member; returns ``self``."""
        self._members(X, y, sample_weight)
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' class probabilities, averaged: (n_samples, n_classes)."""
        check_is_fitted(self)
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """The class of highest average probability."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class MLPEnsembleRegressor(RegressorMixin, _BaseEnsemble):
    """``n_estimators`` copies of an ``mlp.MLPRegressor`` (default: its defaults), each with its own seed and,
    with ``bootstrap=True``, its own bootstrap sample, trained at once as a stack; predictions are averaged."""

    _member = MLPRegressor

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPEnsembleRegressor":
        """Fit every member; returns ``self``."""
        self._members(X, y, sample_weight)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The members' predictions, averaged."""
        check_is_fitted(self)
        return np.mean([e.predict(X) for e in self.estimators_], axis=0)
