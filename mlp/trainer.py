"""Mini-batch training of an :class:`~mlp.model.MLP` on any backend.

The step loop is written once against the backend contract.  It allocates
nothing and never waits for the device: the dataset is copied to the backend
once per ``fit``, batches are gathered there, and the loss and accuracy are
accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

from ._validation import check_features, check_int, check_labels, check_real, describe
from .backends import Backend, get_backend
from .model import MLP, PREDICT_CHUNK
from .optim import Optimizer


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite.

    The weights are restored to the start of that epoch and the optimizer's
    state is reset (its moment estimates hold NaN too).
    """

    def __init__(self, epoch: int, step: int, steps: int) -> None:
        self.epoch, self.step, self.steps = epoch, step, steps
        super().__init__(
            f"training diverged: the loss became NaN or infinite at epoch {epoch}, step {step} of {steps}; "
            f"the weights were restored to their values at the start of epoch {epoch}. "
            "Try a smaller learning rate (or more weight decay).")


_MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model ends with the weights of its best epoch.
    """

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = True

    def __post_init__(self) -> None:
        self.patience = check_int(self.patience, "patience", minimum=1)
        self.min_delta = check_real(self.min_delta, "min_delta", minimum=0.0)
        if self.monitor not in _MONITORS:
            raise ValueError(f"monitor: expected one of {_MONITORS}, got {self.monitor!r}")

    def improved(self, value: float, best: float) -> bool:
        if self.monitor.endswith("accuracy"):
            return value > best + self.min_delta
        return value < best - self.min_delta


class History:
    """Per-epoch records of a ``fit``: ``history["loss"]`` is the list of epoch losses.

    Keys: ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``
    (NaN without validation data) and ``seconds``.  ``stopped_early`` and
    ``best_epoch`` tell what early stopping did.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self.stopped_early = False
        self.best_epoch: int | None = None

    def __getitem__(self, key: str) -> list[float]:
        if not self.records or key not in self.records[0]:
            raise KeyError(key)
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.records)

    def __repr__(self) -> str:
        last = self.records[-1] if self.records else {}
        return f"History(epochs={len(self)}, last={last})"


