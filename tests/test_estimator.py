"""mlp.MLPClassifier and mlp.MLPRegressor against scikit-learn's own estimators.

The strongest check of a drop-in: from the same ``random_state`` the two
follow the same trajectory (same Glorot-uniform weights, same shuffles and
batches, same update rules, L2 term, schedules and stopping rule), so after
a few epochs the weights, the loss curve and the counters agree with
scikit-learn's to float64 rounding.  Then scikit-learn's generic estimator
checks, L-BFGS's objective, Pipeline and GridSearchCV, pickling, sparse
input, the CUDA backend (a GPU or Numba's simulator) against NumPy, and the
error without scikit-learn.  scikit-learn's own MLP test file runs against
these classes in ``tests/test_sklearn_suite.py``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="mlp.MLPClassifier/MLPRegressor need scikit-learn (the extra 'sklearn')")

import scipy.sparse as sp  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from conftest import real_gpu_training  # noqa: E402
import mlp  # noqa: E402
from mlp.ensemble import MLPEnsembleClassifier, MLPEnsembleRegressor  # noqa: E402
from mlp.estimator import MLPClassifier, MLPRegressor  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_convergence():
    # Most tests train for a few epochs on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _digits(n_class: int = 10, n: int = 240):
    X, y = load_digits(n_class=n_class, return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _multilabel():
    X, Y = make_multilabel_classification(n_samples=120, n_features=8, n_classes=4, random_state=0)
    return X / X.max(), Y


def _regression(n_targets: int = 1):
    X, y = make_regression(n_samples=150, n_features=6, n_targets=n_targets, noise=5.0, random_state=3)
    return X, (y - y.mean(axis=0)) / y.std(axis=0)


def _poisson():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (160, 3))
    return X, rng.poisson(np.exp(X @ np.array([0.5, -0.3, 0.8]) + 0.2)).astype(float)


# Each case trains scikit-learn's estimator and ours with identical parameters on float64 data.
TRAJECTORIES = {
    "multiclass-adam": (sk.MLPClassifier, MLPClassifier, _digits, dict(
        hidden_layer_sizes=(12,), solver="adam", alpha=1e-3, batch_size=50, max_iter=6)),
    "binary-sgd-nesterov-invscaling": (sk.MLPClassifier, MLPClassifier, lambda: _digits(2), dict(
        hidden_layer_sizes=(9, 5), activation="tanh", solver="sgd", learning_rate="invscaling",
        learning_rate_init=0.3, power_t=0.4, alpha=1e-2, batch_size=32, max_iter=5)),
    "multilabel-sgd-momentum-logistic": (sk.MLPClassifier, MLPClassifier, _multilabel, dict(
        hidden_layer_sizes=(10,), activation="logistic", solver="sgd", nesterovs_momentum=False,
        learning_rate_init=0.2, batch_size=25, max_iter=6)),
    "regression-2-outputs-adam-identity": (sk.MLPRegressor, MLPRegressor, lambda: _regression(2), dict(
        hidden_layer_sizes=(8,), activation="identity", learning_rate_init=0.01, batch_size=40, max_iter=6)),
    "regression-sgd-adaptive": (sk.MLPRegressor, MLPRegressor, _regression, dict(
        hidden_layer_sizes=(7,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.5,
        n_iter_no_change=1, batch_size=64, max_iter=8)),
    "poisson-adam": (sk.MLPRegressor, MLPRegressor, _poisson, dict(
        loss="poisson", hidden_layer_sizes=(6,), learning_rate_init=0.01, batch_size=30, max_iter=5)),
    "early-stopping-binary": (sk.MLPClassifier, MLPClassifier, lambda: _digits(2), dict(
        hidden_layer_sizes=(6,), early_stopping=True, validation_fraction=0.2, learning_rate_init=0.01,
        max_iter=5)),
}


def _assert_same_fit(ours, theirs, rtol: float = 1e-8) -> None:
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    for name in ("n_iter_", "t_", "n_outputs_", "n_layers_", "out_activation_", "best_loss_",
                 "best_validation_score_"):
        a, b = getattr(ours, name), getattr(theirs, name)
        if isinstance(b, float):
            np.testing.assert_allclose(a, b, rtol=rtol)
        else:
            assert a == b, name
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    if theirs.validation_scores_ is not None:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=rtol)


@pytest.mark.parametrize("case", sorted(TRAJECTORIES))
def test_the_trajectory_is_scikit_learns(case):
    # Float64 rounding alone separates the two after a few epochs: 1e-8 relative is far below any
    # difference of rule (a wrong epsilon placement, decay or momentum rescaling shows at 1e-3 or more).
    sk_cls, our_cls, data, params = TRAJECTORIES[case]
    X, y = data()
    weights = np.random.default_rng(5).uniform(0.2, 2.0, len(X)) if "regression" in case else None
    theirs = sk_cls(random_state=0, **params).fit(X, y, sample_weight=weights)
    ours = our_cls(random_state=0, backend="numpy", **params).fit(X, y, sample_weight=weights)
    _assert_same_fit(ours, theirs)
    assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)


def test_partial_fit_continues_like_scikit_learn():
    X, y = _digits(3)
    params = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.1, batch_size=40, random_state=2)
    theirs, ours = sk.MLPClassifier(**params), MLPClassifier(backend="numpy", **params)
    for _ in range(3):
        theirs.partial_fit(X, y, classes=[0, 1, 2])
        ours.partial_fit(X, y, classes=[0, 1, 2])
    _assert_same_fit(ours, theirs)


def test_warm_start_continues_like_scikit_learn():
    X, y = _regression()
    params = dict(hidden_layer_sizes=(5,), solver="adam", warm_start=True, max_iter=3, random_state=4)
    theirs, ours = sk.MLPRegressor(**params).fit(X, y), MLPRegressor(backend="numpy", **params).fit(X, y)
    theirs.fit(X, y)
    ours.fit(X, y)
    _assert_same_fit(ours, theirs)


@pytest.mark.parametrize("continued", ["partial_fit", "warm_start"])
@pytest.mark.parametrize("first,then", [(1, 2), (2, 1), (2, 3)])
def test_continuing_a_regressor_on_another_number_of_outputs_is_refused(first, then, continued):
    """partial_fit and warm_start continue the fitted network: targets with another number of columns are refused,
    naming both counts, and the model is left as it was.  (scikit-learn fails in a matrix product for more
    columns, and trains every output on a 1-D y for fewer; here both went on without a word, the network keeping
    its outputs while n_outputs_ changed.)"""
    X, y = _regression()
    Y = np.column_stack([y * (k + 1) for k in range(3)])
    take = {1: y, 2: Y[:, :2], 3: Y}
    est = MLPRegressor(hidden_layer_sizes=(5,), solver="adam", max_iter=2, random_state=0, backend="numpy",
                       warm_start=continued == "warm_start")
    step = est.partial_fit if continued == "partial_fit" else est.fit
    step(X, take[first])
    t_first = est.t_
    before = [w.copy() for w in est.coefs_ + est.intercepts_]
    with pytest.raises(ValueError, match=f"y has {then} output column.*fitted with {first}.*warm_start=False"):
        step(X, take[then])
    assert est.n_outputs_ == first
    assert all(np.array_equal(a, b) for a, b in zip(est.coefs_ + est.intercepts_, before))
    step(X, take[first][:, None] if first == 1 else take[first])  # the same count goes on, as a column too
    assert est.t_ == 2 * t_first


@pytest.mark.parametrize("scale", [0.3, 30.0])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("problem", ["binary", "multiclass", "regression"])
def test_lbfgs_objective_is_scikit_learns(activation, problem, scale):
    # Loss and gradient at the same packed parameters: the same function up to float64 rounding.
    X, y = {"binary": lambda: _digits(2, 60), "multiclass": lambda: _digits(3, 60),
            "regression": lambda: _regression(2)}[problem]()
    cls_sk, cls = (sk.MLPRegressor, MLPRegressor) if problem == "regression" else (sk.MLPClassifier, MLPClassifier)
    params = dict(hidden_layer_sizes=(7, 4), activation=activation, solver="lbfgs", alpha=0.05, max_iter=2,
                  random_state=0)
    theirs, ours = cls_sk(**params).fit(X, y), cls(backend="numpy", **params).fit(X, y)
    # scale 0.3 keeps every logit well inside (-16, 16), where scikit-learn's clipping of probabilities at
    # machine epsilon never acts; at 30 it acts on many samples (and 1 - p loses digits), as it does here
    theta = scale * np.random.default_rng(0).normal(size=sum(c.size for c in theirs.coefs_ + theirs.intercepts_))
    Y = y if problem == "regression" else theirs._label_binarizer.transform(y)
    Y = Y.reshape(len(X), -1).astype(float)
    units = [X.shape[1], 7, 4, Y.shape[1]]
    acts = [X] + [np.empty((len(X), u)) for u in units[1:]]
    deltas = [np.empty_like(a) for a in acts[1:]]
    coef_grads = [np.empty((i, o)) for i, o in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(o) for o in units[1:]]
    loss_sk, grad_sk = theirs._loss_grad_lbfgs(theta, X, Y, None, acts, deltas, coef_grads, intercept_grads)
    loss, grad = ours._loss_grad_lbfgs(theta, X, Y, None)
    np.testing.assert_allclose(loss, loss_sk, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_sk, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("classes", [2, 10])
def test_inputs_far_from_unit_scale_follow_scikit_learn(solver, classes):
    # Raw pixel values (0..255): in the first epochs many samples get a probability below eps for their
    # true label, where scikit-learn clips.  The log-losses were the exact ones, so the loss curve differed
    # (first epoch 171 against 32, adam) and lbfgs, whose line search reads the loss, stopped after 44
    # iterations against 41; the binary case also differed where scikit-learn computes 1 - p.
    X, y = load_digits(return_X_y=True)
    X, y = X * (255 / 16), y % classes
    params = dict(solver=solver, max_iter=200 if solver == "lbfgs" else 12, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs, ours = sk.MLPClassifier(**params).fit(X, y), MLPClassifier(backend="numpy", **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    if solver == "lbfgs":  # float64 rounding over dozens of line searches: measured 1e-6 relative at most
        np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-5)
        assert (ours.predict(X) == theirs.predict(X)).all()
    else:  # measured: 1e-13 relative
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_lbfgs_fit_reaches_scikit_learns_solution():
    X, y = _digits(3, 120)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=40, random_state=0)
    theirs, ours = sk.MLPClassifier(**params).fit(X, y), MLPClassifier(backend="numpy", **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-6)
    assert not hasattr(ours, "loss_curve_")  # as scikit-learn: the curve belongs to the stochastic solvers


def test_lbfgs_on_float32_data_returns_float64_weights_as_scikit_learn():
    # scikit-learn starts SciPy's L-BFGS-B from the float32 weights: SciPy evaluates the objective in float32
    # and keeps its float64 iterate, which becomes coefs_ (so predictions come out in float64).  Both compute
    # in float32, so they agree to float32 rounding grown over the iterations: 2e-6 after 5 (about 1e-6 seen).
    X, y = _digits(3, 120)
    X = X.astype(np.float32)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=5, random_state=0)
    theirs, ours = sk.MLPClassifier(**params).fit(X, y), MLPClassifier(backend="numpy", **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert ours.predict_proba(X).dtype == theirs.predict_proba(X).dtype == np.float64
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=2e-6)
    # an explicit dtype is this package's own choice: float32 weights and computation, lbfgs included
    explicit = MLPClassifier(backend="numpy", dtype="float32", **params).fit(X, y)
    assert all(c.dtype == np.float32 for c in explicit.coefs_ + explicit.intercepts_)


@pytest.mark.parametrize("sizes", [(2.5,), (True,), (4, 3.0), True, (np.float64(3),)])
def test_non_integer_layer_sizes_raise_as_in_scikit_learn(sizes):
    X, y = _digits(3, 60)
    with pytest.raises(TypeError) as theirs:
        sk.MLPClassifier(hidden_layer_sizes=sizes, max_iter=1).fit(X, y)
    with pytest.raises(TypeError, match=r"hidden_layer_sizes: expected integer layer sizes") as ours:
        MLPClassifier(hidden_layer_sizes=sizes, max_iter=1, backend="numpy").fit(X, y)
    # the same complaint as scikit-learn's (NumPy's, when it builds the weights), naming the parameter
    assert str(theirs.value) in str(ours.value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("solver, extra", [("adam", {}), ("sgd", {}), ("adam", {"early_stopping": True}),
                                           ("lbfgs", {})])
def test_losses_have_scikit_learns_types(solver, extra, dtype):
    X, y = _digits(3, 120)
    X = X.astype(dtype)
    params = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=3, random_state=0, **extra)
    theirs, ours = sk.MLPClassifier(**params).fit(X, y), MLPClassifier(backend="numpy", **params).fit(X, y)
    for name in ("loss_", "best_loss_", "best_validation_score_"):
        assert type(getattr(ours, name, "absent")) is type(getattr(theirs, name, "absent")), name
    for name in ("loss_curve_", "validation_scores_"):
        ours_list, theirs_list = getattr(ours, name, None), getattr(theirs, name, None)
        assert [type(v) for v in ours_list or []] == [type(v) for v in theirs_list or []], name


def test_float32_data_trains_in_float32():
    X, y = _digits(3)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend="numpy").fit(
        X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend="numpy", dtype="float32")
    assert reg.fit(*_regression()).predict(_regression()[0]).dtype == np.float32


@pytest.mark.parametrize("spelling", [np.float32, np.dtype("float32"), np.float64, np.dtype("float64"), float])
def test_dtype_takes_numpy_types_as_well_as_names(spelling):
    # dtype=np.float32 is how NumPy users spell a dtype (and float is float64 there, as for mlp.MLP): the same fit
    # as the name, the parameter kept as given
    X, y = _digits(3, 60)
    name = np.dtype(spelling).name
    params = dict(hidden_layer_sizes=(6,), max_iter=3, random_state=0, backend="numpy")
    given = MLPClassifier(dtype=spelling, **params)
    assert given.get_params()["dtype"] is spelling
    fitted, named = given.fit(X, y), MLPClassifier(dtype=name, **params).fit(X, y)
    for a, b in zip(fitted.coefs_ + fitted.intercepts_, named.coefs_ + named.intercepts_):
        assert a.dtype == b.dtype == np.dtype(name)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.dtype("float16"), "float16", int, "f8"])
def test_dtypes_other_than_float32_and_float64_are_refused_naming_the_parameter(dtype):
    X, y = _digits(3, 60)
    with pytest.raises(ValueError, match=r"The 'dtype' parameter of MLPClassifier must be"):
        MLPClassifier(dtype=dtype, max_iter=1, backend="numpy").fit(X, y)


def test_sparse_input_gives_the_dense_result():
    # Kept sparse, the first layer adds the same terms as BLAS in another order: equal to rounding (1e-12;
    # tests/test_sparse.py checks every solver and output).
    X, y = _digits(2, 80)
    dense = MLPClassifier(hidden_layer_sizes=(6,), max_iter=4, random_state=0, backend="numpy").fit(X, y)
    sparse = MLPClassifier(hidden_layer_sizes=(6,), max_iter=4, random_state=0, backend="numpy").fit(
        sp.csr_matrix(X), y)
    for a, b in zip(dense.coefs_, sparse.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.predict_proba(X), sparse.predict_proba(sp.csc_matrix(X)), rtol=1e-12)


def test_regressor_in_a_pipeline_and_grid_search():
    # The same search over scikit-learn's regressor scores every candidate the same (same trajectories).
    X, y = _regression()
    grid = {"mlpregressor__hidden_layer_sizes": [(4,), (16,)], "mlpregressor__alpha": [1e-4, 1e-1]}
    params = dict(learning_rate_init=0.01, max_iter=60, random_state=0)
    ours = GridSearchCV(make_pipeline(StandardScaler(), MLPRegressor(backend="numpy", **params)), grid, cv=3).fit(X, y)
    theirs = GridSearchCV(make_pipeline(StandardScaler(), sk.MLPRegressor(**params)), grid, cv=3).fit(X, y)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], rtol=1e-8)
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_estimator_.score(X, y) > 0.8


def test_pickle_round_trip_continues_identically():
    X, y = _digits(3)
    labels = np.array(["x", "y", "z"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend="numpy").fit(X, labels)
    clf.predict(X)  # builds the inference network, which must not be pickled
    data = pickle.dumps(clf)
    assert b"mlp.backends" not in data
    copy = pickle.loads(data)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, labels)
    copy.partial_fit(X, labels)  # the optimizer's moments survive pickling
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_assigned_coefs_are_the_network():
    X, y = _regression()
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0, backend="numpy").fit(X, y)
    before = reg.predict(X)
    reg.coefs_ = [2 * c for c in reg.coefs_]
    assert not np.allclose(reg.predict(X), before)


def test_to_mlp_predicts_the_same():
    X, y = _multilabel()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend="numpy").fit(X, y)
    model = clf.to_mlp()
    assert model.output == "logistic" and model.activation == "relu"
    np.testing.assert_allclose(model.predict_proba(X), clf.predict_proba(X), rtol=1e-12)


def test_estimators_are_in_dir_mlp():
    assert {"MLPClassifier", "MLPRegressor"} <= set(dir(mlp))
    assert mlp.MLPRegressor is MLPRegressor


@real_gpu_training
@pytest.mark.gpu
@pytest.mark.parametrize("problem", ["multiclass", "multilabel", "regression"])
def test_cuda_backend_trains_like_numpy(problem):  # each output layer's loss kernel once
    try:
        mlp.get_backend("cuda")  # a GPU, or Numba's CUDA simulator as conftest sets up
    except RuntimeError as exc:
        pytest.skip(str(exc))
    # tiny on purpose: the simulator runs every GPU thread in Python
    X, y = {"multiclass": lambda: _digits(3, 24), "multilabel": _multilabel,
            "regression": _regression}[problem]()
    X, y = X[:16], y[:16]
    cls = MLPRegressor if problem == "regression" else MLPClassifier
    params = dict(hidden_layer_sizes=(4,), activation="tanh", solver="sgd", alpha=1e-2, batch_size=10, max_iter=2,
                  random_state=0)
    host = cls(backend="numpy", **params).fit(X, y)
    device = cls(backend="cuda", **params).fit(X, y)
    # float64 on both; the device may fuse multiply-adds: agreement to ~1e-12 relative, 1e-9 is generous
    for a, b in zip(device.coefs_ + device.intercepts_, host.coefs_ + host.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(device.loss_curve_, host.loss_curve_, rtol=1e-9)


# Default parameters on purpose (only the backend is fixed, so the checks never depend on a GPU); the ensembles
# with two members (the checks' accuracy bars hold with default members).
@parametrize_with_checks([MLPClassifier(backend="numpy"), MLPRegressor(backend="numpy"),
                          MLPEnsembleClassifier(MLPClassifier(backend="numpy"), n_estimators=2),
                          MLPEnsembleRegressor(MLPRegressor(backend="numpy"), n_estimators=2)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)  # each scikit-learn check raises (AssertionError, ValueError, ...) when it fails


NO_SKLEARN_SCRIPT = """
import json, sys
sys.modules["sklearn"] = None  # import sklearn fails as if it were not installed
import mlp
import numpy as np
model = mlp.MLP([2, 3, 2])
out = {"mlp_works": model.predict(np.zeros((1, 2))).shape == (1,)}
for key, stmt in (("attribute", "mlp.MLPRegressor"), ("from_import", "from mlp import MLPClassifier"),
                  ("module", "import mlp.estimator"), ("search", "mlp.GridSearchCV")):
    try:
        exec(stmt)
    except ImportError as exc:
        out[key] = str(exc)
