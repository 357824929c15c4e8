"""Searches over a ``Pipeline`` ending in an mlp network stack per fold, and say so when a fit cannot stack.

The steps before the network are fitted once per fold (and per distinct
setting of their own parameters), and the candidates that share that
transformed data train as one stack; scikit-learn's search loop then finds
each fit made.  The results must be those of scikit-learn's ``GridSearchCV``
over the same pipeline one fit at a time, every fit must train once, and
anything that trains one at a time anyway says so in one warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the searches need scikit-learn (the extra 'sklearn')")

from sklearn import model_selection as sk_ms  # noqa: E402
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import mlp  # noqa: E402
from mlp.estimator import MLPClassifier, StochasticRun  # noqa: E402
from mlp.search import StackingWarning  # noqa: E402

KEYS = ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score", "split2_test_score")


def _digits(n: int = 150):
    X, y = load_digits(n_class=4, return_X_y=True)
    return X[:n], y[:n]


def _pipeline(**mlp_params) -> Pipeline:
    return Pipeline([("scale", StandardScaler()),
                     ("clf", MLPClassifier(hidden_layer_sizes=(8,), max_iter=6, random_state=0, backend="numpy",
                                           **mlp_params))])


@pytest.fixture
def trainings(monkeypatch):
    """How many "sgd"/"adam" trainings start (each fit, alone or stacked, makes one StochasticRun), and how many
    stacks train (TrainingLoops of more than one network)."""
    counted = {"runs": 0, "stacks": 0}
    run_init = StochasticRun.__init__
    loop_init = mlp.TrainingLoop.__init__

    def run(self, *args, **kwargs):
        counted["runs"] += 1
        run_init(self, *args, **kwargs)

    def loop(self, net, *args, **kwargs):
        counted["stacks"] += net.M > 1
        loop_init(self, net, *args, **kwargs)

    monkeypatch.setattr(StochasticRun, "__init__", run)
    monkeypatch.setattr(mlp.TrainingLoop, "__init__", loop)
    return counted


def test_a_pipeline_search_stacks_per_fold_and_matches_scikit_learns(trainings):
    X, y = _digits()
    grid = {"clf__alpha": [1e-4, 1e-2], "clf__learning_rate_init": [1e-3, 1e-2], "scale__with_std": [True, False]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingWarning)  # nothing trains one at a time here
        ours = mlp.GridSearchCV(_pipeline(), grid, cv=3).fit(X, y)
    ran, stacks = trainings["runs"], trainings["stacks"]
    theirs = sk_ms.GridSearchCV(_pipeline(), grid, cv=3).fit(X, y)
    # 8 candidates x 3 folds, each trained once, and the refit; 3 folds x 2 scalings = 6 stacks of 4
    assert ran == 8 * 3 + 1
    assert stacks == 6
    for key in KEYS:
        np.testing.assert_array_equal(ours.cv_results_[key], theirs.cv_results_[key], err_msg=key)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))


class _Jitter(BaseEstimator, TransformerMixin):
    """Adds fresh noise on every fit: its output is never the same twice."""

    def fit(self, X, y=None):
        self.noise_ = np.random.default_rng().normal(0, 1e-3, np.shape(X)[1])
        return self

    def transform(self, X):
        return np.asarray(X) + self.noise_


def test_fits_that_cannot_use_their_stacked_result_say_so_once():
    X, y = _digits(90)
    pipe = Pipeline([("jitter", _Jitter()), ("clf", MLPClassifier(hidden_layer_sizes=(4,), max_iter=3,
                                                                   random_state=0, backend="numpy"))])
    with pytest.warns(StackingWarning, match=r"6 of 6 fits trained one at a time.*differed") as record:
        search = mlp.GridSearchCV(pipe, {"clf__alpha": [1e-4, 1e-3]}, cv=3).fit(X, y)
    assert sum(issubclass(r.category, StackingWarning) for r in record) == 1
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_lbfgs_candidates_are_named_as_trained_one_at_a_time():
    X, y = _digits(90)
    grid = {"solver": ["adam", "lbfgs"]}
    base = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, backend="numpy")
    with pytest.warns(StackingWarning, match=r"3 of 6 fits use solver='lbfgs'"):
        mlp.GridSearchCV(base, grid, cv=3).fit(X, y)


def test_fit_parameters_routed_to_pipeline_steps_fall_back_with_a_warning():
    X, y = _digits(90)
    with pytest.warns(StackingWarning, match=r"fit parameters \['clf__sample_weight'\]"):
        search = mlp.GridSearchCV(_pipeline(), {"clf__alpha": [1e-4]}, cv=3)
        search.fit(X, y, clf__sample_weight=np.ones(len(y)))
    assert np.isfinite(search.best_score_)


@pytest.mark.parametrize("case", ["meta-estimator", "pipeline ending in one", "no mlp network"])
def test_an_estimator_the_search_cannot_stack_says_so(case):
    """Only an mlp network, or a Pipeline ending in one, stacks: any other estimator's fits train one at a time as
    in scikit-learn's search, with one StackingWarning naming the estimator (never silently), same results."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    X, y = _digits(90)
    net = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, backend="numpy")
    estimator, grid, name = {
        "meta-estimator": (OneVsRestClassifier(net), {"estimator__alpha": [1e-4, 1e-2]}, "OneVsRestClassifier"),
        "pipeline ending in one": (Pipeline([("scale", StandardScaler()), ("ovr", OneVsRestClassifier(net))]),
                                   {"ovr__estimator__alpha": [1e-4, 1e-2]}, "Pipeline"),
        "no mlp network": (LogisticRegression(max_iter=200), {"C": [0.5, 1.0]}, "LogisticRegression"),
    }[case]
    with pytest.warns(StackingWarning, match=rf"the estimator \({name}\) is neither an mlp network nor a Pipeline "
                                             r"ending in one: its fits train one at a time") as record:
        ours = mlp.GridSearchCV(estimator, grid, cv=3).fit(X, y)
    assert sum(issubclass(r.category, StackingWarning) for r in record) == 1
    theirs = sk_ms.GridSearchCV(estimator, grid, cv=3).fit(X, y)
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
