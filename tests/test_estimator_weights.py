"""What a user changes in ``coefs_`` and ``intercepts_`` is what the drop-ins predict with, as in scikit-learn.

Predictions run on a network built from ``coefs_``/``intercepts_`` and kept
between calls; every change to those lists (an array edited in place, an
element replaced, another dtype) and to the parameters that shape the network
(``activation``, ``backend``) must reach the next prediction.  Each test edits
a fitted estimator after it has predicted once (so a kept network exists) and
compares with scikit-learn's own forward pass over the same attributes
(``predict_proba``/``predict`` of a ``sklearn.neural_network`` estimator given
them) and with a freshly built network (an unpickled copy, which rebuilds
from ``coefs_``).
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="mlp.MLPClassifier/MLPRegressor need scikit-learn (the extra 'sklearn')")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import is_classifier  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from mlp import MLPClassifier, MLPRegressor  # noqa: E402

#: float64 throughout: the two forward passes differ in the order of a few additions (bias, softmax sums)
RTOL = 1e-12


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(kind: str):
    if kind == "regressor":
        X, y = make_regression(n_samples=120, n_features=6, n_targets=2, noise=5.0, random_state=3)
        return X, (y - y.mean(axis=0)) / y.std(axis=0)
    X, y = load_digits(n_class=3 if kind == "multiclass" else 2, return_X_y=True)
    return X[:150] / 16.0, y[:150]


def _fitted(kind: str, kept: str = "views", **params):
    """A fitted estimator after one prediction.  ``kept``: "views" (as fitted on the NumPy backend, ``coefs_``
    are views of the kept network's parameters) or "copies" (``coefs_`` and ``intercepts_`` assigned arrays of
    their own, compared on every call with the values the network was built from)."""
    X, y = _data(kind)
    cls = MLPRegressor if kind == "regressor" else MLPClassifier
    est = cls(hidden_layer_sizes=(7, 5), max_iter=3, random_state=0, backend="numpy", **params).fit(X, y)
    if kept == "copies":
        est.coefs_, est.intercepts_ = [c.copy() for c in est.coefs_], [b.copy() for b in est.intercepts_]
    est.predict(X)  # a first prediction builds (or finds) the network later predictions reuse
    shares = [c is None for c in est._net_cache.copies]
    assert all(shares) if kept == "views" else not any(shares)
    return est, X, y


def _sklearn_twin(est):
    """scikit-learn's estimator holding ``est``'s attributes (the same lists): its own forward pass."""
    cls = sk.MLPClassifier if is_classifier(est) else sk.MLPRegressor
    twin = cls(activation=est.activation)
    for name in ("coefs_", "intercepts_", "n_layers_", "n_outputs_", "out_activation_", "n_features_in_"):
        setattr(twin, name, getattr(est, name))
    if is_classifier(est):
        twin.classes_, twin._label_binarizer = est.classes_, est._label_binarizer
    return twin


def _outputs(est, X) -> np.ndarray:
    return est.predict_proba(X) if is_classifier(est) else est.predict(X)


def _assert_predicts_with_its_attributes(est, X) -> None:
    ours = _outputs(est, X)
    np.testing.assert_allclose(ours, _outputs(_sklearn_twin(est), X), rtol=RTOL, atol=1e-15)
    rebuilt = pickle.loads(pickle.dumps(est))  # no kept network: built from coefs_ on first use
    fresh = _outputs(rebuilt, X)
    assert ours.dtype == fresh.dtype and ours.tobytes() == fresh.tobytes()
    np.testing.assert_array_equal(est.predict(X), rebuilt.predict(X))


def _scale_first_column(est):
    est.coefs_[0][:, 0] *= -3.0


def _zero_first_layer(est):
    est.coefs_[0][:] = 0


def _shift_last_bias(est):
    est.intercepts_[-1] += 1.0  # in place: the list keeps the same array


def _copy_into_middle_layer(est):
    np.copyto(est.coefs_[1], np.linspace(-1.0, 1.0, est.coefs_[1].size).reshape(est.coefs_[1].shape))


def _replace_an_element(est):
    est.coefs_[1] = est.coefs_[1] * 0.5


def _replace_a_bias_by_float32(est):
    est.intercepts_[0] = (est.intercepts_[0] + 0.25).astype(np.float32)


def _replace_the_lists(est):
    est.coefs_ = [c[:, ::-1][::-1].copy() if c.shape[0] == c.shape[1] else c + 0.1 for c in est.coefs_]


EDITS = [_scale_first_column, _zero_first_layer, _shift_last_bias, _copy_into_middle_layer, _replace_an_element,
         _replace_a_bias_by_float32, _replace_the_lists]


@pytest.mark.parametrize("kept", ["views", "copies"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regressor"])
@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__.strip("_"))
def test_an_edit_of_the_weights_reaches_predict(kind, edit, kept):
    est, X, _ = _fitted(kind, kept)
    before = _outputs(est, X).copy()
    edit(est)
    assert not np.array_equal(_outputs(est, X), before)  # the edit changes the predictions ...
    _assert_predicts_with_its_attributes(est, X)  # ... to those of the edited attributes


@pytest.mark.parametrize("kept", ["views", "copies"])
def test_an_edit_undone_gives_the_first_predictions_again(kept):
    est, X, _ = _fitted("multiclass", kept)
    before = est.predict_proba(X)
    saved = est.coefs_[0].copy()
    est.coefs_[0][3, :] = 7.0
    assert not np.array_equal(est.predict_proba(X), before)
    est.coefs_[0][...] = saved
    assert est.predict_proba(X).tobytes() == before.tobytes()


def test_weights_of_another_dtype_predict_in_that_dtype():
    est, X, _ = _fitted("multiclass")
    est.coefs_ = [c.astype(np.float32) for c in est.coefs_]
    est.intercepts_ = [b.astype(np.float32) for b in est.intercepts_]
    proba = est.predict_proba(X)
    assert proba.dtype == np.float32
    # scikit-learn multiplies float64 data by the float32 weights in float64; ours computes in float32
    np.testing.assert_allclose(proba, _sklearn_twin(est).predict_proba(X), rtol=1e-5, atol=1e-6)
    fresh = pickle.loads(pickle.dumps(est)).predict_proba(X)
    assert fresh.tobytes() == proba.tobytes()
    est.coefs_[0][:2] += 1.0  # an in-place edit of the float32 weights reaches predict too
    _assert_predicts_with_its_attributes(est, X.astype(np.float32))


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_a_new_activation_reaches_predict(activation):
    est, X, _ = _fitted("multiclass")
    est.set_params(activation=activation)
    _assert_predicts_with_its_attributes(est, X)


@pytest.mark.parametrize("kind", ["multiclass", "regressor"])
def test_partial_fit_after_an_edit_continues_like_scikit_learn(kind):
    X, y = _data(kind)
    params = dict(hidden_layer_sizes=(6,), solver="sgd", learning_rate_init=0.05, batch_size=40, random_state=1)
    if kind == "regressor":
        theirs, ours = sk.MLPRegressor(**params), MLPRegressor(backend="numpy", **params)
        extra = {}
    else:
        theirs, ours = sk.MLPClassifier(**params), MLPClassifier(backend="numpy", **params)
        extra = {"classes": [0, 1, 2]}
    theirs.partial_fit(X, y, **extra)
    ours.partial_fit(X, y, **extra)
    ours.predict(X)
    for est in (theirs, ours):
        est.coefs_[0][:, 1] *= -2.0
        est.intercepts_[0] += 0.5
    np.testing.assert_allclose(_outputs(ours, X), _outputs(theirs, X), rtol=RTOL, atol=1e-15)
    for _ in range(2):
        theirs.partial_fit(X, y)
        ours.partial_fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)  # the trajectory tolerance of test_estimator.py
    np.testing.assert_allclose(_outputs(ours, X), _outputs(theirs, X), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kept", ["views", "copies"])
def test_pickling_after_an_edit_keeps_the_edit(kept):
    est, X, _ = _fitted("multiclass", kept)
    _shift_last_bias(est)
    edited = est.predict_proba(X)
    clone = pickle.loads(pickle.dumps(est))
    assert clone.predict_proba(X).tobytes() == edited.tobytes()
    clone.coefs_[0][:] = 0  # the copy's arrays are its own ...
    assert est.predict_proba(X).tobytes() == edited.tobytes()
    assert not np.array_equal(clone.predict_proba(X), edited)  # ... and its predictions follow them
    _assert_predicts_with_its_attributes(clone, X)


@pytest.mark.parametrize("kept", ["views", "copies"])
def test_a_deep_copy_predicts_with_its_own_weights(kept):
    est, X, _ = _fitted("multiclass", kept)
    twin = copy.deepcopy(est)
    twin.coefs_[0][:, 2] += 1.0
    _assert_predicts_with_its_attributes(twin, X)
    assert not np.array_equal(twin.predict_proba(X), est.predict_proba(X))
