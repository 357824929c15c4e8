"""mlp's searches fail, draw and train as scikit-learn's do.

Most tests run one search twice: ``mlp.GridSearchCV`` (every fit made up
front by ``fit_many``, stacked) and scikit-learn's own ``GridSearchCV``
over the same mlp estimator, one fit at a time.  The two must give the
same ``cv_results_`` (a failed candidate's folds NaN, the others bit for
bit), the same ``FitFailedWarning`` and, with ``error_score="raise"``,
the same error.  Then: each fit trains exactly once (a ``RandomState``
seed, ``warm_start``), duplicate candidates drawn from ``random_state=None``
get fits of their own, and warning filters reach joblib's worker processes.
"""

from __future__ import annotations

import re
import time
import warnings
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the searches need scikit-learn (the extra 'sklearn')")

from sklearn import model_selection as sk_ms  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

import mlp  # noqa: E402
from mlp.estimator import _NON_FINITE, MLPClassifier, MLPRegressor, StochasticRun  # noqa: E402
from mlp.search import MLPEnsembleRegressor, fit_many  # noqa: E402


def _digits(n: int = 90):
    X, y = load_digits(n_class=3, return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _regression(n: int = 90):
    X, y = make_regression(n_samples=n, n_features=5, random_state=0)
    return X, y / y.std()


def _fit_failures(records) -> list[tuple[str, Counter]]:
    """Each FitFailedWarning as (its summary line, how many fits failed with each final error line)."""
    out = []
    for r in records:
        if not issubclass(r.category, FitFailedWarning):
            continue
        text = str(r.message)
        blocks = re.findall(r"(\d+) fits? failed with the following error:\n(.*?)(?=\n-{80}\n|\Z)", text, re.S)
        errors = Counter()
        for n, trace in blocks:
            errors[trace.strip().splitlines()[-1]] += int(n)
        out.append((text.strip().splitlines()[0], errors))
    return out


def _both_searches(base, grid, X, y, **kwargs):
    """The search by mlp and by scikit-learn one fit at a time: (ours, theirs), each (search, its FitFailedWarnings)."""
    out = []
    for search in (mlp.GridSearchCV, sk_ms.GridSearchCV):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow in a diverging fit's arithmetic
            warnings.simplefilter("always", FitFailedWarning)
            fitted = search(base, grid, **kwargs).fit(X, y)
        out.append((fitted, _fit_failures(records)))
    return out


def _assert_same_results(ours, theirs) -> None:
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    for key in theirs.cv_results_:
        if "test_score" in key or "train_score" in key:  # split scores, means, stds, ranks (not timings)
            np.testing.assert_array_equal(ours.cv_results_[key], theirs.cv_results_[key], err_msg=key)


# A candidate that fails among ones that do not; the failing one sits between others of its stack.
FAILING = {
    "diverging-sgd": (MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", batch_size=30, max_iter=10,
                                   random_state=0, backend="numpy"),
                      {"learning_rate_init": [1e-2, 1e2, 1e-3]}, _regression),
    "zero-hidden-units": (MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, backend="numpy"),
                          {"hidden_layer_sizes": [(5,), (0,), (4,)]}, _digits),
    "validation-set-too-small": (MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, early_stopping=True,
                                               random_state=0, backend="numpy"),
                                 {"validation_fraction": [0.2, 0.01, 0.3]}, _digits),
    "invalid-dtype": (MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, backend="numpy"),
                      {"dtype": [None, "float16", "float64"]}, _digits),
    "invalid-backend": (MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0),
                        {"backend": ["numpy", "tpu"]}, _digits),
    "fractional-layer-size": (MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, backend="numpy"),
                              {"hidden_layer_sizes": [(5,), (2.5,)]}, _digits),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_a_failing_candidate_fails_alone_as_in_scikit_learns_search(case):
    base, grid, data = FAILING[case]
    X, y = data()
    (ours, our_warnings), (theirs, their_warnings) = _both_searches(base, grid, X, y, cv=3, error_score=np.nan)
    assert np.isnan(theirs.cv_results_["mean_test_score"]).sum() == 1  # the case is what it says
    _assert_same_results(ours, theirs)
    assert our_warnings == their_warnings and len(their_warnings) == 1
    assert ours.best_params_ == theirs.best_params_


@pytest.mark.parametrize("case", sorted(FAILING))
def test_error_score_raise_raises_the_estimators_own_error(case):
    base, grid, data = FAILING[case]
    X, y = data()
    errors = []
    for search in (mlp.GridSearchCV, sk_ms.GridSearchCV):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as info:
                search(base, grid, cv=3, error_score="raise").fit(X, y)
        errors.append(info.value)
    ours, theirs = errors
    assert type(ours) is type(theirs) and str(ours) == str(theirs)


def _assert_same_models(a, b) -> None:
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)


