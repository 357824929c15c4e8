"""Many models at once: the stacked engine, mlp's searches and ensembles.

Exactness first: every model of a stack ends with the parameters its own fit
would have (same seed, rows and hyperparameters); on the NumPy backend bit for
bit, since each model's step runs the single model's loops and products.
Then the searches against scikit-learn's own search run one fit at a time over
the same estimators (same splits, same scores), the ensembles, the memory
planner's chunks, dispatch through joblib to a local Dask cluster, and the
CUDA backend (a GPU or Numba's simulator) against NumPy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the searches and ensembles need scikit-learn (the extra 'sklearn')")

from sklearn import model_selection as sk_ms  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold  # noqa: E402

import mlp  # noqa: E402
from mlp.estimator import MLPClassifier, MLPRegressor  # noqa: E402
from mlp.search import (GridSearchCV, MLPEnsembleClassifier, MLPEnsembleRegressor, RandomizedSearchCV,  # noqa: E402
                        StackSplitWarning, fit_many)


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _digits(n: int = 300):
    X, y = load_digits(n_class=4, return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _jobs():
    """Fits of two shapes with differing seeds, folds (of 199, 199 and 198 rows: last batches of 7 and 6 rows
    in one stack), hyperparameters, schedules and stopping."""
    X, y = _digits(298)
    folds = [train for train, _ in KFold(3, shuffle=True, random_state=0).split(X)]
    jobs, rows = [], []
    for i, (alpha, lr, extra) in enumerate([
            (1e-4, 1e-3, {}), (1e-2, 3e-3, {}), (0.0, 1e-2, {"max_iter": 3}),
            (1e-3, 1e-2, {"early_stopping": True, "validation_fraction": 0.2}),
            (1e-3, 1e-2, {"tol": 10.0, "n_iter_no_change": 1})]):
        for f, train in enumerate(folds):
            params = dict(hidden_layer_sizes=(12,), alpha=alpha, learning_rate_init=lr, batch_size=64, max_iter=6,
                          random_state=10 * i + f, backend="numpy")
            jobs.append(MLPClassifier(**{**params, **extra}))
            rows.append(train)
    for f, train in enumerate(folds):  # a second shape: SGD with a schedule, another activation
        jobs.append(MLPClassifier(hidden_layer_sizes=(8, 5), activation="tanh", solver="sgd",
                                  learning_rate="invscaling", learning_rate_init=0.2, batch_size=64, max_iter=5,
                                  random_state=f, backend="numpy"))
        rows.append(train)
    return X, y, jobs, rows


def _assert_same_models(a, b, exact: bool = True) -> None:
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        if exact:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=0 if exact else 1e-9)
    assert a.validation_scores_ == b.validation_scores_ or exact is False


@pytest.mark.parametrize("order", ["step by step", "block by block in two threads"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_model_of_a_stack_ends_as_its_own_fit(dtype, order, monkeypatch):
    # the folds differ in size, so the models' last batches differ: each model's products use its own rows
    if order == "step by step":  # one block of every model: each step for all of them
        monkeypatch.setattr(mlp.loop, "CACHE_BYTES", 1 << 40)
        monkeypatch.setenv("MLP_STACK_THREADS", "1")
    else:  # each model its own block, the blocks shared out to two threads
        monkeypatch.setattr(mlp.loop, "CACHE_BYTES", 1)
        monkeypatch.setattr(mlp.loop, "BLOCK_MIN_FLOPS", 0)
        monkeypatch.setenv("MLP_STACK_THREADS", "2")
    X, y, jobs, rows = _jobs()
    X = X.astype(dtype)
    single = [clone(j).fit(X[r], y[r]) for j, r in zip(jobs, rows)]
    stacked = fit_many([clone(j) for j in jobs], X, y, rows)
    stops = {s.n_iter_ for s in single}
    assert len(stops) > 2  # the models stopped at different epochs: frozen while the others trained on
    for a, b in zip(stacked, single):
        _assert_same_models(a, b)
        np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def _blas_split_case():
    """Regressions whose first-layer products (64 x 200 x 100, float64) are large enough for a BLAS on several
    threads to split them among its threads, which rounds some entries otherwise than one thread does."""
    X, _ = _digits(300)
    y = X @ np.random.default_rng(5).normal(size=(64, 2))
    est = MLPRegressor(hidden_layer_sizes=(100,), solver="sgd", batch_size=200, max_iter=2, random_state=3,
                       backend="numpy")
    return X, y, est


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_host_stack_runs_every_product_on_one_blas_thread(threads, monkeypatch):
    """A stacked network ends with the weights of its own fit on one BLAS thread, whether the stack steps in one
    thread or in several: the stack's results do not depend on its threads (or a search's n_jobs)."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setenv("MLP_STACK_THREADS", threads)
    X, y, est = _blas_split_case()
    rows = [np.arange(200), np.arange(50, 250), np.arange(100, 300)]
    stacked = fit_many([clone(est) for _ in rows], X, y, rows)
    with threadpool_limits(limits=1, user_api="blas"):
        single = [clone(est).fit(X[r], y[r]) for r in rows]
    for a, b in zip(stacked, single):
        _assert_same_models(a, b)


