"""The MLP: initialisation, whole-model gradient check, inference, checkpoints and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp.model import atomic_write_bytes

from test_backend_numpy import numeric_grad, rel_err


def test_layout_and_he_initialisation():
    model = mlp.MLP([784, 512, 256, 10], seed=0)
    assert model.n_params == 784 * 512 + 512 * 256 + 256 * 10 + 512 + 256 + 10 == 535818
    assert model.n_weights == 784 * 512 + 512 * 256 + 256 * 10
    (W1, b1), (W2, b2), (W3, b3) = model.get_weights()
    assert W1.shape == (784, 512) and b3.shape == (10,) and W1.dtype == np.float32
    # He initialisation: std sqrt(2 / fan_in), zero biases
    assert W1.std() == pytest.approx(np.sqrt(2 / 784), rel=0.01)
    assert W2.std() == pytest.approx(np.sqrt(2 / 512), rel=0.01)
    assert not b1.any() and not b2.any()
    # the flat buffer holds every weight first, then every bias
    flat = model.backend.to_numpy(model.params)
    np.testing.assert_array_equal(flat[:W1.size], W1.ravel())
    np.testing.assert_array_equal(flat[model.n_weights:model.n_weights + 512], b1)
    assert np.array_equal(mlp.MLP([4, 3, 2], seed=5).get_weights()[0][0], mlp.MLP([4, 3, 2], seed=5).get_weights()[0][0])
    assert not np.array_equal(mlp.MLP([4, 3, 2], seed=5).get_weights()[0][0], mlp.MLP([4, 3, 2], seed=6).get_weights()[0][0])


def test_whole_model_gradient_check_float64():
    rng = np.random.default_rng(0)
    model = mlp.MLP([5, 7, 6, 3], seed=1, dtype="float64")
    # non-zero biases so that no pre-activation sits exactly at the ReLU kink
    model.set_weights([(W, rng.standard_normal(b.shape) * 0.1) for W, b in model.get_weights()])
    X = rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 9)
    loss, grads = model.loss_and_gradients(X, y)
    weights = model.get_weights()

    def loss_fn() -> float:
        model.set_weights(weights)
        return model.loss_and_gradients(X, y)[0]

    for (W, b), (dW, db) in zip(weights, grads):
        # central differences with step 1e-6 in float64: ~1e-9 relative accuracy
        assert rel_err(dW, numeric_grad(loss_fn, W)) < 1e-6
        assert rel_err(db, numeric_grad(loss_fn, b)) < 1e-6
    assert loss == pytest.approx(loss_fn())


def test_predict_proba_predict_and_decision_function_agree():
    rng = np.random.default_rng(2)
    model = mlp.MLP([6, 8, 4], seed=0)
    X = rng.standard_normal((20, 6)).astype(np.float32)
    logits = model.decision_function(X)
    (W1, b1), (W2, b2) = model.get_weights()
    ref = np.maximum(X @ W1 + b1, 0) @ W2 + b2
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)
    p = model.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X), ref.argmax(1))
    assert model.predict(X).dtype == np.int64


def test_predict_in_chunks_matches_one_pass(monkeypatch):
    import mlp.model as model_mod

    rng = np.random.default_rng(3)
    model = mlp.MLP([3, 5, 2])
    X = rng.standard_normal((23, 3))
    whole = model.predict_proba(X)
    monkeypatch.setattr(model_mod, "PREDICT_CHUNK", 4)
    np.testing.assert_array_equal(model.predict_proba(X), whole)


def test_save_load_round_trip(tmp_path: Path):
    model = mlp.MLP([4, 6, 3], seed=7, dtype="float64")
    path = model.save(tmp_path / "sub" / "m.npz", metadata={"note": "hello"})
    loaded = mlp.load(path)
    assert loaded.layer_sizes == (4, 6, 3) and loaded.dtype == np.float64
    assert loaded.metadata == {"note": "hello"}
    for (W, b), (W2, b2) in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    X = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_array_equal(model.predict_proba(X), loaded.predict_proba(X))
    # any name works; np.savez would otherwise append ".npz"
    other = model.save(tmp_path / "checkpoint.bin")
    assert other.exists() and mlp.load(other).layer_sizes == (4, 6, 3)


def test_save_is_atomic_when_interrupted(tmp_path: Path, monkeypatch):
    path = tmp_path / "m.npz"
    mlp.MLP([4, 3, 2], seed=1).save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        mlp.MLP([4, 3, 2], seed=2).save(path)
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # and no temporary file is left


def test_atomic_write_replaces_whole_file(tmp_path: Path):
    p = tmp_path / "f"
    atomic_write_bytes(p, b"a" * 100)
    atomic_write_bytes(p, b"b")
    assert p.read_bytes() == b"b"


def test_load_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="path: no checkpoint file"):
        mlp.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a readable mlp checkpoint"):
        mlp.load(bad)
    np.savez(tmp_path / "other.npz", header=np.frombuffer(b'{"library": "x"}', np.uint8), params=np.zeros(3))
    with pytest.raises(ValueError, match="is not an mlp checkpoint of format 1"):
        mlp.load(tmp_path / "other.npz")


@pytest.mark.parametrize("sizes, exc, match", [
    ([784], ValueError, r"layer_sizes: expected at least two sizes"),
    ("784,10", TypeError, r"layer_sizes: expected a sequence of positive integers"),
    ([784, 0, 10], ValueError, r"layer_sizes\[1\]: expected an integer >= 1, got 0"),
    ([784, 2.5, 10], TypeError, r"layer_sizes\[1\]: expected an integer, got float 2.5"),
    ([784, 1], ValueError, r"layer_sizes: expected at least 2 outputs in the last layer \(a softmax needs two"),
])
def test_bad_layer_sizes(sizes, exc, match):
    with pytest.raises(exc, match=match):
        mlp.MLP(sizes)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match=r"dtype: expected one of \('float32', 'float64'\), got float16"):
        mlp.MLP([3, 2], dtype="float16")
    with pytest.raises(TypeError, match=r"dtype: expected one of"):
        mlp.MLP([3, 2], dtype="bogus")
    with pytest.raises(ValueError, match=r"seed: expected an integer >= 0, got -1"):
        mlp.MLP([3, 2], seed=-1)


def test_bad_inputs_to_inference():
    model = mlp.MLP([3, 4, 2])
    with pytest.raises(ValueError, match=r"X: expected 3 features \(the model's input size\), got 5"):
        model.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"X: expected a 2-D array of shape \(n_samples, 3\)"):
        model.predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"X: expected at least one sample"):
        model.predict(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"X: expected finite values, got 2 NaN or infinite entries"):
        model.predict(np.array([[0, np.nan, 1], [np.inf, 0, 0]]))
    with pytest.raises(TypeError, match=r"X: expected a real numeric array, got dtype <U1"):
        model.predict(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match=r"weights: expected a list of 2 \(W, b\) pairs, got 1"):
        model.set_weights(model.get_weights()[:1])
    w = model.get_weights()
    w[0] = (w[0][0].T, w[0][1])
    with pytest.raises(ValueError, match=r"weights\[0\] W: expected shape \(3, 4\), got array of shape \(4, 3\)"):
        model.set_weights(w)
    w = model.get_weights()
    w[1] = (w[1][0], np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"weights\[1\] b: expected finite real values"):
        model.set_weights(w)


def test_bad_labels_for_gradients():
    model = mlp.MLP([3, 2])
    X = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 1\] \(the model has 2 outputs\), got values in \[0, 2\]"):
        model.loss_and_gradients(X, [0, 2])
    with pytest.raises(TypeError, match=r"y: expected integer class labels 0..1, got dtype float64"):
        model.loss_and_gradients(X, [0.5, 1.0])
    with pytest.raises(TypeError, match=r"use mlp.MLPClassifier for arbitrary label values"):
        model.loss_and_gradients(X, ["a", "b"])
    with pytest.raises(ValueError, match=r"y: expected 2 labels \(one per sample of X\), got 3"):
        model.loss_and_gradients(X, [0, 1, 1])
    # integral floats are accepted as labels
    loss, _ = model.loss_and_gradients(X, np.array([0.0, 1.0]))
    assert loss == pytest.approx(np.log(2))  # zero inputs and zero biases: uniform probabilities


def test_pickle_round_trip_keeps_weights_and_metadata():
    import pickle

    model = mlp.MLP([4, 5, 3], seed=2, dtype="float64")
    model.metadata = {"classes": ["a", "b", "c"]}
    clone = pickle.loads(pickle.dumps(model))
    assert clone.layer_sizes == model.layer_sizes and clone.metadata == model.metadata
    for (W, b), (W2, b2) in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    # the clone's layer views still alias its flat buffer
    clone.set_weights([(W * 0, b * 0) for W, b in clone.get_weights()])
    assert not clone.backend.to_numpy(clone.params).any()


def test_save_stores_the_models_metadata_by_default(tmp_path: Path):
    model = mlp.MLP([3, 2])
    model.metadata = {"dataset": "x"}
    assert mlp.load(model.save(tmp_path / "m.npz")).metadata == {"dataset": "x"}


def test_save_writes_the_weights_and_architecture_only(tmp_path: Path):
    import json

    model = mlp.MLP([3, 5, 2], seed=1, activation="tanh", output="identity")
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(bytes(archive["header"]).decode())
        files = set(archive.files)
    assert files == {"header", "params"} and "training" not in header
    assert (header["activation"], header["output"], header["layer_sizes"]) == ("tanh", "identity", [3, 5, 2])
    loaded = mlp.load(path)
    assert (loaded.activation, loaded.output) == ("tanh", "identity")
    X = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(TypeError, match="training"):
        model.save(path, training=None)  # the state of a run is written by mlp.checkpoint, not by the model
