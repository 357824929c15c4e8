"""Mini-batch training of an :class:`~mlp.model.MLP` on any backend.

The training step is written once, in :class:`TrainingLoop`, against the
backend contract; ``Trainer.fit``, the benchmarks and the tests all run it.
It allocates nothing and never waits for the device: the dataset is copied to
the backend once per ``fit``, batches are gathered there, the optimizer's
scalars are staged once per epoch, and the loss and accuracy are accumulated
on the device and read once per epoch.  On a real GPU the steps of an epoch
are captured once per fit into a CUDA graph and replayed with one call per
epoch (``Trainer(cuda_graphs=False)`` keeps the step-by-step launches).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

from ._validation import check_features, check_int, check_labels, check_real, describe
from .backends import Backend, get_backend
from .backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM
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


class TrainingLoop:
    """The training step, written once: gather a batch, forward, loss, backward, optimizer update.

    Built by :meth:`Trainer.training_loop` (or by ``fit``) for data already
    validated and placed on the backend.  Everything a step touches is
    allocated here, once, and kept for the loop's lifetime: the permutation
    buffer (one view of it per step), the batch buffers, the model's
    workspaces and gradients, the optimizer's state and its scalars table.
    That is what lets an epoch be captured into a CUDA graph and replayed.

    ``step(i)`` runs step ``i`` of the current order and can be called on
    its own (the benchmarks time it); ``epoch()`` runs them all.
    """

    def __init__(self, model: MLP, optimizer: Optimizer, backend: Backend, X: Any, y: Any, batch_size: int,
                 cuda_graphs: bool = False) -> None:
        self.model, self.optimizer, self.backend = model, optimizer, backend
        be = backend
        self.X, self.y = X, y
        n = int(X.shape[0])
        self.n_samples = n
        self.batch_size = B = min(batch_size, n)
        self.steps = math.ceil(n / B)
        self.perm = be.asarray(np.arange(n, dtype=np.int64), dtype=np.int64)
        # Views of the permutation buffer, one per step, made once: refilling
        # the buffer each epoch updates every batch's indices in place.
        self.batch_idx = [self.perm[s * B:min(n, (s + 1) * B)] for s in range(self.steps)]
        sizes = sorted({B, n - (self.steps - 1) * B})
        self.batch_x = {b: be.empty((b, model.n_features), model.dtype) for b in sizes}
        self.batch_y = {b: be.empty((b,), np.int64) for b in sizes}
        self.workspaces = {b: model.new_workspace(b) for b in sizes}
        self.stats = be.new_stats()
        model.grads  # noqa: B018  (allocate the gradient buffer before the first step)
        optimizer.prepare(be, model.params)
        self.table = None
        self.use_graphs = bool(cuda_graphs) and getattr(be, "supports_graphs", False)
        self._graph = None
        self._graph_key = None
        self.eager_epochs = 0
        self.replays = 0

    # ------------------------------------------------------------ the step
    def step(self, i: int) -> None:
        """Training step ``i`` of the current order, with row ``i`` of the staged optimizer scalars."""
        be, model = self.backend, self.model
        idx = self.batch_idx[i]
        b = idx.shape[0]
        xb, yb, ws = self.batch_x[b], self.batch_y[b], self.workspaces[b]
        be._take_rows(self.X, idx, xb)
        be._take_rows(self.y, idx, yb)
        logits = model.forward(xb, ws)
        be._softmax_xent(logits, yb, ws.dlogits, self.stats, i)
        model.backward(xb, ws)
        self.optimizer.launch(be, model.params, model._grads, model.n_weights, self.table, i)

    # ----------------------------------------------------------- an epoch
    def set_order(self, order: np.ndarray | None) -> None:
        """The sample order of the next epoch (a host int64 permutation; None keeps 0..n-1)."""
        host = np.arange(self.n_samples, dtype=np.int64) if order is None else order
        self.backend.copy_(self.perm, host)

    def begin_epoch(self) -> None:
        """Reset the loss statistics and stage this epoch's optimizer scalars (one small copy each)."""
        self.backend._fill_stats(self.stats)
        self.table = self.optimizer.stage(self.backend, self.model.dtype, self.steps)

    def epoch(self, on_step: Callable[[int], Any] | None = None) -> int:
        """Run every step of the current order; returns how many steps ran.

        ``on_step(steps_done)`` is called after each step (eager path only;
        a progress bar, an interrupt check) and ends the epoch early when it
        returns ``True``.  With CUDA graphs the first
        epoch of the loop runs eagerly (it compiles everything and allocates
        any scratch), later epochs replay one captured graph, and an epoch is
        the unit of interruption.  The optimizer's step count advances by the
        steps run.
        """
        self.begin_epoch()
        ran = self.steps
        if self.use_graphs and self.eager_epochs > 0:
            self._replay()
        else:
            ran = 0
            for i in range(self.steps):
                self.step(i)
                ran += 1
                if on_step is not None and on_step(ran) is True:
                    break
            self.eager_epochs += 1
        self.optimizer.advance(ran)
        return ran

    def totals(self) -> np.ndarray:
        """The epoch's statistics on the host (the epoch's one synchronisation)."""
        return self.backend.to_numpy(self.stats)

    # ------------------------------------------------------------- graphs
    def _baked(self) -> tuple:
        """Everything a captured epoch bakes in besides buffer contents; a change means recapture."""
        be = self.backend
        return (id(self.model.params), id(self.model._grads), self.optimizer.structure(), id(self.table),
                getattr(be, "gemm_config", None), getattr(be, "split_k", None), self.steps, self.batch_size)

    def _replay(self) -> None:
        key = self._baked()
        if self._graph is None or key != self._graph_key:
            if self._graph is not None:
                self._graph.close()
            self._graph = self.backend.capture(lambda: [self.step(i) for i in range(self.steps)],
                                               keepalive=(self, self.table))
            self._graph_key = key
        self._graph.replay()
        self.replays += 1

    def close(self) -> None:
        """Release the captured graph (the loop's buffers go with the loop)."""
        if self._graph is not None:
            self._graph.close()
            self._graph = None