def test_stacks_trained_concurrently_share_one_blas_limit(monkeypatch):
    """Two stacks in two threads (say a search under joblib's threading backend), the short one starting first and
    ending while the long one trains: the BLAS stays on one thread until the last ends (each ends as its own fits
    on one BLAS thread), then gets its threads back."""
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    import mlp.fit_many

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    short_in, long_in = threading.Event(), threading.Event()
    train = mlp.fit_many.train

    def ordered(loop, runs, **kwargs):  # the short stack trains once the long one has started training
        if runs[0].est.max_iter == 3:
            short_in.set()
            assert long_in.wait(60)
        else:
            long_in.set()
        return train(loop, runs, **kwargs)

    monkeypatch.setattr(mlp.fit_many, "train", ordered)
    X, y, est = _blas_split_case()
    rows = [np.arange(200), np.arange(50, 250), np.arange(100, 300)]
    jobs = [clone(est).set_params(max_iter=it) for it in (3, 30)]
    before = blas_threads()
    stacked = [None, None]

    def fit(i):
        stacked[i] = fit_many([clone(jobs[i]) for _ in rows], X, y, rows)

    threads = [threading.Thread(target=fit, args=(0,)), threading.Thread(target=fit, args=(1,))]
    threads[0].start()
    assert short_in.wait(60)
    threads[1].start()
    for t in threads:
        t.join()
    assert blas_threads() == before
    with threadpool_limits(limits=1, user_api="blas"):
        for job, fits in zip(jobs, stacked):
            for a, r in zip(fits, rows):
                _assert_same_models(a, clone(job).fit(X[r], y[r]))


def test_search_results_equal_scikit_learns_search_on_one_blas_thread():
    """The scores are those of scikit-learn's search with each fit on one BLAS thread (as in the workers of its
    search with n_jobs equal to the cores); these folds' scores differ in the last bit with two."""
    from threadpoolctl import threadpool_limits

    X, y, est = _blas_split_case()
    grid, cv = {"alpha": [1e-4, 1e-1]}, KFold(3, shuffle=True, random_state=0)
    ours = GridSearchCV(est, grid, cv=cv).fit(X, y)
    with threadpool_limits(limits=1, user_api="blas"):
        theirs = sk_ms.GridSearchCV(est, grid, cv=cv).fit(X, y)
    for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
        np.testing.assert_array_equal(ours.cv_results_[key], theirs.cv_results_[key])


def test_sample_weights_and_regression_in_a_stack():
    X, y = make_regression(n_samples=130, n_features=5, n_targets=2, random_state=0)
    y = y / y.std()
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    jobs = [MLPRegressor(hidden_layer_sizes=(6,), alpha=a, batch_size=32, max_iter=4, random_state=s,
                         backend="numpy") for a in (0.0, 1e-2) for s in (0, 1)]
    rows = [np.arange(0, 130), np.arange(10, 130), np.arange(0, 120), np.arange(5, 125)]
    single = [clone(j).fit(X[r], y[r], sample_weight=w[r]) for j, r in zip(jobs, rows)]
    stacked = fit_many([clone(j) for j in jobs], X, y, rows, sample_weight=w)
    for a, b in zip(stacked, single):
        _assert_same_models(a, b)


