"""Ensembles of ``mlp.MLPClassifier``/``MLPRegressor``: ``n_estimators`` copies of a network with different seeds
(and bootstrap samples or subsamples, if asked), trained at once as one stack by :func:`mlp.fit_many.fit_many`;
their probabilities or predictions averaged."""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp's searches and ensembles need scikit-learn: pip install 'numba-mlp[sklearn]'") from None

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .estimator import MLPClassifier, MLPRegressor
from .fit_many import fit_many
from .sklearn_base import _BaseMLP

__all__ = ["MLPEnsembleClassifier", "MLPEnsembleRegressor"]


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
        if sample_weight is not None:  # one weight per row of X (the members take their rows of it)
            sample_weight = _check_sample_weight(sample_weight, X, dtype=None)
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

    def _checked(self, X: Any) -> Any:
        """``X`` to predict from, checked against the fitted data as scikit-learn checks it (number of features,
        feature names and their order): the members were fitted on the ensemble's array, without names."""
        check_is_fitted(self)
        return validate_data(self, X, accept_sparse=["csr", "csc"], dtype=None, ensure_all_finite=True, reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # the members take it sparse (mlp.sparse)
        return tags


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
        """The members' class probabilities (of each label, for multilabel ``y``), averaged: (n_samples,
        n_classes)."""
        X = self._checked(X)
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """The class of highest average probability; for multilabel ``y``, each label whose average probability
        is above 0.5 (the indicator matrix, as an ``MLPClassifier`` predicts it)."""
        proba = self.predict_proba(X)
        binarizer = self.estimators_[0]._label_binarizer
        if binarizer.y_type_ == "multilabel-indicator":
            return binarizer.inverse_transform(proba)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


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
        X = self._checked(X)
        return np.mean([e.predict(X) for e in self.estimators_], axis=0)
