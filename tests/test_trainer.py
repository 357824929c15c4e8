"""The trainer on the NumPy backend: learning, determinism, divergence, early stopping, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp import datasets, optim


@pytest.fixture(scope="module")
def quadrants():
    return datasets.load("quadrants", n_train=2000, n_test=1000, seed=0)


def test_quadrants_learned_to_100_percent(quadrants):
    (X, y), (Xt, yt) = quadrants
    model = mlp.MLP([2, 32, 32, 4], seed=0)
    trainer = mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=32, seed=0)
    history = trainer.fit(X, y, epochs=40, verbose=0)
    assert history["loss"][-1] < history["loss"][0] / 10
    assert trainer.evaluate(X, y)["accuracy"] == 1.0
    assert trainer.evaluate(Xt, yt)["accuracy"] == 1.0
    assert (model.predict(Xt) == yt).all()


def test_history_records(quadrants):
    (X, y), (Xt, yt) = quadrants
    trainer = mlp.Trainer(mlp.MLP([2, 8, 4]), optim.SGD(lr=0.1, momentum=0.9), backend="numpy", batch_size=100)
    h = trainer.fit(X, y, epochs=3, validation_data=(Xt, yt), verbose=0)
    assert len(h) == 3 and h["epoch"] == [1.0, 2.0, 3.0]
    for r in h:
        assert set(r) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1 and r["seconds"] > 0
    # the reported validation figures are those of evaluate() on the same data
    assert h["val_loss"][-1] == pytest.approx(trainer.evaluate(Xt, yt)["loss"], rel=1e-6)
    with pytest.raises(KeyError):
        h["nope"]
    assert trainer.history is h


def test_same_seed_same_result_and_seed_matters(quadrants):
    (X, y), _ = quadrants

    def run(seed):
        model = mlp.MLP([2, 16, 4], seed=1)
        mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=50, seed=seed).fit(X, y, epochs=2, verbose=0)
        return np.concatenate([w.ravel() for pair in model.get_weights() for w in pair])

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_last_partial_batch_is_used(quadrants):
    (X, y), _ = quadrants
    opt = optim.SGD(lr=0.01)
    mlp.Trainer(mlp.MLP([2, 4]), opt, backend="numpy", batch_size=300).fit(X[:1000], y[:1000], epochs=1, verbose=0)
    assert opt.steps == 4  # 300 + 300 + 300 + 100


def test_divergence_stops_with_epoch_and_step_and_restores_weights(quadrants):
    (X, y), _ = quadrants
    model = mlp.MLP([2, 16, 4], seed=0)
    trainer = mlp.Trainer(model, optim.SGD(lr=1e30), backend="numpy", batch_size=100)
    start = model.get_weights()
    with pytest.raises(mlp.TrainingDivergedError, match=r"at epoch 1, step \d+ of 20") as info:
        trainer.fit(X, y, epochs=3, verbose=0)
    assert info.value.epoch == 1 and 1 <= info.value.step <= 20
    assert isinstance(info.value, FloatingPointError)
    for (W, b), (W0, b0) in zip(model.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert trainer.optimizer.steps == 0


def test_early_stopping_restores_the_best_epoch(quadrants):
    (X, y), (Xt, yt) = quadrants
    model = mlp.MLP([2, 16, 4], seed=0)
    trainer = mlp.Trainer(model, optim.SGD(lr=0.3, momentum=0.9), backend="numpy", batch_size=20, seed=0)
    es = mlp.EarlyStopping(patience=2, monitor="val_loss", restore_best=True)
    h = trainer.fit(X, y, epochs=200, validation_data=(Xt, yt), early_stopping=es, verbose=0)
    assert h.stopped_early and len(h) < 200
    best = int(np.argmin(h["val_loss"])) + 1
    assert h.best_epoch == best and len(h) == best + 2
    assert trainer.evaluate(Xt, yt)["loss"] == pytest.approx(min(h["val_loss"]), rel=1e-6)


def test_validation_split_is_seeded_and_holds_out(quadrants):
    (X, y), _ = quadrants
    t = mlp.Trainer(mlp.MLP([2, 8, 4]), optim.Adam(lr=0.01), backend="numpy", batch_size=64, seed=3)
    opt = t.optimizer
    h = t.fit(X, y, epochs=1, validation_split=0.25, verbose=0)
    assert opt.steps == math.ceil(1500 / 64)
    assert math.isfinite(h["val_loss"][0])
    with pytest.raises(ValueError, match=r"early_stopping: monitoring 'val_loss' needs validation_data"):
        t.fit(X, y, epochs=1, early_stopping=3, verbose=0)


def test_checkpoint_written_each_epoch(quadrants, tmp_path: Path):
    (X, y), _ = quadrants
    model = mlp.MLP([2, 8, 4])
    path = tmp_path / "ck.npz"
    mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy").fit(X, y, epochs=2, verbose=0, checkpoint=path)
    loaded = mlp.load(path)
    assert loaded.metadata["epoch"] == 2
    np.testing.assert_array_equal(loaded.predict_proba(X[:10]), model.predict_proba(X[:10]))


def test_verbose_prints_one_line_per_epoch(quadrants, capsys):
    (X, y), _ = quadrants
    mlp.Trainer(mlp.MLP([2, 4]), optim.SGD(lr=0.1), backend="numpy").fit(X, y, epochs=2, verbose=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ")


def test_bad_fit_arguments(quadrants):
    (X, y), _ = quadrants
    t = mlp.Trainer(mlp.MLP([2, 4]), optim.SGD(lr=0.1), backend="numpy")
    with pytest.raises(ValueError, match=r"X: expected 2 features \(the model's input size\), got 3"):
        t.fit(np.zeros((5, 3)), np.zeros(5, int), verbose=0)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\] \(the model has 4 outputs\), got values in \[0, 4\]"):
        t.fit(X[:3], [0, 4, 1], verbose=0)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\].*got values in \[-1, 1\]"):
        t.fit(X[:3], [0, -1, 1], verbose=0)
    with pytest.raises(ValueError, match=r"X: expected finite values"):
        t.fit(np.full((3, 2), np.nan), [0, 1, 1], verbose=0)
    with pytest.raises(ValueError, match=r"X: expected at least one sample"):
        t.fit(np.zeros((0, 2)), [], verbose=0)
    with pytest.raises(ValueError, match=r"epochs: expected an integer >= 1, got 0"):
        t.fit(X, y, epochs=0, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split: expected a value in \[0.0, 1.0\), got 1.0"):
        t.fit(X, y, validation_split=1.0, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split: expected 0 when validation_data is given"):
        t.fit(X, y, validation_split=0.1, validation_data=(X, y), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\]: expected 2 features"):
        t.fit(X, y, validation_data=(np.zeros((2, 5)), [0, 1]), verbose=0)
    with pytest.raises(TypeError, match=r"early_stopping: expected an EarlyStopping"):
        t.fit(X, y, early_stopping="yes", verbose=0)
    with pytest.raises(ValueError, match=r"monitor: expected one of"):
        mlp.EarlyStopping(monitor="val_f1")


def test_bad_trainer_arguments():
    model = mlp.MLP([2, 4])
    with pytest.raises(TypeError, match=r"model: expected an mlp.MLP, got list"):
        mlp.Trainer([2, 4], optim.SGD(lr=0.1))
    with pytest.raises(TypeError, match=r"optimizer: expected an mlp.optim.Optimizer"):
        mlp.Trainer(model, "adam")
    with pytest.raises(ValueError, match=r"batch_size: expected an integer >= 1, got 0"):
        mlp.Trainer(model, optim.SGD(lr=0.1), batch_size=0)
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        mlp.Trainer(model, optim.SGD(lr=0.1), backend="gpu")


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_fashion_mnist_subset_is_learned():
    try:
        (X, y), (Xt, yt) = datasets.load("fashion-mnist", download=False)
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST files not found locally ({str(exc).splitlines()[0]})")
    model = mlp.MLP([784, 128, 10], seed=0)
    trainer = mlp.Trainer(model, optim.Adam(lr=1e-3), backend="numpy", batch_size=64)
    h = trainer.fit(X[:12000], y[:12000], epochs=3, verbose=0)
    acc = trainer.evaluate(Xt[:2000], yt[:2000])["accuracy"]
    # a linear model reaches ~0.80 on Fashion-MNIST; a small MLP on a fifth of the data ~0.82-0.84
    assert acc > 0.80, acc
    assert h["loss"][-1] < h["loss"][0]


def test_on_epoch_end_returning_true_ends_training_after_that_epoch():
    rng = np.random.default_rng(0)
    X, y = rng.random((100, 5), dtype=np.float32), rng.integers(0, 3, 100)
    trainer = mlp.Trainer(mlp.MLP((5, 8, 3), seed=0), mlp.optim.SGD(lr=0.1), backend="numpy", batch_size=25)
    seen = []

    def after_epoch(history):
        seen.append(len(history))
        return len(history) == 2  # anything but True (None, 1, ...) goes on

    history = trainer.fit(X, y, epochs=6, verbose=0, on_epoch_end=after_epoch)
    assert seen == [1, 2] and len(history) == 2 and trainer.optimizer.steps == 2 * 4
