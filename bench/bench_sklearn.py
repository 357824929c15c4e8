"""The scikit-learn drop-in against scikit-learn: ``fit`` time and the held-out quality it reaches.

``mlp.MLPClassifier`` and ``sklearn.neural_network.MLPClassifier`` on digits
(``load_digits``: 1,797 images of 8 x 8 pixels, 10 classes), and the two
``MLPRegressor`` on diabetes (``load_diabetes``: 442 patients, 10 features,
one target); both data sets ship inside scikit-learn, nothing is downloaded.
Each is split 75/25 (stratified for digits, ``random_state=0``); the features
are standardised with the training part's mean and deviation, and so is the
regression target.

Both sides get the same constructor arguments (:func:`params`): one hidden
layer of 100 ReLU units, ``random_state=0`` and, per solver, a fixed
``max_iter``; for adam and sgd ``tol=0`` and ``n_iter_no_change=max_iter``
so that both run exactly ``max_iter`` epochs (checked through ``n_iter_``).
L-BFGS gets the same ``max_iter`` and ``tol=0`` and may stop earlier when its
line search ends; ``n_iter_`` of both sides is recorded.  Data is float32 or
float64 as given; both estimators train in the input's precision.  Both run
with one BLAS thread (:data:`BLAS_THREADS`): the products are small (at most
1,347 x 100), so more threads add synchronisation rather than speed, and on
cores shared with other work they make the times swing by an order of
magnitude.

A round is one ``fit`` of a fresh estimator.  ``extra_info`` records the
held-out ``score`` (accuracy, or R² for the regressor) of the last fit, its
``n_iter_``, and ``group`` (data set and dtype, the key on which the targets
pair mlp's rows with scikit-learn's).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from bench._measure import Budget, measure

SOLVERS = ("adam", "sgd", "lbfgs")
DTYPES = ("float32", "float64")
ESTIMATORS = ("MLPClassifier", "MLPRegressor")
#: Data set of each estimator, and what its ``score`` is.
DATASETS = {"MLPClassifier": ("digits", "accuracy"), "MLPRegressor": ("diabetes", "R²")}
#: BLAS threads of both sides while timing.
BLAS_THREADS = 1


def fit_budget(quick: bool) -> Budget:
    """Rounds of one ``fit`` each (fits take 0.05 to 1 s here): a few, to keep the suite to a couple of minutes."""
    return Budget(round_s=0.0, total_s=1.0 if quick else 3.0, min_rounds=2 if quick else 3,
                  max_rounds=3 if quick else 5)


def params(estimator: str, solver: str) -> dict[str, Any]:
    """The constructor arguments both sides get (scikit-learn's names and meanings).

    The regressor's L2 penalty is strong (``alpha=10``; scikit-learn divides it
    by the number of samples): 331 training rows and 100 hidden units overfit
    otherwise, and the held-out R² would depend on the seed more than on the
    implementation.
    """
    max_iter = {"MLPClassifier": {"adam": 100, "sgd": 100, "lbfgs": 100},
                "MLPRegressor": {"adam": 200, "sgd": 200, "lbfgs": 100}}[estimator][solver]
    p: dict[str, Any] = dict(hidden_layer_sizes=(100,), activation="relu", solver=solver, max_iter=max_iter,
                             tol=0.0, random_state=0, alpha=1e-4 if estimator == "MLPClassifier" else 10.0)
    if solver != "lbfgs":
        p.update(n_iter_no_change=max_iter, learning_rate_init=1e-3 if solver == "adam" else 1e-2)
    if solver == "sgd":
        p.update(momentum=0.9, nesterovs_momentum=True)
    return p


@dataclass(frozen=True)
class Problem:
    """A train/test split, standardised on the training part."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int

    def astype(self, dtype: str) -> Problem:
        return Problem(self.X_train.astype(dtype), self.y_train, self.X_test.astype(dtype), self.y_test,
                       self.n_outputs)


