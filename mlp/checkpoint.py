"""Checkpoint files: what the header and the arrays of one (``mlp._archive``: a ``.npz`` holding a JSON
header and plain arrays, written atomically) mean, and their checks.

A checkpoint never holds pickled objects (it is read with
``allow_pickle=False``), so loading one cannot run code.  Nor does it decide
anything outside itself: no field of it names a file to write.  Reading one
checks its header against the arrays it holds before anything of the size the
header claims is allocated (:func:`read_archive`, :func:`read_model_record`,
:meth:`TrainingState.from_archive`); a malformed field is a ``ValueError``
naming the file and the field.

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
    (``source``: null, "split" or "data"; ``fraction``; ``n_samples``; ``data_digest``, digests of the
    data the run trains and validates on, refused when a resumed run is given other data; older files
    lack it),
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

import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._validation import FLOAT_DTYPE_NAMES, _finite, check_int, check_layer_sizes, check_real, describe
# the container (importable from here, as before)
from ._archive import CHECKPOINT_FORMAT, READABLE_FORMATS, PathLike, _show, read_archive, write_archive  # noqa: F401
from ._files import atomic_write_bytes  # noqa: F401  (importable from here, as before)
from .early_stopping import EarlyStopping
from .backends.names import ACTIVATIONS, OUTPUTS
from .optim import OPTIMIZERS, Optimizer, make_optimizer


_OPTIMIZER_PREFIX = "optimizer."


@contextmanager
def _checking(path: PathLike):
    """Report a malformed field, raised as ``TypeError`` or ``ValueError`` naming it by the checks inside, as
    one ``ValueError`` that also names the file."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise ValueError(f"path: {str(path)!r} is not a valid mlp checkpoint: {exc}") from None


def _field(header: dict, key: str, prefix: str = "") -> Any:
    if key not in header:
        raise ValueError(f"{prefix}{key}: missing")
    return header[key]


def _object(value: Any, field: str, keys: Sequence[str] = ()) -> dict:
    """``value`` if it is a JSON object holding ``keys``."""
    if not isinstance(value, dict):
        raise ValueError(f"{field}: expected an object, got {_show(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{field}: lacks {', '.join(missing)}")
    return value


def _choice(value: Any, field: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{field}: expected one of {tuple(choices)}, got {_show(value)}")
    return value


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field}: expected true or false, got {_show(value)}")
    return value


def _number(value: Any, field: str) -> float:
    """A JSON number (NaN included: a figure not recorded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field}: expected a number, got {_show(value)}")
    return float(value)


def _flat(array: np.ndarray, name: str, n: int, dtype: np.dtype, why: str = "", moments: bool = False) -> np.ndarray:
    """``array`` as ``n`` finite values of ``dtype``, checked before anything of that size is allocated.  With
    ``moments`` (a running average of squared gradients: Adam's ``exp_avg_sq``, RMSprop's ``square_avg``) values
    >= 0, +inf included: a float32 gradient whose square overflowed leaves +inf, a state the run goes on from."""
    if array.ndim != 1 or array.shape[0] != n or array.dtype.kind != "f":
        raise ValueError(f"{name}: expected shape ({n},) of floating values{why}, got {describe(array)}")
    if not moments:
        return _finite(array, dtype, name, "values")
    array = np.ascontiguousarray(array, dtype=dtype)
    bad = np.count_nonzero(~(array >= 0))  # NaN compares False
    if bad:
        raise ValueError(f"{name}: expected values >= 0 (+inf included), got {bad} NaN or negative entries")
    return array


@dataclass(frozen=True)
class ModelRecord:
    """The network a checkpoint's header describes, checked against its ``params`` array (nothing allocated)."""

    layer_sizes: tuple[int, ...]
    dtype: np.dtype
    seed: int
    activation: str
    output: str
    metadata: dict
    params: np.ndarray  # (n_params,) finite, in ``dtype``

    @property
    def n_params(self) -> int:
        return int(self.params.shape[0])


def read_model_record(header: dict, arrays: dict[str, np.ndarray], path: PathLike) -> ModelRecord:
    """The network of a checkpoint read by :func:`read_archive`: its header fields checked, and its layer
    sizes against the parameters stored, before a network of that size exists anywhere.

    Files without ``activation`` and ``output`` hold a ReLU network with a softmax output; without ``seed``,
    seed 0.  A malformed field is a ``ValueError`` naming the file and the field.
    """

    with _checking(path):
        output = _choice(header.get("output", "softmax"), "output", tuple(OUTPUTS))
        activation = _choice(header.get("activation", "relu"), "activation", ACTIVATIONS)
        sizes = check_layer_sizes(_field(header, "layer_sizes"), min_outputs=2 if output == "softmax" else 1)
        dtype = np.dtype(_choice(_field(header, "dtype"), "dtype", FLOAT_DTYPE_NAMES))
        seed = check_int(header.get("seed", 0), "seed", minimum=0)
        metadata = _object(header.get("metadata", {}), "metadata")
        n_params = sum(k * m + m for k, m in zip(sizes[:-1], sizes[1:]))
        params = _flat(arrays["params"], "params", n_params, dtype, f" for layer_sizes {list(sizes)}")
    return ModelRecord(sizes, dtype, seed, activation, output, metadata, params)


