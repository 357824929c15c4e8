"""One fitted model used from many threads gives the serial answer, bit for bit.

Every test runs the same calls twice: once in order in one thread, then spread
over 8 threads released together by a barrier, each thread making many calls
on one shared object with a mix of batch sizes (so that calls of different
threads ask for buffers of the same size at the same time).  NumPy's products
and the Numba loops release the GIL, so calls really overlap; a buffer shared
between calls (a workspace cached on the model, a gradient buffer) shows as
results that differ from the serial ones.  The comparison is bitwise: the
same operations on the same data give the same bits whatever thread runs
them.  BLAS runs one thread per call here, so that the order of its sums
does not depend on how many of its own threads it starts.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

import mlp

N_THREADS = 8
CALLS_PER_THREAD = 32
#: batch sizes the calls cycle through: one row, a few, and a larger block (each a key of a per-size cache)
BATCHES = (1, 7, 64, 7, 1, 150)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _in_threads(calls: list[list[Callable[[], Any]]]) -> list[list[Any]]:
    """Each list of calls run in order by a thread of its own, all threads started together."""
    barrier = threading.Barrier(len(calls))

    def work(own: list[Callable[[], Any]]) -> list[Any]:
        barrier.wait()
        return [call() for call in own]

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(work, own) for own in calls]
        return [f.result() for f in futures]


def _same_bits(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_bits(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):  # loss_and_gradients: (loss, [(dW, db), ...])
        return type(a) is type(b) and len(a) == len(b) and all(_same_bits(u, v) for u, v in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_threads_match_serial(make_call: Callable[[int, int], Callable[[], Any]]) -> None:
    """``make_call(thread, i)`` gives the i-th call of a thread; threaded results must equal serial ones."""
    calls = [[make_call(t, i) for i in range(CALLS_PER_THREAD)] for t in range(N_THREADS)]
    serial = [[call() for call in own] for own in calls]
    threaded = _in_threads(calls)
    differ = [(t, i) for t in range(N_THREADS) for i in range(CALLS_PER_THREAD)
              if not _same_bits(threaded[t][i], serial[t][i])]
    assert not differ, (f"{len(differ)} of {N_THREADS * CALLS_PER_THREAD} calls made in threads differ from the "
                        f"same calls made one after another (thread, call): {differ[:8]}")


def _rows(X: np.ndarray, thread: int, i: int) -> np.ndarray:
    """The rows of call ``i`` of ``thread``: a batch size of :data:`BATCHES`, a start of its own."""
    batch = BATCHES[(thread + i) % len(BATCHES)]
    start = (thread * 37 + i * 11) % (X.shape[0] - batch)
    return X[start:start + batch]


# --------------------------------------------------------------------------------------- data and models
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def network(digits):
    X, y = digits
    model = mlp.MLP([64, 256, 128, 10], seed=3, dtype="float64")
    trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-3), backend="numpy", batch_size=64, seed=0)
    trainer.fit(X, y, epochs=1, verbose=0)
    return model


def _quiet_fit(est, X, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.fixture(scope="module")
def classifier(digits):
    X, y = digits
    return _quiet_fit(mlp.MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=3, random_state=0, backend="numpy"),
                      X, y)


# ------------------------------------------------------------------------------------------- mlp.MLP
@pytest.mark.parametrize("method", ["predict_proba", "predict", "decision_function"])
def test_mlp_inference_in_threads_is_serial(network, digits, method):
    X = digits[0]
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): getattr(network, method)(xb)))


def test_mlp_loss_and_gradients_in_threads_is_serial(network, digits):
    X, y = digits

    def call(t, i):
        batch = BATCHES[(t + i) % len(BATCHES)]
        start = (t * 37 + i * 11) % (X.shape[0] - batch)
        return lambda: network.loss_and_gradients(X[start:start + batch], y[start:start + batch])

    _assert_threads_match_serial(call)


def test_evaluate_in_threads_is_serial(network, digits):
    X, y = digits

    def call(t, i):
        batch = BATCHES[(t + i) % len(BATCHES)]
        start = (t * 37 + i * 11) % (X.shape[0] - batch)
        return lambda: mlp.evaluate(network, X[start:start + batch], y[start:start + batch])

    _assert_threads_match_serial(call)


def test_evaluate_of_a_regression_network_in_threads_is_serial(digits):
    X = digits[0]
    targets = np.stack([X[:, :8].sum(axis=1), X[:, 8:16].mean(axis=1)], axis=1)
    model = mlp.MLP([64, 32, 2], seed=1, dtype="float64", activation="tanh", output="identity")

    def call(t, i):
        batch = BATCHES[(t + i) % len(BATCHES)]
        start = (t * 37 + i * 11) % (X.shape[0] - batch)
        return lambda: mlp.evaluate(model, X[start:start + batch], targets[start:start + batch])

    _assert_threads_match_serial(call)


# ------------------------------------------------------------------------------ scikit-learn drop-ins
@pytest.mark.parametrize("method", ["predict_proba", "predict", "score"])
def test_classifier_in_threads_is_serial(classifier, digits, method):
    X, y = digits

    def call(t, i):
        batch = BATCHES[(t + i) % len(BATCHES)]
        start = (t * 37 + i * 11) % (X.shape[0] - batch)
        rows = slice(start, start + batch)
        if method == "score":
            return lambda: classifier.score(X[rows], y[rows])
        return lambda: getattr(classifier, method)(X[rows])

    _assert_threads_match_serial(call)


def test_regressor_in_threads_is_serial(digits):
    X = digits[0]
    target = X[:, :32].sum(axis=1) - X[:, 32:].sum(axis=1)
    reg = _quiet_fit(mlp.MLPRegressor(hidden_layer_sizes=(64, 32), max_iter=3, random_state=0, backend="numpy"),
                     X, target)
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): reg.predict(xb)))


def test_unpickled_classifier_in_threads_is_serial(classifier, digits):
    X = digits[0]
    clone = pickle.loads(pickle.dumps(classifier))
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): clone.predict_proba(xb)))
    assert _same_bits(clone.predict_proba(X), classifier.predict_proba(X))


def test_ensemble_in_threads_is_serial(digits):
    X, y = digits
    member = mlp.MLPClassifier(hidden_layer_sizes=(48,), max_iter=2, random_state=0, backend="numpy")
    ensemble = _quiet_fit(mlp.MLPEnsembleClassifier(member, n_estimators=3, random_state=0), X, y)
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): ensemble.predict_proba(xb)))


def test_search_best_estimator_in_threads_is_serial(digits):
    X, y = digits
    search = _quiet_fit(mlp.GridSearchCV(
        mlp.MLPClassifier(hidden_layer_sizes=(48,), max_iter=2, random_state=0, backend="numpy"),
        {"alpha": [1e-4, 1e-2]}, cv=2), X, y)
    best = search.best_estimator_
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): best.predict_proba(xb)))
    _assert_threads_match_serial(lambda t, i: (lambda xb=_rows(X, t, i): search.predict(xb)))


@pytest.mark.parametrize("edit", ["replaced", "replaced then edited in place"])
def test_classifier_rebuilding_after_an_edit_in_threads_predicts_the_edit(digits, edit):
    """Threads that all find the kept network out of date (an array of ``coefs_`` replaced, then maybe edited in
    place) build their own or take another thread's, never a half-made one: every call gives what a fresh copy
    of the edited model gives."""
    X = digits[0]
    clf = _quiet_fit(mlp.MLPClassifier(hidden_layer_sizes=(64,), max_iter=2, random_state=0, backend="numpy"),
                     X, digits[1])
    clf.predict(X[:5])
    clf.coefs_[0] = clf.coefs_[0] * -1.0
    if edit != "replaced":
        clf.predict(X[:5])  # the kept network now holds a copy of the replaced array's values ...
        clf.coefs_[0][:, :8] *= -1.0  # ... which this edit no longer matches
    fresh = pickle.loads(pickle.dumps(clf))  # built from the edited coefs_
    calls = [[(lambda xb=_rows(X, t, i): clf.predict_proba(xb)) for i in range(CALLS_PER_THREAD)]
             for t in range(N_THREADS)]
    threaded = _in_threads(calls)  # first: the threads race to replace the kept network
    expected = [[fresh.predict_proba(_rows(X, t, i)) for i in range(CALLS_PER_THREAD)] for t in range(N_THREADS)]
    differ = sum(not _same_bits(a, b) for own_t, own_e in zip(threaded, expected) for a, b in zip(own_t, own_e))
    assert differ == 0, f"{differ} calls ignored the edit or used a network being built"


# ------------------------------------------------------------------------------------------ training
def test_two_fits_in_two_threads_equal_their_serial_fits(digits):
    """Fits of different estimators in different threads share nothing: each ends bitwise as fitted alone."""
    X, y = digits

    def fits():
        return [mlp.MLPClassifier(hidden_layer_sizes=(40,), solver="adam", max_iter=4, random_state=1,
                                  backend="numpy"),
                mlp.MLPClassifier(hidden_layer_sizes=(40, 20), solver="sgd", max_iter=4, random_state=2,
                                  backend="numpy")]

    serial = [_quiet_fit(est, X, y) for est in fits()]
    threaded = _in_threads([[lambda est=est: _quiet_fit(est, X, y)] for est in fits()])
    for ours, alone in zip([r[0] for r in threaded], serial):
        for a, b in zip(ours.coefs_ + ours.intercepts_, alone.coefs_ + alone.intercepts_):
            assert _same_bits(a, b)
        assert ours.loss_curve_ == alone.loss_curve_


# ----------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
def test_cuda_network_in_threads_is_serial(cuda):
    """The CUDA backend (a GPU, or the simulator at tiny shapes): every thread's launches go to the backend's
    one stream, and each call's buffers are its own."""
    import mlp.backends.cuda_backend as cuda_backend

    rng = np.random.default_rng(0)
    small = cuda_backend.ON_SIMULATOR  # the simulator runs every GPU thread in Python
    sizes = [6, 5, 3] if small else [64, 96, 48, 10]
    model = mlp.MLP(sizes, seed=2, dtype="float64").to(cuda)
    X = rng.standard_normal((20 if small else 400, sizes[0]))
    batches = (1, 4, 9) if small else BATCHES
    threads, per_thread = (3, 2) if small else (N_THREADS, CALLS_PER_THREAD)

    def rows(t, i):
        batch = batches[(t + i) % len(batches)]
        start = (t * 5 + i * 3) % (X.shape[0] - batch)
        return X[start:start + batch]

    calls = [[(lambda xb=rows(t, i): model.predict_proba(xb)) for i in range(per_thread)] for t in range(threads)]
    serial = [[call() for call in own] for own in calls]
    threaded = _in_threads(calls)
    assert all(_same_bits(a, b) for own_t, own_s in zip(threaded, serial) for a, b in zip(own_t, own_s))


