"""Ctrl-C during training: stop at a step boundary, keep the last checkpoint intact, resume from it;
and the per-step callback that checks for it and drives the progress bar."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp import datasets, optim
from mlp.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Small enough to train in a moment, with epochs long enough (500 steps) that
# the signal lands inside one.
RUN = ["--dataset", "quadrants", "--layers", "32,32", "--batch-size", "8", "--backend", "numpy", "--seed", "2"]


def _flat(model: mlp.MLP) -> np.ndarray:
    return np.concatenate([a.ravel() for pair in model.get_weights() for a in pair])


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"mlp train ended (status {proc.returncode}) before writing {path}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint at {path} after {seconds} s")
        time.sleep(0.02)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is delivered differently on Windows")
def test_sigint_exits_130_with_an_intact_checkpoint_that_resumes_exactly(tmp_path: Path, capsys):
    ck, png = tmp_path / "ck.npz", tmp_path / "curves.png"
    proc = subprocess.Popen([sys.executable, "-m", "mlp", "train", *RUN, "--epochs", "100000", "-o", str(ck),
                             "--plot", str(png)], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    _wait_for(ck, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = mlp.load(ck).metadata["epoch"]
    assert f"interrupted: {ck} holds epoch {done}; continue with: mlp train --resume {ck}" in err
    assert f"epoch {done}/100000" in err and f"epoch {done + 1}/100000" not in err
    assert png.exists() and png.stat().st_size > 0  # drawn after each epoch
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # resuming from the interrupted run's checkpoint ends where an uninterrupted run does
    assert main(["train", "--resume", str(ck), "--epochs", str(done + 1), "-q"]) == 0
    whole = tmp_path / "whole.npz"
    assert main(["train", *RUN, "--epochs", str(done + 1), "-o", str(whole), "-q"]) == 0
    assert np.array_equal(_flat(mlp.load(ck)), _flat(mlp.load(whole)))
    results = [line.split("(")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("test accuracy")]
    assert results[0] == results[-1]


def test_sigint_without_output_says_to_pass_o(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "mlp", "train", *RUN, "--epochs", "100000"], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    line = ""
    while not line.startswith("epoch 1/") and time.monotonic() < deadline:
        line = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: no checkpoint was written; pass -o FILE next time to be able to resume" in err


def test_fit_stops_at_a_step_boundary_on_sigint_and_raises_keyboard_interrupt(tmp_path: Path, monkeypatch):
    (X, y), _ = datasets.load("quadrants", n_train=400, n_test=1)
    opt = optim.Adam(lr=0.01)
    trainer = mlp.Trainer(mlp.MLP([2, 8, 4], seed=1), opt, backend="numpy", batch_size=40)  # 10 steps an epoch
    launch, launched = trainer.backend._adam_step_stacked, []

    def launch_then_press_ctrl_c_at_step_25(*args):
        launch(*args)
        launched.append(1)
        if len(launched) == 25:  # epoch 3, step 5
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trainer.backend, "_adam_step_stacked", launch_then_press_ctrl_c_at_step_25)
    handler_before = signal.getsignal(signal.SIGINT)
    ck = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt, match=r"interrupted in epoch 3 after step 5 of 10.*/ck.npz holds the last"):
        trainer.fit(X, y, epochs=6, checkpoint=ck, verbose=0)
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert len(launched) == 25 and opt.steps == 25  # no step ran after the one interrupted
    assert len(trainer.history) == 2 and np.isfinite(_flat(trainer.model)).all()
    assert mlp.load(ck).metadata["epoch"] == 2

    resumed = mlp.Trainer.from_checkpoint(ck, backend="numpy")
    resumed.fit(X, y, epochs=4, verbose=0)
    whole = mlp.Trainer(mlp.MLP([2, 8, 4], seed=1), optim.Adam(lr=0.01), backend="numpy", batch_size=40)
    whole.fit(X, y, epochs=4, verbose=0)
    assert np.array_equal(_flat(resumed.model), _flat(whole.model))


def test_fit_in_another_thread_leaves_signals_alone():
    (X, y), _ = datasets.load("quadrants", n_train=100, n_test=1)
    trainer = mlp.Trainer(mlp.MLP([2, 4]), optim.SGD(lr=0.1), backend="numpy", batch_size=50)
    errors = []

    def fit():
        try:
            trainer.fit(X, y, epochs=2, verbose=0)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    worker = threading.Thread(target=fit)
    worker.start()
    worker.join(60)
    assert not errors and len(trainer.history) == 2


class _Bar:
    """Stands in for a tqdm bar: counts updates and keeps each postfix."""

    def __init__(self) -> None:
        self.n, self.postfix = 0, []

    def update(self) -> None:
        self.n += 1

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix.append(text)


def test_step_callback_shows_the_running_loss_where_reading_it_is_free_and_stops_on_request():
    from mlp.interrupt import StopAtStepBoundary
    from mlp.progress import step_callback

    (X, y), _ = datasets.load("quadrants", n_train=100, n_test=1)
    loop = mlp.Trainer(mlp.MLP([2, 4]), optim.SGD(lr=0.1), backend="numpy", batch_size=30).training_loop(X, y)
    loop.set_order(None)
    bar, interrupt = _Bar(), StopAtStepBoundary()
    assert loop.epoch(on_step=step_callback(loop, bar, interrupt)) == 4
    assert bar.n == 4 and len(bar.postfix) == 4  # host statistics (NumPy): the loss at every step
    assert bar.postfix[-1] == f"loss {loop.totals()[0, 0] / 100:.4f}"

    # statistics held on a device (not a NumPy array): the bar counts steps only, with no read-back
    device_loop = type("DeviceLoop", (), {"stats": object(), "batch_size": 30, "n_samples": 100})()
    bar = _Bar()
    on_step = step_callback(device_loop, bar, interrupt)
    assert on_step(1) is False and bar.n == 1 and bar.postfix == []
    interrupt.requested = True
    assert on_step(2) is True  # ends the epoch at this step boundary