def save_model(path: PathLike, model: Any, metadata: dict | None = None) -> Path:
    """Write ``model``'s architecture and weights to ``path``, atomically; returns the path.

    ``metadata`` (JSON-serialisable; default: the model's own) is stored with
    them.  :func:`mlp.load` reads the file back; a run cannot resume from it.
    """
    header, arrays = _model_archive(model, metadata)
    return write_archive(path, header, arrays)


def save_training_checkpoint(path: PathLike, model: Any, state: "TrainingState",
                             metadata: dict | None = None) -> Path:
    """Write ``model`` and the ``state`` of its training run to ``path``, atomically; returns the path.

    The file is a model file (:func:`mlp.load` reads it) that also holds the
    state :meth:`mlp.Trainer.from_checkpoint` continues the run from.
    """
    header, arrays = _model_archive(model, metadata)
    header["training"], training_arrays = state.to_archive()
    return write_archive(path, header, {**arrays, **training_arrays})


def _model_archive(model: Any, metadata: dict | None) -> tuple[dict, dict[str, np.ndarray]]:
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
        """Read the state back, every field checked (against the stored parameters' size too) before anything
        is allocated.  A checkpoint without one (weights only) is a clear error saying what is missing; a
        malformed field is a ``ValueError`` naming the file and the field."""
        training = header.get("training")
        if training is None:
            raise ValueError(
                f"cannot resume from {str(path)!r}: it holds weights only (checkpoint format "
                f"{header.get('format')}), without the optimizer state, the epoch reached and the random state "
                "of the shuffling that resuming needs. It still loads for prediction (mlp.load); to train "
                "further, start a new run (Trainer.fit with checkpoint=..., or mlp train -o).")
        missing = [k for k in ("epoch", "batch_size", "seed", "shuffle", "optimizer", "random_state", "validation",
                               "history") if isinstance(training, dict) and k not in training]
        if missing:
            raise ValueError(f"cannot resume from {str(path)!r}: its training state lacks {', '.join(missing)}")
        model = read_model_record(header, arrays, path)
        with _checking(path):
            training = _object(training, "training")
            return cls(**_training_fields(training, arrays, model))


#: the figures every record of a run's history holds (``r2`` and ``val_r2``, recorded since, read as NaN
#: when absent)
RECORD_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def _training_fields(training: dict, arrays: dict[str, np.ndarray], model: ModelRecord) -> dict:
    """The :class:`TrainingState` fields of a checkpoint's ``training`` header entry and arrays, each checked."""
    epoch = check_int(training["epoch"], "training.epoch", minimum=0)
    optimizer, buffers = _optimizer_fields(training["optimizer"], arrays, model)
    validation, order = _validation_fields(training["validation"], arrays)
    early_stopping, best_params = _early_stopping_fields(training.get("early_stopping"), arrays, model)
    train_params = arrays.get("train_params")
    return {
        "epoch": epoch,
        "batch_size": check_int(training["batch_size"], "training.batch_size", minimum=1),
        "seed": check_int(training["seed"], "training.seed", minimum=0),
        "shuffle": _boolean(training["shuffle"], "training.shuffle"),
        "optimizer": optimizer, "optimizer_buffers": buffers,
        "random_state": _random_state(training["random_state"]),
        "validation": validation, "validation_order": order,
        "history": _history_fields(training["history"], epoch),
        "early_stopping": early_stopping, "best_params": best_params,
        "train_params": None if train_params is None else _flat(train_params, "train_params", model.n_params,
                                                                 model.dtype),
    }


