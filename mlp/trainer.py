"""Mini-batch training of an :class:`~mlp.model.MLP` on any backend.

The training step is written once, in :class:`mlp.loop.TrainingLoop`,
against the backend contract; ``Trainer.fit``, the benchmarks and the tests
all run it.
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
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

from ._validation import check_features, check_int, check_labels, check_real, describe
from .backends import Backend, get_backend
from .backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM
from .checkpoint import TrainingState, optimizer_from_record, optimizer_record, read_archive
from .model import MLP, PREDICT_CHUNK, model_from_archive
from .loop import TrainingLoop
from .optim import Optimizer
from .plotting import plot_history


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

    def plot(self, path: Union[str, Path, None] = None) -> Any:
        """Loss and accuracy per epoch, training and (when recorded) validation; returns the matplotlib Figure.

        With ``path`` the figure is also written there, atomically.  Needs
        matplotlib (``pip install 'numba-mlp[plot]'``); see :func:`mlp.plotting.plot_history`.
        """
        return plot_history(self, path)

    def as_dict(self) -> dict:
        """Records, ``best_epoch`` and ``stopped_early`` as plain values (for a checkpoint's JSON header)."""
        return {"records": [dict(r) for r in self.records], "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, state: dict) -> "History":
        """The inverse of :meth:`as_dict`."""
        history = cls()
        history.records = [{k: float(v) for k, v in r.items()} for r in state["records"]]
        history.best_epoch = state["best_epoch"]
        history.stopped_early = bool(state["stopped_early"])
        return history


def _float_errors_reported_by_trainer(fn):
    """Silence host floating-point warnings: a loss that turns NaN/inf is reported as TrainingDivergedError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


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
        self._run: _Run | None = None  # what the current or last fit has reached, for checkpoints
        self._resume: TrainingState | None = None  # set by from_checkpoint, taken up by the next fit

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], backend: Union[str, Backend] = "auto",
                        cuda_graphs: bool | None = None) -> "Trainer":
        """A trainer that continues the run saved in ``path`` (by ``fit(checkpoint=...)``) where it stopped.

        The model, the optimizer (its kind, settings and state), the epochs
        done, the shuffling's random state, the validation split, the history
        and early stopping's progress all come from the file.  Then
        ``fit(X, y, epochs=N)`` on the same data trains the remaining epochs up
        to ``N`` in all, and ends with the weights an uninterrupted ``N``-epoch
        run would have (bit for bit on the same backend).  A checkpoint of
        weights only (:meth:`MLP.save`, or format 1) is a ``ValueError`` that
        says what it lacks; :func:`mlp.load` still reads it for prediction.
        """
        header, arrays = read_archive(path)
        state = TrainingState.from_archive(header, arrays, path)
        model = model_from_archive(header, arrays, path)
        if state.train_params is not None:  # early stopping restored the best weights; training goes on from the last
            model.backend.copy_(model.params, state.train_params.astype(model.dtype, copy=False))
        optimizer = optimizer_from_record(state.optimizer, state.optimizer_buffers)
        trainer = cls(model, optimizer, backend=backend, batch_size=state.batch_size, seed=state.seed,
                      cuda_graphs=cuda_graphs)
        trainer._rng.bit_generator.state = state.random_state
        trainer.history = History.from_dict(state.history)
        trainer._resume = state
        return trainer

    def save_checkpoint(self, path: Union[str, Path], metadata: dict | None = None) -> Path:
        """Write the model and the state of the run to ``path``, atomically (see :mod:`mlp.checkpoint`).

        ``fit(checkpoint=path)`` calls this after every epoch; call it after
        ``fit`` to store more ``metadata`` (default: the model's
        :attr:`~mlp.MLP.metadata` with the epoch reached and its figures).
        :meth:`from_checkpoint` continues the run from the file.
        """
        run = self._run
        if run is None:
            raise RuntimeError("save_checkpoint: nothing to save yet; call fit first")
        if metadata is None:
            last = self.history.records[-1] if self.history.records else {}
            metadata = {**self.model.metadata, "epoch": run.epoch,
                        **{k: last[k] for k in _MONITORS if k in last and math.isfinite(last[k])}}
        optimizer, buffers = optimizer_record(self.optimizer)
        es = run.early_stopping
        state = TrainingState(
            epoch=run.epoch, batch_size=self.batch_size, seed=self.seed, shuffle=run.shuffle, optimizer=optimizer,
            optimizer_buffers=buffers, random_state=self._rng.bit_generator.state, validation=run.validation,
            validation_order=run.validation_order, history=self.history.as_dict(),
            early_stopping=None if es is None else {**asdict(es), "best": run.best, "wait": run.wait},
            best_params=None if run.best_params is None else self.backend.to_numpy(run.best_params),
            train_params=run.train_params)
        return self.model.save(path, metadata=metadata, training=state)

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
            validation_split: float | None = None, early_stopping: Union[EarlyStopping, int, None] = None,
            shuffle: bool | None = None, verbose: int | None = None, checkpoint: Union[str, Path, None] = None,
            on_epoch_end: Callable[[History], Any] | None = None) -> History:
        """Train for ``epochs`` passes over ``(X, y)``; returns the :class:`History`.

        X: (N, n_features) real array; y: (N,) integer labels in [0, n_classes).
        ``validation_data=(X_val, y_val)`` or ``validation_split`` (a fraction of
        ``(X, y)`` held out at random; default 0) are evaluated after every epoch.
        ``early_stopping`` is an :class:`EarlyStopping` or a patience (int).
        ``shuffle`` (default True) draws a new sample order every epoch.
        ``verbose``: 0 silent, 1 progress bar and a line per epoch, 2 a line per
        epoch; default: 1 on a terminal, else 0.  ``checkpoint``: a path the
        model and the state of the run are saved to (atomically) after every
        epoch (see :meth:`from_checkpoint`).  ``on_epoch_end(history)`` is
        called after every epoch, once it is recorded and saved; returning
        ``True`` ends training there (a stopping rule of the caller's own).

        A trainer made by :meth:`from_checkpoint` continues its run: ``epochs``
        counts all epochs, those done included; the validation split, early
        stopping and shuffling are the checkpoint's (giving others is a
        ``ValueError``), and ``validation_data`` must be given again if the run
        had it.

        Ctrl-C (SIGINT, when ``fit`` runs in the main thread) stops at the next
        step boundary and raises ``KeyboardInterrupt``: the model holds the
        weights of the last complete step, :attr:`history` the complete epochs,
        and the checkpoint file the last of them.  A second Ctrl-C interrupts at once.
        """
        epochs = check_int(epochs, "epochs", minimum=1)
        if verbose is None:
            verbose = 1 if sys.stderr.isatty() else 0
        verbose = check_int(verbose, "verbose", minimum=0)
        early_stopping = _as_early_stopping(early_stopping)
        resume = self._resume
        if resume is not None:
            validation_split, early_stopping, shuffle = self._resumed_settings(
                resume, epochs, validation_data, validation_split, early_stopping, shuffle)
        validation_split = check_real(0.0 if validation_split is None else validation_split, "validation_split",
                                      minimum=0.0, maximum=1.0, max_inclusive=False)
        shuffle = True if shuffle is None else bool(shuffle)
        if checkpoint is not None:
            optimizer_record(self.optimizer)  # an optimizer a checkpoint cannot record fails now, not after an epoch

        Xh, yh = self._check_xy(X, y, "X", "y")
        n_given = Xh.shape[0]
        if resume is not None and n_given != resume.validation["n_samples"]:
            raise ValueError(f"X: the checkpoint's run trained on {resume.validation['n_samples']} samples, "
                             f"got {n_given}")
        Xv = yv = order = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("validation_split: expected 0 when validation_data is given, "
                                 f"got {validation_split}")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"validation_data: expected a pair (X_val, y_val), got {describe(validation_data)}")
            Xv, yv = self._check_xy(validation_data[0], validation_data[1], "validation_data[0]",
                                    "validation_data[1]")
        elif validation_split:
            n_val = int(round(n_given * validation_split))
            if n_val < 1 or n_val >= n_given:
                raise ValueError(f"validation_split: {validation_split} of {n_given} samples leaves "
                                 f"{n_val} for validation and {n_given - n_val} for training; "
                                 "both need at least one")
            # a resumed run holds out the samples it drew at its start
            order = self._rng.permutation(n_given) if resume is None else resume.validation_order
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
        source = "data" if validation_data is not None else ("split" if validation_split else None)
        run = _Run(epoch=0, shuffle=shuffle, early_stopping=early_stopping, validation_order=order,
                   validation={"source": source, "fraction": validation_split, "n_samples": n_given})
        if early_stopping is not None and early_stopping.restore_best:
            run.best_params = be.empty(model.n_params, model.dtype)
        if resume is None:
            self.history = History()
        else:
            run.epoch = resume.epoch
            if resume.early_stopping is not None:
                run.best, run.wait = resume.early_stopping["best"], resume.early_stopping["wait"]
            if run.best_params is not None and resume.best_params is not None:
                be.copy_(run.best_params, resume.best_params.astype(model.dtype, copy=False))
        history, self._run, self._resume = self.history, run, None

        bar_factory = _progress_bar if verbose == 1 else None
        with _StopAtStepBoundary() as interrupt:
            for epoch in range(run.epoch + 1, epochs + 1):
                t0 = time.perf_counter()
                loop.set_order(self._rng.permutation(n).astype(np.int64) if shuffle else None)
                be.copy_(start_of_epoch, model.params)
                bar = bar_factory(steps, f"epoch {epoch}/{epochs}") if bar_factory else None
                ran = loop.epoch(on_step=_step_callback(loop, bar, interrupt))
                totals = loop.totals()  # the epoch's one synchronisation
                if bar is not None:
                    bar.close()
                if math.isfinite(totals[STATS_FIRST_NONFINITE_STEP]):
                    be.copy_(model.params, start_of_epoch)
                    self.optimizer.reset()  # its moments hold NaN too
                    raise TrainingDivergedError(epoch, int(totals[STATS_FIRST_NONFINITE_STEP]) + 1, steps)
                if ran < steps:
                    raise KeyboardInterrupt(_interrupted(epoch, f"after step {ran} of {steps}", checkpoint))
                record = {"epoch": float(epoch), "loss": float(totals[STATS_LOSS_SUM]) / n,
                          "accuracy": float(totals[STATS_CORRECT]) / n,
                          "val_loss": math.nan, "val_accuracy": math.nan}
                if val is not None:
                    v = _evaluate_on_device(model, *val)
                    record["val_loss"], record["val_accuracy"] = v["loss"], v["accuracy"]
                record["seconds"] = time.perf_counter() - t0
                history.records.append(record)
                run.epoch = epoch
                if verbose:
                    _print_epoch(record, epochs, val is not None)
                history.stopped_early = self._early_stopping_says_stop(record)
                if history.stopped_early or epoch == epochs:
                    self._restore_best_weights()
                if checkpoint is not None:
                    self.save_checkpoint(checkpoint)
                if on_epoch_end is not None and on_epoch_end(history) is True:
                    break
                if interrupt.requested:
                    raise KeyboardInterrupt(_interrupted(epoch, "at its end", checkpoint))
                if history.stopped_early:
                    break
        return history

    def _resumed_settings(self, state: TrainingState, epochs: int, validation_data: Any, validation_split: Any,
                          early_stopping: EarlyStopping | None, shuffle: Any) -> tuple:
        """The validation split, early stopping and shuffling of a resumed run; an argument that differs is an error."""
        done = state.epoch
        if self.history.stopped_early:
            raise ValueError(f"the checkpoint's run stopped early (at epoch {done}, its best being epoch "
                             f"{self.history.best_epoch}): there is nothing to resume")
        if epochs <= done:
            raise ValueError(f"epochs: the checkpoint has {done} epochs done; expected more than {done}, got {epochs} "
                             "(epochs counts every epoch of the run, those done included)")
        had_data = state.validation["source"] == "data"
        if had_data != (validation_data is not None):
            raise ValueError("validation_data: the checkpoint's run was validated on validation_data; pass it again"
                             if had_data else "validation_data: the checkpoint's run had none, got a pair")
        stored_es = None
        if state.early_stopping is not None:
            stored_es = EarlyStopping(**{k: state.early_stopping[k] for k in EarlyStopping.__dataclass_fields__})
        settings = []
        for name, stored, given in (("validation_split", state.validation["fraction"], validation_split),
                                    ("early_stopping", stored_es, early_stopping),
                                    ("shuffle", state.shuffle, shuffle)):
            if given is not None and given != stored:
                raise ValueError(f"{name}: the checkpoint's run used {stored!r}, got {given!r}; leave it out "
                                 "to continue with the checkpoint's")
            settings.append(stored)
        return tuple(settings)

    def _early_stopping_says_stop(self, record: dict[str, float]) -> bool:
        """Track the best epoch (and its weights) of the run; whether early stopping ends it now."""
        run, es = self._run, self._run.early_stopping
        if es is None:
            return False
        value = record[es.monitor]
        if run.best is None or es.improved(value, run.best):
            run.best, run.wait, self.history.best_epoch = value, 0, run.epoch
            if run.best_params is not None:
                self.backend.copy_(run.best_params, self.model.params)
            return False
        run.wait += 1
        return run.wait >= es.patience

    def _restore_best_weights(self) -> None:
        """At the end of a run with ``restore_best``: the best epoch's weights, keeping the last for resuming."""
        run, best_epoch = self._run, self.history.best_epoch
        if run.best_params is not None and best_epoch is not None and best_epoch != run.epoch:
            run.train_params = np.array(self.backend.to_numpy(self.model.params), copy=True)
            self.backend.copy_(self.model.params, run.best_params)

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


def _as_early_stopping(early_stopping: Union[EarlyStopping, int, None]) -> EarlyStopping | None:
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        return EarlyStopping(patience=int(early_stopping))
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected an EarlyStopping, a patience (int) or None, "
                        f"got {describe(early_stopping)}")
    return early_stopping


@dataclass
class _Run:
    """What a fit has reached, beyond the model, optimizer, random state and history: a checkpoint stores it."""

    epoch: int  # epochs done
    shuffle: bool
    validation: dict  # source (None, "split" or "data"), fraction, n_samples (of the X given to fit)
    validation_order: np.ndarray | None  # the permutation that drew the validation split
    early_stopping: EarlyStopping | None
    best: float | None = None  # the monitored value of the best epoch so far
    wait: int = 0  # epochs since it
    best_params: Any = None  # the best epoch's weights, on the backend (restore_best)
    train_params: np.ndarray | None = None  # the last epoch's weights, once the best were restored


class _StopAtStepBoundary:
    """While active in the main thread, Ctrl-C (SIGINT) sets :attr:`requested` instead of raising at once.

    The step loop checks the flag between steps, so the weights are never
    left half-updated.  A second Ctrl-C raises ``KeyboardInterrupt`` straight
    away.  The previous handler comes back on exit.  In another thread, or
    where SIGINT is ignored or handled outside Python, nothing is installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopAtStepBoundary":
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None and previous is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, self._request)
                self._previous = previous
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _step_callback(loop: TrainingLoop, bar: Any, interrupt: _StopAtStepBoundary) -> Callable[[int], bool]:
    """The loop's ``on_step``: advance the progress bar, and end the epoch when Ctrl-C was pressed.

    Where the loss statistics live in host memory (a NumPy array), reading
    them costs nothing, and the bar shows the epoch's running loss; on a
    device it would cost a synchronisation per step, so the bar counts steps only.
    """
    stats, batch, n = loop.stats, loop.batch_size, loop.n_samples
    live_loss = bar is not None and isinstance(stats, np.ndarray)

    def on_step(done: int) -> bool:
        if bar is not None:
            if live_loss:
                bar.set_postfix_str(f"loss {stats[STATS_LOSS_SUM] / min(done * batch, n):.4f}", refresh=False)
            bar.update()
        return interrupt.requested

    return on_step


def _interrupted(epoch: int, where: str, checkpoint: Union[str, Path, None]) -> str:
    saved = f"; {checkpoint} holds the last complete epoch" if checkpoint is not None else ""
    return f"training interrupted in epoch {epoch} {where}; trainer.history holds the complete epochs{saved}"
