"""Prediction: the cost of buffers made per call and of checking ``coefs_`` on every call.

A model keeps no scratch between predictions (so that threads can share it):
every ``predict_proba`` allocates the layers' outputs for its rows.  The
scikit-learn drop-ins also compare ``coefs_``/``intercepts_`` with the
weights their kept network was built from on every call, so that an edit in
place reaches ``predict``.  Each benchmark times the code as it is (the
subject) and, in pairs of rounds alternating with it, a baseline that skips
the cost in question:

``op == "mlp_predict_proba"``
    ``MLP.predict_proba`` against the same model given a workspace kept per
    batch size (the former per-model cache, put back on a copy of the model).
``op == "estimator_predict_proba"``
    ``MLPClassifier.predict_proba`` against the same estimator that keeps its
    workspaces and finds its kept network by the arrays' identity alone (no
    comparison of their contents).  ``kept == "views"``: as fitted, its
    ``coefs_``/``intercepts_`` are views of the kept network's parameters, so
    each call only checks that they still are; ``kept == "copies"``: assigned
    arrays of its own, compared with the network's weights on every call.

``extra_info`` holds the subject's and the baseline's seconds per call of every
pair (``subject_seconds``, ``baseline_seconds``) and the median of their
ratios (``paired_ratio``), which cancels the drift of a shared machine.  Two
models: digits (64-100-10, float64, as the scikit-learn suite fits it) and
the reference 784-512-256-10 in float32; 1, 100 and 10 000 rows.  One BLAS
thread, as in ``bench_sklearn.py``.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest

from bench._measure import REFERENCE_LAYERS, Budget, fashion_like, measure

pytestmark = pytest.mark.cpu_heavy  # NumPy backend only

ROWS = (1, 100, 10_000)
MODELS = ("digits", "reference")
BLAS_THREADS = 1
PAIRS = 15


def _budget(quick: bool) -> Budget:
    return Budget(round_s=20e-3, total_s=0.3 if quick else 1.0, min_rounds=3 if quick else 5, max_rounds=50)


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[Any, np.ndarray]]:
    """``{model: (fitted MLPClassifier, rows to predict)}``."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (the drop-ins and the digits data need it)")
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning

    import mlp

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    Xf, yf = fashion_like(2_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        digits = mlp.MLPClassifier(hidden_layer_sizes=(100,), max_iter=20, random_state=0, backend="numpy").fit(X, y)
        reference = mlp.MLPClassifier(hidden_layer_sizes=REFERENCE_LAYERS[1:-1], max_iter=1, random_state=0,
                                      backend="numpy", dtype="float32").fit(Xf, yf)
    rng = np.random.default_rng(0)
    return {"digits": (digits, X[rng.integers(0, X.shape[0], max(ROWS))]),
            "reference": (reference, fashion_like(max(ROWS), seed=1)[0])}


def _kept_workspaces(model):
    """A copy of ``model`` that keeps one inference workspace per batch size (the cost per-call buffers
    add is measured against it)."""
    kept = copy.deepcopy(model)
    cache: dict = {}
    make = type(kept).new_workspace

    def new_workspace(batch: int, training: bool = True):
        if training:
            return make(kept, batch, training)
        if batch not in cache:
            cache[batch] = make(kept, batch, training)
        return cache[batch]

    kept.new_workspace = new_workspace
    return kept


def _unchecked(est):
    """A copy of ``est`` that predicts without the per-call costs: kept workspaces, and the kept network
    found by the arrays' identity."""
    old = copy.deepcopy(est)
    network = _kept_workspaces(est._inference_network())
    arrays = list(old.coefs_) + list(old.intercepts_)

    def inference_network():
        if len(arrays) != len(old.coefs_) + len(old.intercepts_) or any(
                a is not b for a, b in zip(arrays, list(old.coefs_) + list(old.intercepts_))):
            raise AssertionError("the baseline never rebuilds")
        return network

    old._inference_network = inference_network
    return old


def _seconds(op: Callable[[], Any], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        op()
    return (time.perf_counter() - start) / inner


def _paired(benchmark, settings, subject, baseline, info: dict[str, Any]) -> None:
    """pytest-benchmark rounds of ``subject``, then :data:`PAIRS` pairs of subject and baseline, in turns."""
    from threadpoolctl import threadpool_limits

    assert subject().tobytes() == baseline().tobytes()  # the same result, computed the same way
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        inner, _ = measure(benchmark, subject, budget=_budget(settings.quick), info=info)
        subj, base = [], []
        for i in range(PAIRS if not settings.quick else 5):
            first, second = (subject, baseline) if i % 2 == 0 else (baseline, subject)
            a, b = _seconds(first, inner), _seconds(second, inner)
            s, t = (a, b) if i % 2 == 0 else (b, a)
            subj.append(s)
            base.append(t)
    benchmark.extra_info.update(subject_seconds=subj, baseline_seconds=base, threads=BLAS_THREADS,
                                paired_ratio=float(np.median(np.asarray(subj) / np.asarray(base))))


def _info(op: str, model: str, est, rows: int) -> dict[str, Any]:
    sizes = [est.coefs_[0].shape[0]] + [c.shape[1] for c in est.coefs_]
    return {"suite": "predict", "op": op, "impl": "mlp-numpy", "device": "cpu", "group": model, "rows": rows,
            "layers": "-".join(map(str, sizes)), "dtype": str(est.coefs_[0].dtype)}


CASES = pytest.mark.parametrize("model,rows", [pytest.param(m, r, id=f"{m}-{r}") for m in MODELS for r in ROWS])


@CASES
def test_mlp_predict_proba(benchmark, settings, fitted, model, rows):
    """``MLP.predict_proba``: buffers made per call (subject) against a workspace kept per batch size."""
    est, X = fitted[model]
    net = copy.deepcopy(est._inference_network())
    kept = _kept_workspaces(net)
    xb = X[:rows].astype(net.dtype)
    _paired(benchmark, settings, lambda: net.predict_proba(xb), lambda: kept.predict_proba(xb),
            _info("mlp_predict_proba", model, est, rows))


@CASES
@pytest.mark.parametrize("kept", ["views", "copies"])
def test_estimator_predict_proba(benchmark, settings, fitted, model, rows, kept):
    """``MLPClassifier.predict_proba``: per-call buffers and the check of ``coefs_`` (subject) against neither."""
    est, X = fitted[model]
    if kept == "copies":
        est = copy.deepcopy(est)
        est.coefs_, est.intercepts_ = [c.copy() for c in est.coefs_], [b.copy() for b in est.intercepts_]
    xb = X[:rows]
    est.predict_proba(xb)  # builds the kept network for assigned arrays
    assert all((c is None) == (kept == "views") for c in est._net_cache.copies)
    old = _unchecked(est)
    _paired(benchmark, settings, lambda: est.predict_proba(xb), lambda: old.predict_proba(xb),
            dict(_info("estimator_predict_proba", model, est, rows), kept=kept))
