"""Sparse X (``scipy.sparse`` CSR or CSC): trained on and predicted from batch by batch, never densified whole.

A fit on a sparse X follows the trajectory of the same fit on the same data dense: the batches,
shuffles and updates are the same, and only the first layer's products differ, in the order they
add the same non-zero terms (the CPU's sparse product adds a row's non-zeros in column order, BLAS
its own blocks of the dense row).  So the two agree to rounding, not bit for bit:

* float64: within 1e-12 of the largest weight (and of the largest prediction) after a few epochs;
  measured differences are a few 1e-16.  A wrong term (a dropped row, a missed bias, a gradient
  from the wrong rows) shows at 1e-3 or more.
* float32: within 2e-5 (float32 rounding is 6e-8 per operation, compounded over the epochs).
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="mlp.MLPClassifier/MLPRegressor need scikit-learn (the extra 'sklearn')")

import scipy.sparse as sp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from conftest import real_gpu_training  # noqa: E402
import mlp  # noqa: E402
from mlp import model as model_module  # noqa: E402
from mlp import sparse as sparse_module  # noqa: E402
from mlp.estimator import MLPClassifier, MLPRegressor  # noqa: E402
from mlp.fit_cache import fingerprint as fit_fingerprint  # noqa: E402
from mlp.search import GridSearchCV, MLPEnsembleClassifier, SparseInputWarning, fit_many  # noqa: E402

TOL = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _with_empty_rows(X: np.ndarray) -> np.ndarray:
    """``X`` with every seventh row all zeros (a sparse row with no non-zero at all)."""
    X = X.copy()
    X[::7] = 0
    return X


def _digits(n_class: int = 4, n: int = 210):
    X, y = load_digits(n_class=n_class, return_X_y=True)
    return _with_empty_rows(X[:n] / 16.0), y[:n]


def _regression():
    X, y = make_regression(n_samples=160, n_features=30, n_targets=2, noise=5.0, random_state=3)
    X[np.abs(X) < 0.8] = 0  # about 60% zeros
    return _with_empty_rows(X), (y - y.mean(axis=0)) / y.std(axis=0)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


def _assert_close_fits(ours, dense, tol: float) -> None:
    for a, b in zip(ours.coefs_ + ours.intercepts_, dense.coefs_ + dense.intercepts_):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert _max_rel(a, b) <= tol
    assert ours.n_iter_ == dense.n_iter_ and ours.t_ == dense.t_
    if hasattr(dense, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, dense.loss_curve_, rtol=tol)
    np.testing.assert_allclose(ours.loss_, dense.loss_, rtol=tol)


CASES = {
    "multiclass-adam": (MLPClassifier, _digits, dict(hidden_layer_sizes=(12,), solver="adam", alpha=1e-3,
                                                      batch_size=50, max_iter=5)),
    "multiclass-sgd-nesterov-tanh": (MLPClassifier, _digits, dict(
        hidden_layer_sizes=(9, 5), activation="tanh", solver="sgd", learning_rate_init=0.2, batch_size=32,
        max_iter=4)),
    "binary-lbfgs-logistic": (MLPClassifier, lambda: _digits(2), dict(hidden_layer_sizes=(7,), activation="logistic",
                                                                     solver="lbfgs", max_iter=15)),
    "multiclass-lbfgs": (MLPClassifier, _digits, dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=10)),
    "binary-early-stopping": (MLPClassifier, lambda: _digits(2), dict(
        hidden_layer_sizes=(6,), early_stopping=True, validation_fraction=0.2, learning_rate_init=0.01,
        max_iter=5)),
    "regression-2-outputs-adam-weights": (MLPRegressor, _regression, dict(
        hidden_layer_sizes=(8,), learning_rate_init=0.01, batch_size=40, max_iter=5)),
    "regression-sgd-identity": (MLPRegressor, _regression, dict(
        hidden_layer_sizes=(7,), activation="identity", solver="sgd", learning_rate_init=0.01, batch_size=64,
        max_iter=4)),
    "regression-lbfgs-weights": (MLPRegressor, _regression, dict(hidden_layer_sizes=(6,), solver="lbfgs",
                                                                 max_iter=12)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_sparse_fit_follows_the_dense_fit(case):
    cls, data, params = CASES[case]
    X, y = data()
    weights = np.random.default_rng(5).uniform(0.2, 2.0, len(X)) if "weights" in case else None
    dense = cls(random_state=0, backend="numpy", **params).fit(X, y, sample_weight=weights)
    ours = cls(random_state=0, backend="numpy", **params).fit(sp.csr_matrix(X), y, sample_weight=weights)
    _assert_close_fits(ours, dense, TOL[np.float64])
    # prediction from sparse rows (in chunks: see the chunk test) and from dense rows of the same network
    X_test = sp.csr_matrix(X[::3])
    assert _max_rel(ours.predict_proba(X_test) if cls is MLPClassifier else ours.predict(X_test),
                    dense.predict_proba(X[::3]) if cls is MLPClassifier else dense.predict(X[::3])) <= TOL[np.float64]
    np.testing.assert_allclose(ours.score(X_test, y[::3]), dense.score(X[::3], y[::3]), rtol=1e-12)
    if cls is MLPClassifier:
        assert (ours.predict(X_test) == dense.predict(X[::3])).mean() >= 0.99


def test_float32_sparse_fit_and_prediction():
    X, y = _digits()
    X32 = X.astype(np.float32)
    params = dict(hidden_layer_sizes=(10,), max_iter=4, batch_size=40, random_state=0, backend="numpy")
    dense = MLPClassifier(**params).fit(X32, y)
    ours = MLPClassifier(**params).fit(sp.csr_matrix(X32), y)
    assert ours.coefs_[0].dtype == np.float32
    _assert_close_fits(ours, dense, TOL[np.float32])
    proba = ours.predict_proba(sp.csr_matrix(X32))
    assert proba.dtype == np.float32 and _max_rel(proba, dense.predict_proba(X32)) <= TOL[np.float32]


def test_csc_and_non_canonical_input_give_the_csr_fit_and_are_left_as_given():
    X, y = _digits()
    params = dict(hidden_layer_sizes=(8,), max_iter=3, batch_size=50, random_state=0, backend="numpy")
    reference = MLPClassifier(**params).fit(sp.csr_matrix(X), y)
    csc = sp.csc_matrix(X)
    before = (csc.data.copy(), csc.indices.copy(), csc.indptr.copy())
    from_csc = MLPClassifier(**params).fit(csc, y)
    for a, b in zip(from_csc.coefs_ + from_csc.intercepts_, reference.coefs_ + reference.intercepts_):
        np.testing.assert_array_equal(a, b)  # converted once to the same canonical CSR: the same fit
    for got, was in zip((csc.data, csc.indices, csc.indptr), before):
        np.testing.assert_array_equal(got, was)
    # a matrix with repeated entries (each value split in two halves) holds their sums
    csr = sp.csr_matrix(X)
    rows = [slice(csr.indptr[r], csr.indptr[r + 1]) for r in range(X.shape[0])]
    data = np.concatenate([np.concatenate([csr.data[r] / 2, csr.data[r] - csr.data[r] / 2]) for r in rows])
    indices = np.concatenate([np.tile(csr.indices[r], 2) for r in rows])
    doubled = sp.csr_matrix((data, indices, 2 * csr.indptr), shape=X.shape)
    assert not doubled.has_canonical_format
    fit = MLPClassifier(**params).fit(doubled, y)
    _assert_close_fits(fit, reference, TOL[np.float64])
    assert not doubled.has_canonical_format  # the caller's matrix is never summed in place
    np.testing.assert_allclose(fit.predict_proba(csc), reference.predict_proba(X), rtol=1e-12)


def test_partial_fit_and_warm_start_on_sparse_batches():
    X, y = _digits()
    params = dict(hidden_layer_sizes=(8,), batch_size=30, random_state=0, backend="numpy")
    dense, ours = MLPClassifier(**params), MLPClassifier(**params)
    for part in (slice(0, 100), slice(100, 210)):
        dense.partial_fit(X[part], y[part], classes=np.unique(y))
        ours.partial_fit(sp.csr_matrix(X[part]), y[part], classes=np.unique(y))
    _assert_close_fits(ours, dense, TOL[np.float64])
    dense.set_params(warm_start=True, max_iter=2).fit(X, y)
    ours.set_params(warm_start=True, max_iter=2).fit(sp.csr_matrix(X), y)
    _assert_close_fits(ours, dense, TOL[np.float64])


def test_mlp_predicts_sparse_rows_chunk_by_chunk(monkeypatch):
    # chunks of 64 rows: 200 rows make three full chunks and a last one of 8
    monkeypatch.setattr(model_module, "PREDICT_CHUNK", 64)
    dense = sp.random(200, 40, density=0.05, format="csr", random_state=1).toarray()
    dense[5] = 0  # a row without non-zeros
    X = sp.csr_matrix(dense)
    for output, sizes in (("softmax", [40, 16, 3]), ("logistic", [40, 7, 2]), ("exp", [40, 6, 1])):
        model = mlp.MLP(sizes, seed=2, dtype="float64", activation="tanh", output=output)
        np.testing.assert_allclose(model.decision_function(X), model.decision_function(dense), rtol=1e-12,
                                   atol=1e-15)
        np.testing.assert_allclose(model.predict_proba(X), model.predict_proba(dense), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(model.predict(X), model.predict(dense), rtol=1e-12)
    with pytest.raises(ValueError, match=r"X: expected a sparse matrix of shape \(n_samples >= 1, 40\)"):
        model.predict(sp.random(3, 41, density=0.5, format="csr"))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match=r"X: expected finite values, got 1 NaN or infinite entries"):
        model.predict(bad)
    # the library's own CSRMatrix (a fit's validation rows) is taken as it is, when it fits the model
    placed = model.backend.csr_asarray(X)
    np.testing.assert_allclose(model.predict(placed), model.predict(X), rtol=1e-15)
    with pytest.raises(ValueError, match=r"X: expected a CSRMatrix of the 'numpy' backend and dtype float64"):
        model.predict(model.backend.csr_asarray(X, np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("validation", [None, "split", "data"])
def test_a_trainer_fits_and_evaluates_a_sparse_X_as_the_dense_one(dtype, validation):
    # Trainer.fit, Trainer.evaluate and mlp.evaluate refused a sparse X ("expected a dense array here")
    X, y = _digits()
    X_val, y_val = X[150:], y[150:]
    results = {}
    for form in ("dense", "sparse"):
        def data(a):
            return sp.csr_matrix(a) if form == "sparse" else a

        model = mlp.MLP([64, 16, 4], seed=0, dtype=dtype)
        trainer = mlp.Trainer(model, mlp.optim.Adam(1e-2), backend="numpy", batch_size=32, seed=3)
        kwargs = {"split": {"validation_split": 0.2}, "data": {"validation_data": (data(X_val), y_val)},
                  None: {}}[validation]
        history = trainer.fit(data(X[:150]), y[:150], epochs=4, verbose=0, **kwargs)
        results[form] = (model.get_weights(), history, trainer.evaluate(data(X), y),
                         mlp.evaluate(model, data(X), y), model.predict_proba(data(X)))
    (w_d, h_d, e_d, m_d, p_d), (w_s, h_s, e_s, m_s, p_s) = results["dense"], results["sparse"]
    tol = TOL[dtype]
    for (W_d, b_d), (W_s, b_s) in zip(w_d, w_s):
        scale = max(np.abs(W_d).max(), np.abs(b_d).max())
        np.testing.assert_allclose(W_s, W_d, rtol=0, atol=tol * scale)
        np.testing.assert_allclose(b_s, b_d, rtol=0, atol=tol * scale)
    keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if validation else [])
    for key in keys:
        np.testing.assert_allclose(h_s[key], h_d[key], rtol=100 * tol, atol=100 * tol)
    for figures_s, figures_d in ((e_s, e_d), (m_s, m_d)):
        np.testing.assert_allclose(figures_s["loss"], figures_d["loss"], rtol=100 * tol)
        assert figures_s["accuracy"] == figures_d["accuracy"]
    np.testing.assert_allclose(p_s, p_d, rtol=0, atol=100 * tol)


def test_a_trainer_checks_a_sparse_X_as_a_dense_one():
    X = sp.random(40, 6, density=0.3, format="csr", random_state=0, dtype=np.float32)
    y = np.random.RandomState(0).randint(0, 3, 40)
    model = mlp.MLP([6, 4, 3], seed=0)
    trainer = mlp.Trainer(model, mlp.optim.SGD(0.1), backend="numpy", batch_size=8)
    with pytest.raises(ValueError, match=r"X: expected a sparse matrix of shape \(n_samples >= 1, 7\)"):
        mlp.Trainer(mlp.MLP([7, 4, 3]), mlp.optim.SGD(0.1), backend="numpy").fit(X, y, epochs=1, verbose=0)
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match=r"validation_data\[0\]: expected finite values, got 1 NaN or infinite"):
        trainer.fit(X, y, epochs=1, verbose=0, validation_data=(bad, y))
    with pytest.raises(ValueError, match=r"X: expected finite values"):
        mlp.evaluate(model, bad, y)
    with pytest.raises(ValueError, match=r"y: expected 40 labels \(one per sample of X\), got 39"):
        trainer.fit(X, y[:39], epochs=1, verbose=0)


def test_a_sparse_run_resumes_from_its_checkpoint_exactly(tmp_path):
    X, y = _digits()
    Xs = sp.csr_matrix(X)

    def trainer():
        return mlp.Trainer(mlp.MLP([64, 8, 4], seed=0, dtype=np.float64), mlp.optim.Adam(1e-2), backend="numpy",
                           batch_size=32, seed=1)

    whole = trainer()
    whole.fit(Xs, y, epochs=4, verbose=0, validation_split=0.25)
    first = trainer()
    first.fit(Xs, y, epochs=2, verbose=0, validation_split=0.25, checkpoint=tmp_path / "run.npz")
    resumed = mlp.Trainer.from_checkpoint(tmp_path / "run.npz", backend="numpy")
    with pytest.raises(ValueError, match="the checkpoint's run trained on other data"):
        resumed.fit(sp.csr_matrix(X[::-1]), y[::-1], epochs=4, verbose=0, validation_split=0.25)
    resumed.fit(Xs, y, epochs=4, verbose=0, validation_split=0.25)
    for (W, b), (W_r, b_r) in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(W_r, W)
        np.testing.assert_array_equal(b_r, b)
    assert resumed.history["val_loss"] == whole.history["val_loss"]


def test_mlp_loss_and_gradients_of_sparse_rows_are_the_dense_ones():
    X = sp.random(50, 12, density=0.2, format="csr", random_state=4)
    y = np.random.default_rng(1).integers(0, 3, 50)
    model = mlp.MLP([12, 5, 3], seed=1, dtype="float64")
    loss, grads = model.loss_and_gradients(X, y)
    loss_d, grads_d = model.loss_and_gradients(X.toarray(), y)
    np.testing.assert_allclose(loss, loss_d, rtol=1e-13)
    for (dW, db), (dW_d, db_d) in zip(grads, grads_d):
        np.testing.assert_allclose(dW, dW_d, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(db, db_d, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("api", ["estimator", "trainer"])
def test_fitting_a_very_sparse_wide_X_never_allocates_it_dense(api):
    # 2,000 x 2,000,000 with 4,000 non-zeros: dense float32 it would take 16 GB.  The network's own buffers
    # (parameters, gradients, Adam's two moments, 2,000,000 x 2 each) take 4 x 16 MB; everything the fit
    # allocates stays far below one dense copy of X, or of a batch of its rows (200 x 2,000,000: 1.6 GB).
    n, features = 2000, 2_000_000
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random(2 * n, dtype=np.float32) + 0.5,
                       (np.repeat(np.arange(n), 2), rng.integers(0, features, 2 * n))), shape=(n, features))
    y = np.arange(n) % 2
    clf = MLPClassifier(hidden_layer_sizes=(2,), max_iter=1, random_state=0, backend="numpy", dtype="float32")
    trainer = mlp.Trainer(mlp.MLP([features, 2, 2], seed=0), mlp.optim.Adam(1e-3), backend="numpy", batch_size=200)
    tracemalloc.start()
    try:
        if api == "estimator":
            clf.fit(X, y)
            clf.predict_proba(X[:300])
        else:  # with a validation split, and an evaluation after the fit
            trainer.fit(X, y, epochs=1, validation_split=0.1, verbose=0)
            mlp.evaluate(trainer.model, X[:300], y[:300])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense_bytes = n * features * 4
    assert peak < dense_bytes / 20, f"peak {peak / 2**20:.0f} MiB, X dense {dense_bytes / 2**20:.0f} MiB"
    W = clf.coefs_[0] if api == "estimator" else trainer.model.get_weights()[0][0]
    assert W.shape == (features, 2) and np.isfinite(W).all()


def test_the_fingerprint_of_a_sparse_X_reads_its_non_zeros_only():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random(2000), (rng.integers(0, 1000, 2000), rng.integers(0, 1_000_000, 2000))),
                      shape=(1000, 1_000_000))
    est = MLPClassifier()
    tracemalloc.start()
    try:
        key = fit_fingerprint(est, X, np.zeros(1000), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20  # dense: 8 GB
    # the same matrix in another format, or with 64-bit indices, is the same data
    assert fit_fingerprint(est, sp.csc_matrix(X), np.zeros(1000), None) == key
    wide = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)), shape=X.shape)
    assert fit_fingerprint(est, wide, np.zeros(1000), None) == key
    other = X.copy()
    other.data[0] += 1
    assert fit_fingerprint(est, other, np.zeros(1000), None) != key


def test_searches_and_ensembles_fit_a_sparse_X_one_at_a_time_with_one_warning():
    X, y = _digits(n=160)
    Xs = sp.csr_matrix(X)
    base = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, batch_size=40, random_state=0, backend="numpy")
    jobs = [clone(base).set_params(random_state=s) for s in (0, 1)]
    rows = [np.arange(0, 120), np.arange(40, 160)]
    with pytest.warns(SparseInputWarning, match="X is sparse: its 2 fits train one at a time") as record:
        fitted = fit_many(jobs, Xs, y, rows)
    assert len([w for w in record if issubclass(w.category, SparseInputWarning)]) == 1
    for est, r in zip(fitted, rows):
        alone = MLPClassifier(**est.get_params()).fit(Xs[r], y[r])
        for a, b in zip(est.coefs_, alone.coefs_):
            np.testing.assert_array_equal(a, b)
        dense = MLPClassifier(**est.get_params()).fit(X[r], y[r])
        _assert_close_fits(est, dense, TOL[np.float64])
    with pytest.warns(SparseInputWarning):
        search = GridSearchCV(base, {"alpha": [1e-4, 1e-2]}, cv=2).fit(Xs, y)
    dense_search = GridSearchCV(base, {"alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], dense_search.cv_results_["mean_test_score"],
                               rtol=1e-12)
    with pytest.warns(SparseInputWarning):
        ensemble = MLPEnsembleClassifier(base, n_estimators=3, random_state=0).fit(sp.csc_matrix(X), y)
    dense_ensemble = MLPEnsembleClassifier(base, n_estimators=3, random_state=0).fit(X, y)
    np.testing.assert_allclose(ensemble.predict_proba(Xs), dense_ensemble.predict_proba(X), rtol=1e-10, atol=1e-12)


@real_gpu_training
@pytest.mark.gpu
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_the_cuda_backend_trains_on_sparse_X_like_numpy(cuda, solver):
    # Numba's CUDA simulator (or a GPU): each batch densified on the device, then the dense products;
    # the NumPy backend reads the same rows sparse.  Sums in other orders: the float64 tolerance above.
    X, y = _digits(3, 60)
    params = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=2 if solver == "adam" else 4, batch_size=25,
                  random_state=0)
    on_cuda = MLPClassifier(backend="cuda", **params).fit(sp.csr_matrix(X), y)
    on_numpy = MLPClassifier(backend="numpy", **params).fit(sp.csr_matrix(X), y)
    _assert_close_fits(on_cuda, on_numpy, TOL[np.float64])
    assert _max_rel(on_cuda.predict_proba(sp.csr_matrix(X)), on_numpy.predict_proba(X)) <= TOL[np.float64]


@pytest.mark.gpu
def test_lbfgs_on_a_sparse_X_too_large_to_densify_on_the_device_runs_sparse_on_the_cpu(cuda, monkeypatch):
    monkeypatch.setattr(sparse_module, "FULL_BATCH_DENSE_BYTES", 1000)  # this X takes 60 x 64 x 8 bytes dense
    X, y = _digits(3, 60)
    params = dict(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=4, random_state=0)
    with pytest.warns(RuntimeWarning, match=r"computed on the CPU instead \(sparse products, NumPy backend\)"):
        on_cuda = MLPClassifier(backend="cuda", **params).fit(sp.csr_matrix(X), y)
    on_numpy = MLPClassifier(backend="numpy", **params).fit(sp.csr_matrix(X), y)
    for a, b in zip(on_cuda.coefs_, on_numpy.coefs_):
        np.testing.assert_array_equal(a, b)  # the same computation, on the same backend
