"""A hyperparameter search on digits: every candidate and fold trained at once, against one fit at a time.

The search is scikit-learn's ``GridSearchCV`` over ``MLPClassifier`` on
digits (``load_digits``: 1,797 images of 8 x 8 pixels scaled to [0, 1] by
/16, 10 classes; it ships with scikit-learn): ``hidden_layer_sizes`` x
``alpha`` x ``learning_rate_init`` (:data:`FULL`), 5-fold
``StratifiedKFold(shuffle=True, random_state=0)``, adam, ``batch_size="auto"``,
``random_state=0``, and a fixed number of epochs (``tol=0`` and
``n_iter_no_change=max_iter``, so that no fit stops early and every engine
does the same work; ``n_iter_`` of every fit is checked).  It runs five ways
in the same session, one round each (a search takes from seconds to minutes),
every process with one BLAS thread (the products are small; on this 2-core
machine two BLAS threads per product measured several times slower and very
noisy), so that "one process" and "all cores" mean the same for every engine:

``mlp-search``
    ``mlp.search.GridSearchCV(mlp.MLPClassifier(backend="numpy"))``, one process:
    the fits of one network shape train as one stack.
``mlp-search-all-cores``
    the same with ``n_jobs=-1``: the stacks split over one worker process per core.
``sklearn-search-mlp``
    scikit-learn's ``GridSearchCV`` over the same ``mlp.MLPClassifier``, one fit
    at a time in this process.
``sklearn-search``
    scikit-learn's ``GridSearchCV(n_jobs=-1)`` over scikit-learn's own
    ``MLPClassifier`` with the same arguments (one worker process per core).
``stack-products``
    the matrix products of ``mlp-search``'s stacks alone (:class:`StackProducts`,
    each model's own rows, as the stack computes them), in one process: the
    limit the one-process stacked search can reach on this machine.
``stack-products-padded``
    the same with the one-hidden-layer models padded to the widest hidden
    layer in one stack (:func:`padded`): the products padding would compute
    instead of one stack per shape (how ``mlp.search`` groups hidden sizes
    that differ is decided by these two rows).

The targets pair like with like: the all-cores searches with each other, the
one-process ones with each other and with the products.

A search is scored by a callable that returns the accuracy and the fit's
``n_iter_`` (so that every fit's epoch count can be checked), with
``refit=False`` (a refit would add one fit outside the cross-validation); the
best candidate is scikit-learn's rule, the first of rank 1 in accuracy.
``extra_info`` records it (``best_params``, ``best_score``), every
candidate's mean accuracy, and, on the rows after ``mlp-search``, how far
they agree with it (``best_agrees``: the share of the best parameters that
are equal; ``score_gap``: the largest difference of a candidate's mean
accuracy).  ``group`` ("digits-<dtype>") pairs the rows for the targets.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from bench import _env
from bench._measure import Budget, measure

#: The grid of the full run.
FULL = {"hidden_layer_sizes": [(32,), (64,), (100,), (64, 32)], "alpha": [1e-5, 1e-4, 1e-3],
        "learning_rate_init": [1e-3, 3e-3]}
#: The quick run keeps a one- and a two-layer shape and every alpha x learning rate, so that a stack holds
#: 6 candidates x 2 folds (the full run: 6 x 5) and the ratios keep their meaning.
QUICK = {"hidden_layer_sizes": [(32,), (64, 32)], "alpha": [1e-5, 1e-4, 1e-3], "learning_rate_init": [1e-3, 3e-3]}
#: scikit-learn's ``batch_size="auto"``: min(200, training rows).
AUTO_BATCH = 200

DTYPES = [pytest.param("float64", id="float64"), pytest.param("float32", id="float32", marks=pytest.mark.full)]


@dataclass(frozen=True)
class Plan:
    """One search: the grid, the folds and the epochs of every fit."""

    grid: dict[str, list]
    folds: int
    epochs: int

    def params(self) -> dict[str, Any]:
        """The estimator arguments every engine gets (scikit-learn's names), apart from the grid's."""
        return dict(solver="adam", batch_size="auto", max_iter=self.epochs, tol=0.0,
                    n_iter_no_change=self.epochs, random_state=0)

    def cv(self):
        from sklearn.model_selection import StratifiedKFold

        return StratifiedKFold(self.folds, shuffle=True, random_state=0)

    @property
    def candidates(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def warmup(self) -> Plan:
        """A search small enough to run untimed first (compilation, worker processes)."""
        return Plan({k: v[:1] for k, v in self.grid.items()}, 2, 1)


def plan(quick: bool) -> Plan:
    return Plan(QUICK, 2, 20) if quick else Plan(FULL, 5, 100)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as float64 X/16 (1,797 x 64, in [0, 1]) and int labels 0-9."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (the searches and the data set)")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def score(estimator: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The search's scoring: accuracy, and the fit's epoch count (checked to be the plan's)."""
    return {"accuracy": float(np.mean(estimator.predict(X) == y)), "n_iter": float(estimator.n_iter_)}


# ------------------------------------------------------------------ engines
def _mlp(p: Plan) -> Any:
    import mlp

    return mlp.MLPClassifier(**p.params(), backend="numpy")


def _mlp_search(p: Plan, n_jobs: int | None = None) -> Any:
    from mlp.search import GridSearchCV

    return GridSearchCV(_mlp(p), p.grid, cv=p.cv(), scoring=score, refit=False, n_jobs=n_jobs)


def _mlp_search_all_cores(p: Plan) -> Any:
    return _mlp_search(p, n_jobs=-1)


def _sklearn_search_mlp(p: Plan) -> Any:
    from sklearn.model_selection import GridSearchCV

    return GridSearchCV(_mlp(p), p.grid, cv=p.cv(), scoring=score, refit=False)


def _sklearn_search(p: Plan) -> Any:
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier

    return GridSearchCV(MLPClassifier(**p.params()), p.grid, cv=p.cv(), scoring=score, refit=False, n_jobs=-1)


ENGINES: dict[str, Callable[[Plan], Any]] = {"mlp-search": _mlp_search, "mlp-search-all-cores": _mlp_search_all_cores,
                                             "sklearn-search-mlp": _sklearn_search_mlp,
                                             "sklearn-search": _sklearn_search}
#: Worker processes of each engine (None: this process only).
N_JOBS = {"mlp-search-all-cores": -1, "sklearn-search": -1}
#: BLAS threads of every process of every engine (joblib's workers get one by default too).
BLAS_THREADS = 1

#: Each dtype's ``mlp-search`` results, for the rows timed after it to compare with.
_STACKED: dict[str, dict[str, Any]] = {}


def _fit(search: Any, X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # a fixed max_iter ends every fit unconverged on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        return search.fit(X, y)


def _plain_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else float(v) if isinstance(v, float) else v


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Search parameters as JSON keeps them (tuples as lists), sorted by name."""
    return {k: _plain_value(v) for k, v in sorted(params.items())}


def summarise(results: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What a search's ``cv_results_`` tells the report: the best candidate (scikit-learn's rule), every
    candidate's mean accuracy, and the epoch count of every fit (which must be ``epochs``)."""
    best = int(np.argmin(results["rank_test_accuracy"]))  # the first of rank 1, as scikit-learn's best_index_
    n_iter = np.array([v for k, v in results.items() if k.startswith("split") and k.endswith("_test_n_iter")])
    assert n_iter.min() == n_iter.max() == epochs, f"fits ran {n_iter.min()} to {n_iter.max()} epochs, not {epochs}"
    params = _plain(results["params"][best])
    return {"best_params": params, "best": ", ".join(f"{k}={results['params'][best][k]}" for k in params),
            "best_score": float(results["mean_test_accuracy"][best]),
            "mean_scores": [float(s) for s in results["mean_test_accuracy"]],
            "candidates_params": [_plain(c) for c in results["params"]], "n_iter": int(epochs)}


def agreement(mine: dict[str, Any], stacked: dict[str, Any]) -> dict[str, Any]:
    """How a search's results agree with ``mlp-search``'s of the same run."""
    assert mine["candidates_params"] == stacked["candidates_params"], "the searches ran different grids"
    keys = stacked["best_params"]
    return {"best_agrees": sum(mine["best_params"].get(k) == v for k, v in keys.items()) / len(keys),
            "best_params_stacked": stacked["best_params"],
            "score_gap": float(np.max(np.abs(np.subtract(mine["mean_scores"], stacked["mean_scores"]))))}


def _info(impl: str, dtype: str, p: Plan, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"suite": "search", "op": "search", "impl": impl, "device": "cpu", "dtype": dtype,
            "group": f"digits-{dtype}", "dataset": "digits", "rows": X.shape[0], "classes": len(np.unique(y)),
            "features": X.shape[1], "optimizer": "adam",
            "grid": {k: [_plain_value(v) for v in vals] for k, vals in p.grid.items()},
            "candidates": p.candidates, "folds": p.folds, "fits": p.candidates * p.folds, "epochs": p.epochs,
            "n_jobs": N_JOBS.get(impl), "threads": BLAS_THREADS}


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", list(ENGINES))
def test_search(benchmark, settings, digits, impl, dtype):
    """One search, one round (after an untimed small one: compilation, worker processes)."""
    X, y = digits[0].astype(dtype), digits[1]
    p = plan(settings.quick)
    make = ENGINES[impl]
    _fit(make(p.warmup()), X, y)
    done: list[Any] = []

    def run() -> None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
            done[:] = [_fit(make(p), X, y)]

    info = _info(impl, dtype, p, X, y)
    info["load_before"] = os.getloadavg()[0]
    benchmark.extra_info.update(info, inner=1)
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    summary = summarise(done[0].cv_results_, p.epochs)
    benchmark.extra_info.update({k: v for k, v in summary.items() if k != "candidates_params"},
                                load_after=os.getloadavg()[0])
    if impl == "mlp-search":
        _STACKED[dtype] = summary
    elif dtype in _STACKED:
        benchmark.extra_info.update(agreement(summary, _STACKED[dtype]))


# ------------------------------------------------------- the products alone
@dataclass(frozen=True)
class Stack:
    """One stack of the search: networks of ``layers`` trained on ``rows[m]`` rows each, ``batch`` rows a
    step (the last batch of a model padded to ``batch``, as the stack runs it), ``steps`` steps an epoch."""

    layers: tuple[int, ...]
    batch: int
    steps: int
    rows: tuple[int, ...]

    @property
    def models(self) -> int:
        return len(self.rows)


def stacks(p: Plan, X: np.ndarray, y: np.ndarray) -> list[Stack]:
    """The stacks ``mlp.search.GridSearchCV`` trains for plan ``p``: one per network shape, batch size and
    steps an epoch (the fits it groups), from the same splits and scikit-learn's parameters."""
    from sklearn.model_selection import ParameterGrid

    base = p.params()
    groups: dict[tuple, list[int]] = {}
    for cand in ParameterGrid(p.grid):
        params = {**base, **cand}
        for train, _ in p.cv().split(X, y):
            n = len(train)
            batch = min(AUTO_BATCH, n) if params["batch_size"] == "auto" else min(int(params["batch_size"]), n)
            layers = (X.shape[1], *params["hidden_layer_sizes"], len(np.unique(y[train])))
            groups.setdefault((layers, batch, -(-n // batch)), []).append(n)
    return [Stack(layers, batch, steps, tuple(rows)) for (layers, batch, steps), rows in groups.items()]


class StackProducts:
    """The 2-D matrix products the NumPy backend runs for a search's stacks, alone, in the same loops.

    Per epoch and step, for every layer and every model: forward ``x @ W``;
    backward, last layer first, ``x.T @ dy`` and (all layers but the first)
    ``dy @ W.T``, as ``NumpyBackend._affine_forward_stacked`` and
    ``_affine_backward_stacked`` call them: operands indexed per model out of
    ``(M, ...)`` arrays, ``W[m]`` a view into the models' ``(M, P)`` parameter
    rows, the transposes as views, outputs preallocated.  ``exact=True`` uses
    each model's own rows in its last batch instead of the padded batch the
    stack multiplies (what one fit at a time multiplies).
    """

    def __init__(self, stacks: Sequence[Stack], epochs: int, dtype: Any, exact: bool = False) -> None:
        rng = np.random.default_rng(0)
        dt = np.dtype(dtype)
        self.epochs, self.exact, self.stacks = epochs, exact, list(stacks)
        self.arrays = []
        for st in self.stacks:
            M, B, sizes = st.models, st.batch, st.layers
            params = sum(k * n for k, n in zip(sizes[:-1], sizes[1:]))
            flat, grads = rng.standard_normal((M, params)).astype(dt), np.empty((M, params), dt)
            W, dW, off = [], [], 0
            for k, n in zip(sizes[:-1], sizes[1:]):
                flat[:, off:off + k * n] *= dt.type(1.0 / np.sqrt(k))  # keeps every layer's output of order 1
                W.append(flat[:, off:off + k * n].reshape(M, k, n))
                dW.append(grads[:, off:off + k * n].reshape(M, k, n))
                off += k * n
            acts = [rng.standard_normal((M, B, s)).astype(dt) for s in sizes]  # the input, then each output
            dy = [rng.standard_normal((M, B, s)).astype(dt) for s in sizes[1:]]  # gradient at each output
            dx = [np.empty((M, B, s), dt) for s in sizes[1:-1]]
            counts = np.array([[min(B, n - s * B) for n in st.rows] for s in range(st.steps)])
            self.arrays.append((W, dW, acts, dy, dx, counts))
        self.seconds: list[float] = []

    def _step_padded(self, W, dW, acts, dy, dx) -> None:
        L, M = len(W), W[0].shape[0]
        for i in range(L):
            x, w, out = acts[i], W[i], acts[i + 1]
            for m in range(M):
                np.matmul(x[m], w[m], out=out[m])
        for i in range(L - 1, -1, -1):
            x, g, w, gw = acts[i], dy[i], W[i], dW[i]
            d = dx[i - 1] if i > 0 else None
            for m in range(M):
                np.matmul(x[m].T, g[m], out=gw[m])
                if d is not None:
                    np.matmul(g[m], w[m].T, out=d[m])

    def _step_exact(self, W, dW, acts, dy, dx, rows) -> None:
        L, M = len(W), W[0].shape[0]
        for i in range(L):
            x, w, out = acts[i], W[i], acts[i + 1]
            for m in range(M):
                r = rows[m]
                np.matmul(x[m, :r], w[m], out=out[m, :r])
        for i in range(L - 1, -1, -1):
            x, g, w, gw = acts[i], dy[i], W[i], dW[i]
            d = dx[i - 1] if i > 0 else None
            for m in range(M):
                r = rows[m]
                np.matmul(x[m, :r].T, g[m, :r], out=gw[m])
                if d is not None:
                    np.matmul(g[m, :r], w[m].T, out=d[m, :r])

    def search(self) -> None:
        """Every stack's products for every epoch, one stack after another (as ``fit_many`` trains them)."""
        for st, (W, dW, acts, dy, dx, counts) in zip(self.stacks, self.arrays):
            for _ in range(self.epochs):
                for s in range(st.steps):
                    if self.exact:
                        self._step_exact(W, dW, acts, dy, dx, counts[s])
                    else:
                        self._step_padded(W, dW, acts, dy, dx)

    def __call__(self) -> None:
        start = time.perf_counter()
        self.search()
        self.seconds.append(time.perf_counter() - start)

    @property
    def products(self) -> int:
        """2-D products in one search."""
        return sum(self.epochs * st.steps * st.models * (3 * (len(st.layers) - 1) - 1) for st in self.stacks)


def padded(found: Sequence[Stack]) -> list[Stack]:
    """``found`` with the one-hidden-layer stacks of equal batches merged into one stack of the widest hidden
    layer: what padding the narrower models to the widest (one stack instead of one per shape) would
    multiply at least.  Deeper stacks stay as they are (a depth is its own group either way)."""
    merged: dict[tuple, list[Stack]] = {}
    rest = []
    for st in found:
        if len(st.layers) == 3:
            merged.setdefault((st.layers[0], st.layers[2], st.batch, st.steps), []).append(st)
        else:
            rest.append(st)
    out = [Stack((n_in, max(st.layers[1] for st in group), n_out), batch, steps,
                 tuple(r for st in group for r in st.rows)) for (n_in, n_out, batch, steps), group in merged.items()]
    return out + rest


def products_budget(quick: bool) -> Budget:
    """A few rounds: the products take about a tenth of the stacked search."""
    return Budget(round_s=0.0, total_s=5.0 if quick else 30.0, min_rounds=3, max_rounds=5)


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("layout", ["grouped", "padded"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_search_products(benchmark, settings, digits, dtype, layout):
    """The stacked search's matrix products alone, each model's own rows (its shorter last batch included),
    in one process with one BLAS thread, as the one-process stacked search computes them: one stack per
    network shape (``grouped``, what ``mlp.search`` trains), and with the one-layer models padded to the
    widest hidden layer in one stack (``padded``: the least padding would multiply)."""
    from threadpoolctl import threadpool_limits

    X, y = digits[0].astype(dtype), digits[1]
    p = plan(settings.quick)
    found = stacks(p, X, y)
    if layout == "padded":
        found = padded(found)
    products = StackProducts(found, p.epochs, dtype, exact=True)
    info = dict(_info("stack-products" if layout == "grouped" else "stack-products-padded", dtype, p, X, y),
                op="products")
    info.update(stacks=[{"layers": list(s.layers), "models": s.models, "batch": s.batch, "steps": s.steps}
                        for s in found], products=products.products, load_before=os.getloadavg()[0])
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        measure(benchmark, products.search, budget=products_budget(settings.quick), info=info)
    benchmark.extra_info.update(load_after=os.getloadavg()[0])
