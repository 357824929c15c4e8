"""Exact resume: a run stopped after k epochs and resumed to N ends with the weights of an N-epoch run.

On the NumPy backend the arithmetic is deterministic, so "exactly" means bit
for bit (``np.array_equal``), through the Python API and the command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp import datasets, optim
from mlp.cli import main

OPTIMIZERS = {
    "adam": lambda: optim.Adam(lr=0.01),
    "sgd-momentum": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
}


@pytest.fixture(scope="module")
def data():
    (X, y), _ = datasets.load("quadrants", n_train=600, n_test=10, seed=1)
    return X, y


def _flat(model: mlp.MLP) -> np.ndarray:
    return np.concatenate([a.ravel() for pair in model.get_weights() for a in pair])


def _records(history: mlp.History) -> list[dict]:
    """The records without their timings, NaN (no validation) as None so that they compare equal."""
    return [{k: None if math.isnan(v) else v for k, v in r.items() if k != "seconds"} for r in history]


def _trainer(make_optimizer, seed: int = 5) -> mlp.Trainer:
    return mlp.Trainer(mlp.MLP([2, 16, 8, 4], seed=3), make_optimizer(), backend="numpy", batch_size=64, seed=seed)


def _regression_data():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (300, 3))
    return X, np.stack([np.sin(3 * X[:, 0]), X[:, 1] * X[:, 2]], axis=1)


def _stopper():
    return mlp.EarlyStopping(patience=2, monitor="val_loss", restore_best=True, min_delta=0.05)


#: run -> (the trainer, the data, fit's arguments, epochs in all, epochs before the checkpoint (None: the
#: uninterrupted run's best epoch), a rewrite of the checkpoint's header (an older format) or None)
RESUMES = {
    "adam": (lambda: _trainer(OPTIMIZERS["adam"]), None, {}, 5, 2, None),
    "adam-validation-split": (lambda: _trainer(OPTIMIZERS["adam"]), None, {"validation_split": 0.25}, 5, 2, None),
    "sgd-momentum": (lambda: _trainer(OPTIMIZERS["sgd-momentum"]), None, {}, 5, 2, None),
    "sgd-momentum-validation-split": (lambda: _trainer(OPTIMIZERS["sgd-momentum"]), None,
                                      {"validation_split": 0.25}, 5, 2, None),
    # early stopping goes on counting, and restores the best epoch's weights at the end
    "early-stopping-restores-the-best": (lambda: _trainer(OPTIMIZERS["sgd-momentum"]), None,
                                         {"validation_split": 0.2, "early_stopping": _stopper}, 30, None, None),
    "regression": (lambda: mlp.Trainer(mlp.MLP([3, 16, 2], seed=3, activation="tanh", output="identity"),
                                       optim.SGD(lr=0.05, momentum=0.9), backend="numpy", batch_size=32, seed=1),
                   _regression_data, {"validation_split": 0.2}, 4, 2, None),
    # a checkpoint written before activations and outputs were recorded: a ReLU network with a softmax
    "checkpoint-without-activation": (lambda: _trainer(OPTIMIZERS["adam"]), None, {}, 3, 1,
                                      lambda header: _as_before_activations(header)),
}


@pytest.mark.parametrize("run", list(RESUMES))
def test_a_resumed_run_ends_exactly_as_the_uninterrupted_one(data, tmp_path: Path, run: str):
    """Stopped after some epochs and resumed from its checkpoint, a run ends with the weights, the optimizer's
    state and the history of the same run uninterrupted, bit for bit."""
    make, make_data, kwargs, epochs, first, rewrite = RESUMES[run]
    X, y = data if make_data is None else make_data()

    def fit(trainer, n, **extra):
        args = {k: v() if callable(v) else v for k, v in kwargs.items()}
        return trainer.fit(X, y, epochs=n, verbose=0, **args, **extra)

    whole = make()
    fit(whole, epochs)
    if first is None:  # stop where the uninterrupted run had its best epoch
        assert whole.history.stopped_early and whole.history.best_epoch < len(whole.history) - 1
        first = whole.history.best_epoch + 1
    ck = tmp_path / "run.npz"
    fit(make(), first, checkpoint=ck)
    if rewrite is not None:
        _rewrite_header(ck, rewrite)
    resumed = mlp.Trainer.from_checkpoint(ck, backend="numpy")
    assert type(resumed.optimizer) is type(whole.optimizer)
    assert resumed.optimizer.get_config() == whole.optimizer.get_config()
    assert (resumed.model.activation, resumed.model.output) == (whole.model.activation, whole.model.output)
    history = resumed.fit(X, y, epochs=epochs, verbose=0)
    assert np.array_equal(_flat(resumed.model), _flat(whole.model))
    assert resumed.optimizer.steps == whole.optimizer.steps
    assert _records(history) == _records(whole.history)
    assert history.stopped_early == whole.history.stopped_early and history.best_epoch == whole.history.best_epoch


def test_a_run_whose_second_moments_overflowed_resumes_exactly(tmp_path: Path):
    """A float32 gradient whose square is beyond the float32 range makes Adam's ``exp_avg_sq`` +inf there (those
    weights then stop moving, as in torch.optim) while the run goes on with finite weights and a falling loss:
    its checkpoint resumes, and ends as the uninterrupted run does.  NaN or negative second moments are refused."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(120, 7)) * 10, rng.poisson(1.0, (120, 3)).astype(float)

    def trainer():
        return mlp.Trainer(mlp.MLP([7, 9, 6, 3], seed=39, activation="identity", output="exp"), optim.AdamW(lr=0.01),
                           backend="numpy", batch_size=42, seed=90)

    whole = trainer()
    whole.fit(X, y, epochs=6, verbose=0)
    first = trainer()
    first.fit(X, y, epochs=3, verbose=0, checkpoint=tmp_path / "ck.npz")
    assert np.isinf(first.optimizer.state_numpy()["exp_avg_sq"]).any()  # the case this test is about
    resumed = mlp.Trainer.from_checkpoint(tmp_path / "ck.npz", backend="numpy")
    resumed.fit(X, y, epochs=6, verbose=0)
    np.testing.assert_array_equal(_flat(resumed.model), _flat(whole.model))
    with np.load(tmp_path / "ck.npz") as archive:
        arrays = dict(archive)
    key = next(k for k in arrays if k.endswith("exp_avg_sq"))
    for bad in (np.nan, -1.0):
        broken = dict(arrays)
        broken[key] = arrays[key].copy()
        broken[key][0] = bad
        np.savez(tmp_path / "bad.npz", **broken)
        with pytest.raises(ValueError, match=f"{key}: expected values >= 0.*1 NaN or negative"):
            mlp.Trainer.from_checkpoint(tmp_path / "bad.npz", backend="numpy")


