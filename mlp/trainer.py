"""Mini-batch training of an :class:`~mlp.model.MLP` on any backend: :class:`Trainer`.

The training step is written once, in :class:`mlp.loop.TrainingLoop`,
against the backend contract; ``Trainer.fit``, the benchmarks and the tests
all run it.
It allocates nothing and never waits for the device: the dataset is copied to
the backend once per ``fit``, batches are gathered there, the optimizer's
scalars are staged once per epoch, and the loss and accuracy are accumulated
on the device and read once per epoch.  On a real GPU the steps of an epoch
are captured once per fit into a CUDA graph and replayed with one call per
epoch (``Trainer(cuda_graphs=False)`` keeps the step-by-step launches).

The trainer runs the epochs; the modules beside it keep their records
(:mod:`mlp.history`), apply early stopping (:mod:`mlp.early_stopping`),
evaluate (:mod:`mlp.evaluation`), catch Ctrl-C (:mod:`mlp.interrupt`), show
progress (:mod:`mlp.progress`) and write checkpoints (:mod:`mlp.checkpoint`).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from . import sparse
from ._files import refuse_folder
from ._validation import check_features, check_int, check_real, describe
from .fit_cache import data_digests
from .backends import Backend, get_backend
from .backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM
from .checkpoint import (TrainingState, optimizer_from_record, optimizer_record, read_archive,
                         save_training_checkpoint)
from .early_stopping import MONITORS, BestEpoch, EarlyStopping, as_early_stopping
from .evaluation import _evaluate_on_device, evaluate, has_accuracy, r2_score
from .history import History
from .interrupt import StopAtStepBoundary, interrupted_message
from .loop import TrainingLoop
from .runner import EpochPlan, Policy, train
from .model import MLP, model_from_archive
from .optim import Optimizer
from .progress import print_epoch, progress_bar, step_callback

#: History, EarlyStopping and evaluate live in modules of their own and are importable from here too
__all__ = ["Trainer", "TrainingDivergedError", "History", "EarlyStopping", "evaluate"]


def validation_count(n_samples: int, fraction: float, name: str = "validation_split") -> int:
    """How many of ``n_samples`` a ``validation_split`` of ``fraction`` (in (0, 1)) holds out; a split that
    leaves no sample on either side is a ``ValueError`` naming ``name``."""
    n_val = int(round(n_samples * fraction))
    if n_val < 1 or n_val >= n_samples:
        raise ValueError(f"{name}: {fraction} of {n_samples} samples leaves {n_val} for validation and "
                         f"{n_samples - n_val} for training; both need at least one")
    return n_val


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
        trainer.history.output = model.output
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
                        **{k: last[k] for k in MONITORS if k in last and math.isfinite(last[k])}}
        optimizer, buffers = optimizer_record(self.optimizer)
        state = TrainingState(
            epoch=run.epoch, batch_size=self.batch_size, seed=self.seed, shuffle=run.shuffle, optimizer=optimizer,
            optimizer_buffers=buffers, random_state=self._rng.bit_generator.state, validation=run.validation,
            validation_order=run.validation_order, history=self.history.as_dict(),
            early_stopping=run.stopping.state(), best_params=None if run.runner is None else run.runner.best_host(0),
            train_params=run.stopping.train_params)
        return save_training_checkpoint(path, self.model, state, metadata)

    @property
    def uses_cuda_graphs(self) -> bool:
        """Whether ``fit`` replays captured epochs on this trainer's backend."""
        return self.cuda_graphs is not False and bool(self.backend.supports_graphs)

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
        self.loop = TrainingLoop.for_model(self.model, self.optimizer, self.backend, Xd, yd, self.batch_size,
                                           cuda_graphs=self.uses_cuda_graphs)
        return self.loop

    # ----------------------------------------------------------------- data
    def _check_xy(self, X: Any, y: Any, xname: str, yname: str) -> tuple[Any, np.ndarray]:
        """``(X, y)`` checked, on the host: X a NumPy array or, for a ``scipy.sparse`` X, a SciPy CSR matrix."""
        if sparse.is_sparse(X):  # stays sparse down to each batch (see mlp.sparse)
            Xh = sparse.check_host(X, self.model.n_features, self.model.dtype, xname)
        else:
            Xh = check_features(X, self.model.n_features, self.model.dtype, xname)
        yh = self.model.check_targets(y, Xh.shape[0], yname)
        return Xh, yh

    def _to_device(self, Xh: Any, yh: np.ndarray) -> tuple[Any, Any]:
        be = self.backend
        return sparse.to_backend(be, Xh, self.model.dtype), be.asarray(yh, dtype=yh.dtype)

    # ------------------------------------------------------------------ fit
    @_float_errors_reported_by_trainer
    def fit(self, X: Any, y: Any, epochs: int = 10, validation_data: tuple[Any, Any] | None = None,
            validation_split: float | None = None, early_stopping: Union[EarlyStopping, int, None] = None,
            shuffle: bool | None = None, verbose: int | None = None, checkpoint: Union[str, Path, None] = None,
            on_epoch_end: Callable[[History], Any] | None = None) -> History:
        """Train for ``epochs`` passes over ``(X, y)``; returns the :class:`History`.

        X: (N, n_features) real array.  y: what the model's output is trained
        on (:meth:`mlp.MLP.check_targets`): (N,) integer labels in
        [0, n_classes) for a softmax output; (N, n_outputs) real targets (or
        (N,) for one output) otherwise: 0/1 for a logistic output, any real
        value for an identity one, non-negative for an exp one.  The history's
        ``loss`` is the output's loss, its ``accuracy`` NaN for regression
        outputs and its ``r2`` NaN for classification ones (see :class:`History`).
        ``validation_data=(X_val, y_val)`` or ``validation_split`` (a fraction of
        ``(X, y)`` held out at random; default 0) are evaluated after every epoch.
        ``early_stopping`` is an :class:`EarlyStopping` or a patience (int);
        monitoring an accuracy needs a classification output.
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
        early_stopping = as_early_stopping(early_stopping)
        resume = self._resume
        if resume is not None:
            validation_split, early_stopping, shuffle = self._resumed_settings(
                resume, epochs, validation_data, validation_split, early_stopping, shuffle)
        validation_split = check_real(0.0 if validation_split is None else validation_split, "validation_split",
                                      minimum=0.0, maximum=1.0, max_inclusive=False)
        shuffle = True if shuffle is None else bool(shuffle)
        if checkpoint is not None:
            optimizer_record(self.optimizer)  # an optimizer a checkpoint cannot record fails now, not after an epoch
            refuse_folder(checkpoint, "checkpoint")  # nor a path no file can be written to

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
        # a run that writes checkpoints records what it trains on, so that resuming it on other data is refused
        digest = None
        if checkpoint is not None or (resume is not None and "data_digest" in resume.validation):
            digest = "/".join(str(d) for d in (*data_digests(Xh, yh, None)[:2], *data_digests(Xv, yv, None)[:2]))
        if resume is not None and resume.validation.get("data_digest", digest) != digest:
            raise ValueError("X, y: the checkpoint's run trained on other data (X, y and validation_data as the "
                             "model's dtype, compared by digest); a resumed run goes on with the data it started "
                             "with. To train the checkpoint's model on new data, start a new run: "
                             "mlp.Trainer(mlp.load(path), optimizer)")
        if validation_data is None and validation_split:
            n_val = validation_count(n_given, validation_split)
            # a resumed run holds out the samples it drew at its start
            order = self._rng.permutation(n_given) if resume is None else resume.validation_order
            Xv, yv = Xh[order[:n_val]], yh[order[:n_val]]
            Xh, yh = Xh[order[n_val:]], yh[order[n_val:]]
        if early_stopping is not None:
            early_stopping.check_usable(self.model, validated=Xv is not None)

        model = self.model
        # The data first: if it does not fit on the device, the model stays where it was.
        Xd, yd = self._to_device(Xh, yh)
        val = self._to_device(Xv, yv) if Xv is not None else None
        loop = self._make_loop(Xd, yd)
        source = "data" if validation_data is not None else ("split" if validation_split else None)
        stopping = BestEpoch(early_stopping, None if resume is None else resume.early_stopping)
        run = _Run(epoch=0 if resume is None else resume.epoch, shuffle=shuffle, validation_order=order,
                   validation={"source": source, "fraction": validation_split, "n_samples": n_given,
                               **({} if digest is None else {"data_digest": digest})},
                   stopping=stopping)
        if resume is None:
            self.history = History()
        self._run, self._resume = run, None
        self.history.output = model.output
        with StopAtStepBoundary() as interrupt:
            policy = _TrainerRun(self, loop, run, epochs, (Xh, yh), None if val is None else (*val, yv),
                                 verbose, checkpoint, on_epoch_end, interrupt,
                                 None if resume is None else resume.best_params)
            run.runner = train(loop, [policy])
        return self.history

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
        stored_es = None if state.early_stopping is None else EarlyStopping.from_state(state.early_stopping)
        settings = []
        for name, stored, given in (("validation_split", state.validation["fraction"], validation_split),
                                    ("early_stopping", stored_es, early_stopping),
                                    ("shuffle", state.shuffle, shuffle)):
            if given is not None and given != stored:
                raise ValueError(f"{name}: the checkpoint's run used {stored!r}, got {given!r}; leave it out "
                                 "to continue with the checkpoint's")
            settings.append(stored)
        return tuple(settings)

    # ------------------------------------------------------------- evaluate
    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """The model's mean loss, accuracy and R² on ``(X, y)`` on this trainer's backend (see
        :func:`mlp.evaluate`, which does the same without a trainer)."""
        return evaluate(self.model, X, y, backend=self.backend)


@dataclass
class _Run:
    """What a fit has reached, beyond the model, optimizer, random state and history: a checkpoint stores it."""

    epoch: int  # epochs done
    shuffle: bool
    validation: dict  # source (None, "split" or "data"), fraction, n_samples (of the X given to fit)
    validation_order: np.ndarray | None  # the permutation that drew the validation split
    stopping: BestEpoch  # early stopping's progress
    runner: Any = None  # the epoch runner, which keeps the best epoch's weights


class _TrainerRun(Policy):
    """``Trainer.fit``'s policy for its network: the trainer's shuffle, the history records (loss, accuracy
    or R², their validation figures), divergence, Ctrl-C at a step boundary, the progress bar, early
    stopping, checkpoints and the caller's ``on_epoch_end``."""

    def __init__(self, trainer: "Trainer", loop: TrainingLoop, run: _Run, epochs: int, train_data: tuple,
                 val: tuple | None, verbose: int, checkpoint: Any, on_epoch_end: Callable | None,
                 interrupt: StopAtStepBoundary, best_params: np.ndarray | None) -> None:
        self.trainer, self.loop, self.run, self.epochs = trainer, loop, run, epochs
        self.model, self.be, self.history = trainer.model, trainer.backend, trainer.history
        self.Xd, self.yd = loop.X, loop.targets
        self.yh = train_data[1]
        self.val = val
        self.verbose, self.checkpoint, self.on_epoch_end, self.interrupt = verbose, checkpoint, on_epoch_end, interrupt
        self.initial_best = best_params if run.stopping.keeps_weights else None
        self.accuracy = has_accuracy(self.model)
        n = loop.n_samples
        # a regression output records R²: of the model at the end of each epoch, on the training rows (one more
        # forward pass over them) and the validation rows, the predictions copied here
        self.outputs = None if self.accuracy else np.empty((n, self.model.n_outputs), self.model.dtype)
        self.val_outputs = None if self.accuracy or val is None else \
            np.empty((val[0].shape[0], self.model.n_outputs), self.model.dtype)
        self.start_of_epoch = self.be.empty(self.model.n_params, self.model.dtype)
        self.epoch = run.epoch
        self.done = run.epoch >= epochs
        self.bar = None
        self.restored = False
        if verbose == 1 or interrupt is not None:
            self.on_step = self._on_step

    def attach(self, runner, index: int) -> None:
        super().attach(runner, index)
        self.run.runner = runner  # checkpoints read the kept best weights from it

    def begin_epoch(self) -> None:
        self.epoch += 1
        self.t0 = time.perf_counter()
        self.be.copy_(self.start_of_epoch, self.model.params)
        loop = self.loop
        self.bar = progress_bar(loop.steps, f"epoch {self.epoch}/{self.epochs}") if self.verbose == 1 else None
        self._step_callback = step_callback(loop, self.bar, self.interrupt)

    def plan_epoch(self) -> EpochPlan:
        n = self.loop.n_samples
        order = self.trainer._rng.permutation(n).astype(np.int64) if self.run.shuffle else np.arange(n)
        return EpochPlan(order)

    def _on_step(self, done: int) -> bool:
        return self._step_callback(done)

    def end_epoch(self, totals: np.ndarray, steps_ran: int, val_logits: Any) -> bool:
        loop, model, be, epoch, steps = self.loop, self.model, self.be, self.epoch, self.loop.steps
        if self.bar is not None:
            self.bar.close()
        if math.isfinite(totals[STATS_FIRST_NONFINITE_STEP]):
            be.copy_(model.params, self.start_of_epoch)
            self.trainer.optimizer.reset()  # its moments hold NaN too
            raise TrainingDivergedError(epoch, int(totals[STATS_FIRST_NONFINITE_STEP]) + 1, steps)
        if steps_ran < steps:
            raise KeyboardInterrupt(interrupted_message(epoch, f"after step {steps_ran} of {steps}", self.checkpoint))
        n = loop.n_samples
        record = {"epoch": float(epoch), "loss": float(totals[STATS_LOSS_SUM]) / n,
                  "accuracy": float(totals[STATS_CORRECT]) / n if self.accuracy else math.nan,
                  "val_loss": math.nan, "val_accuracy": math.nan, "r2": math.nan, "val_r2": math.nan}
        if self.outputs is not None:
            _evaluate_on_device(model, self.Xd, self.yd, self.outputs)
            record["r2"] = r2_score(self.yh, self.outputs)
        if self.val is not None:
            Xv, yv, yv_host = self.val
            v = _evaluate_on_device(model, Xv, yv, self.val_outputs)
            record["val_loss"], record["val_accuracy"] = v["loss"], v["accuracy"]
            if self.val_outputs is not None:
                record["val_r2"] = r2_score(yv_host, self.val_outputs)
        record["seconds"] = time.perf_counter() - self.t0
        history = self.history
        history.records.append(record)
        self.run.epoch = epoch
        if self.verbose:
            print_epoch(record, self.epochs, self.val is not None, self.accuracy)
        history.stopped_early, best = self.run.stopping.says_stop(record, epoch, history)
        if history.stopped_early or epoch == self.epochs:
            self.done = True  # the rest happens once the final weights are in place (finished)
        else:
            self._after_epoch()
        return best and self.run.stopping.keeps_weights

    def _after_epoch(self) -> None:
        """The end of an epoch, its weights final: the checkpoint, the caller's hook, Ctrl-C."""
        if self.checkpoint is not None:
            self.trainer.save_checkpoint(self.checkpoint)
        if self.on_epoch_end is not None and self.on_epoch_end(self.history) is True:
            self.done = True
        if self.interrupt.requested:
            raise KeyboardInterrupt(interrupted_message(self.epoch, "at its end", self.checkpoint))

    def final_weights(self):
        stopped = self.history.stopped_early or self.epoch == self.epochs
        return "best" if stopped and self.run.stopping.restores(self.epoch, self.history) else "last"

    def finished(self, replaced: np.ndarray | None) -> None:
        if replaced is not None:
            self.run.stopping.train_params = replaced
        if self.history.stopped_early or self.epoch == self.epochs:
            self._after_epoch()
