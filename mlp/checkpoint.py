"""Checkpoint files: one ``.npz`` holding a JSON header and plain arrays, written atomically.

A checkpoint never holds pickled objects (it is read with
``allow_pickle=False``), so loading one cannot run code.

Format 2 (this version) stores the model (``header`` and ``params``) and,
when written by a :class:`~mlp.trainer.Trainer`, the state needed to continue
the run exactly where it stopped (:class:`TrainingState`):

``header`` (uint8, UTF-8 JSON)
    ``format``, ``library`` ("mlp"), ``version``, ``layer_sizes``, ``dtype``,
    ``seed``, ``activation`` and ``output`` (files without them hold a ReLU
    network with a softmax output), ``metadata`` and, for a training
    checkpoint, ``training``:
    ``epoch`` (epochs completed), ``batch_size``, ``seed``, ``shuffle``,
    ``optimizer`` (``name``, ``config``, ``steps``), ``random_state`` (the
    shuffling generator's ``bit_generator.state``), ``validation``
    (``source``: null, "split" or "data"; ``fraction``; ``n_samples``),
    ``history`` (``records``, ``best_epoch``, ``stopped_early``) and
    ``early_stopping`` (its settings with ``best`` and ``wait``, or null).
``params``
    The flat parameter buffer: the weights :func:`mlp.load` returns.
``train_params`` (optional)
    The weights training continues from, when they differ from ``params``
    (after early stopping restored the best epoch's weights).
``best_params`` (optional)
    The best epoch's weights, kept for ``EarlyStopping(restore_best=True)``.
``validation_order`` (optional)
    The permutation of the samples that drew the validation split: the
    first ``n_val`` are held out.
``optimizer.<buffer>``
    The optimizer's state buffers (momentum, moment estimates), flat.

Format 1 (mlp 0.1) holds ``header`` and ``params`` only: it
loads for prediction, but a run cannot resume from it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from ._version import __version__
from .optim import OPTIMIZERS, Optimizer, make_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from .model import MLP

PathLike = Union[str, "os.PathLike[str]"]

#: format written by this version; formats 1 (weights only) and 2 are read
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)

_OPTIMIZER_PREFIX = "optimizer."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (durable and atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_archive(path: PathLike, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``header`` (JSON) and ``arrays`` to one ``.npz`` at ``path``, atomically; returns the path.

    ``path`` is used as given (``np.savez`` would append ``.npz`` to other names).
    """
    path = Path(path)
    header = {"format": CHECKPOINT_FORMAT, "library": "mlp", "version": __version__, **header}
    try:
        header_bytes = json.dumps(header).encode()
    except TypeError as exc:
        raise TypeError(f"metadata: expected JSON-serialisable values ({exc})") from None
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(header_bytes, dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_archive(path: PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON header and the arrays of a checkpoint; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            arrays = {k: np.array(data[k]) for k in data.files if k != "header"}
        if not isinstance(header, dict) or "params" not in arrays:
            raise ValueError("no 'params' array or no JSON object in 'header'")
    except Exception as exc:
        raise ValueError(f"path: {str(path)!r} is not a readable mlp checkpoint ({exc.__class__.__name__}: {exc})") \
            from None
    if header.get("library") != "mlp" or header.get("format") not in READABLE_FORMATS:
        raise ValueError(f"path: {str(path)!r} is not an mlp checkpoint of format "
                         f"{' or '.join(map(str, READABLE_FORMATS))} "
                         f"(found library={header.get('library')!r}, format={header.get('format')!r})")
    return header, arrays


def save_model(path: PathLike, model: "MLP", metadata: dict | None = None) -> Path:
    """Write ``model``'s architecture and weights to ``path``, atomically; returns the path.

    ``metadata`` (JSON-serialisable; default: the model's own) is stored with
    them.  :func:`mlp.load` reads the file back; a run cannot resume from it.
    """
    header, arrays = _model_archive(model, metadata)
    return write_archive(path, header, arrays)


def save_training_checkpoint(path: PathLike, model: "MLP", state: "TrainingState",
                             metadata: dict | None = None) -> Path:
    """Write ``model`` and the ``state`` of its training run to ``path``, atomically; returns the path.

    The file is a model file (:func:`mlp.load` reads it) that also holds the
    state :meth:`mlp.Trainer.from_checkpoint` continues the run from.
    """
    header, arrays = _model_archive(model, metadata)
    header["training"], training_arrays = state.to_archive()
    return write_archive(path, header, {**arrays, **training_arrays})


def _model_archive(model: "MLP", metadata: dict | None) -> tuple[dict, dict[str, np.ndarray]]:
    """The header entries and the ``params`` array that describe ``model`` (read back by
    :func:`mlp.model.model_from_archive`)."""
    header = {"layer_sizes": list(model.layer_sizes), "dtype": model.dtype.name, "seed": model.seed,
              "activation": model.activation, "output": model.output,
              "metadata": (model.metadata if metadata is None else metadata) or {}}
    return header, {"params": np.asarray(model.backend.to_numpy(model.params))}


@dataclass
class TrainingState:
    """Everything a :class:`~mlp.trainer.Trainer` needs, beyond the weights, to continue a run exactly.

    ``epoch`` is the number of epochs completed.  ``optimizer`` holds the
    optimizer's ``name``, ``config`` (``get_config()``) and ``steps``;
    ``optimizer_buffers`` its state buffers (host arrays).  ``random_state``
    is the shuffling generator's ``bit_generator.state``.  ``validation``:
    ``source`` (None, ``"split"`` or ``"data"``), ``fraction`` and
    ``n_samples`` (the size of the data ``fit`` was given).  ``history``:
    ``records``, ``best_epoch`` and ``stopped_early``.  ``early_stopping``:
    the :class:`~mlp.trainer.EarlyStopping` settings with its running
    ``best`` and ``wait``, or None.
    """

    epoch: int
    batch_size: int
    seed: int
    shuffle: bool
    optimizer: dict
    random_state: dict
    validation: dict
    history: dict
    early_stopping: dict | None = None
    optimizer_buffers: dict[str, np.ndarray] = field(default_factory=dict)
    validation_order: np.ndarray | None = None
    best_params: np.ndarray | None = None
    train_params: np.ndarray | None = None

    _ARRAYS = ("validation_order", "best_params", "train_params")

    def to_archive(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The ``training`` header entry and the arrays to store beside it."""
        header = {k: getattr(self, k) for k in ("epoch", "batch_size", "seed", "shuffle", "optimizer",
                                                "random_state", "validation", "history", "early_stopping")}
        arrays = {name: getattr(self, name) for name in self._ARRAYS if getattr(self, name) is not None}
        arrays.update({_OPTIMIZER_PREFIX + k: v for k, v in self.optimizer_buffers.items()})
        return header, arrays

    @classmethod
    def from_archive(cls, header: dict, arrays: dict[str, np.ndarray], path: PathLike) -> "TrainingState":
        """Read the state back; a checkpoint without one (weights only) is a clear error saying what is missing."""
        training = header.get("training")
        if not isinstance(training, dict):
            raise ValueError(
                f"cannot resume from {str(path)!r}: it holds weights only (checkpoint format "
                f"{header.get('format')}), without the optimizer state, the epoch reached and the random state "
                "of the shuffling that resuming needs. It still loads for prediction (mlp.load); to train "
                "further, start a new run (Trainer.fit with checkpoint=..., or mlp train -o).")
        missing = [k for k in ("epoch", "batch_size", "seed", "shuffle", "optimizer", "random_state", "validation",
                               "history") if k not in training]
        if missing:
            raise ValueError(f"cannot resume from {str(path)!r}: its training state lacks {', '.join(missing)}")
        fields = {k: training[k] for k in training if k in cls.__dataclass_fields__ and k not in cls._ARRAYS}
        fields.update({k: arrays[k] for k in cls._ARRAYS if k in arrays})
        fields["optimizer_buffers"] = {k[len(_OPTIMIZER_PREFIX):]: v for k, v in arrays.items()
                                       if k.startswith(_OPTIMIZER_PREFIX)}
        return cls(**fields)


def optimizer_record(optimizer: Optimizer) -> tuple[dict, dict[str, np.ndarray]]:
    """The optimizer's kind, settings and step count (JSON) and its state buffers (host arrays)."""
    name = {cls: name for name, cls in OPTIMIZERS.items()}.get(type(optimizer))
    if name is None:
        raise TypeError(f"optimizer: a checkpoint can record the optimizers {tuple(OPTIMIZERS)}, "
                        f"got {type(optimizer).__name__}")
    state = optimizer.state_dict()
    return {"name": name, "config": optimizer.get_config(), "steps": state["steps"]}, state["state"]


def optimizer_from_record(record: dict, buffers: dict[str, np.ndarray]) -> Optimizer:
    """The optimizer :func:`optimizer_record` describes, with its state loaded."""
    optimizer = make_optimizer(record["name"], **record["config"])
    optimizer.load_state_dict({"steps": record["steps"], "state": buffers})
    return optimizer
