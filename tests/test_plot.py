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
