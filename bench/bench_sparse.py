"""Sparse X: ``mlp.MLPClassifier`` against scikit-learn's ``MLPClassifier`` on TF-IDF-like data, time and memory.

Two data sets, both ``scipy.sparse`` CSR, generated from a seed (:func:`tfidf_like`, :func:`scattered`):

``tfidf``
    20,000 training rows (and 5,000 held out) x 100,000 features, 0.1% non-zero (about 100 a row),
    20 classes: each document draws its words from a Zipf-like background over the whole
    vocabulary (97%) and from its class's own 1,000 words (3%, Zipf-weighted too, taken among the
    20,000 most frequent words, so the classes share many); the counts are weighted by inverse
    document frequency and every row is scaled to unit L2 norm, as ``TfidfVectorizer`` does.
    Learnable, not trivially: a few epochs reach a held-out accuracy of about 0.7.
``scattered``
    20,000 x 20,000 with 2,000 non-zeros in all (uniform positions and values in [0.5, 1.5), random
    labels of 20 classes): nearly every row empty, the network's first layer 2,000,000 weights.

Both sides get the same constructor arguments (:func:`params`): one hidden layer of 100 ReLU units,
adam, ``random_state=0``, a fixed ``max_iter`` with ``tol=0`` and ``n_iter_no_change=max_iter``
(both run every epoch; ``n_iter_`` is checked), in the data's dtype (float64 and float32), with one
BLAS thread (threadpoolctl), on the NumPy backend for mlp.

Time
    The median of a few rounds of one ``fit`` of a fresh estimator in this process, after an untimed
    fit on a small slice of the data (compilation and first-use costs, paid once per process, are
    not the fit's).
Peak memory
    One fit in a fresh Python process (``python -m bench.bench_sparse peak ...``): it loads the data
    (an uncompressed ``.npz`` written once) and makes the same small untimed fit; then, on Linux, it
    resets its peak resident memory to its resident memory (``/proc/self/clear_refs``), fits, and
    reads the peak (``VmHWM``): ``peak_bytes`` is the peak over what was resident when the fit
    began.  The high-water mark of the resident memory counts everything the fit touches (NumPy's
    and SciPy's arrays, Numba's runtime allocations, BLAS buffers), where ``tracemalloc`` would miss
    the allocations made inside Numba-compiled code; a fresh process keeps one fit's peak from
    hiding another's.  (``getrusage``'s ``ru_maxrss``, the fallback elsewhere, would also carry
    over the size of the process this one was forked from.)  What was resident before the fit
    (the interpreter, the libraries, the data) is not counted on either side.

``extra_info`` records ``peak_bytes``, ``n_iter``, the held-out accuracy of the last timed fit
(``score``; the ``scattered`` labels are random, so its accuracy is chance) and ``group``
("<data set>-<dtype>"), on which the targets pair mlp's rows with scikit-learn's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench._measure import sizes

DTYPES = ("float64", "float32")
#: BLAS threads of both sides (the products of one sparse batch are small; see bench_sklearn.py)
BLAS_THREADS = 1
HIDDEN = 100
CLASSES = 20
DATASETS = ("tfidf", "scattered")
REPO = Path(__file__).resolve().parents[1]


def max_iter(quick: bool) -> int:
    return 2 if quick else 5


def rounds(quick: bool) -> int:
    return 1 if quick else 3


def params(quick: bool) -> dict[str, Any]:
    """The constructor arguments both sides get (scikit-learn's names and meanings)."""
    n = max_iter(quick)
    return dict(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", max_iter=n, tol=0.0,
                n_iter_no_change=n, random_state=0)


# ---------------------------------------------------------------------- data
def tfidf_like(n: int = 25_000, features: int = 100_000, classes: int = CLASSES, per_row: int = 100,
               seed: int = 0) -> tuple[Any, np.ndarray]:
    """A TF-IDF-like CSR matrix (float64, rows of unit L2 norm, about ``per_row`` non-zeros a row) and its labels."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    background = 1.0 / np.arange(1, features + 1) ** 1.1
    background /= background.sum()
    y = rng.integers(0, classes, n)
    topic_size, frequent = 1000, 20_000
    topics = np.stack([rng.choice(frequent, topic_size, replace=False) for _ in range(classes)])
    topic_p = 1.0 / np.arange(1, topic_size + 1) ** 0.8
    topic_p /= topic_p.sum()
    # repeated words merge into one count: 1.5 draws per word a row gives about per_row distinct words
    docs = np.repeat(np.arange(n), rng.poisson(per_row * 1.5, n))
    words = rng.choice(features, docs.size, p=background)
    themed = np.flatnonzero(rng.random(docs.size) < 0.03)
    words[themed] = topics[y[docs[themed]], rng.choice(topic_size, themed.size, p=topic_p)]
    counts = sp.csr_matrix((np.ones(docs.size), (docs, words)), shape=(n, features))
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=features)
    X = counts.multiply(np.log((1 + n) / (1 + df)) + 1).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = (sp.diags(1 / np.where(norms == 0, 1, norms)) @ X).tocsr()
    X.sort_indices()
    return X, y


def scattered(n: int = 25_000, features: int = 20_000, nnz: int = 2_500, classes: int = CLASSES,
              seed: int = 0) -> tuple[Any, np.ndarray]:
    """``nnz`` non-zeros at uniform positions of an (n, features) CSR matrix, values in [0.5, 1.5); random labels."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((rng.random(nnz) + 0.5, (rng.integers(0, n, nnz), rng.integers(0, features, nnz))),
                      shape=(n, features))
    X.sum_duplicates()
    return X, rng.integers(0, classes, n)