@pytest.mark.parametrize("search", ["grid", "random"])
def test_search_results_are_scikit_learns_search_one_fit_at_a_time(search):
    X, y = _digits()
    base = MLPClassifier(max_iter=5, batch_size=100, random_state=0, backend="numpy")
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    if search == "grid":
        grid = {"hidden_layer_sizes": [(8,), (16,), (8, 4)], "alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]}
        ours = GridSearchCV(base, grid, cv=cv).fit(X, y)
        theirs = sk_ms.GridSearchCV(base, grid, cv=cv).fit(X, y)
    else:
        space = {"alpha": [1e-5, 1e-4, 1e-3, 1e-2], "learning_rate_init": [1e-3, 3e-3, 1e-2],
                 "hidden_layer_sizes": [(8,), (16,)]}
        ours = RandomizedSearchCV(base, space, n_iter=5, cv=cv, random_state=3).fit(X, y)
        theirs = sk_ms.RandomizedSearchCV(base, space, n_iter=5, cv=cv, random_state=3).fit(X, y)
    assert set(ours.cv_results_) == set(theirs.cv_results_)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    for key in ours.cv_results_:
        if "test_score" in key:  # the split scores, their mean, std and rank (not the timings)
            np.testing.assert_array_equal(ours.cv_results_[key], theirs.cv_results_[key])
    assert ours.best_params_ == theirs.best_params_ and ours.best_score_ == theirs.best_score_
    np.testing.assert_array_equal(ours.best_estimator_.predict_proba(X), theirs.best_estimator_.predict_proba(X))


def test_a_search_over_a_pipeline_still_works_one_fit_at_a_time():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _digits(120)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=3, random_state=0, backend="numpy"))
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 2


def test_the_planner_splits_into_chunks_and_says_so():
    X, y, jobs, rows = _jobs()
    whole = fit_many([clone(j) for j in jobs], X, y, rows)
    with pytest.warns(StackSplitWarning, match="stacks"):
        chunked = fit_many([clone(j) for j in jobs], X, y, rows, max_stack=4)
    for a, b in zip(chunked, whole):
        _assert_same_models(a, b)


def test_ensembles_average_members_that_are_their_own_fits():
    X, y = _digits()
    ens = MLPEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(10,), learning_rate_init=0.01, max_iter=20,
                                              backend="numpy"),
                                n_estimators=4, bootstrap=True, random_state=0).fit(X, y)
    assert len(ens.estimators_) == 4
    members = [clone(e).fit(X[r], y[r]) for e, r in zip(ens.estimators_, ens.estimators_samples_)]
    np.testing.assert_array_equal(ens.predict_proba(X), np.mean([m.predict_proba(X) for m in members], axis=0))
    assert ens.score(X, y) > 0.5
    Xr, yr = make_regression(n_samples=80, n_features=4, random_state=0)
    reg = MLPEnsembleRegressor(MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, backend="numpy"), n_estimators=3,
                               random_state=0).fit(Xr, yr / yr.std())
    assert reg.predict(Xr).shape == (80,)


@pytest.mark.parametrize("ensemble, method", [(MLPEnsembleClassifier, "predict"), (MLPEnsembleClassifier, "score"),
                                              (MLPEnsembleClassifier, "predict_proba"),
                                              (MLPEnsembleRegressor, "predict"), (MLPEnsembleRegressor, "score")])
def test_an_ensemble_not_fitted_says_so(ensemble, method):
    from sklearn.exceptions import NotFittedError

    X, y = _digits(20)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(ensemble(), method)(*((X, y) if method == "score" else (X,)))


@pytest.mark.parametrize("ensemble, member", [(MLPEnsembleClassifier, MLPRegressor),
                                              (MLPEnsembleRegressor, MLPClassifier)])
def test_an_ensemble_refuses_members_of_the_other_kind(ensemble, member):
    X, y = _digits(60)
    with pytest.raises(TypeError, match=rf"estimator: {ensemble.__name__} averages the networks of an "
                                        rf"mlp\.{'MLPClassifier' if member is MLPRegressor else 'MLPRegressor'}, "
                                        rf"got {member.__name__}"):
        ensemble(member(max_iter=1, backend="numpy"), n_estimators=2).fit(X, y)


@pytest.mark.parametrize("bootstrap", [False, True])
def test_an_ensemble_member_that_would_miss_a_class_is_refused_saying_why(bootstrap):
    X, y = _digits(90)
    X, y = np.vstack([X, X[:1]]), np.append(y, 9)  # class 9 in one row of 91: 20-row samples miss it
    member = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, backend="numpy")
    with pytest.raises(ValueError, match=r"holds the classes \[0, 1, 2, 3\] of y's \[0, 1, 2, 3, 9\]") as info:
        MLPEnsembleClassifier(member, n_estimators=3, bootstrap=bootstrap, max_samples=20, random_state=0).fit(X, y)
    if bootstrap:
        assert "bootstrap sample of 20 rows" in str(info.value)
    else:  # without bootstrap samples, the message speaks of what was drawn: a subsample without replacement
        assert "bootstrap" not in str(info.value) and "a subsample of 20 of the 91 rows" in str(info.value)