def load_problem(estimator: str) -> Problem:
    """Digits (classifier) or diabetes (regressor), split 75/25 and standardised; float64."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (it ships the data sets)")
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if estimator == "MLPClassifier":
        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
        n_outputs = int(np.unique(y).size)
    else:
        X, y = load_diabetes(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
        n_outputs = 1
    scaler = StandardScaler().fit(X_train)
    return Problem(scaler.transform(X_train), y_train, scaler.transform(X_test), y_test, n_outputs)


@pytest.fixture(scope="session")
def problems() -> dict[str, Problem]:
    return {name: load_problem(name) for name in ESTIMATORS}


def _quiet_categories() -> tuple[type[Warning], ...]:
    """The convergence warnings of both sides (a fixed ``max_iter`` ends every fit unconverged on purpose)."""
    from sklearn.exceptions import ConvergenceWarning

    found = {ConvergenceWarning}
    try:
        from mlp.estimator import ConvergenceWarning as MlpConvergenceWarning

        found.add(MlpConvergenceWarning)
    except ImportError:
        pass
    return tuple(found)


def time_fit(benchmark, settings, make: Callable[[], Any], data: Problem, info: dict[str, Any]) -> Any:
    """Time ``make().fit(X_train, y_train)`` in rounds; record the last fit's held-out score and ``n_iter_``."""
    from threadpoolctl import threadpool_limits

    quiet = _quiet_categories()
    fitted: list[Any] = []

    def fit() -> None:
        with warnings.catch_warnings():
            for category in quiet:
                warnings.simplefilter("ignore", category)
            fitted[:] = [make().fit(data.X_train, data.y_train)]

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        measure(benchmark, fit, budget=fit_budget(settings.quick), info=info)
    est = fitted[0]
    benchmark.extra_info.update(score=float(est.score(data.X_test, data.y_test)), n_iter=int(est.n_iter_))
    return est


def _info(estimator: str, solver: str, dtype: str, impl: str, device: str, data: Problem) -> dict[str, Any]:
    dataset, metric = DATASETS[estimator]
    return {"suite": "sklearn", "op": "fit", "impl": impl, "device": device, "estimator": estimator,
            "dataset": dataset, "metric": metric, "dtype": dtype, "optimizer": solver, "group": f"{dataset}-{dtype}",
            "rows": data.X_train.shape[0], "classes": data.n_outputs, "features": data.X_train.shape[1],
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params(estimator, solver).items()},
            "threads": BLAS_THREADS}


def _check_epochs(est: Any, solver: str, max_iter: int) -> None:
    # Equal work is what makes the times comparable: adam and sgd must not stop early.
    if solver != "lbfgs":
        assert est.n_iter_ == max_iter, f"ran {est.n_iter_} epochs, expected {max_iter}"


CASES = pytest.mark.parametrize("estimator,solver,dtype", [
    pytest.param(e, s, d, id=f"{DATASETS[e][0]}-{s}-{d}") for e in ESTIMATORS for s in SOLVERS for d in DTYPES])


@CASES
@pytest.mark.parametrize("backend", [pytest.param("numpy", marks=pytest.mark.cpu_heavy), "cuda"])
def test_fit_mlp(benchmark, request, settings, problems, backend, estimator, solver, dtype):
    """``mlp.MLPClassifier`` / ``mlp.MLPRegressor`` on the NumPy backend, or on CUDA when there is a GPU."""
    if backend == "cuda":
        request.getfixturevalue("cuda_backend")  # skips, saying why, without a usable GPU
    import mlp

    cls = getattr(mlp, estimator)
    data = problems[estimator].astype(dtype)
    p = params(estimator, solver)
    est = time_fit(benchmark, settings, lambda: cls(**p, backend=backend), data,
                   _info(estimator, solver, dtype, f"mlp-{backend}", "gpu" if backend == "cuda" else "cpu", data))
    _check_epochs(est, solver, p["max_iter"])


@CASES
@pytest.mark.cpu_heavy
def test_fit_sklearn(benchmark, settings, sklearn_present, problems, estimator, solver, dtype):
    """scikit-learn's own estimator with the same arguments, on the CPU."""
    import sklearn.neural_network

    cls = getattr(sklearn.neural_network, estimator)
    data = problems[estimator].astype(dtype)
    p = params(estimator, solver)
    est = time_fit(benchmark, settings, lambda: cls(**p), data, _info(estimator, solver, dtype, "sklearn", "cpu", data))
    _check_epochs(est, solver, p["max_iter"])