print(json.dumps(out))
"""


def test_without_sklearn_the_estimators_name_the_extra_to_install():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", NO_SKLEARN_SCRIPT], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("mlp_works") is True  # the rest of the package imports and runs without scikit-learn
    expected = "mlp.MLPClassifier and mlp.MLPRegressor need scikit-learn: pip install 'numba-mlp[sklearn]'"
    searches = "mlp's searches and ensembles need scikit-learn: pip install 'numba-mlp[sklearn]'"
    assert out == {"attribute": expected, "from_import": expected, "module": expected, "search": searches}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_underflow_does_not_fail_where_numpy_raises_on_floating_point_errors(dtype):
    """Unscaled digits (pixels 0-16; times 100 in float64) give logits far apart, whose softmax exponentials
    underflow (below the dtype's smallest normal number): with ``np.errstate(all="raise")`` set by the caller the
    fit, the probabilities and a Trainer's fit run, and give exactly what they give without it."""
    X, y = load_digits(return_X_y=True)
    X = X if dtype == "float32" else X * 100.0
    kw = dict(hidden_layer_sizes=(50,), max_iter=30, random_state=0, learning_rate_init=0.05, dtype=dtype,
              backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = mlp.MLPClassifier(**kw).fit(X, y)
        with np.errstate(all="raise"):
            raising = mlp.MLPClassifier(**kw).fit(X, y)
            proba = raising.predict_proba(X)
    assert proba.min() < np.finfo(dtype).tiny  # some exponential did underflow
    np.testing.assert_array_equal(proba, plain.predict_proba(X))
    assert raising.loss_curve_ == plain.loss_curve_
    model = mlp.MLP([64, 20, 10], seed=0, dtype=dtype)
    with np.errstate(all="raise"):
        history = mlp.Trainer(model, mlp.optim.Adam(lr=0.05), backend="numpy", batch_size=64, seed=0).fit(
            X, y, epochs=3, verbose=0)
    assert np.all(np.isfinite(history["loss"]))
