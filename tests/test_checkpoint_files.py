"""What a checkpoint file may and may not do: it names no file to write, its header is checked against its
arrays before anything is allocated, a malformed header is a ValueError naming the field, and files are
written with the user's permissions."""

from __future__ import annotations

import io
import json
import os
import stat
import tracemalloc
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import mlp
from mlp.checkpoint import atomic_write_bytes
from mlp.cli import main

BASE_RUN = ["--dataset", "quadrants", "--layers", "4", "--optimizer", "adam", "--batch-size", "400",
            "--validation-split", "0.25", "--early-stopping", "3", "--backend", "numpy", "-q"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a checkpoint written by ``mlp train`` after one epoch: a run record, Adam's
    moments, a validation split and early stopping's best weights."""
    path = tmp_path_factory.mktemp("base") / "base.npz"
    assert main(["train", *BASE_RUN, "--epochs", "1", "-o", str(path)]) == 0
    return _read(path)


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(bytes(arrays.pop("header")).decode()), arrays


def _write(path: Path, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return path


def _copy(base) -> tuple[dict, dict[str, np.ndarray]]:
    header, arrays = base
    return json.loads(json.dumps(header)), dict(arrays)


def test_the_base_checkpoint_is_what_the_table_below_breaks(base):
    header, arrays = base
    assert set(arrays) == {"params", "validation_order", "best_params", "optimizer.exp_avg", "optimizer.exp_avg_sq"}
    assert header["training"]["epoch"] == 1 and header["training"]["early_stopping"]["restore_best"] is True
    assert header["metadata"]["run"]["dataset"] == "quadrants"


# ------------------------------------------------------------- no file named by a checkpoint is written
def test_resume_never_writes_a_plot_path_recorded_in_the_checkpoint(base, tmp_path: Path, capsys):
    """A checkpoint from someone else names a file of the user's as its run's plot: resuming without --plot
    leaves it alone; only --plot given on the command line draws, there."""
    victim = tmp_path / "thesis-figure.png"
    victim.write_bytes(b"the user's own figure")
    header, arrays = _copy(base)
    header["metadata"]["run"]["plot"] = str(victim)
    ck = _write(tmp_path / "theirs.npz", header, arrays)
    assert main(["train", "--resume", str(ck), "--epochs", "2", "-q"]) == 0, capsys.readouterr().err
    assert victim.read_bytes() == b"the user's own figure"
    assert "curves drawn" not in capsys.readouterr().out
    assert "plot" not in mlp.load(ck).metadata["run"]  # nor is the path carried on
    pytest.importorskip("matplotlib")
    mine = tmp_path / "mine.png"
    assert main(["train", "--resume", str(ck), "--epochs", "3", "-q", "--plot", str(mine)]) == 0
    assert mine.stat().st_size > 0 and victim.read_bytes() == b"the user's own figure"
    assert f"curves drawn to {mine}" in capsys.readouterr().out


def test_a_plotted_run_does_not_record_its_plot_path(tmp_path: Path):
    pytest.importorskip("matplotlib")
    ck, png = tmp_path / "ck.npz", tmp_path / "c.png"
    assert main(["train", *BASE_RUN, "--epochs", "1", "-o", str(ck), "--plot", str(png)]) == 0
    assert png.exists() and "plot" not in mlp.load(ck).metadata["run"]


# -------------------------------------------------- sizes are checked against the arrays, before allocating
def _peak_bytes(fn: Callable[[], object]) -> int:
    """The peak of memory traced (NumPy's buffers included) while ``fn`` runs, which must raise ValueError."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    fn.message = str(info.value)
    return peak


ENTRY_POINTS = {
    "mlp.load": lambda ck: mlp.load(ck),
    "Trainer.from_checkpoint": lambda ck: mlp.Trainer.from_checkpoint(ck, backend="numpy"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_layer_sizes_larger_than_the_stored_parameters_allocate_nothing(base, tmp_path: Path, entry):
    """A header claiming 2-3000-3000-4 (9 million parameters, 36 MB as float32 and twice that for the
    initialisation) over the 32 parameters stored is refused before any network is allocated."""
    header, arrays = _copy(base)
    header["layer_sizes"] = [2, 3000, 3000, 4]
    ck = _write(tmp_path / "big.npz", header, arrays)

    def call():
        ENTRY_POINTS[entry](ck)

    peak = _peak_bytes(call)
    assert peak < 4_000_000, f"{peak} bytes allocated before the error"
    assert "params" in call.message and "32" in call.message and "[2, 3000, 3000, 4]" in call.message


def test_an_optimizer_buffer_of_another_size_is_refused_when_the_checkpoint_is_read(base, tmp_path: Path):
    header, arrays = _copy(base)
    arrays["optimizer.exp_avg"] = np.zeros(5, np.float32)
    ck = _write(tmp_path / "opt.npz", header, arrays)
    with pytest.raises(ValueError, match=r"optimizer\.exp_avg: expected shape \(32,\)"):
        mlp.Trainer.from_checkpoint(ck, backend="numpy")


def _npz_with_member(path: Path, name: str, shape: tuple, payload: bytes, others: dict[str, np.ndarray]) -> Path:
    """An .npz whose member ``name`` has a .npy header claiming ``shape`` (float32) over ``payload`` bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in others.items():
            member = io.BytesIO()
            np.save(member, value)
            archive.writestr(f"{key}.npy", member.getvalue())
        archive.writestr(f"{name}.npy", buf.getvalue() + payload)
    return path


def test_an_array_claiming_more_data_than_its_file_holds_allocates_nothing(base, tmp_path: Path):
    """The .npy header of ``params`` claims 400 million floats (1.6 GB) in a member of 16 bytes."""
    header, _ = _copy(base)
    ck = _npz_with_member(tmp_path / "short.npz", "params", (400_000_000,), bytes(16),
                          {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)})

    def call():
        mlp.load(ck)

    peak = _peak_bytes(call)
    assert peak < 4_000_000, f"{peak} bytes allocated before the error"
    assert "params" in call.message and "(400000000,)" in call.message and "16 bytes" in call.message


# ------------------------------------------------------------------- malformed headers: one table
def _set(where: str, value) -> Callable[[dict, dict], None]:
    """Set the header field at the dotted path ``where`` (``-`` deletes it)."""
    *parents, last = where.split(".")

    def change(header: dict, arrays: dict) -> None:
        node = header
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value == "-":
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _array(name: str, value) -> Callable[[dict, dict], None]:
    def change(header: dict, arrays: dict) -> None:
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value

    return change


def _both(*changes):
    def change(header: dict, arrays: dict) -> None:
        for c in changes:
            c(header, arrays)

    return change


F32 = np.float32
# name: (change, text the error must hold (the field), what the fault breaks)
#   "model": every reader refuses; "training": resuming refuses, loading and evaluating do not;
#   "run": mlp train --resume refuses; "source": --resume and mlp evaluate (which reads the run's data) refuse
MALFORMED = {
    # the model
    "no-layer_sizes": (_set("layer_sizes", "-"), "layer_sizes", "model"),
    "layer_sizes-string": (_set("layer_sizes", "2,4,4"), "layer_sizes", "model"),
    "layer_sizes-float": (_set("layer_sizes.1", 4.0), "layer_sizes[1]", "model"),
    "layer_sizes-bool": (_set("layer_sizes.1", True), "layer_sizes[1]", "model"),
    "layer_sizes-negative": (_set("layer_sizes.1", -4), "layer_sizes[1]", "model"),
    "layer_sizes-one": (_set("layer_sizes", [2]), "layer_sizes", "model"),
    "layer_sizes-other": (_set("layer_sizes", [2, 5, 4]), "params", "model"),
    "no-dtype": (_set("dtype", "-"), "dtype", "model"),
    "dtype-null": (_set("dtype", None), "dtype", "model"),
    "dtype-int": (_set("dtype", "int32"), "dtype", "model"),
    "dtype-number": (_set("dtype", 5), "dtype", "model"),
    "seed-negative": (_set("seed", -1), "seed", "model"),
    "seed-string": (_set("seed", "0"), "seed", "model"),
    "activation": (_set("activation", "swish"), "activation", "model"),
    "activation-list": (_set("activation", ["relu"]), "activation", "model"),
    "output": (_set("output", "sigmoid"), "output", "model"),
    "metadata-list": (_set("metadata", [1, 2]), "metadata", "model"),
    "params-2d": (_array("params", np.zeros((2, 16), F32)), "params", "model"),
    "params-int": (_array("params", np.zeros(32, np.int64)), "params", "model"),
    "params-nan": (_array("params", np.full(32, np.nan, F32)), "params", "model"),
    # the training state
    "training-list": (_set("training", [1]), "training", "training"),
    "no-history": (_set("training.history", "-"), "history", "training"),
    "epoch-negative": (_set("training.epoch", -1), "training.epoch", "training"),
    "epoch-string": (_set("training.epoch", "1"), "training.epoch", "training"),
    "epoch-not-records": (_set("training.epoch", 3), "training.epoch", "training"),
    "batch_size-zero": (_set("training.batch_size", 0), "training.batch_size", "training"),
    "seed-float": (_set("training.seed", 1.5), "training.seed", "training"),
    "shuffle-string": (_set("training.shuffle", "yes"), "training.shuffle", "training"),
    "optimizer-string": (_set("training.optimizer", "adam"), "training.optimizer", "training"),
    "optimizer-name": (_set("training.optimizer.name", "lbfgs"), "training.optimizer.name", "training"),
    "optimizer-config-key": (_set("training.optimizer.config.bogus", 1), "training.optimizer.config", "training"),
    "optimizer-config-lr": (_set("training.optimizer.config.lr", -1), "training.optimizer.config", "training"),
    "optimizer-config-list": (_set("training.optimizer.config", [0.1]), "training.optimizer.config", "training"),
    "optimizer-steps": (_set("training.optimizer.steps", -2), "training.optimizer.steps", "training"),
    "random_state-string": (_set("training.random_state", "seed"), "training.random_state", "training"),
    "random_state-other-generator": (_set("training.random_state.bit_generator", "MT19937"),
                                     "training.random_state", "training"),
    "random_state-empty-state": (_set("training.random_state.state", {}), "training.random_state", "training"),
    "random_state-string-state": (_set("training.random_state.state.state", "x"), "training.random_state",
                                  "training"),
    "validation-list": (_set("training.validation", []), "training.validation", "training"),
    "validation-source": (_set("training.validation.source", "test"), "training.validation.source", "training"),
    "validation-fraction": (_set("training.validation.fraction", 2), "training.validation.fraction", "training"),
    "validation-n_samples": (_set("training.validation.n_samples", -1), "training.validation.n_samples",
                             "training"),
    "validation-n_samples-order": (_set("training.validation.n_samples", 10**12), "validation_order", "training"),
    "no-validation_order": (_array("validation_order", None), "validation_order", "training"),
    "validation_order-short": (_array("validation_order", np.arange(7)), "validation_order", "training"),
    "validation_order-float": (_array("validation_order", np.arange(4000.0)), "validation_order", "training"),
    "validation_order-repeats": (_array("validation_order", np.zeros(4000, np.int64)), "validation_order",
                                 "training"),
    "history-list": (_set("training.history", [1]), "training.history", "training"),
    "history-records-dict": (_set("training.history.records", {}), "training.history.records", "training"),
    "history-record-string": (_set("training.history.records.0", "loss"), "training.history.records[0]",
                              "training"),
    "history-record-value": (_set("training.history.records.0.loss", "low"), "training.history.records[0].loss",
                             "training"),
    "history-record-key": (_set("training.history.records.0.loss", "-"), "training.history.records[0]",
                           "training"),
    "history-record-epoch": (_set("training.history.records.0.epoch", 7), "training.history.records[0].epoch",
                             "training"),
    "history-best_epoch": (_set("training.history.best_epoch", 99), "training.history.best_epoch", "training"),
    "history-stopped_early": (_set("training.history.stopped_early", "no"), "training.history.stopped_early",
                              "training"),
    "early_stopping-list": (_set("training.early_stopping", [3]), "training.early_stopping", "training"),
    "early_stopping-patience": (_set("training.early_stopping.patience", 0), "training.early_stopping",
                                "training"),
    "early_stopping-monitor": (_set("training.early_stopping.monitor", "val_f1"), "training.early_stopping",
                               "training"),
    "early_stopping-restore_best": (_set("training.early_stopping.restore_best", "yes"),
                                    "training.early_stopping.restore_best", "training"),
    "early_stopping-wait": (_set("training.early_stopping.wait", -1), "training.early_stopping.wait", "training"),
    "early_stopping-best": (_set("training.early_stopping.best", "low"), "training.early_stopping.best",
                            "training"),
    "no-best_params": (_array("best_params", None), "best_params", "training"),
    "best_params-short": (_array("best_params", np.zeros(31, F32)), "best_params", "training"),
    "best_params-int": (_array("best_params", np.zeros(32, np.int32)), "best_params", "training"),
    "train_params-short": (_array("train_params", np.zeros(3, F32)), "train_params", "training"),
    "optimizer-buffer-short": (_array("optimizer.exp_avg", np.zeros(33, F32)), "optimizer.exp_avg", "training"),
    "optimizer-buffer-unknown": (_array("optimizer.velocity", np.zeros(32, F32)), "optimizer.velocity",
                                 "training"),
    "optimizer-buffer-missing": (_array("optimizer.exp_avg_sq", None), "optimizer.exp_avg_sq", "training"),
    "optimizer-buffer-nan": (_array("optimizer.exp_avg", np.full(32, np.nan, F32)), "optimizer.exp_avg",
                             "training"),
    # the run record of mlp train
    "run-string": (_set("metadata.run", "quadrants"), "metadata.run", "source"),
    "run-dataset": (_set("metadata.run.dataset", "../../etc"), "metadata.run.dataset", "source"),
    "run-data-number": (_set("metadata.run.data", 5), "metadata.run.data", "source"),
    "run-no-source": (_set("metadata.run.dataset", None), "metadata.run", "source"),
    "run-epochs-string": (_set("metadata.run.epochs", "many"), "metadata.run.epochs", "run"),
    "run-epochs-zero": (_set("metadata.run.epochs", 0), "metadata.run.epochs", "run"),
    "run-hidden-string": (_set("metadata.run.hidden", "4"), "metadata.run.hidden", "run"),
    "run-hidden-other": (_set("metadata.run.hidden", [8]), "metadata.run.hidden", "run"),
    "run-activation": (_set("metadata.run.activation", "tanh"), "metadata.run.activation", "run"),
    "run-optimizer": (_set("metadata.run.optimizer", "sgd"), "metadata.run.optimizer", "run"),
    "run-lr": (_set("metadata.run.lr", "fast"), "metadata.run.lr", "run"),
    "run-nesterov": (_set("metadata.run.nesterov", 1), "metadata.run.nesterov", "run"),
    "run-batch_size": (_set("metadata.run.batch_size", 64), "metadata.run.batch_size", "run"),
    "run-validation_split": (_set("metadata.run.validation_split", "0.25"), "metadata.run.validation_split",
                             "run"),
    "run-validation_split-other": (_set("metadata.run.validation_split", 0.5), "metadata.run.validation_split",
                                   "run"),
    "run-early_stopping": (_set("metadata.run.early_stopping", "3"), "metadata.run.early_stopping", "run"),
    "run-early_stopping-other": (_set("metadata.run.early_stopping", None), "metadata.run.early_stopping", "run"),
    "run-dtype": (_set("metadata.run.dtype", "float16"), "metadata.run.dtype", "run"),
    "run-seed": (_set("metadata.run.seed", -3), "metadata.run.seed", "run"),
    "run-missing-option": (_set("metadata.run.seed", "-"), "metadata.run", "run"),
}
REFUSED_BY = {"model": {"mlp.load", "Trainer.from_checkpoint", "mlp train --resume", "mlp evaluate"},
              "training": {"Trainer.from_checkpoint", "mlp train --resume"},
              "run": {"mlp train --resume"},
              "source": {"mlp train --resume", "mlp evaluate"}}


def _cli(command: str, ck: Path) -> list[str]:
    if command == "mlp train --resume":
        return ["train", "--resume", str(ck), "--epochs", "2", "--backend", "numpy", "-q"]
    return ["evaluate", str(ck), "--backend", "numpy"]


@pytest.mark.parametrize("entry", ["mlp.load", "Trainer.from_checkpoint", "mlp train --resume", "mlp evaluate"])
def test_the_unbroken_base_checkpoint_is_read_by_every_entry_point(base, tmp_path: Path, entry, capsys):
    ck = _write(tmp_path / "ok.npz", *_copy(base))
    if entry in ENTRY_POINTS:
        ENTRY_POINTS[entry](ck)
    else:
        assert main(_cli(entry, ck)) == 0, capsys.readouterr().err


@pytest.mark.parametrize("entry", ["mlp.load", "Trainer.from_checkpoint", "mlp train --resume", "mlp evaluate"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_header_is_a_value_error_naming_the_field(base, tmp_path: Path, capsys, case, entry):
    change, field, breaks = MALFORMED[case]
    header, arrays = _copy(base)
    change(header, arrays)
    ck = _write(tmp_path / "bad.npz", header, arrays)
    refused = entry in REFUSED_BY[breaks]
    if entry in ENTRY_POINTS:
        if not refused:
            ENTRY_POINTS[entry](ck)
            return
        with pytest.raises(ValueError) as info:  # a KeyError, TypeError or AttributeError fails the test
            ENTRY_POINTS[entry](ck)
        assert type(info.value) is ValueError
        message = str(info.value)
    else:
        rc = main(_cli(entry, ck))  # main lets anything but the errors it reports escape
        message = capsys.readouterr().err
        if not refused:
            assert rc == 0, message
            return
        assert rc == 2 and message.startswith(f"mlp {entry.split()[1]}: error: ")
    assert field in message and str(ck) in message, message
    assert "Traceback" not in message


# -------------------------------------------------------------------------------- permissions
@pytest.fixture
def umask():
    """Set the process's umask for one test, restoring it after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_a_new_file_gets_the_permissions_of_the_umask(tmp_path: Path, umask, mask, mode):
    umask(mask)
    model_file, raw = tmp_path / "m.npz", tmp_path / "raw.bin"
    mlp.MLP([3, 2]).save(model_file)
    atomic_write_bytes(raw, b"x")
    assert (_mode(model_file), _mode(raw)) == (mode, mode)  # as open(path, "w") would create them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "raw.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("kept", [0o600, 0o640, 0o664], ids=["600", "640", "664"])
def test_replacing_a_file_keeps_its_permissions(tmp_path: Path, umask, kept):
    """Like open(path, "w") on an existing file: the file keeps its mode, whatever the umask."""
    umask(0o022)
    path = tmp_path / "m.npz"
    mlp.MLP([3, 2]).save(path)
    path.chmod(kept)
    mlp.MLP([3, 2], seed=1).save(path)
    assert _mode(path) == kept
    np.testing.assert_array_equal(mlp.load(path).params, mlp.MLP([3, 2], seed=1).params)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_mlp_train_writes_its_checkpoint_with_the_umask(tmp_path: Path, umask):
    umask(0o022)
    ck = tmp_path / "ck.npz"
    assert main(["train", *BASE_RUN, "--epochs", "2", "-o", str(ck)]) == 0
    assert _mode(ck) == 0o644


@pytest.mark.parametrize("target", ["folder", "dot"])
def test_saving_onto_a_folder_says_so_and_leaves_nothing(tmp_path: Path, monkeypatch, target):
    # saving to "." failed with "Device or resource busy: '..<random>.tmp' -> '.'", naming a file never asked for
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    path = "runs" if target == "folder" else "."
    with pytest.raises(IsADirectoryError, match=rf"path: '{path}' is a folder; expected the path of a file"):
        mlp.MLP([3, 2]).save(path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["runs"]


def test_a_file_that_cannot_be_created_is_named_as_asked_for(tmp_path: Path, monkeypatch):
    # the error named the temporary file ('.model.npz.<random>.tmp'), not the file asked for
    import mlp._files as files

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(PermissionError, match=r"path: cannot write '.*model\.npz' \(Permission denied\)"):
        mlp.MLP([3, 2]).save(tmp_path / "model.npz")


def test_a_folder_that_cannot_hold_files_names_the_file_asked_for(tmp_path: Path):
    # an OSError creating the temporary file named that file ('.x.npz.<random>.tmp'), not the one asked for
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder would be")
    with pytest.raises(OSError, match=r"not-a-folder"):
        mlp.MLP([3, 2]).save(blocker / "model.npz")


def test_a_checkpoint_path_that_is_a_folder_is_refused_before_training(tmp_path: Path):
    # it failed only when the first epoch's checkpoint was written, after that epoch's work
    model = mlp.MLP([2, 3, 4], seed=0)
    before = model.get_weights()
    trainer = mlp.Trainer(model, mlp.optim.SGD(0.1), backend="numpy")
    X, y = np.random.default_rng(0).uniform(-1, 1, (40, 2)), np.arange(40) % 4
    with pytest.raises(IsADirectoryError, match="is a folder; expected the path of a file"):
        trainer.fit(X, y, epochs=2, verbose=0, checkpoint=tmp_path)
    assert all(np.array_equal(a, b) for pa, pb in zip(before, model.get_weights()) for a, b in zip(pa, pb))