def test_fit_many_takes_a_boolean_mask_as_the_rows_it_selects():
    # a mask was read as the row indices 0 and 1 (False, True), so its fit trained on rows 0 and 1 only
    X, y = _digits(80)
    member = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0, backend="numpy")
    mask = np.arange(80) % 3 != 0
    fitted = fit_many([clone(member), clone(member)], X, y, [mask, np.flatnonzero(mask)])
    own = clone(member).fit(X[mask], y[mask])
    for got in fitted:
        _assert_same_models(got, own)


@pytest.mark.parametrize("rows, error, message", [
    (np.array([0.0, 1.5, 2.0]), TypeError, r"rows\[0\]: expected integer row indices or a boolean mask, got float64"),
    (np.array([0, 1, 80]), IndexError, r"rows\[0\]: row index 80 is out of range for X's 80 rows"),
    (np.array([0, -81]), IndexError, r"rows\[0\]: row index -81 is out of range for X's 80 rows"),
    (np.arange(10).reshape(5, 2), ValueError, r"rows\[0\]: expected a 1-D array of row indices, got shape \(5, 2\)"),
    (np.ones(79, dtype=bool), IndexError, r"rows\[0\]: a boolean mask of 79 values for X's 80 rows"),
])
def test_fit_many_refuses_rows_that_do_not_select_rows_of_X(rows, error, message):
    # a fractional index was truncated to a row without a word
    X, y = _digits(80)
    member = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, backend="numpy")
    with pytest.raises(error, match=message):
        fit_many([clone(member), clone(member)], X, y, [rows, np.arange(10)])


def _small_ensemble(kind=MLPEnsembleClassifier, member=MLPClassifier, **kw):
    return kind(member(hidden_layer_sizes=(6,), max_iter=5, backend="numpy"), n_estimators=2, random_state=0, **kw)


def test_an_ensemble_checks_predict_s_columns_by_name_as_scikit_learn_does():
    # columns in another order were averaged as if in the fitted order: silently wrong predictions
    pd = pytest.importorskip("pandas", reason="data frames need pandas")
    X, y = _digits(60)
    frame = pd.DataFrame(X[:, :5], columns=list("abcde"))
    ens = _small_ensemble().fit(frame, y)
    np.testing.assert_array_equal(ens.feature_names_in_, list("abcde"))
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        ens.predict(frame[list("edcba")])
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        ens.predict_proba(frame.rename(columns={"a": "z"}))
    with warnings.catch_warnings():  # the same columns: no warning (the members' among them)
        warnings.simplefilter("error")
        by_frame = ens.predict_proba(frame)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but MLPEnsembleClassifier was fitted"):
        np.testing.assert_array_equal(ens.predict_proba(X[:, :5]), by_frame)


@pytest.mark.parametrize("kind, member", [(MLPEnsembleClassifier, MLPClassifier), (MLPEnsembleRegressor, MLPRegressor)])
@pytest.mark.parametrize("bad", ["longer", "2-d"])
def test_an_ensemble_refuses_sample_weight_of_another_shape(kind, member, bad):
    # weights longer than X were indexed by the members' rows: the first n used, the rest ignored, without a word
    X, y = _digits(60)
    sw = np.ones(2 * len(y)) if bad == "longer" else np.ones((len(y), 1))
    with pytest.raises(ValueError, match=r"(?i)sample.weight"):  # scikit-learn's own check and message
        _small_ensemble(kind, member).fit(X, y if kind is MLPEnsembleClassifier else y / 9.0, sample_weight=sw)


def test_a_multilabel_ensemble_predicts_label_indicators_like_its_members():
    # the averaged probabilities of a multilabel ensemble were read as one class per row (argmax)
    X, _ = _digits(120)
    Y = np.stack([X[:, 10] > 0.3, X[:, 20] > 0.3, X[:, 30] > 0.3], axis=1).astype(int)
    ens = _small_ensemble().fit(X, Y)
    proba = ens.predict_proba(X)
    assert proba.shape == Y.shape
    np.testing.assert_array_equal(ens.predict(X), (proba > 0.5).astype(int))
    assert 0 <= ens.score(X, Y) <= 1  # subset accuracy, as for an MLPClassifier


@pytest.mark.parametrize("kind", [MLPEnsembleClassifier, MLPEnsembleRegressor])
def test_an_ensemble_says_it_takes_sparse_input(kind):
    assert kind().__sklearn_tags__().input_tags.sparse
def test_chunks_dispatched_to_a_local_dask_cluster():
    distributed = pytest.importorskip("distributed", reason="the Dask test needs the extra 'dask'")
    import joblib

    X, y, jobs, rows = _jobs()
    local = fit_many([clone(j) for j in jobs], X, y, rows)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_backend("dask"), warnings.catch_warnings():
            warnings.simplefilter("ignore", StackSplitWarning)
            remote = fit_many([clone(j) for j in jobs], X, y, rows, n_jobs=-1, max_stack=6)
    for a, b in zip(remote, local):
        _assert_same_models(a, b)


