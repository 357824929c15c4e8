"""Training curves: History.plot, its file output, `mlp train --plot`, and the message without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp import datasets, optim
from mlp.cli import main

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


@pytest.fixture(scope="module")
def quadrants():
    return datasets.load("quadrants", n_train=400, n_test=200, seed=0)


def _curves(fig) -> dict[str, list[str]]:
    """The labels of the lines drawn in each panel, by panel title."""
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes}


def test_plot_draws_loss_and_accuracy_with_validation_and_writes_the_file(quadrants, tmp_path: Path):
    (X, y), (Xt, yt) = quadrants
    trainer = mlp.Trainer(mlp.MLP([2, 8, 4]), optim.Adam(lr=0.01), backend="numpy", batch_size=50)
    history = trainer.fit(X, y, epochs=3, validation_data=(Xt, yt), verbose=0)
    path = tmp_path / "sub" / "curves.png"
    fig = history.plot(path)
    assert _curves(fig) == {"cross-entropy loss": ["training", "validation"], "accuracy": ["training", "validation"]}
    loss_train = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(loss_train.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(loss_train.get_ydata(), history["loss"])
    image = imread(path)
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    assert image.shape == (height, width, 4)
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_plot_without_validation_draws_training_only_and_marks_the_best_epoch(quadrants, tmp_path: Path):
    (X, y), _ = quadrants
    trainer = mlp.Trainer(mlp.MLP([2, 8, 4]), optim.SGD(lr=0.1), backend="numpy", batch_size=50)
    history = trainer.fit(X, y, epochs=2, early_stopping=mlp.EarlyStopping(patience=3, monitor="loss"), verbose=0)
    fig = history.plot()
    assert _curves(fig) == {"cross-entropy loss": ["training", "best epoch"], "accuracy": ["training", "best epoch"]}
    assert not list(tmp_path.iterdir())  # nothing written without a path


def test_missing_matplotlib_is_a_one_line_error_naming_the_extra(monkeypatch):
    history = mlp.History()
    history.records.append({"epoch": 1.0, "loss": 1.0, "accuracy": 0.5, "val_loss": np.nan,
                            "val_accuracy": np.nan, "seconds": 0.1})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError) as info:
        history.plot()
    assert str(info.value) == "plotting needs matplotlib: pip install 'numba-mlp[plot]'"


def test_cli_plot_writes_the_curves(tmp_path: Path, capsys):
    png = tmp_path / "curves.png"
    rc = main(["train", "--dataset", "quadrants", "--layers", "8", "--epochs", "2", "--batch-size", "200",
               "--validation-split", "0.2", "--backend", "numpy", "--plot", str(png)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"curves drawn to {png}" in out.out
    assert imread(png).ndim == 3


def test_cli_plot_without_matplotlib_fails_before_training(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    rc = main(["train", "--dataset", "quadrants", "--layers", "8", "--epochs", "1", "--backend", "numpy",
               "--plot", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "mlp train: error: plotting needs matplotlib: pip install 'numba-mlp[plot]'" in err
    assert "epoch 1/1" not in err


# ------------------------------------------------------------------ the loss and the second panel by output
def _targets_for(output: str, X: np.ndarray) -> np.ndarray:
    """Targets each output trains on, from 2-D points: labels, 0/1 pairs, real values, counts."""
    if output == "softmax":
        return (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0)
    if output == "logistic":
        return np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(float)
    if output == "identity":
        return np.stack([np.sin(2 * X[:, 0]), X[:, 0] * X[:, 1]], axis=1)
    return np.round(np.exp(X[:, :2] + 0.5))  # non-negative counts for the Poisson deviance


PANELS = {  # output: (loss panel title, its y label, second panel title, its y label, record of the second panel)
    "softmax": ("cross-entropy loss", "cross-entropy", "accuracy", "accuracy", "accuracy"),
    "logistic": ("binary cross-entropy loss", "binary cross-entropy", "accuracy", "accuracy", "accuracy"),
    "identity": ("squared error loss", "half the mean squared error", "R²", "R² (coefficient of determination)",
                 "r2"),
    "exp": ("Poisson deviance loss", "half the Poisson deviance", "R²", "R² (coefficient of determination)", "r2"),
}


@pytest.mark.parametrize("output", list(PANELS))
def test_the_curves_name_the_output_s_loss_and_show_r2_for_regression(quadrants, output):
    (X, _), (Xt, _) = quadrants
    model = mlp.MLP([2, 8, 4 if output == "softmax" else 2], seed=0, activation="tanh", output=output)
    trainer = mlp.Trainer(model, optim.Adam(lr=0.01), backend="numpy", batch_size=50)
    history = trainer.fit(X, _targets_for(output, X), epochs=3, validation_data=(Xt, _targets_for(output, Xt)),
                          verbose=0)
    fig = history.plot()
    loss_ax, second_ax = fig.axes
    loss_title, loss_label, second_title, second_label, key = PANELS[output]
    assert (loss_ax.get_title(), loss_ax.get_ylabel()) == (loss_title, loss_label)
    assert (second_ax.get_title(), second_ax.get_ylabel()) == (second_title, second_label)
    lines = {line.get_label(): line for line in second_ax.get_lines()}
    assert set(lines) == {"training", "validation"}
    for label, record in (("training", key), ("validation", f"val_{key}")):
        np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(lines[label].get_ydata(), history[record])
        assert all(np.isfinite(history[record]))
    other = {"accuracy": "r2", "r2": "accuracy"}[key]
    assert all(np.isnan(history[other] + history[f"val_{other}"]))  # NaN where the output has no such figure


def test_r2_records_the_end_of_epoch_model_on_the_training_and_validation_rows(quadrants):
    (X, _), (Xt, _) = quadrants
    Y, Yt = _targets_for("identity", X), _targets_for("identity", Xt)
    model = mlp.MLP([2, 16, 2], seed=1, activation="tanh", output="identity")
    trainer = mlp.Trainer(model, optim.Adam(lr=0.02), backend="numpy", batch_size=40)
    history = trainer.fit(X, Y, epochs=4, validation_data=(Xt, Yt), verbose=0)
    # the last epoch's figures are the final model's, as mlp.evaluate computes them (the same float32 pass)
    assert history["r2"][-1] == mlp.evaluate(model, X, Y)["r2"]
    assert history["val_r2"][-1] == mlp.evaluate(model, Xt, Yt)["r2"]
    assert history["val_r2"][-1] > history["val_r2"][0]


def test_classification_records_keep_their_figures_and_add_nan_r2(quadrants):
    """Adding R² changes nothing else a classification run records: the same losses and accuracies."""
    (X, y), (Xt, yt) = quadrants

    def run():
        trainer = mlp.Trainer(mlp.MLP([2, 8, 4], seed=2), optim.SGD(lr=0.1), backend="numpy", batch_size=50)
        return trainer.fit(X, y, epochs=2, validation_split=0.2, verbose=0)

    history = run()
    assert set(history.records[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "r2", "val_r2",
                                       "seconds"}
    assert all(np.isnan(history["r2"] + history["val_r2"]))
    assert all(np.isfinite(history["accuracy"] + history["val_accuracy"]))
    assert history["loss"] == run()["loss"]


def test_cli_plot_of_a_regression_draws_r2(tmp_path: Path, monkeypatch, capsys):
    drawn = []
    plot = mlp.History.plot
    monkeypatch.setattr(mlp.History, "plot", lambda self, path=None: drawn.append(plot(self, path)) or drawn[-1])
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (200, 3))
    data, png = tmp_path / "reg.npz", tmp_path / "curves.png"
    np.savez(data, X_train=X, y_train=np.sin(2 * X[:, 0]) + X[:, 1])
    assert main(["train", "--data", str(data), "--layers", "8", "--epochs", "2", "--validation-split", "0.25",
                 "--backend", "numpy", "-q", "--plot", str(png)]) == 0, capsys.readouterr().err
    assert len(drawn) == 2 and imread(png).ndim == 3
    fig = drawn[-1]
    assert [(ax.get_title(), ax.get_ylabel()) for ax in fig.axes] == [
        ("squared error loss", "half the mean squared error"), ("R²", "R² (coefficient of determination)")]
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["training", "validation"]
    assert all(np.isfinite(fig.axes[1].get_lines()[1].get_ydata()))