def _optimizer_fields(record: Any, arrays: dict[str, np.ndarray], model: ModelRecord) -> tuple[dict, dict]:
    record = _object(record, "training.optimizer", ("name", "config", "steps"))
    name = _choice(record["name"], "training.optimizer.name", tuple(OPTIMIZERS))
    config = _object(record["config"], "training.optimizer.config")
    steps = check_int(record["steps"], "training.optimizer.steps", minimum=0)
    try:
        optimizer = make_optimizer(name, **config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training.optimizer.config: not the settings of {name} ({exc})") from None
    buffers = {}
    for key, array in arrays.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            buffer = key[len(_OPTIMIZER_PREFIX):]
            if buffer not in optimizer._state_names:
                raise ValueError(f"{key}: expected the buffers of {name} ({', '.join(optimizer._state_names)}), "
                               f"got {buffer!r}")
            buffers[buffer] = _flat(array, key, model.n_params, model.dtype,
                                    moments=buffer in optimizer._second_moments)
    if steps:
        missing = [b for b in optimizer._state_names if optimizer._needs(b) and b not in buffers]
        if missing:
            raise ValueError(f"{_OPTIMIZER_PREFIX}{missing[0]}: missing; {name} keeps it after its {steps} steps")
    return {"name": name, "config": config, "steps": steps}, buffers


def _random_state(state: Any) -> dict:
    """The shuffling generator's ``bit_generator.state``, checked by setting it on a generator of that kind."""
    probe = np.random.default_rng(0).bit_generator
    try:
        probe.state = state
    except Exception as exc:  # the setter raises TypeError, ValueError or KeyError by what is wrong
        raise ValueError(f"training.random_state: expected the state of a {type(probe).__name__} bit generator, got "
                       f"{_show(state)} ({exc.__class__.__name__}: {exc})") from None
    return state


def _validation_fields(validation: Any, arrays: dict[str, np.ndarray]) -> tuple[dict, np.ndarray | None]:
    field = "training.validation"
    validation = _object(validation, field, ("source", "fraction", "n_samples"))
    source = validation["source"]
    if source is not None:
        source = _choice(source, f"{field}.source", ("split", "data"))
    fraction = check_real(validation["fraction"], f"{field}.fraction", minimum=0.0, maximum=1.0,
                          max_inclusive=False)
    n = check_int(validation["n_samples"], f"{field}.n_samples", minimum=1)
    checked = {"source": source, "fraction": fraction, "n_samples": n}
    if "data_digest" in validation:  # written since the digest was recorded; older files resume without the check
        digest = validation["data_digest"]
        if not isinstance(digest, str) or not digest or len(digest) > 256:
            raise ValueError(f"{field}.data_digest: expected a digest string, got {_show(digest)}")
        checked["data_digest"] = digest
    if source != "split":
        if fraction:
            raise ValueError(f"{field}.fraction: expected 0 (the run's validation source is {source!r}), "
                             f"got {fraction}")
        return checked, None
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise ValueError(f"{field}.fraction: {fraction} of {n} samples leaves {n_val} for validation and "
                       f"{n - n_val} for training; expected at least one each")
    order = arrays.get("validation_order")
    if order is None:
        raise ValueError("validation_order: missing; a run validated on a split stores the permutation that drew it")
    if order.ndim != 1 or order.shape[0] != n or order.dtype.kind not in "iu":
        raise ValueError(f"validation_order: expected shape ({n},) of integers ({field}.n_samples), "
                       f"got {describe(order)}")
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"validation_order: expected a permutation of 0..{n - 1}, got repeated or missing samples")
    return checked, order.astype(np.int64, copy=False)


def _history_fields(history: Any, epoch: int) -> dict:
    field = "training.history"
    history = _object(history, field, ("records", "best_epoch", "stopped_early"))
    records = history["records"]
    if not isinstance(records, list):
        raise ValueError(f"{field}.records: expected a list, got {_show(records)}")
    if len(records) != epoch:
        raise ValueError(f"training.epoch: expected {len(records)}, the epochs recorded in {field}.records, "
                         f"got {epoch}")
    for i, record in enumerate(records):
        where = f"{field}.records[{i}]"
        for key, value in _object(record, where, RECORD_KEYS).items():
            _number(value, f"{where}.{key}")
        if record["epoch"] != i + 1:
            raise ValueError(f"{where}.epoch: expected {i + 1}, got {_show(record['epoch'])}")
    best = history["best_epoch"]
    if best is not None and check_int(best, f"{field}.best_epoch", minimum=1) > epoch:
        raise ValueError(f"{field}.best_epoch: expected an epoch done (1..{epoch}), got {best}")
    return {"records": records, "best_epoch": best,
            "stopped_early": _boolean(history["stopped_early"], f"{field}.stopped_early")}


def _early_stopping_fields(state: Any, arrays: dict[str, np.ndarray],
                           model: ModelRecord) -> tuple[dict | None, np.ndarray | None]:

    best_params = arrays.get("best_params")
    if best_params is not None:
        best_params = _flat(best_params, "best_params", model.n_params, model.dtype)
    if state is None:
        return None, best_params
    field = "training.early_stopping"
    state = _object(state, field, ("patience", "min_delta", "monitor", "restore_best", "best", "wait"))
    restore_best = _boolean(state["restore_best"], f"{field}.restore_best")
    try:
        EarlyStopping(patience=state["patience"], min_delta=state["min_delta"], monitor=state["monitor"],
                      restore_best=restore_best)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: {exc}") from None
    if state["best"] is not None:
        check_real(state["best"], f"{field}.best")
    check_int(state["wait"], f"{field}.wait", minimum=0)
    if restore_best and best_params is None:
        raise ValueError(f"best_params: missing; a run whose early stopping restores the best weights "
                       f"({field}.restore_best) stores them")
    return state, best_params


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