@pytest.mark.gpu
def test_a_stack_on_the_cuda_backend_trains_like_numpy(monkeypatch):
    try:
        mlp.get_backend("cuda")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    from mlp.kernels import gemm, gemm_stacked

    calls = {"stacked": 0, "single": 0}

    def counted(module, name, key):
        f = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return f(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    counted(gemm_stacked, "affine_forward", "stacked")
    counted(gemm_stacked, "affine_backward", "stacked")
    for name in ("affine_forward", "affine_backward_dx", "affine_backward_dw"):
        counted(gemm, name, "single")
    X, y = _digits(24)  # tiny: the simulator runs every GPU thread in Python
    jobs = [MLPClassifier(hidden_layer_sizes=(4,), alpha=a, batch_size=10, max_iter=2, random_state=s)
            for a, s in ((0.0, 0), (1e-2, 1))]
    rows = [np.arange(0, 24), np.arange(2, 23)]  # different counts: a padded last batch
    host = fit_many([clone(j).set_params(backend="numpy") for j in jobs], X, y, rows)
    device = fit_many([clone(j).set_params(backend="cuda") for j in jobs], X, y, rows)
    for a, b in zip(device, host):
        _assert_same_models(a, b, exact=False)
    # every product of the stack's steps is one launch for both models, none model by model
    assert calls["stacked"] > 0 and calls["single"] == 0


@pytest.mark.parametrize("value,threads", [(None, "cores"), ("5", 5), ("1", 1)])
def test_stack_threads_follow_the_environment_variable(monkeypatch, value, threads):
    """``MLP_STACK_THREADS`` sets the threads a worker's stacks step in on a host backend (default: the cores
    over the workers); the loop gets exactly that many (it uses at most one per model)."""
    import os

    from mlp import fit_many as search

    seen = []

    class Spy(search.TrainingLoop):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["threads"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(search, "TrainingLoop", Spy)
    if value is None:
        monkeypatch.delenv("MLP_STACK_THREADS", raising=False)
    else:
        monkeypatch.setenv("MLP_STACK_THREADS", value)
    X, y, jobs, rows = _jobs()
    fit_many(jobs[:2], X, y, rows[:2])
    assert seen == [os.cpu_count() or 1 if threads == "cores" else threads]


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_stack_threads_refuse_a_bad_environment_variable(monkeypatch, value):
    monkeypatch.setenv("MLP_STACK_THREADS", value)
    X, y, jobs, rows = _jobs()
    with pytest.raises(ValueError, match=f"MLP_STACK_THREADS: expected a whole number of threads >= 1, got '{value}'"):
        fit_many(jobs[:2], X, y, rows[:2])


@pytest.mark.parametrize("hidden,expect", [((64,), "one block per thread"), ((600, 300), "cache-sized blocks")])
def test_a_host_stack_s_blocks_hold_enough_work_for_its_threads(hidden, expect):
    """Small networks: each thread's models make one block (a block's step holds at least BLOCK_MIN_FLOPS, so the
    Python between its operations is a small share of it); networks whose step is that much work on their own:
    blocks of what fits a core's cache (CACHE_BYTES), here one network each."""
    from mlp.backends import get_backend
    from mlp.loop import BLOCK_MIN_FLOPS, TrainingLoop
    from mlp.network import Networks
    from mlp.optim import Adam

    be = get_backend("numpy")
    M, B, n_in = 8, 200, 64
    nets = [mlp.MLP([n_in, *hidden, 10], seed=m) for m in range(M)]
    net = Networks.stack(nets, be)
    X = be.asarray(np.zeros((500, n_in)), dtype=net.dtype)
    y = be.asarray(np.zeros(500, np.int64))
    loop = TrainingLoop(net, [Adam() for _ in range(M)], be, X, y, B, threads=2)
    try:
        sizes = [[b.stop - b.start for b in blocks] for blocks in loop.blocks]
        assert [sum(s) for s in sizes] == [4, 4]  # two threads, four models each
        if expect == "one block per thread":
            assert 6 * B * net.n_weights * 4 < BLOCK_MIN_FLOPS
            assert sizes == [[4], [4]]
        else:
            assert 6 * B * net.n_weights > BLOCK_MIN_FLOPS
            assert sizes == [[1, 1, 1, 1], [1, 1, 1, 1]]
    finally:
        loop.close()
