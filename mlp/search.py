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
made at once by :func:`mlp.fit_many.fit_many`, which trains the networks of
one shape as one stack: one copy of the data on the device, each model with
its own rows, seed, hyperparameters and stopping.  The search
loop then finds each fit already made (same parameters, same data) and
only scores it.  Each stacked model ends with the weights its own fit would
have, so the results are those of scikit-learn's search over these
estimators one fit at a time (on the NumPy backend: each fit on one BLAS
thread, as a stack computes every product, whatever ``n_jobs``; see
:func:`mlp.fit_many.fit_many`).  A search over a ``Pipeline`` ending in an
mlp network fits the steps before the network once per fold (and setting of
their parameters) and stacks the candidates that share that data.  Fits that
train one at a time anyway (``lbfgs``, data that differs from what was
stacked, an estimator that is neither an mlp network nor a Pipeline ending in
one) say so in one :class:`StackingWarning`; the fits of a sparse X train
one at a time, each batch by batch on the sparse rows, with one
:class:`~mlp.fit_many.SparseInputWarning`.

A fit fails on its own, as it would one fit at a time (parameters its
``fit`` rejects, a validation set too small, weights that became
non-finite): the other networks of its stack train on, and the search loop
finds, for that fit, the exception it raised, which scikit-learn's own
error handling turns into ``error_score``, a ``FitFailedWarning`` or, with
``error_score="raise"``, the error itself.  Each fit made up front serves
one fit of the loop, so duplicate candidates drawn from
``random_state=None`` get fits of their own, as in scikit-learn.

The ensembles (:mod:`mlp.ensemble`) and :func:`~mlp.fit_many.fit_many` are importable from here too.

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

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metadata_routing import process_routing

from .ensemble import MLPEnsembleClassifier, MLPEnsembleRegressor
from .fit_cache import data_digests, fit_key, serving
from .fit_many import SparseInputWarning, StackSplitWarning, _fit_datasets, fit_many, stack_threads  # noqa: F401
from .sklearn_base import _STOCHASTIC_SOLVERS, _BaseMLP

__all__ = ["GridSearchCV", "RandomizedSearchCV", "MLPEnsembleClassifier", "MLPEnsembleRegressor", "fit_many",
           "StackSplitWarning", "StackingWarning", "SparseInputWarning"]


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
            warnings.warn(f"{type(self).__name__}: the estimator ({type(self.estimator).__name__}) is neither an mlp "
                          "network nor a Pipeline ending in one: its fits train one at a time, as in scikit-learn's "
                          "search (the fits of an mlp.MLPClassifier/MLPRegressor, alone or ending a Pipeline, are "
                          "what stacks across candidates and folds)", StackingWarning, stacklevel=3)
            return sk_fit(X, y, **params)
        if prefix and set(params) - {"groups"}:
            warnings.warn(f"{type(self).__name__}: fit parameters {sorted(set(params) - {'groups'})} go to the "
                          "pipeline's steps: its fits train one at a time, not stacked", StackingWarning, stacklevel=3)
            return sk_fit(X, y, **params)
        groups = params.get("groups")
        sample_weight = params.get("sample_weight")
        if get_config().get("enable_metadata_routing", False):
            # scikit-learn's metadata routing decides what each fit is given (set_fit_request): the weights the
            # search loop's fits will get are the ones to stack with (it raises here what scikit-learn's fit
            # would raise for metadata nothing requested)
            sample_weight = process_routing(self, "fit", **params).estimator.fit.get("sample_weight")
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
            seconds: list[float] = []
            outcomes = _fit_datasets(jobs, datasets, which, rows, self.n_jobs, None,
                                     self.verbose > 0 if self.verbose else None, timings=seconds)
            # scikit-learn's loop over the same splits (a list) finds every fit made, or the error it raised
            # (then scikit-learn's own error handling scores it error_score, warns or raises); nothing to
            # parallelise
            self.cv, self.n_jobs = splits, None
            self._made_up_front = seconds  # each fit's training time, added to the time the loop takes to serve it
            with serving(zip(keys, outcomes)) as served:
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
            self._made_up_front = None
            if fixed_seed is not None:
                self.random_state = fixed_seed

    def _format_results(self, candidate_params, n_splits, out, more_results=None):
        """scikit-learn's ``cv_results_`` from the loop's records, each fit's ``fit_time`` being the time of the
        fit made up front (its share of its stack's time, :func:`mlp.fit_many.stack_shares`) plus the time the
        loop took to serve it; the loop alone would time only the serving."""
        made = getattr(self, "_made_up_front", None)
        # the loop evaluates candidate by candidate, fold by fold: the order of the fits made up front
        if made is not None and len(out) == len(made):
            out = [dict(record, fit_time=record["fit_time"] + extra) if isinstance(record, dict) and "fit_time" in
                   record else record for record, extra in zip(out, made)]
        return super()._format_results(candidate_params, n_splits, out, more_results)

    def _jobs(self, final: _BaseMLP, prefix: str, X: Any, y: Any, sample_weight: Any, splits: list) -> tuple:
        """Every fit the search loop will make, as ``fit_many`` takes them: the networks (clones with each
        candidate's values), the fingerprint the loop's fit will have, and its data: one dataset per fold, or
        with a pipeline one per fold and distinct setting of the steps before the network (those steps fitted
        and applied here once for all the candidates that share them)."""
        jobs, keys, which, rows, datasets = [], [], [], [], []
        # per fold (and, with a pipeline, per setting of the steps before the network): the dataset, the rows of
        # it the fit takes, and the digests of the data the loop's fit will be given (hashed once, not per
        # candidate)
        shared: dict[tuple, tuple] = {}
        for cand in self._candidate_list():
            # as scikit-learn's _fit_and_score: a clone given copies of the candidate's values (a RandomState
            # among them starts every fit in the same state)
            values = clone(cand, safe=False)
            own = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)} if prefix else values
            steps = {k: v for k, v in values.items() if prefix and not k.startswith(prefix)}
            for f, (train_rows, _) in enumerate(splits):
                key = (f, tuple(sorted((k, repr(v)) for k, v in steps.items())))
                if key not in shared:
                    y_train = _safe_indexing(y, train_rows)
                    sw = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), train_rows)
                    if prefix:
                        head = clone(self.estimator[:-1]).set_params(**steps)
                        Xt = head.fit_transform(_safe_indexing(X, train_rows), y_train)
                        datasets.append((Xt, y_train, None))
                        d, data_rows, X_fit = len(datasets) - 1, np.arange(np.shape(Xt)[0]), Xt
                    else:
                        if not datasets:
                            datasets.append((X, y, sample_weight))
                        d, data_rows, X_fit = 0, train_rows, _safe_indexing(X, train_rows)
                    shared[key] = (d, np.asarray(data_rows, dtype=np.int64), data_digests(X_fit, y_train, sw))
                d, data_rows, digests = shared[key]
                job = clone(final).set_params(**own)
                keys.append(fit_key(job, digests))
                jobs.append(job)
                which.append(d)
                rows.append(data_rows)
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
