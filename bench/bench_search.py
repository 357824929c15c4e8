"""Hyperparameter searches on digits: every candidate and fold trained at once, against one fit at a time.

The search is scikit-learn's ``GridSearchCV`` over ``MLPClassifier`` on
digits (``load_digits``: 1,797 images of 8 x 8 pixels scaled to [0, 1] by
/16, 10 classes; it ships with scikit-learn): ``hidden_layer_sizes`` (one
and two hidden layers, 32 to 128 units) x ``alpha`` x ``learning_rate_init``
(:data:`FULL`: 24 candidates), 5-fold ``StratifiedKFold(shuffle=True,
random_state=0)``, adam, ``batch_size="auto"``, ``random_state=0``, and a
fixed number of epochs (``tol=0`` and ``n_iter_no_change=max_iter``, so that
no fit stops early and every engine does the same work; ``n_iter_`` of every
fit is checked), in float32 and float64.  Every engine runs in the same
session, one round each (a search takes seconds), every process with one
BLAS thread (the products are small; threads of their own, or worker
processes, are how the cores are used):

``mlp-search``
    ``mlp.GridSearchCV(mlp.MLPClassifier(backend="numpy"))``, one process:
    the fits of one network shape train as one stack, ranges of its models
    stepping in one thread per core (:func:`mlp.fit_many.stack_threads`).
``mlp-search-1-thread``
    the same with the stacks in one thread (``MLP_STACK_THREADS=1``): with
    ``mlp-search``, how one process scales over the cores.
``mlp-search-all-cores``
    the same with ``n_jobs=-1``: the stacks split over one worker process per core.
``sklearn-search-mlp``
    scikit-learn's ``GridSearchCV(n_jobs=-1)`` over the same ``mlp.MLPClassifier``:
    one fit at a time in each worker process.
``sklearn-search``
    scikit-learn's ``GridSearchCV(n_jobs=-1)`` over scikit-learn's own
    ``MLPClassifier`` with the same arguments.
``stack-products``
    the matrix products of ``mlp-search``'s stacks alone (:class:`StackProducts`,
    each model's own rows, NumPy's dot in compiled loops over the models as
    the stack calls it), in one process on the same cores (ranges of the
    models in one thread per core, as the stack steps them): the limit the
    one-process stacked search can reach here.
``stack-products-padded``
    the same with the one-hidden-layer models padded to the widest hidden
    layer in one stack (:func:`padded`): the products padding would compute
    instead of one stack per shape (how ``mlp.search`` groups hidden sizes
    that differ is decided by these two rows).

``test_search_pipeline`` times the search over ``Pipeline(StandardScaler(),
MLPClassifier())`` (:data:`PIPELINE`: 12 candidates, the network's
parameters), ``n_jobs=-1``, mlp's (the scaler fitted once per fold, each
fold's candidates trained as one stack) against scikit-learn's over the same
pipeline with its own ``MLPClassifier``.

The targets pair like with like: the all-cores searches with each other, the
one-process search with its products on the same cores.

A search is scored by a callable that returns the accuracy and the fit's
``n_iter_`` (so that every fit's epoch count can be checked), with
``refit=False`` (a refit would add one fit outside the cross-validation); the
best candidate is scikit-learn's rule, the first of rank 1 in accuracy.
``extra_info`` records it (``best_params``, ``best_score``), every
candidate's mean accuracy, and, on the rows after the first of their group,
how far they agree with it (``best_agrees``: the share of the best parameters
that are equal; ``score_gap``: the largest difference of a candidate's mean
accuracy).  ``group`` ("digits-<dtype>", "digits-pipeline-<dtype>") pairs
the rows for the targets.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from bench import _env
from bench._measure import Budget, measure
from bench.stack_products import Stack, StackProducts, padded

#: The grid of the full run: 24 candidates, one and two hidden layers of 32 to 128 units.
FULL = {"hidden_layer_sizes": [(32,), (64,), (128,), (64, 32)], "alpha": [1e-5, 1e-4, 1e-3],
        "learning_rate_init": [1e-3, 3e-3]}
#: The quick run keeps a one- and a two-layer shape and every alpha x learning rate: 12 candidates.
QUICK = {"hidden_layer_sizes": [(32,), (64, 32)], "alpha": [1e-5, 1e-4, 1e-3], "learning_rate_init": [1e-3, 3e-3]}
#: A check of the code (``--mlp-tiny``): two candidates.
TINY = {"hidden_layer_sizes": [(8,), (8, 4)], "alpha": [1e-4], "learning_rate_init": [1e-3]}
#: The pipeline's grid (parameters of its network, by scikit-learn's step name): 12 candidates.
PIPELINE = {"hidden_layer_sizes": [(64,), (128,), (64, 32)], "alpha": [1e-4, 1e-3],
            "learning_rate_init": [1e-3, 3e-3]}
#: Epochs of every fit (the same on every side).
EPOCHS = 40
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

    def with_grid(self, grid: dict[str, list]) -> Plan:
        return Plan(grid, self.folds, self.epochs)


def plan(quick: bool, tiny: bool = False) -> Plan:
    if tiny:
        return Plan(TINY, 2, 2)
    return Plan(QUICK, 3, 15) if quick else Plan(FULL, 5, EPOCHS)


def pipeline_plan(quick: bool, tiny: bool = False) -> Plan:
    return plan(quick, tiny).with_grid(TINY if tiny else PIPELINE)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as float64 X/16 (1,797 x 64, in [0, 1]) and int labels 0-9."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (the searches and the data set)")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def score(estimator: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The search's scoring: accuracy, and the fit's epoch count (checked to be the plan's)."""
    fitted = estimator[-1] if hasattr(estimator, "steps") else estimator
    return {"accuracy": float(np.mean(estimator.predict(X) == y)), "n_iter": float(fitted.n_iter_)}