def test_a_diverging_member_of_a_stack_does_not_stop_its_siblings():
    X, y = _regression(120)
    folds = [train for train, _ in KFold(3, shuffle=True, random_state=0).split(X)]
    jobs, rows = [], []
    for lr in (1e-2, 1e2, 3e-3):  # the middle one diverges within its first epochs
        for f, train in enumerate(folds):
            jobs.append(MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", learning_rate_init=lr, batch_size=30,
                                     max_iter=8, random_state=f, backend="numpy"))
            rows.append(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        outcomes = fit_many([clone(j) for j in jobs], X, y, rows, return_exceptions=True)
        for j, r, outcome in zip(jobs, rows, outcomes):
            if j.learning_rate_init == 1e2:
                with pytest.raises(ValueError) as own:
                    clone(j).fit(X[r], y[r])
                assert type(outcome) is ValueError and str(outcome) == str(own.value) == _NON_FINITE
            else:
                _assert_same_models(outcome, clone(j).fit(X[r], y[r]))
        with pytest.raises(ValueError, match="non-finite parameter weights"):  # by default: the fit's own error
            fit_many([clone(j) for j in jobs], X, y, rows)
        with pytest.raises(ValueError, match="non-finite parameter weights"):  # a member of an ensemble as well
            MLPEnsembleRegressor(jobs[3], n_estimators=3, random_state=0).fit(X, y)


@pytest.fixture
def count_trainings(monkeypatch):
    """How many "sgd"/"adam" trainings start (every fit, one at a time or in a stack, makes one StochasticRun)."""
    counted = {"runs": 0}
    original = StochasticRun.__init__

    def counting(self, *args, **kwargs):
        counted["runs"] += 1
        original(self, *args, **kwargs)
    monkeypatch.setattr(StochasticRun, "__init__", counting)
    return counted


@pytest.mark.parametrize("setting", ["random_state=RandomState", "warm_start=True"])
def test_every_fit_of_a_search_trains_once(setting, count_trainings):
    X, y = _digits()
    params = dict(hidden_layer_sizes=(5,), max_iter=3, backend="numpy")
    if setting == "warm_start=True":
        params.update(warm_start=True, random_state=0)
    grid = {"alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]}
    runs = []
    results = []
    for search in (mlp.GridSearchCV, sk_ms.GridSearchCV):
        if setting == "random_state=RandomState":  # a fresh generator in the same state for each search
            params["random_state"] = np.random.RandomState(7)
        count_trainings["runs"] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            results.append(search(MLPClassifier(**params), grid, cv=3).fit(X, y))
        runs.append(count_trainings["runs"])
    assert runs == [4 * 3 + 1, 4 * 3 + 1]  # every candidate on every fold, then the refit: each trains once
    _assert_same_results(*results)


@pytest.mark.parametrize("fit_request", [False, True])
def test_metadata_routing_decides_which_weights_the_stacked_fits_get(fit_request, count_trainings):
    # with scikit-learn's metadata routing on and set_fit_request(sample_weight=False), the networks were stacked
    # with the weights, then every fit trained again one at a time (with a warning blaming a preprocessing step)
    import sklearn

    X, y = _digits()
    w = np.linspace(0.2, 2.0, len(y))
    grid = {"alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]}
    runs, results = [], []
    with sklearn.config_context(enable_metadata_routing=True):
        for search in (mlp.GridSearchCV, sk_ms.GridSearchCV):
            base = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0, backend="numpy")
            base = base.set_fit_request(sample_weight=fit_request).set_score_request(sample_weight=True)
            count_trainings["runs"] = 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("error", mlp.search.StackingWarning)
                results.append(search(base, grid, cv=3).fit(X, y, sample_weight=w))
            runs.append(count_trainings["runs"])
    assert runs == [4 * 3 + 1, 4 * 3 + 1]  # each fit trains once, with the weights routing gives it
    _assert_same_results(*results)


def test_stack_shares_follow_the_epochs_each_member_trained():
    from mlp.fit_many import stack_shares

    np.testing.assert_allclose(stack_shares(6.0, [10, 5, 15]), [2.0, 1.0, 3.0])
    np.testing.assert_allclose(stack_shares(3.0, [0, 0, 0]), [1.0, 1.0, 1.0])  # none trained: equal shares
    assert stack_shares(2.0, [4, 0]).tolist() == [2.0, 0.0]  # a member that failed before its first epoch


def test_a_search_s_fit_times_hold_the_training_made_up_front(monkeypatch):
    # cv_results_'s fit times were the loop's time to serve each fit (a few ms), not the training it stands for
    import mlp.fit_many as fm

    trained = {"seconds": 0.0}
    original = fm._train_stack

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            trained["seconds"] += time.perf_counter() - start
    monkeypatch.setattr(fm, "_train_stack", timed)
    X, y = _digits(300)
    base = MLPClassifier(max_iter=8, random_state=0, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = mlp.GridSearchCV(base, {"hidden_layer_sizes": [(8,), (64,)], "alpha": [1e-4, 1e-2]}, cv=3,
                                  refit=False).fit(X, y)
    fit_times = search.cv_results_["mean_fit_time"] * 3  # each candidate's three folds
    assert trained["seconds"] > 0
    # every stack's time is shared among its fits (the shares are measured inside each stack's training)
    assert fit_times.sum() >= 0.95 * trained["seconds"]
    assert np.all(search.cv_results_["mean_fit_time"] > 0)


def test_duplicate_candidates_without_a_seed_get_fits_of_their_own(count_trainings):
    X, y = _regression(80)
    seen = {"ours": [], "theirs": []}
    for who, search in (("ours", mlp.GridSearchCV), ("theirs", sk_ms.GridSearchCV)):
        def scorer(est, X_test, y_test, _seen=seen[who]):
            _seen.append(est.coefs_[0].copy())
            return est.score(X_test, y_test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            base = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=None, backend="numpy")
            s = search(base, {"alpha": [1e-4, 1e-4]}, cv=2, scoring=scorer).fit(X, y)
        # scored in order: candidate 0 on folds 0 and 1, then candidate 1 on folds 0 and 1
        for fold in (0, 1):
            assert not np.array_equal(seen[who][fold], seen[who][2 + fold]), who
            assert s.cv_results_[f"split{fold}_test_score"][0] != s.cv_results_[f"split{fold}_test_score"][1]
    assert count_trainings["runs"] == 2 * (4 + 1)


# ---------------------------------------------------------------------------------------------------------
# Warning filters in joblib's worker processes (scikit-learn's own tests turn a warning into an error to see
# whether a worker applied the filter: a worker's warnings are printed there, not sent back)
# ---------------------------------------------------------------------------------------------------------
def _converging_jobs():
    X, y = _digits()
    rows = [np.arange(0, 60), np.arange(30, 90)]
    # the first stops early (no improvement by tol=10 for 1 epoch), the second runs out of epochs: a
    # ConvergenceWarning
    jobs = [MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, tol=10.0, n_iter_no_change=1, random_state=0,
                          backend="numpy"),
            MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0, backend="numpy")]
    return X, y, jobs, rows


def test_an_error_filter_reaches_the_workers_of_fit_many():
    X, y, jobs, rows = _converging_jobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="Maximum iterations"):
            fit_many(jobs, X, y, rows, n_jobs=2)