def evaluate(model: MLP, X: Any, y: Any, backend: Union[str, Backend, None] = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(X, y)``: ``{"loss": ..., "accuracy": ...}``.

    Needs no optimizer.  ``backend``: where to compute (default: where the
    model is); the model is moved there.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected an mlp.MLP, got {type(model).__name__}")
    if backend is not None:
        model.to(backend)
    Xh = check_features(X, model.n_features, model.dtype, "X")
    yh = check_labels(y, Xh.shape[0], model.n_classes, "y")
    be = model.backend
    return _evaluate_on_device(model, be.asarray(Xh, dtype=model.dtype), be.asarray(yh, dtype=np.int64))


def _evaluate_on_device(model: MLP, Xd: Any, yd: Any) -> dict[str, float]:
    be = model.backend
    stats = be.new_stats()
    n = Xd.shape[0]
    for start in range(0, n, PREDICT_CHUNK):
        xb = Xd[start:start + PREDICT_CHUNK]
        logits = model.forward(xb, model._workspace(xb.shape[0]))
        be._softmax_xent(logits, yd[start:start + PREDICT_CHUNK], None, stats, 0)
    totals = be.to_numpy(stats)
    return {"loss": float(totals[STATS_LOSS_SUM]) / n, "accuracy": float(totals[STATS_CORRECT]) / n}


class Trainer:
    """Trains ``model`` with ``optimizer`` on ``backend`` (``"auto"``, ``"numpy"``, ``"cuda"`` or a Backend).

    ``batch_size`` samples per step; ``seed`` fixes the shuffling and the
    validation split, so the same seed on the same backend gives the same result.
    ``cuda_graphs``: replay each epoch as one captured CUDA graph on a
    backend that supports it (a real GPU); ``None`` (default) means yes
    where supported, ``False`` launches step by step.  Both give the same
    parameters bit for bit.
    """

    def __init__(self, model: MLP, optimizer: Optimizer, backend: Union[str, Backend] = "auto",
                 batch_size: int = 128, seed: int = 0, cuda_graphs: bool | None = None) -> None:
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
        if cuda_graphs is not None and not isinstance(cuda_graphs, (bool, np.bool_)):
            raise TypeError(f"cuda_graphs: expected True, False or None, got {describe(cuda_graphs)}")
        self.cuda_graphs = cuda_graphs
        self._rng = np.random.default_rng(self.seed)
        self.history: History | None = None
        #: the step loop of the last fit (its buffers, launch and replay counts)
        self.loop: TrainingLoop | None = None

    @property
    def uses_cuda_graphs(self) -> bool:
        """Whether ``fit`` replays captured epochs on this trainer's backend."""
        return self.cuda_graphs is not False and bool(getattr(self.backend, "supports_graphs", False))

    def training_loop(self, X: Any, y: Any) -> TrainingLoop:
        """Validate ``(X, y)``, place it and the model on the backend, and return the step loop ``fit`` runs.

        For custom loops and benchmarks: ``loop.set_order(perm)``, then
        ``loop.epoch()`` or ``loop.begin_epoch()`` and ``loop.step(i)``.
        """
        Xh, yh = self._check_xy(X, y, "X", "y")
        return self._make_loop(*self._to_device(Xh, yh))

    def _make_loop(self, Xd: Any, yd: Any) -> TrainingLoop:
        self.model.to(self.backend)
        self.backend.warmup(self.model.dtype)
        if self.loop is not None:
            self.loop.close()
        self.loop = TrainingLoop(self.model, self.optimizer, self.backend, Xd, yd, self.batch_size,
                                 cuda_graphs=self.uses_cuda_graphs)
        return self.loop

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
        # The data first: if it does not fit on the device, the model stays where it was.
        Xd, yd = self._to_device(Xh, yh)
        val = self._to_device(Xv, yv) if Xv is not None else None
        loop = self._make_loop(Xd, yd)
        n, steps = loop.n_samples, loop.steps
        start_of_epoch = be.empty(model.n_params, model.dtype)
        best_params = be.empty(model.n_params, model.dtype) if early_stopping and early_stopping.restore_best \
            else None

        history = History()
        self.history = history
        best, wait = None, 0
        bar_factory = _progress_bar if verbose == 1 else None
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            loop.set_order(self._rng.permutation(n).astype(np.int64) if shuffle else None)
            be.copy_(start_of_epoch, model.params)
            bar = bar_factory(steps, f"epoch {epoch}/{epochs}") if bar_factory else None
            loop.epoch(on_step=(lambda done: bar.update() and None) if bar is not None else None)
            totals = loop.totals()  # the epoch's one synchronisation
            if bar is not None:
                bar.close()
            if math.isfinite(totals[STATS_FIRST_NONFINITE_STEP]):
                be.copy_(model.params, start_of_epoch)
                self.optimizer.reset()  # its moments hold NaN too
                raise TrainingDivergedError(epoch, int(totals[STATS_FIRST_NONFINITE_STEP]) + 1, steps)
            record = {"epoch": float(epoch), "loss": float(totals[STATS_LOSS_SUM]) / n,
                      "accuracy": float(totals[STATS_CORRECT]) / n,
                      "val_loss": math.nan, "val_accuracy": math.nan}
            if val is not None:
                v = _evaluate_on_device(model, *val)
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
        """Mean cross-entropy and accuracy of the model on ``(X, y)`` on this trainer's backend
        (:func:`mlp.evaluate` does the same without a trainer)."""
        return evaluate(self.model, X, y, backend=self.backend)


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def _print_epoch(r: dict[str, float], epochs: int, has_val: bool) -> None:
    line = (f"epoch {int(r['epoch'])}/{epochs}  loss {r['loss']:.4f}  accuracy {r['accuracy']:.4f}")
    if has_val:
        line += f"  val_loss {r['val_loss']:.4f}  val_accuracy {r['val_accuracy']:.4f}"
    line += f"  ({r['seconds']:.2f} s)"
    print(line, file=sys.stderr, flush=True)