# ------------------------------------------------------------------ engines
def _mlp(p: Plan, backend: str = "numpy") -> Any:
    import mlp

    return mlp.MLPClassifier(**p.params(), backend=backend)


def _sk_mlp(p: Plan) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(**p.params())


def mlp_search(p: Plan, n_jobs: int | None = None, backend: str = "numpy") -> Any:
    from mlp.search import GridSearchCV

    return GridSearchCV(_mlp(p, backend), p.grid, cv=p.cv(), scoring=score, refit=False, n_jobs=n_jobs)


def sklearn_search(p: Plan, estimator: Any = None) -> Any:
    """scikit-learn's ``GridSearchCV(n_jobs=-1)`` over ``estimator`` (default: its own ``MLPClassifier``)."""
    from sklearn.model_selection import GridSearchCV

    return GridSearchCV(_sk_mlp(p) if estimator is None else estimator, p.grid, cv=p.cv(), scoring=score,
                        refit=False, n_jobs=-1)


def _pipeline_grid(p: Plan, step: str) -> dict[str, list]:
    return {f"{step}__{k}": v for k, v in p.grid.items()}


def _pipeline_search(p: Plan, engine: str) -> Any:
    """``engine``'s search over ``Pipeline(StandardScaler(), MLPClassifier())``, ``n_jobs=-1``."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if engine == "mlp-search-pipeline":
        from mlp.search import GridSearchCV

        pipe = make_pipeline(StandardScaler(), _mlp(p))
    else:
        from sklearn.model_selection import GridSearchCV

        pipe = make_pipeline(StandardScaler(), _sk_mlp(p))
    return GridSearchCV(pipe, _pipeline_grid(p, pipe.steps[-1][0]), cv=p.cv(), scoring=score, refit=False,
                        n_jobs=-1)


@contextlib.contextmanager
def stack_threads(threads: int | None) -> Iterator[None]:
    """``MLP_STACK_THREADS`` set to ``threads`` for the block (None: left as it is)."""
    from mlp.fit_many import STACK_THREADS_ENV

    saved = os.environ.get(STACK_THREADS_ENV)
    if threads is not None:
        os.environ[STACK_THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        if threads is not None:
            if saved is None:
                os.environ.pop(STACK_THREADS_ENV, None)
            else:
                os.environ[STACK_THREADS_ENV] = saved


ENGINES: dict[str, Callable[[Plan], Any]] = {
    "mlp-search": mlp_search, "mlp-search-1-thread": mlp_search,
    "mlp-search-all-cores": lambda p: mlp_search(p, n_jobs=-1),
    "sklearn-search-mlp": lambda p: sklearn_search(p, _mlp(p)), "sklearn-search": sklearn_search}
#: Worker processes of each engine (None: this process only) and stack threads where set.
N_JOBS = {"mlp-search-all-cores": -1, "sklearn-search-mlp": -1, "sklearn-search": -1,
          "mlp-search-pipeline": -1, "sklearn-search-pipeline": -1}
STACK_THREADS = {"mlp-search-1-thread": 1}
#: BLAS threads of every process of every engine (joblib's workers get one by default too).
BLAS_THREADS = 1

#: Each group's first search results (``mlp-search``, ``mlp-search-pipeline``), for the rows after it.
_FIRST: dict[str, dict[str, Any]] = {}


def _fit(search: Any, X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # a fixed max_iter ends every fit unconverged on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        return search.fit(X, y)


def _plain_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else float(v) if isinstance(v, float) else v


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Search parameters as JSON keeps them (tuples as lists), sorted by name, without a pipeline step's
    prefix."""
    return {k.rsplit("__", 1)[-1]: _plain_value(v) for k, v in sorted(params.items())}