def _float_errors_reported_by_trainer(fn):
    """Silence host floating-point warnings: a loss that turns NaN/inf is reported as TrainingDivergedError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


class Trainer:
    """Trains ``model`` with ``optimizer`` on ``backend`` (``"auto"``, ``"numpy"``, ``"cuda"`` or a Backend).

    ``batch_size`` samples per step; ``seed`` fixes the shuffling and the
    validation split, so the same seed on the same backend gives the same result.
    """

    def __init__(self, model: MLP, optimizer: Optimizer, backend: Union[str, Backend] = "auto",
                 batch_size: int = 128, seed: int = 0) -> None:
        if not isinstance(model, MLP):
            raise TypeError(f"model: expected an mlp.MLP, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an mlp.optim.Optimizer (SGD, RMSprop, Adam, AdamW), "
                            f"got {type(optimizer).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.backend = get_backend(backend)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self._rng = np.random.default_rng(self.seed)
        self.history: History | None = None

    # ----------------------------------------------------------------- data
    def _check_xy(self, X: Any, y: Any, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
        Xh = check_features(X, self.model.n_features, self.model.dtype, xname)
        yh = check_labels(y, Xh.shape[0], self.model.n_classes, yname)
        return Xh, yh

    def _to_device(self, Xh: np.ndarray, yh: np.ndarray) -> tuple[Any, Any]:
        be = self.backend
        return be.asarray(Xh, dtype=self.model.dtype), be.asarray(yh, dtype=np.int64)

    # ------------------------------------------------------------------ fit
    @_float_errors_reported_by_trainer
    def fit(self, X: Any, y: Any, epochs: int = 10, validation_data: tuple[Any, Any] | None = None,
            validation_split: float = 0.0, early_stopping: Union[EarlyStopping, int, None] = None,
            shuffle: bool = True, verbose: int | None = None,
            checkpoint: Union[str, Path, None] = None) -> History:
        """Train for ``epochs`` passes over ``(X, y)``; returns the :class:`History`.

        X: (N, n_features) real array; y: (N,) integer labels in [0, n_classes).
        ``validation_data=(X_val, y_val)`` or ``validation_split`` (a fraction of
        ``(X, y)`` held out at random) are evaluated after every epoch.
        ``early_stopping`` is an :class:`EarlyStopping` or a patience (int).
        ``verbose``: 0 silent, 1 progress bar and a line per epoch, 2 a line per
        epoch; default: 1 on a terminal, else 0.  ``checkpoint``: a path the
        model is saved to (atomically) after every epoch.
        """
        epochs = check_int(epochs, "epochs", minimum=1)
        validation_split = check_real(validation_split, "validation_split", minimum=0.0, maximum=1.0,
                                      max_inclusive=False)
        if verbose is None:
            verbose = 1 if sys.stderr.isatty() else 0
        verbose = check_int(verbose, "verbose", minimum=0)
        if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
            early_stopping = EarlyStopping(patience=int(early_stopping))
        elif early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping: expected an EarlyStopping, a patience (int) or None, "
                            f"got {describe(early_stopping)}")

        Xh, yh = self._check_xy(X, y, "X", "y")
        Xv = yv = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("validation_split: expected 0 when validation_data is given, "
                                 f"got {validation_split}")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"validation_data: expected a pair (X_val, y_val), got {describe(validation_data)}")
            Xv, yv = self._check_xy(validation_data[0], validation_data[1], "validation_data[0]",
                                    "validation_data[1]")
        elif validation_split:
            n_val = int(round(Xh.shape[0] * validation_split))
            if n_val < 1 or n_val >= Xh.shape[0]:
                raise ValueError(f"validation_split: {validation_split} of {Xh.shape[0]} samples leaves "
                                 f"{n_val} for validation and {Xh.shape[0] - n_val} for training; "
                                 "both need at least one")
            order = self._rng.permutation(Xh.shape[0])
            Xv, yv = Xh[order[:n_val]], yh[order[:n_val]]
            Xh, yh = Xh[order[n_val:]], yh[order[n_val:]]
        if early_stopping is not None and early_stopping.monitor.startswith("val_") and Xv is None:
            raise ValueError(f"early_stopping: monitoring {early_stopping.monitor!r} needs validation_data "
                             "or validation_split")

        model, be = self.model, self.backend
        model.to(be)
        be.warmup(model.dtype)
        Xd, yd = self._to_device(Xh, yh)
        val = self._to_device(Xv, yv) if Xv is not None else None

        n = Xh.shape[0]
        B = min(self.batch_size, n)
        steps = math.ceil(n / B)
        perm_host = np.arange(n, dtype=np.int64)
        perm = be.asarray(perm_host, dtype=np.int64)
        # Views of the permutation buffer, one per step, made once: refilling
        # the buffer each epoch updates every batch's indices in place.
        batch_idx = [perm[s * B:min(n, (s + 1) * B)] for s in range(steps)]
        batch_x = {b: be.empty((b, model.n_features), model.dtype) for b in {B, n - (steps - 1) * B}}
        batch_y = {b: be.empty((b,), np.int64) for b in batch_x}
        stats = be.new_stats()
        start_of_epoch = be.empty(model.n_params, model.dtype)
        best_params = be.empty(model.n_params, model.dtype) if early_stopping and early_stopping.restore_best \
            else None
        model.grads  # noqa: B018  (allocate the gradient buffer before the first step)

        history = History()
        self.history = history
        best, wait = None, 0
        bar_factory = _progress_bar if verbose == 1 else None
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            if shuffle:
                perm_host = self._rng.permutation(n).astype(np.int64)
            be.copy_(perm, perm_host)
            be.reset_stats(stats)
            be.copy_(start_of_epoch, model.params)
            bar = bar_factory(steps, f"epoch {epoch}/{epochs}") if bar_factory else None
            for step in range(steps):
                idx = batch_idx[step]
                b = idx.shape[0]
                xb = be.take_rows(Xd, idx, out=batch_x[b])
                yb = be.take_rows(yd, idx, out=batch_y[b])
                ws = model._workspace(b)
                logits = model.forward(xb, ws)
                be.softmax_cross_entropy_into(logits, yb, ws.dlogits, stats, step=step)
                model.backward(xb, ws)
                self.optimizer.step(be, model.params, model.grads, model.n_weights)
                if bar is not None:
                    bar.update()
            totals = be.to_numpy(stats)  # the epoch's one synchronisation
            if bar is not None:
                bar.close()
            if math.isfinite(totals[2]):
                be.copy_(model.params, start_of_epoch)
                self.optimizer.reset()  # its moments hold NaN too
                raise TrainingDivergedError(epoch, int(totals[2]) + 1, steps)
            record = {"epoch": float(epoch), "loss": float(totals[0]) / n, "accuracy": float(totals[1]) / n,
                      "val_loss": math.nan, "val_accuracy": math.nan}
            if val is not None:
                v = self._evaluate_device(*val)
                record["val_loss"], record["val_accuracy"] = v["loss"], v["accuracy"]
            record["seconds"] = time.perf_counter() - t0
            history.records.append(record)
            if verbose:
                _print_epoch(record, epochs, val is not None)
            if checkpoint is not None:
                model.save(checkpoint, metadata={"epoch": epoch, **{k: record[k] for k in
                                                                   ("loss", "accuracy", "val_loss", "val_accuracy")
                                                                   if math.isfinite(record[k])}})
            if early_stopping is not None:
                value = record[early_stopping.monitor]
                if best is None or early_stopping.improved(value, best):
                    best, wait, history.best_epoch = value, 0, epoch
                    if best_params is not None:
                        be.copy_(best_params, model.params)
                else:
                    wait += 1
                    if wait >= early_stopping.patience:
                        history.stopped_early = True
                        break
        if best_params is not None and history.best_epoch is not None and history.best_epoch != len(history):
            be.copy_(model.params, best_params)
        return history

    # ------------------------------------------------------------- evaluate
    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """Mean cross-entropy and accuracy of the model on ``(X, y)``: ``{"loss": ..., "accuracy": ...}``."""
        Xh, yh = self._check_xy(X, y, "X", "y")
        self.model.to(self.backend)
        return self._evaluate_device(*self._to_device(Xh, yh))

    def _evaluate_device(self, Xd: Any, yd: Any) -> dict[str, float]:
        be, model = self.backend, self.model
        stats = be.new_stats()
        n = Xd.shape[0]
        for start in range(0, n, PREDICT_CHUNK):
            xb = Xd[start:start + PREDICT_CHUNK]
            logits = model.forward(xb, model._workspace(xb.shape[0]))
            be.softmax_cross_entropy_into(logits, yd[start:start + PREDICT_CHUNK], None, stats)
        totals = be.to_numpy(stats)
        return {"loss": float(totals[0]) / n, "accuracy": float(totals[1]) / n}


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def _print_epoch(r: dict[str, float], epochs: int, has_val: bool) -> None:
    line = (f"epoch {int(r['epoch'])}/{epochs}  loss {r['loss']:.4f}  accuracy {r['accuracy']:.4f}")
    if has_val:
        line += f"  val_loss {r['val_loss']:.4f}  val_accuracy {r['val_accuracy']:.4f}"
    line += f"  ({r['seconds']:.2f} s)"
    print(line, file=sys.stderr, flush=True)
