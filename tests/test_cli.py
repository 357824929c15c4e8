"""The command line: train, evaluate, info, and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlp import datasets

from conftest import real_gpu_training
from mlp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_then_evaluate_quadrants(tmp_path: Path, capsys):
    ck = tmp_path / "q.npz"
    rc = main(["train", "--dataset", "quadrants", "--layers", "32,32", "--epochs", "30", "--lr", "0.01",
               "--batch-size", "32", "--backend", "numpy", "-o", str(ck)])
    out = capsys.readouterr()
    assert rc == 0
    acc = float(out.out.split("test accuracy ")[1].split()[0])
    assert acc >= 0.99
    assert "epoch 30/30" in out.err and f"checkpoint written to {ck}" in out.out
    rc = main(["evaluate", str(ck), "--dataset", "quadrants", "--backend", "numpy"])
    out = capsys.readouterr()
    assert rc == 0 and f"test accuracy {acc:.4f}" in out.out


def test_train_reports_bad_arguments_clearly(capsys):
    assert main(["train", "--dataset", "quadrants", "--optimizer", "adam", "--nesterov"]) == 2
    assert "--nesterov: applies to the sgd optimizer only" in capsys.readouterr().err
    assert main(["train", "--dataset", "quadrants", "--lr", "-1", "--epochs", "1"]) == 2
    assert "lr: expected a value in (0.0, inf]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "imagenet"])
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--layers", "512,x"])
    assert "expected positive integers such as 512,256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0"])
    assert "--epochs: expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("options, says", [
    (["--validation-split", "1.5"], "--validation-split: expected a fraction in [0, 1), got 1.5"),
    (["--validation-split", "-0.1"], "--validation-split: expected a fraction in [0, 1), got -0.1"),
    (["--early-stopping", "0"], "--early-stopping: expected a positive integer, got 0"),
])
def test_training_options_out_of_range_are_refused_before_any_work(options, says, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "quadrants", *options])
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("options, says", [
    (["--validation-split", "0.999"], "--validation-split: 0.999 of 200 samples leaves 200 for validation and 0 "
                                      "for training; both need at least one"),
    (["--validation-split", "0.001"], "--validation-split: 0.001 of 200 samples leaves 0 for validation"),
    (["--early-stopping", "2"], "--early-stopping: watches the validation loss; give --validation-split too"),
], ids=["all-held-out", "none-held-out", "early-stopping-without-validation"])
def test_a_run_that_cannot_start_is_refused_before_its_header(tmp_path: Path, options, says, capsys):
    # these were refused by Trainer.fit, after the run's header had been printed as if training began
    data = tmp_path / "own.npz"
    np.savez(data, **_own_arrays(n_train=200))
    assert main(["train", "--data", str(data), "--layers", "4", "--epochs", "1", "--backend", "numpy",
                 *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp train: error: ") and says in err, err
    assert "training MLP" not in err


@pytest.mark.parametrize("text", ["5,,3", "512,256,", ",512", " , "])
def test_layers_with_an_empty_entry_are_refused(text, capsys):
    # "5,,3" trained a 5-3 network, the empty entry dropped without a word
    with pytest.raises(SystemExit):
        main(["train", "--layers", text])
    assert "expected positive integers such as 512,256" in capsys.readouterr().err


@pytest.mark.parametrize("text, sizes", [("512,256", [512, 256]), ("512, 256", [512, 256]), ("512 256", [512, 256]),
                                         ("8", [8])])
def test_layers_take_commas_or_spaces(text, sizes):
    from mlp.cli import _positive_int_list

    assert _positive_int_list(text) == sizes


def test_evaluate_missing_checkpoint(tmp_path: Path, capsys):
    assert main(["evaluate", str(tmp_path / "none.npz"), "--dataset", "quadrants"]) == 2
    assert "path: no checkpoint file" in capsys.readouterr().err


def test_missing_dataset_offline(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    monkeypatch.setitem(datasets.SYSTEM_DIRS, "mnist", ())
    assert main(["train", "--dataset", "mnist", "--no-download", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "mlp train: error:" in err and "MLP_DATA_DIR" in err


def test_python_dash_m_and_info():
    r = subprocess.run([sys.executable, "-m", "mlp", "info"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backends usable here: numpy" in r.stdout
    assert "  numpy: usable: always available" in r.stdout and "  cuda: " in r.stdout  # every registered backend


def test_the_library_never_imports_the_benchmark_harness():
    """``bench/`` runs from a source checkout only; importing the library (CLI and estimator included)
    must not pull it in, or an installed ``mlp`` would depend on a folder it does not ship."""
    code = ("import sys, mlp, mlp.cli, mlp.estimator, mlp.kernels; "
            "bad = sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.') or m == 'kernels'); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bench_is_no_longer_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--quick"])
    assert "invalid choice: 'bench'" in capsys.readouterr().err


@real_gpu_training
@pytest.mark.gpu
def test_train_on_the_cuda_backend_then_evaluate_on_numpy(tmp_path: Path, monkeypatch, capsys):
    """``mlp train --backend cuda`` (on the GPU, or Numba's CUDA simulator without one); the
    checkpoint it writes evaluates on the NumPy backend to the accuracy it printed."""
    pytest.importorskip("numba.cuda")
    import mlp

    try:
        mlp.get_backend("cuda")
    except RuntimeError as exc:
        pytest.skip(f"CUDA backend unavailable: {exc}")
    (X, y), (Xt, yt) = datasets.load("quadrants")
    small = ((X[:48], y[:48]), (Xt[:40], yt[:40]))  # the simulator runs every CUDA thread in Python
    monkeypatch.setattr(datasets, "load", lambda *a, **k: small)
    ck = tmp_path / "q.npz"
    rc = main(["train", "--dataset", "quadrants", "--layers", "8", "--epochs", "2", "--batch-size", "24",
               "--backend", "cuda", "-o", str(ck)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "backend='cuda'" in out.err and "backend cuda" in out.out
    acc = float(out.out.split("test accuracy ")[1].split()[0])
    assert main(["evaluate", str(ck), "--dataset", "quadrants", "--backend", "numpy"]) == 0
    assert f"test accuracy {acc:.4f}" in capsys.readouterr().out


def _own_arrays(n_train: int = 240, n_test: int = 60) -> dict[str, np.ndarray]:
    """Three classes in five features: the class is the largest of the first three."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_train + n_test, 5)).astype(np.float32)
    y = np.argmax(X[:, :3], axis=1)
    return {"X_train": X[:n_train], "y_train": y[:n_train], "X_test": X[n_train:], "y_test": y[n_train:]}


def test_train_resume_and_evaluate_on_own_npz(tmp_path: Path, capsys):
    data, ck = tmp_path / "mine.npz", tmp_path / "ck.npz"
    np.savez(data, **_own_arrays())
    rc = main(["train", "--data", str(data), "--layers", "16", "--epochs", "2", "--batch-size", "32",
               "--lr", "0.01", "--backend", "numpy", "-o", str(ck)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "training MLP(5-16-3, " in out.err and f"on {data} (240 samples)" in out.err
    assert main(["train", "--resume", str(ck), "--epochs", "3"]) == 0  # the data file comes from the checkpoint
    out = capsys.readouterr()
    assert "epoch 3/3" in out.err
    acc = float(out.out.split("test accuracy ")[1].split()[0])
    for args in (["--data", str(data)], []):  # by default, the test arrays of the run's data
        assert main(["evaluate", str(ck), "--backend", "numpy", *args]) == 0
        assert f"{data} test accuracy {acc:.4f}" in capsys.readouterr().out


def test_own_npz_without_test_arrays(tmp_path: Path, capsys):
    arrays = _own_arrays()
    data, ck = tmp_path / "train_only.npz", tmp_path / "ck.npz"
    np.savez(data, X_train=arrays["X_train"], y_train=arrays["y_train"])
    assert main(["train", "--data", str(data), "--layers", "4", "--epochs", "1", "--backend", "numpy",
                 "-o", str(ck)]) == 0
    assert f"no X_test/y_test in {data} to test on" in capsys.readouterr().out
    assert main(["evaluate", str(ck), "--data", str(data)]) == 2
    assert f"mlp evaluate: error: --data: '{data}' holds no X_test and y_test to evaluate on" in \
        capsys.readouterr().err


@pytest.mark.parametrize("arrays, says", [
    ({"X_train": np.zeros((4, 2))}, "missing y_train"),
    ({"X_train": np.zeros((4, 2)), "y_train": np.array([0, 1, -1, 0])}, "y_train"),
    ({"X_train": np.zeros(4), "y_train": np.zeros(4, int)}, "X_train"),
    (None, "expected an .npz file"),
], ids=["no-y_train", "negative-label", "1-D-X", "not-npz"])
def test_bad_npz_is_a_clear_error(tmp_path: Path, capsys, arrays, says):
    data = tmp_path / "bad.npz"
    if arrays is None:
        data.write_bytes(b"not a zip archive")
    else:
        np.savez(data, **arrays)
    assert main(["train", "--data", str(data), "--epochs", "1", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp train: error: ") and says in err and "Traceback" not in err


def test_data_and_dataset_are_exclusive(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(tmp_path / "x.npz"), "--dataset", "quadrants"])
    assert info.value.code == 2
    assert "argument --dataset: not allowed with argument --data" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "none.npz")]) == 2
    assert "mlp train: error: " in capsys.readouterr().err


# ------------------------------------------------------------------- regression
def _regression_arrays(n_targets: int | None, n_train: int = 240, n_test: int = 60) -> dict[str, np.ndarray]:
    """Smooth real targets of three features; ``n_targets`` None stores one target as a vector."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (n_train + n_test, 3))
    Y = np.stack([np.sin(2 * X[:, 0]) + X[:, 1], X[:, 2] ** 2 - 0.5 * X[:, 0]], axis=1)
    Y = Y[:, 0] if n_targets is None else Y[:, :n_targets]
    return {"X_train": X[:n_train], "y_train": Y[:n_train], "X_test": X[n_train:], "y_test": Y[n_train:]}


@pytest.mark.parametrize("n_targets", [None, 2], ids=["vector", "two-columns"])
def test_real_valued_y_train_trains_a_regression(tmp_path: Path, capsys, n_targets):
    import mlp
    from mlp.evaluation import r2_score

    arrays = _regression_arrays(n_targets)
    data, ck = tmp_path / "reg.npz", tmp_path / "ck.npz"
    np.savez(data, **arrays)
    assert main(["train", "--data", str(data), "--layers", "32", "--activation", "tanh", "--epochs", "40",
                 "--batch-size", "16", "--lr", "0.01", "--backend", "numpy", "-o", str(ck)]) == 0
    out = capsys.readouterr()
    outputs = n_targets or 1
    assert f"training MLP(3-32-{outputs}, dtype=float32, activation='tanh', output='identity'" in out.err
    assert "accuracy" not in out.err + out.out and "epoch 40/40  loss " in out.err
    loss = float(out.out.split("test loss ")[1].split()[0])
    r2 = float(out.out.split("test R² ")[1].split()[0])
    model = mlp.load(ck)
    assert (model.activation, model.output, model.n_outputs) == ("tanh", "identity", outputs)
    # the printed figures: half the mean squared error and R² of the checkpoint's predictions (float32: 1e-4)
    pred = model.predict(arrays["X_test"])
    y_test = arrays["y_test"].reshape(len(pred), -1)
    assert loss == pytest.approx(0.5 * np.mean((pred - y_test) ** 2), abs=1e-4)
    assert r2 == pytest.approx(r2_score(y_test, pred), abs=1e-4) and r2 > 0.9
    assert model.metadata["test_r2"] == pytest.approx(r2, abs=1e-4) and "test_accuracy" not in model.metadata
    assert main(["evaluate", str(ck), "--backend", "numpy"]) == 0
    assert f"{data} test loss {loss:.4f}  test R² {r2:.4f}  (60 samples" in capsys.readouterr().out


def test_regression_without_test_arrays_reports_the_training_figures(tmp_path: Path, capsys):
    arrays = _regression_arrays(None)
    data = tmp_path / "train_only.npz"
    np.savez(data, X_train=arrays["X_train"], y_train=arrays["y_train"])
    assert main(["train", "--data", str(data), "--layers", "8", "--epochs", "1", "--backend", "numpy", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("training loss ") and "  training R² " in out and f"no X_test/y_test in {data}" in out


# ------------------------------------------------------------ optimizer defaults
def test_optimizer_settings_left_out_come_from_the_optimizers_table(tmp_path: Path, monkeypatch, capsys):
    import mlp
    from mlp import optim

    monkeypatch.setitem(optim.DEFAULTS, "sgd", {**optim.DEFAULTS["sgd"], "lr": 0.0123, "momentum": 0.45})
    ck = tmp_path / "ck.npz"
    assert main(["train", "--dataset", "quadrants", "--layers", "4", "--epochs", "1", "--optimizer", "sgd",
                 "--backend", "numpy", "-q", "-o", str(ck)]) == 0
    run = mlp.load(ck).metadata["run"]
    assert (run["lr"], run["momentum"], run["nesterov"], run["weight_decay"]) == (0.0123, 0.45, False, 0.0)
    resumed = mlp.Trainer.from_checkpoint(ck)
    assert (resumed.optimizer.lr, resumed.optimizer.momentum) == (0.0123, 0.45)
    assert main(["train", "--dataset", "quadrants", "--optimizer", "adamw", "--epochs", "1", "--layers", "4",
                 "--backend", "numpy", "-q", "-o", str(ck)]) == 0
    assert mlp.load(ck).metadata["run"]["weight_decay"] == optim.DEFAULTS["adamw"]["weight_decay"] == 0.01
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "learning rate (default: 0.0123 for sgd, 0.001 for rmsprop/adam/adamw)" in \
        " ".join(capsys.readouterr().out.split())
    assert main(["train", "--dataset", "quadrants", "--optimizer", "adam", "--momentum", "0.5"]) == 2
    assert "--momentum: applies to the sgd and rmsprop optimizers only, got --optimizer adam" in \
        capsys.readouterr().err


# ------------------------------------------------------------- the task follows y_train's dtype
def test_floating_whole_number_targets_train_a_regression(tmp_path: Path, capsys):
    """scikit-learn's diabetes targets are floats holding whole numbers (25.0 to 346.0): a regression, not
    a 347-class classifier."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X, y = sklearn_datasets.load_diabetes(return_X_y=True)
    data = tmp_path / "diabetes.npz"
    np.savez(data, X_train=X[:350], y_train=y[:350], X_test=X[350:], y_test=y[350:])
    assert main(["train", "--data", str(data), "--layers", "16", "--epochs", "2", "--backend", "numpy"]) == 0
    out = capsys.readouterr()
    assert "training MLP(10-16-1, dtype=float32, activation='relu', output='identity'" in out.err
    assert "test R² " in out.out and "accuracy" not in out.out


def test_integer_and_bool_labels_train_a_classifier(tmp_path: Path, capsys):
    arrays = _own_arrays()
    data = tmp_path / "binary.npz"
    np.savez(data, X_train=arrays["X_train"], y_train=arrays["y_train"] == 0, X_test=arrays["X_test"],
             y_test=arrays["y_test"] == 0)
    assert main(["train", "--data", str(data), "--layers", "8", "--epochs", "1", "--backend", "numpy"]) == 0
    out = capsys.readouterr()
    assert "training MLP(5-8-2, dtype=float32, params=66, " in out.err  # two classes, the default softmax
    assert "test accuracy " in out.out


def test_a_label_of_a_billion_is_refused_naming_it(tmp_path: Path, capsys):
    arrays = _own_arrays()
    arrays["y_train"][7] = 10**9
    data = tmp_path / "ids.npz"
    np.savez(data, **arrays)
    assert main(["train", "--data", str(data), "--layers", "8", "--epochs", "1", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlp train: error: {data}: y_train: label 1000000000 (at index 7)")
    assert "np.unique(" in err and "Traceback" not in err


def test_a_single_class_is_refused_clearly(tmp_path: Path, capsys):
    arrays = _own_arrays()
    data = tmp_path / "one.npz"
    np.savez(data, X_train=arrays["X_train"], y_train=np.zeros(240, np.int64))
    assert main(["train", "--data", str(data), "--layers", "8", "--epochs", "1", "--backend", "numpy"]) == 2
    assert "mlp train: error: y_train: every label is 0; a classifier needs at least two classes" in \
        capsys.readouterr().err


def test_evaluate_refuses_a_test_set_of_another_kind_than_the_model(tmp_path: Path, capsys):
    classes, targets = tmp_path / "classes.npz", tmp_path / "targets.npz"
    np.savez(classes, **_own_arrays())
    regression = _regression_arrays(None)
    np.savez(targets, **regression)
    classifier_ck, regressor_ck = tmp_path / "c.npz", tmp_path / "r.npz"
    for data, ck in ((classes, classifier_ck), (targets, regressor_ck)):
        assert main(["train", "--data", str(data), "--layers", "4", "--epochs", "1", "--backend", "numpy", "-q",
                     "-o", str(ck)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(classifier_ck), "--data", str(targets)]) == 2
    err = capsys.readouterr().err
    assert f"mlp evaluate: error: --data: y_test of {targets} holds regression targets (floating dtype)" in err
    assert f"the model in {str(classifier_ck)!r} is a classifier (softmax output, 3 classes)" in err
    assert main(["evaluate", str(regressor_ck), "--data", str(classes)]) == 2
    err = capsys.readouterr().err
    assert f"mlp evaluate: error: --data: y_test of {classes} holds integer class labels" in err
    assert f"the model in {str(regressor_ck)!r} is a regression (identity output, 1 target)" in err
    assert main(["evaluate", str(regressor_ck), "--dataset", "quadrants"]) == 2
    assert "error: --dataset: y_test of quadrants holds integer class labels" in capsys.readouterr().err
    # a file rewritten with the other kind since the run: resuming says so too
    np.savez(classes, **{**_own_arrays(), "y_train": _own_arrays()["y_train"].astype(float),
                         "y_test": _own_arrays()["y_test"].astype(float)})
    assert main(["train", "--resume", str(classifier_ck), "--epochs", "2"]) == 2
    assert f"error: --resume: y_train of {classes} holds regression targets" in capsys.readouterr().err


def test_help_says_the_dtype_decides_and_bounds_the_labels(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "integer or bool y_train (n,) trains a classifier" in text
    assert "floating y_train trains a regression, whatever its values" in text
    assert "at least half of the classes 0..K-1" in text