#: training rows of each data set; the rest (5,000) are held out
TRAIN_ROWS = 20_000
MAKERS = {"tfidf": tfidf_like, "scattered": scattered}


def load(folder: Path, dataset: str, dtype: str) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` from the files :func:`write` made."""
    import scipy.sparse as sp

    X = sp.load_npz(folder / f"{dataset}-{dtype}.npz")
    y = np.load(folder / f"{dataset}-y.npy")
    return X[:TRAIN_ROWS], y[:TRAIN_ROWS], X[TRAIN_ROWS:], y[TRAIN_ROWS:]


def write(folder: Path) -> Path:
    """Every data set in every dtype, as uncompressed ``.npz`` (loading one allocates only its arrays)."""
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    for name, make in MAKERS.items():
        X, y = make()
        for dtype in DTYPES:
            sp.save_npz(folder / f"{name}-{dtype}.npz", X.astype(dtype), compressed=False)
        np.save(folder / f"{name}-y.npy", y)
    return folder


# ------------------------------------------------------------------ fitting
def estimator(impl: str, quick: bool) -> Any:
    if impl == "mlp-numpy":
        import mlp

        return mlp.MLPClassifier(**params(quick), backend="numpy")
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(**params(quick))


def warm_up(impl: str, quick: bool, X: Any, y: np.ndarray) -> None:
    """An untimed fit on 60 rows of the first 200 features: compiles (or loads) everything a fit runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator(impl, quick).fit(X[:60, :200], y[:60])


def fit(impl: str, quick: bool, X: Any, y: np.ndarray) -> Any:
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        warnings.simplefilter("ignore")  # the fixed max_iter ends every fit unconverged, on purpose
        return estimator(impl, quick).fit(X, y)


def peak_in_fresh_process(folder: Path, dataset: str, dtype: str, impl: str, quick: bool) -> dict[str, Any]:
    """Run :func:`_peak` in a new interpreter; returns what it measured."""
    cmd = [sys.executable, "-m", "bench.bench_sparse", "peak", str(folder), dataset, dtype, impl]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, OMP_NUM_THREADS=str(BLAS_THREADS), OPENBLAS_NUM_THREADS=str(BLAS_THREADS),
               MKL_NUM_THREADS=str(BLAS_THREADS))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _proc_status(field: str) -> int:
    """A memory figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset this process's peak resident memory to its current resident memory (Linux's ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak(folder: Path, dataset: str, dtype: str, impl: str, quick: bool) -> dict[str, Any]:
    """In a fresh process: load, warm up, then one fit between two readings of the peak resident memory.

    On Linux the peak (``VmHWM``) is reset to the resident memory just before the fit, so that neither the
    data's loading nor the memory of the process this one was forked from (which ``ru_maxrss`` inherits
    across ``exec``) counts; elsewhere ``ru_maxrss`` before and after.
    """
    X, y, _, _ = load(folder, dataset, dtype)
    warm_up(impl, quick, X, y)
    proc = _reset_peak()
    kib = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux, bytes on macOS
    before = _proc_status("VmRSS") if proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    start = time.perf_counter()
    est = fit(impl, quick, X, y)
    seconds = time.perf_counter() - start
    after = _proc_status("VmHWM") if proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    return {"peak_bytes": after - before, "resident_before_bytes": before, "seconds": seconds,
            "n_iter": int(est.n_iter_), "method": "VmHWM reset by clear_refs" if proc else "ru_maxrss"}


# ------------------------------------------------------------------ benchmark
@pytest.fixture(scope="session")
def sparse_data(tmp_path_factory) -> Path:
    pytest.importorskip("scipy.sparse", reason="SciPy not installed")
    return write(tmp_path_factory.mktemp("sparse"))


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("dtype", sizes(DTYPES, ("float64",)))
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("impl", ["mlp-numpy", "sklearn"])
def test_fit_sparse(benchmark, settings, sklearn_present, sparse_data, impl, dataset, dtype):
    """One ``fit`` per round in this process (time); one more in a fresh process (peak memory)."""
    X, y, X_test, y_test = load(sparse_data, dataset, dtype)
    warm_up(impl, settings.quick, X, y)
    fitted: list[Any] = []
    info = {"suite": "sparse", "op": "fit", "impl": impl, "device": "cpu", "dataset": dataset, "dtype": dtype,
            "group": f"{dataset}-{dtype}", "optimizer": "adam", "rows": X.shape[0], "features": X.shape[1],
            "classes": CLASSES, "nnz": int(X.nnz), "density": X.nnz / (X.shape[0] * X.shape[1]),
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params(settings.quick).items()},
            "threads": BLAS_THREADS, "inner": 1}
    benchmark.extra_info.update(info)
    benchmark.pedantic(lambda: fitted.__setitem__(slice(None), [fit(impl, settings.quick, X, y)]),
                       rounds=rounds(settings.quick), iterations=1, warmup_rounds=0)
    est = fitted[0]
    assert est.n_iter_ == max_iter(settings.quick), f"ran {est.n_iter_} epochs, expected {max_iter(settings.quick)}"
    peak = peak_in_fresh_process(sparse_data, dataset, dtype, impl, settings.quick)
    assert peak["n_iter"] == est.n_iter_
    benchmark.extra_info.update(score=float(np.mean(est.predict(X_test) == y_test)), n_iter=int(est.n_iter_),
                                peak_bytes=int(peak["peak_bytes"]), peak_fit_seconds=peak["seconds"],
                                resident_before_bytes=int(peak["resident_before_bytes"]), peak_method=peak["method"])


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bench_sparse peak FOLDER DATASET DTYPE IMPL [--quick]``: one fit's peak memory, as JSON;
    ``python -m bench.bench_sparse write FOLDER``: the data sets."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_sparse")
    sub = p.add_subparsers(dest="command", required=True)
    peak = sub.add_parser("peak")
    peak.add_argument("folder", type=Path)
    peak.add_argument("dataset", choices=DATASETS)
    peak.add_argument("dtype", choices=DTYPES)
    peak.add_argument("impl", choices=("mlp-numpy", "sklearn"))
    peak.add_argument("--quick", action="store_true")
    sub.add_parser("write").add_argument("folder", type=Path)
    args = p.parse_args(argv)
    if args.command == "write":
        print(write(args.folder))
    else:
        print(json.dumps(_peak(args.folder, args.dataset, args.dtype, args.impl, args.quick)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
