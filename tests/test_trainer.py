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
        assert set(r) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "r2", "val_r2", "seconds"}
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1 and r["seconds"] > 0
        assert math.isnan(r["r2"]) and math.isnan(r["val_r2"])  # R² is a regression output's figure
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


# ------------------------------------------------------------ every output of the model
def _regression(n: int = 400, n_targets: int = 2, seed: int = 0):
    """Smooth targets of four features: a small network fits them well."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 4))
    Y = np.stack([np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2], X[:, 3] ** 2 - X[:, 0]][:n_targets], axis=1)
    return X, Y


def test_regression_is_learned_with_nan_accuracy_and_half_mse_loss():
    X, Y = _regression()
    model = mlp.MLP([4, 32, 2], seed=0, activation="tanh", output="identity")
    trainer = mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=32, seed=0)
    h = trainer.fit(X[:300], Y[:300], epochs=60, validation_data=(X[300:], Y[300:]), verbose=0)
    assert all(math.isnan(a) for a in h["accuracy"] + h["val_accuracy"])
    assert h["loss"][-1] < h["loss"][0] / 10
    result = trainer.evaluate(X[300:], Y[300:])
    assert math.isnan(result["accuracy"]) and result["r2"] > 0.95
    # the loss is scikit-learn's squared error: half the mean over rows and outputs; float32 sums, so 1e-5
    pred = model.predict(X[300:])
    assert result["loss"] == pytest.approx(0.5 * np.mean((pred - Y[300:]) ** 2), rel=1e-5)
    assert h["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-6)  # the same figure, the same way
    assert mlp.evaluate(model, X[300:], Y[300:]) == result


def test_one_target_may_be_given_as_a_vector():
    X, Y = _regression(n_targets=1)
    trainer = mlp.Trainer(mlp.MLP([4, 8, 1], output="identity"), optim.SGD(lr=0.05), backend="numpy")
    h = trainer.fit(X, Y[:, 0], epochs=2, validation_split=0.25, verbose=0)
    assert math.isfinite(h["val_loss"][-1])
    assert trainer.evaluate(X, Y[:, 0]) == trainer.evaluate(X, Y)


def test_multilabel_accuracy_counts_rows_with_every_output_right():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 3))
    T = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0], axis=1).astype(float)
    model = mlp.MLP([3, 16, 3], seed=0, output="logistic")
    trainer = mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=50)
    h = trainer.fit(X, T, epochs=30, verbose=0)
    result = trainer.evaluate(X, T)
    rows_right = float(np.mean((model.predict(X) == T).all(axis=1)))
    assert result["accuracy"] == rows_right and 0.9 < rows_right < 1  # not every output of every row
    assert 0 < h["accuracy"][-1] <= 1 and math.isnan(result["r2"])


def test_activations_train_and_softmax_has_no_r2(quadrants):
    (X, y), _ = quadrants
    for activation in ("tanh", "logistic", "identity"):
        model = mlp.MLP([2, 16, 4], seed=0, activation=activation)
        trainer = mlp.Trainer(model, optim.Adam(lr=0.02), backend="numpy", batch_size=50)
        h = trainer.fit(X, y, epochs=5, verbose=0)
        assert h["loss"][-1] < h["loss"][0], activation
        result = trainer.evaluate(X, y)
        assert result["accuracy"] > 0.9 and math.isnan(result["r2"]), activation


def test_early_stopping_on_an_accuracy_of_a_regression_is_refused():
    X, Y = _regression(n=40)
    trainer = mlp.Trainer(mlp.MLP([4, 2], output="identity"), optim.SGD(lr=0.1), backend="numpy")
    for monitor in ("val_accuracy", "accuracy"):
        es = mlp.EarlyStopping(monitor=monitor)
        with pytest.raises(ValueError, match=rf"early_stopping: monitoring '{monitor}' needs a classification "
                                             r"output; the model's output is 'identity'"):
            trainer.fit(X, Y, epochs=2, validation_split=0.25, early_stopping=es, verbose=0)
    h = trainer.fit(X, Y, epochs=3, validation_split=0.25, early_stopping=mlp.EarlyStopping(patience=1), verbose=0)
    assert h.best_epoch is not None


@pytest.mark.parametrize("patience", [0, -3])
def test_a_patience_given_as_early_stopping_is_checked_under_that_name(patience):
    # the message named "patience", an argument the caller never wrote
    X, Y = _regression(n=40)
    trainer = mlp.Trainer(mlp.MLP([4, 2], output="identity"), optim.SGD(lr=0.1), backend="numpy")
    with pytest.raises(ValueError, match=rf"early_stopping \(a patience\): expected an integer >= 1, got {patience}"):
        trainer.fit(X, Y, epochs=2, validation_split=0.25, early_stopping=patience, verbose=0)


def test_regression_targets_are_checked():
    X, Y = _regression(n=10)
    trainer = mlp.Trainer(mlp.MLP([4, 2], output="identity"), optim.SGD(lr=0.1), backend="numpy")
    with pytest.raises(ValueError, match=r"y: expected targets of shape \(10, 2\) .*got array of shape \(10, 3\)"):
        trainer.fit(X, np.zeros((10, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"y: expected finite targets"):
        trainer.fit(X, np.where(np.eye(10, 2) == 1, np.inf, 0.0), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\]: expected targets of shape \(3, 2\)"):
        trainer.fit(X, Y, validation_data=(X[:3], Y[:3, 0]), verbose=0)
    with pytest.raises(ValueError, match=r"y: expected targets of shape \(10, 2\)"):
        mlp.evaluate(trainer.model, X, Y[:, 0])


def test_verbose_line_of_a_regression_shows_no_accuracy(capsys):
    X, Y = _regression(n=40)
    mlp.Trainer(mlp.MLP([4, 2], output="identity"), optim.SGD(lr=0.1), backend="numpy").fit(
        X, Y, epochs=1, validation_split=0.25, verbose=2)
    line = capsys.readouterr().err.strip()
    assert line.startswith("epoch 1/1  loss ") and "  val_loss " in line and "accuracy" not in line


@pytest.mark.parametrize("shape", [(50,), (50, 1), (50, 3)])
def test_r2_score_is_scikit_learns(shape):
    r2_score = pytest.importorskip("sklearn.metrics").r2_score
    from mlp.evaluation import r2_score as ours

    rng = np.random.default_rng(4)
    y = rng.standard_normal(shape)
    pred = y + 0.5 * rng.standard_normal(shape)
    assert ours(y, pred) == pytest.approx(r2_score(y, pred), rel=1e-12)
    if len(shape) == 2 and shape[1] == 3:
        y[:, 1] = 2.0  # a constant column: 1 when predicted exactly, else 0, as scikit-learn counts it
        for column in (np.full(50, 2.0), pred[:, 1].copy()):
            pred[:, 1] = column
            assert ours(y, pred) == pytest.approx(r2_score(y, pred), rel=1e-12)


def test_poisson_output_trains_on_counts():
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, (400, 2))
    counts = rng.poisson(np.exp(1 + X[:, 0] - 0.5 * X[:, 1])).astype(float)
    model = mlp.MLP([2, 8, 1], seed=0, output="exp")
    trainer = mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=40)
    h = trainer.fit(X, counts, epochs=30, verbose=0)
    assert h["loss"][-1] < h["loss"][0] and all(math.isnan(a) for a in h["accuracy"])
    result = trainer.evaluate(X, counts)
    # R² of the predicted means exp(z): the Poisson noise leaves about half the variance unexplained here
    assert 0.3 < result["r2"] < 1 and math.isnan(result["accuracy"])


@pytest.mark.parametrize("output,bad,shown", [("exp", [1.0, -2.0, 3.0], "-2"), ("logistic", [0.0, 1.5, 1.0], "1.5"),
                                               ("logistic", [0.0, -0.25, 1.0], "-0.25")])
def test_targets_outside_what_the_output_models_are_refused(output, bad, shown):
    model = mlp.MLP([2, 4, 1], seed=0, output=output)
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=rf"y: the '{output}' output expects targets in .*got {shown}"):
        mlp.Trainer(model, optim.SGD(lr=0.1), backend="numpy").fit(X, np.array(bad), epochs=1, verbose=0)
    model.check_targets(np.array([0.0, 1.0, 1.0]), 3)  # the edges are allowed


def test_names_split_out_of_the_trainer_module_are_importable_from_it():
    import mlp.trainer
    from mlp import early_stopping, evaluation, history

    assert mlp.trainer.History is mlp.History is history.History
    assert mlp.trainer.EarlyStopping is mlp.EarlyStopping is early_stopping.EarlyStopping
    assert mlp.trainer.evaluate is mlp.evaluate is evaluation.evaluate
    assert mlp.trainer.TrainingDivergedError is mlp.TrainingDivergedError