def test_checkpoint_is_plain_arrays_and_json(data, tmp_path: Path):
    X, y = data
    ck = tmp_path / "run.npz"
    _trainer(OPTIMIZERS["adam"]).fit(X, y, epochs=1, validation_split=0.25, verbose=0, checkpoint=ck)
    with np.load(ck, allow_pickle=False) as archive:
        header = json.loads(bytes(archive["header"]).decode())
        files = set(archive.files)
    assert header["format"] == 2 and header["training"]["epoch"] == 1
    assert header["activation"] == "relu" and header["output"] == "softmax"
    assert header["training"]["optimizer"]["name"] == "adam" and header["training"]["optimizer"]["steps"] == 8
    assert files == {"header", "params", "validation_order", "optimizer.exp_avg", "optimizer.exp_avg_sq"}


def test_resume_refuses_settings_that_differ_from_the_checkpoint(data, tmp_path: Path):
    X, y = data
    ck = tmp_path / "run.npz"
    _trainer(OPTIMIZERS["adam"]).fit(X, y, epochs=2, validation_split=0.25, verbose=0, checkpoint=ck)
    resumed = mlp.Trainer.from_checkpoint(ck, backend="numpy")
    with pytest.raises(ValueError, match=r"epochs: the checkpoint has 2 epochs done; expected more than 2, got 2"):
        resumed.fit(X, y, epochs=2, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split: the checkpoint's run used 0.25, got 0.1"):
        resumed.fit(X, y, epochs=3, validation_split=0.1, verbose=0)
    with pytest.raises(ValueError, match=r"X: the checkpoint's run trained on 600 samples, got 599"):
        resumed.fit(X[1:], y[1:], epochs=3, verbose=0)
    with pytest.raises(ValueError, match=r"early_stopping: the checkpoint's run used None"):
        resumed.fit(X, y, epochs=3, early_stopping=3, verbose=0)
    resumed.fit(X, y, epochs=3, validation_split=0.25, verbose=0)  # the same settings are fine


@pytest.mark.parametrize("change", ["rows-reordered", "one-label", "validation-data"])
def test_resume_refuses_other_data_of_the_same_shape(data, tmp_path: Path, change):
    # only the sample count was compared: a run resumed on other data went on without a word, no longer the run
    # the checkpoint recorded (nor its exact continuation)
    X, y = data
    Xv, yv = X[:100], y[:100]
    ck = tmp_path / "run.npz"
    _trainer(OPTIMIZERS["adam"]).fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, checkpoint=ck)
    resumed = mlp.Trainer.from_checkpoint(ck, backend="numpy")
    given_X, given_y, given_val = X, y, (Xv, yv)
    if change == "rows-reordered":
        given_X, given_y = X[::-1], y[::-1]
    elif change == "one-label":
        given_y = y.copy()
        given_y[0] = (given_y[0] + 1) % 4
    else:
        given_val = (Xv, (yv + 1) % 4)
    with pytest.raises(ValueError, match=r"the checkpoint's run trained on other data"):
        resumed.fit(given_X, given_y, epochs=3, validation_data=given_val, verbose=0)
    # the same data in another dtype is the same data (the model's dtype is what is compared)
    resumed.fit(X.astype(np.float64), y, epochs=3, validation_data=(Xv, yv), verbose=0)