def summarise(results: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What a search's ``cv_results_`` tells the report: the best candidate (scikit-learn's rule), every
    candidate's mean accuracy, and the epoch count of every fit (which must be ``epochs``)."""
    best = int(np.argmin(results["rank_test_accuracy"]))  # the first of rank 1, as scikit-learn's best_index_
    n_iter = np.array([v for k, v in results.items() if k.startswith("split") and k.endswith("_test_n_iter")])
    assert n_iter.min() == n_iter.max() == epochs, f"fits ran {n_iter.min()} to {n_iter.max()} epochs, not {epochs}"
    params = _plain(results["params"][best])
    shown = {k.rsplit("__", 1)[-1]: v for k, v in results["params"][best].items()}
    return {"best_params": params, "best": ", ".join(f"{k}={shown[k]}" for k in params),
            "best_score": float(results["mean_test_accuracy"][best]),
            "mean_scores": [float(s) for s in results["mean_test_accuracy"]],
            "candidates_params": [_plain(c) for c in results["params"]], "n_iter": int(epochs)}


def agreement(mine: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    """How a search's results agree with those of the first row of its group in the same run."""
    assert mine["candidates_params"] == first["candidates_params"], "the searches ran different grids"
    keys = first["best_params"]
    return {"best_agrees": sum(mine["best_params"].get(k) == v for k, v in keys.items()) / len(keys),
            "best_params_stacked": first["best_params"],
            "score_gap": float(np.max(np.abs(np.subtract(mine["mean_scores"], first["mean_scores"]))))}


def _info(impl: str, dtype: str, p: Plan, X: np.ndarray, y: np.ndarray, group: str = "digits") -> dict[str, Any]:
    return {"suite": "search", "op": "search", "impl": impl, "device": "cpu", "dtype": dtype,
            "group": f"{group}-{dtype}", "dataset": "digits", "rows": X.shape[0], "classes": len(np.unique(y)),
            "features": X.shape[1], "optimizer": "adam",
            "grid": {k: [_plain_value(v) for v in vals] for k, vals in p.grid.items()},
            "candidates": p.candidates, "folds": p.folds, "fits": p.candidates * p.folds, "epochs": p.epochs,
            "n_jobs": N_JOBS.get(impl), "threads": BLAS_THREADS, "stack_threads": STACK_THREADS.get(impl),
            "cores": _env.cpu_cores()}


def time_search(benchmark, make: Callable[[Plan], Any], p: Plan, X: np.ndarray, y: np.ndarray,
                info: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """One search built by ``make(p)``, one round, after an untimed small one (compilation, worker
    processes), every process on one BLAS thread; ``threads``: ``MLP_STACK_THREADS`` for both.  Returns the
    search's summary (:func:`summarise`), also stored in ``extra_info``."""
    from threadpoolctl import threadpool_limits

    with stack_threads(threads):
        _fit(make(p.warmup()), X, y)
    done: list[Any] = []

    def run() -> None:
        with threadpool_limits(limits=BLAS_THREADS, user_api="blas"), stack_threads(threads):
            done[:] = [_fit(make(p), X, y)]

    info = dict(info, load_before=os.getloadavg()[0])
    benchmark.extra_info.update(info, inner=1)
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    summary = summarise(done[0].cv_results_, p.epochs)
    benchmark.extra_info.update({k: v for k, v in summary.items() if k != "candidates_params"},
                                load_after=os.getloadavg()[0])
    return summary


def _compare(benchmark, group: str, first_impl: str, impl: str, summary: dict[str, Any]) -> None:
    if impl == first_impl:
        _FIRST[group] = summary
    elif group in _FIRST:
        benchmark.extra_info.update(agreement(summary, _FIRST[group]))


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", list(ENGINES))
def test_search(benchmark, settings, digits, impl, dtype):
    """One search, one round (after an untimed small one)."""
    X, y = digits[0].astype(dtype), digits[1]
    p = plan(settings.quick, settings.tiny)
    info = _info(impl, dtype, p, X, y)
    summary = time_search(benchmark, ENGINES[impl], p, X, y, info, STACK_THREADS.get(impl))
    _compare(benchmark, info["group"], "mlp-search", impl, summary)


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["mlp-search-pipeline", "sklearn-search-pipeline"])
def test_search_pipeline(benchmark, settings, digits, impl, dtype):
    """The search over ``Pipeline(StandardScaler(), MLPClassifier())``, ``n_jobs=-1``, one round."""
    X, y = digits[0].astype(dtype), digits[1]
    p = pipeline_plan(settings.quick, settings.tiny)
    info = dict(_info(impl, dtype, p, X, y, group="digits-pipeline"), pipeline="StandardScaler, MLPClassifier")
    summary = time_search(benchmark, lambda q: _pipeline_search(q, impl), p, X, y, info)
    _compare(benchmark, info["group"], "mlp-search-pipeline", impl, summary)


# ------------------------------------------------------- the products alone
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


def products_budget(quick: bool) -> Budget:
    """A few rounds: the products take a fraction of the stacked search."""
    return Budget(round_s=0.0, total_s=5.0 if quick else 20.0, min_rounds=3, max_rounds=5)


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("layout", ["grouped", "padded"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_search_products(benchmark, settings, digits, dtype, layout):
    """The stacked search's matrix products alone, each model's own rows (its shorter last batch included),
    in one process on the same cores as ``mlp-search`` (its stack threads, one BLAS thread each): one stack
    per network shape (``grouped``, what ``mlp.search`` trains), and with the one-layer models padded to the
    widest hidden layer in one stack (``padded``: the least padding would multiply)."""
    from threadpoolctl import threadpool_limits

    from mlp.fit_many import stack_threads as threads_of

    X, y = digits[0].astype(dtype), digits[1]
    p = plan(settings.quick, settings.tiny)
    found = stacks(p, X, y)
    if layout == "padded":
        found = padded(found)
    threads = threads_of(1)  # what mlp-search's one process steps its stacks in
    products = StackProducts(found, p.epochs, dtype, exact=True, threads=threads)
    info = dict(_info("stack-products" if layout == "grouped" else "stack-products-padded", dtype, p, X, y),
                op="products", stack_threads=threads)
    info.update(stacks=[{"layers": list(s.layers), "models": s.models, "batch": s.batch, "steps": s.steps}
                        for s in found], products=products.products, load_before=os.getloadavg()[0])
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        measure(benchmark, products.search, budget=products_budget(settings.quick), info=info)
    benchmark.extra_info.update(load_after=os.getloadavg()[0])