def test_an_ignore_filter_reaches_the_workers_and_others_still_warn():
    X, y, jobs, rows = _converging_jobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)  # a UserWarning, filtered before the line above
        done = fit_many(jobs, X, y, rows, n_jobs=2)
        assert done[0].n_iter_ == 3 and done[1].n_iter_ == 2  # stopped early; ran out of epochs (ignored)
        clipped = [clone(j).set_params(batch_size=500) for j in jobs]  # larger than the data: warns
        with pytest.raises(UserWarning, match="batch_size"):
            fit_many(clipped, X, y, rows, n_jobs=2)


def test_a_search_over_workers_fails_the_fits_an_error_filter_fails_as_scikit_learns_does():
    X, y, jobs, _ = _converging_jobs()
    base = clone(jobs[0])  # tol=10 and n_iter_no_change=1: stops after 3 epochs, or warns at max_iter=2
    out = []
    for search in (mlp.GridSearchCV, sk_ms.GridSearchCV):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            warnings.simplefilter("error", ConvergenceWarning)
            out.append((search(base, {"max_iter": [20, 2]}, cv=2, n_jobs=2).fit(X, y),
                        _fit_failures(records)))
    (ours, our_warnings), (theirs, their_warnings) = out
    assert np.isnan(theirs.cv_results_["mean_test_score"]).sum() == 1  # max_iter=2 warns
    _assert_same_results(ours, theirs)
    assert our_warnings == their_warnings and len(our_warnings) == 1


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_verbose_fits_of_a_search_print_scikit_learns_lines_in_its_order(capsys, n_jobs):
    """A stack's fits train side by side: each fit's ``verbose`` lines (epochs, validation scores, the stopping
    message) come out together, where scikit-learn's search over the same estimators prints them."""
    X, y = _digits(120)
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=6, early_stopping=True, n_iter_no_change=2,
                        learning_rate_init=0.05, random_state=0, verbose=True, backend="numpy")
    grid = {"alpha": [1e-4, 1e-1], "tol": [1e-4, 0.5]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.GridSearchCV(est, grid, cv=2, refit=False, n_jobs=n_jobs).fit(X, y)
        ours = capsys.readouterr().out
        sk_ms.GridSearchCV(est, grid, cv=2, refit=False).fit(X, y)
        theirs = capsys.readouterr().out
    assert "Validation score" in theirs and "Stopping." in theirs
    assert ours == theirs


def test_verbose_fits_of_fit_many_print_in_the_order_of_the_fits(capsys):
    X, y = _digits(120)
    jobs = [MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=s, verbose=True, backend="numpy")
            for s in range(3)]
    rows = [np.arange(0, 100), np.arange(20, 120), np.arange(10, 110)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit_many([clone(j) for j in jobs], X, y, rows)
        ours = capsys.readouterr().out
        for j, r in zip(jobs, rows):
            clone(j).fit(X[r], y[r])
        theirs = capsys.readouterr().out
    assert ours.count("Iteration") == 9
    assert ours == theirs