def test_a_checkpoint_without_a_data_digest_still_resumes(data, tmp_path: Path):
    X, y = data
    ck = tmp_path / "run.npz"
    _trainer(OPTIMIZERS["adam"]).fit(X, y, epochs=2, verbose=0, checkpoint=ck)
    _rewrite_header(ck, lambda header: header["training"]["validation"].pop("data_digest"))
    # an older checkpoint has nothing to compare: it resumes (on whatever data of its size), as before
    history = mlp.Trainer.from_checkpoint(ck, backend="numpy").fit(X[::-1], y[::-1], epochs=3, verbose=0)
    assert len(history["loss"]) == 3


def _write_format_1(model: mlp.MLP, path: Path) -> None:
    """A checkpoint as mlp 0.2 wrote it: the weights and architecture, nothing else."""
    header = {"format": 1, "library": "mlp", "version": "0.2.0", "layer_sizes": list(model.layer_sizes),
              "dtype": model.dtype.name, "seed": model.seed, "metadata": {"epoch": 3}}
    params = np.asarray(model.params)
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), params=params)


def test_old_checkpoint_loads_for_prediction_but_cannot_resume(data, tmp_path: Path, capsys):
    X, y = data
    trainer = _trainer(OPTIMIZERS["adam"])
    trainer.fit(X, y, epochs=1, verbose=0)
    old = tmp_path / "old.npz"
    _write_format_1(trainer.model, old)
    loaded = mlp.load(old)
    assert loaded.metadata == {"epoch": 3}
    np.testing.assert_array_equal(loaded.predict_proba(X), trainer.model.predict_proba(X))
    missing = r"holds weights only \(checkpoint format 1\), without the optimizer state, the epoch reached and " \
              r"the random state"
    with pytest.raises(ValueError, match=missing):
        mlp.Trainer.from_checkpoint(old)
    assert main(["train", "--resume", str(old), "--backend", "numpy"]) == 2
    assert "mlp train: error: cannot resume from" in capsys.readouterr().err
    # a model saved on its own (format 2, no training state) is refused the same way
    with pytest.raises(ValueError, match=r"holds weights only \(checkpoint format 2\)"):
        mlp.Trainer.from_checkpoint(trainer.model.save(tmp_path / "model.npz"))


# ----------------------------------------------------------------- command line
CLI_RUN = ["--dataset", "quadrants", "--layers", "16,8", "--batch-size", "200", "--backend", "numpy", "-q"]


@pytest.mark.parametrize("opt", [["--optimizer", "adam", "--lr", "0.01"],
                                 ["--optimizer", "sgd", "--momentum", "0.8", "--lr", "0.05"]], ids=["adam", "sgd"])
@pytest.mark.parametrize("split", [[], ["--validation-split", "0.2"]], ids=["no-validation", "validation-split"])
def test_cli_resumed_run_equals_uninterrupted_run(tmp_path: Path, capsys, opt: list, split: list):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert main(["train", *CLI_RUN, *opt, *split, "--epochs", "4", "-o", str(whole)]) == 0
    assert main(["train", *CLI_RUN, *opt, *split, "--epochs", "1", "-o", str(part)]) == 0
    assert main(["train", "--resume", str(part), "--epochs", "4", "-q"]) == 0
    results = [line.split("(")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("test accuracy")]
    assert results[0] == results[-1]  # the same test accuracy and loss
    assert np.array_equal(_flat(mlp.load(part)), _flat(mlp.load(whole)))
    assert mlp.load(part).metadata["run"]["epochs"] == 4