@pytest.mark.gpu
def test_a_products_kept_launch_runs_with_its_own_grid(cuda):
    """The products keep a launch per shape; a later shape's launch of the same kernel must not change the grid
    an earlier one runs with (on the simulator a configured kernel is the kernel object itself)."""
    backend = type(cuda)(gemm_config="32x64", split_k=1)  # 32-row tiles: 40 rows take two, 10 rows one
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    for rows in (40, 10, 40):  # the second 40 reuses the launch made first
        x = rng.standard_normal((rows, 3))
        out = backend.zeros((rows, 2), np.float64)
        backend._affine_forward(backend.asarray(x), backend.asarray(W), backend.asarray(b), 0, out)
        np.testing.assert_allclose(backend.to_numpy(out), x @ W + b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_split_k_scratch_is_never_shared_between_two_streams(cuda):
    """Launches on one stream run one after another, so a stream's products may share split-K scratch; two
    streams may run at the same time, so a workspace gives each its own partial tiles and tickets."""
    from numba import cuda as numba_cuda

    from mlp.kernels import gemm

    ws = gemm.GemmWorkspace()
    first, second = numba_cuda.stream(), numba_cuda.stream()
    m, n, k = 5, 9, 70  # split four ways by the 32x64 tile
    a, b = (ws.recipe("forward", 0, np.dtype(np.float32), m, n, k, "32x64", 4, stream=s) for s in (first, second))
    again = ws.recipe("forward", 0, np.dtype(np.float32), m, n, k, "32x64", 4, stream=first)
    assert again is a  # one recipe per shape and stream
    shared = [name for name in ("partial", "partial_colsum", "tickets") if getattr(a, name) is getattr(b, name)]
    assert not shared, f"two streams share split-K scratch: {shared}"
    # another shape on the same stream shares that stream's tickets
    c = ws.recipe("forward", 0, np.dtype(np.float32), m + 1, n, k, "32x64", 4, stream=first)
    assert c.tickets is a.tickets