def test_cli_resume_errors_name_the_flag(tmp_path: Path, capsys):
    ck = tmp_path / "ck.npz"
    assert main(["train", *CLI_RUN, "--epochs", "2", "-o", str(ck)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(ck), "--optimizer", "sgd"]) == 2
    assert "mlp train: error: --optimizer: the run in" in capsys.readouterr().err
    assert main(["train", "--resume", str(ck), "--layers", "16,16", "--epochs", "5"]) == 2
    assert "error: --layers: the run in" in capsys.readouterr().err
    assert main(["train", "--resume", str(ck), "--epochs", "2"]) == 2
    assert f"error: --epochs: {str(ck)!r} has 2 epochs done; --epochs 2 asks for no more" in capsys.readouterr().err
    assert main(["train", "--resume", str(ck)]) == 2
    assert "has 2 epochs done; its run was set to 2, and no more" in capsys.readouterr().err
    # the options the run used may be repeated
    assert main(["train", "--resume", str(ck), "--epochs", "3", "--dataset", "quadrants", "--layers", "16,8"]) == 0
    # a training checkpoint written from Python records no dataset to resume on
    (X, y), _ = datasets.load("quadrants", n_train=100, n_test=1)
    api = tmp_path / "api.npz"
    _trainer(OPTIMIZERS["adam"]).fit(X, y, epochs=1, verbose=0, checkpoint=api)
    assert main(["train", "--resume", str(api)]) == 2
    assert "was not written by 'mlp train'" in capsys.readouterr().err


# ------------------------------------------------ activations, outputs, older checkpoints
def _rewrite_header(path: Path, change) -> None:
    """Apply ``change`` to the JSON header of the checkpoint at ``path``, the arrays left as they are."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(bytes(arrays.pop("header")).decode())
    change(header)
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)


def _as_before_activations(header: dict) -> None:
    """What a checkpoint held before activations and outputs were recorded: neither, here or in its run."""
    del header["activation"], header["output"]
    header["metadata"].get("run", {}).pop("activation", None)


def test_history_recorded_before_r2_resumes_with_nan_r2_for_its_epochs(tmp_path: Path):
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (200, 3))
    Y = np.sin(2 * X[:, :1])
    ck = tmp_path / "run.npz"
    trainer = mlp.Trainer(mlp.MLP([3, 8, 1], output="identity"), optim.Adam(lr=0.01), backend="numpy")
    trainer.fit(X, Y, epochs=2, validation_split=0.25, verbose=0, checkpoint=ck)

    def without_r2(header: dict) -> None:
        for record in header["training"]["history"]["records"]:
            del record["r2"], record["val_r2"]

    _rewrite_header(ck, without_r2)
    resumed = mlp.Trainer.from_checkpoint(ck, backend="numpy")
    history = resumed.fit(X, Y, epochs=3, verbose=0)
    assert all(math.isnan(v) for v in history["r2"][:2] + history["val_r2"][:2])
    assert math.isfinite(history["r2"][2]) and math.isfinite(history["val_r2"][2])


def test_cli_checkpoint_without_activation_resumes_exactly_and_keeps_relu(tmp_path: Path, capsys):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert main(["train", *CLI_RUN, "--epochs", "3", "-o", str(whole)]) == 0
    assert main(["train", *CLI_RUN, "--epochs", "1", "-o", str(part)]) == 0
    _rewrite_header(part, _as_before_activations)
    capsys.readouterr()
    assert main(["train", "--resume", str(part), "--epochs", "3", "--activation", "tanh"]) == 2
    err = capsys.readouterr().err
    assert "error: --activation: the run in" in err and "used 'relu', got 'tanh'" in err
    assert main(["train", "--resume", str(part), "--epochs", "3", "-q"]) == 0
    assert np.array_equal(_flat(mlp.load(part)), _flat(mlp.load(whole)))
    assert mlp.load(part).metadata["run"]["activation"] == "relu"


def test_cli_activation_is_recorded_and_kept_on_resume(tmp_path: Path, capsys):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    run = [*CLI_RUN, "--activation", "tanh"]
    assert main(["train", *run, "--epochs", "3", "-o", str(whole)]) == 0
    assert main(["train", *run, "--epochs", "1", "-o", str(part)]) == 0
    assert mlp.load(part).activation == "tanh" and mlp.load(part).metadata["run"]["activation"] == "tanh"
    capsys.readouterr()
    assert main(["train", "--resume", str(part), "--epochs", "3", "--activation", "relu"]) == 2
    assert "error: --activation: the run in" in capsys.readouterr().err
    assert main(["train", "--resume", str(part), "--epochs", "3", "--activation", "tanh", "-q"]) == 0
    assert np.array_equal(_flat(mlp.load(part)), _flat(mlp.load(whole)))
    assert mlp.load(whole).activation == "tanh"
