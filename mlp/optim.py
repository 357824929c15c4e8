"""Optimizers over the model's flat parameter buffer.

Each follows the update rule ``torch.optim`` documents for the optimizer of
the same name, in the same order of operations, so that from the same weights
and batches the parameters agree with PyTorch to float rounding.  One
difference is deliberate: weight decay applies to weights only, never to
biases (the classic L2 formulation); in PyTorch terms, the biases sit in a
parameter group with ``weight_decay=0``.

An optimizer keeps its state (momentum buffers, moment estimates) on the
backend of the parameters it updates; the state is created on the first
:meth:`Optimizer.step` and re-created if the model moves to another backend.

The floating-point scalars of each step (learning rate, Adam's bias
corrections, ...) are computed here, once, on the host, and handed to the
backend as rows of a small table on the device (:meth:`Optimizer.stage`):
the trainer stages a whole epoch's rows with one copy, and a captured epoch
(a CUDA graph) reads them from device memory, so a changed learning rate
takes effect without recapturing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validation import check_int, check_real, describe
from .backends import Backend
from .kernels.scalars import COLUMNS, adam_scalars, rmsprop_scalars, sgd_scalars


class Optimizer:
    """Base class: hyperparameters, a step counter and lazily created state buffers."""

    #: names of the state buffers, in the order the backend operation takes them
    _state_names: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = check_real(lr, "lr", minimum=0.0, min_inclusive=False)
        self.weight_decay = check_real(weight_decay, "weight_decay", minimum=0.0)
        self.steps = 0
        self._state: dict[str, Any] = {}
        self._state_key: tuple | None = None
        self._backend: Backend | None = None
        self._loaded: dict[str, np.ndarray] | None = None
        self._table: Any = None  # staged scalars, one row per step (see stage)
        self._table_key: tuple | None = None

    def _needs(self, name: str) -> bool:
        return True

    def _ensure_state(self, backend: Backend, params: Any) -> None:
        key = (id(backend), int(params.shape[0]), np.dtype(params.dtype))
        if key == self._state_key:
            return
        # Carry the history over when the parameters move to another backend,
        # or take the state given to load_state_dict.
        host = self._loaded if self._loaded is not None else self.state_numpy()
        self._loaded = None
        n = int(params.shape[0])
        state = {}
        for name in self._state_names:
            if self._needs(name):
                buf = backend.zeros(n, params.dtype)
                if name in host:
                    if host[name].shape != (n,):
                        raise ValueError(f"state[{name!r}]: expected shape ({n},) to match the parameters, "
                                         f"got {host[name].shape}")
                    backend.copy_(buf, host[name].astype(params.dtype))
                state[name] = buf
        self._state, self._state_key, self._backend = state, key, backend

    def step(self, backend: Backend, params: Any, grads: Any, n_decay: int) -> None:
        """Apply one update to ``params`` (flat) from ``grads``; decay applies to ``params[:n_decay]``."""
        backend._check_flat(params, grads=grads)
        self.prepare(backend, params)
        table = self.stage(backend, params.dtype, 1)
        self.launch(backend, params, grads, n_decay, table, 0)
        self.advance(1)

    def prepare(self, backend: Backend, params: Any) -> None:
        """Create (or move) the state buffers for ``params`` on ``backend``; a no-op when they exist."""
        self._ensure_state(backend, params)

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        """The scalars row of update number ``step`` (from 1), in the backend's column order.

        ``weight_decay`` replaces :attr:`weight_decay` for this row (see :meth:`stage`).
        """
        raise NotImplementedError

    def _decay(self, weight_decay: float | None) -> float:
        return self.weight_decay if weight_decay is None else weight_decay

    def stage(self, backend: Backend, dtype: Any, count: int, weight_decay: Any = None) -> Any:
        """Write the scalars of the next ``count`` updates into the device table; returns the table.

        Row ``i`` belongs to update ``steps + 1 + i``.  ``weight_decay``, when
        given, is a sequence of ``count`` decays, one per update, replacing
        :attr:`weight_decay` (scikit-learn's L2 term is ``alpha`` over each
        batch's sample count, so it changes with the last, shorter batch).
        The table is one buffer, kept while ``count`` fits (a captured launch
        points at it), grown otherwise.
        """
        dt = np.dtype(dtype)
        rows = self.scalar_rows(count, weight_decay)
        key = (id(backend), dt)
        if self._table is None or self._table_key != key or self._table.shape[0] < count:
            self._table = backend.empty((count, rows.shape[1]), dt)
            self._table_key = key
        host = np.zeros(self._table.shape, dtype=dt)
        host[:count] = rows  # float64 -> the parameter dtype, as the update computes in it
        backend.copy_(self._table, host)
        return self._table

    def scalar_rows(self, count: int, weight_decay: Any = None) -> np.ndarray:
        """The scalars of the next ``count`` updates as a host float64 table (see :meth:`stage`)."""
        decays = [None] * count if weight_decay is None else [float(d) for d in weight_decay]
        if len(decays) != count:
            raise ValueError(f"weight_decay: expected {count} values (one per update), got {len(decays)}")
        rows = np.array([self.scalars(self.steps + 1 + i, decays[i]) for i in range(count)], dtype=np.float64)
        self._staged(count)
        return rows

    def _staged(self, count: int) -> None:
        """Called once a table of ``count`` rows is computed (rules that remember what they staged use it)."""

    @property
    def learning_rate(self) -> float:
        """The current learning rate (scikit-learn's name for it on its optimizers)."""
        return self.lr

    def launch(self, backend: Backend, params: Any, grads: Any, n_decay: int, table: Any, row: int) -> None:
        """One update with the scalars of ``table[row]``; changes no counter (see :meth:`advance`).

        The trainer's fast path: ``params``, ``grads`` and the state were
        validated and allocated by :meth:`prepare`, so nothing is checked.
        """
        raise NotImplementedError

    def advance(self, count: int) -> None:
        """Count ``count`` updates as done (after launching them)."""
        self.steps += count

    def reset(self) -> None:
        """Forget the state and the step count (as a freshly constructed optimizer)."""
        self.steps = 0
        self._state = {}
        self._state_key = None
        self._loaded = None

    def graph_buffers(self) -> tuple:
        """The device buffers a captured update points at: the state buffers and the scalars table."""
        return (*(self._state[name] for name in sorted(self._state)), self._table)

    def launch_flags(self) -> tuple:
        """Settings a launch takes as arguments rather than from the table (a change needs a new capture)."""
        return ()

    def structure(self) -> tuple:
        """What a captured update bakes in besides the table's contents: the code path and its buffers.

        Buffers are compared by identity; whoever keeps a capture also keeps
        :meth:`graph_buffers` alive, so an identity is never reused meanwhile.
        """
        return (type(self).__name__, tuple(sorted(self._state)), self.launch_flags(),
                tuple(id(b) for b in self.graph_buffers()))

    def state_numpy(self) -> dict[str, np.ndarray]:
        """Host copies of the state buffers (empty before the first step)."""
        if self._loaded is not None:
            return {k: v.copy() for k, v in self._loaded.items()}
        return {k: np.array(self._backend.to_numpy(v), copy=True) for k, v in self._state.items()}

    def state_dict(self) -> dict[str, Any]:
        """The step count and host copies of the state buffers, for :meth:`load_state_dict` or pickling."""
        return {"steps": self.steps, "state": self.state_numpy()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the buffers move to the parameters' backend at the next step."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"steps", "state"}:
            raise ValueError(f"state_dict: expected a dict with keys 'steps' and 'state', got {describe(state_dict)}")
        steps = check_int(state_dict["steps"], "state_dict['steps']", minimum=0)
        loaded = {}
        for name, arr in dict(state_dict["state"]).items():
            if name not in self._state_names:
                raise ValueError(f"state_dict['state']: expected buffers among {self._state_names}, got {name!r}")
            arr = np.asarray(arr)
            if arr.ndim != 1 or arr.dtype.kind != "f":
                raise ValueError(f"state_dict['state'][{name!r}]: expected a 1-D float array, got {describe(arr)}")
            loaded[name] = arr.copy()
        self.reset()
        self.steps = steps
        self._loaded = loaded

    def __getstate__(self) -> dict[str, Any]:
        # Pickle host copies only, so an optimizer trained on a GPU unpickles anywhere.
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_state", "_state_key", "_backend", "_loaded", "_table", "_table_key")}
        state["_loaded"] = self.state_numpy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state, self._state_key, self._backend = {}, None, None
        self._table, self._table_key = None, None

    def get_config(self) -> dict:
        """The constructor arguments, for ``type(opt)(**opt.get_config())``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD`` (dampening 0)."""

    _state_names = ("momentum_buffer",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = check_real(momentum, "momentum", minimum=0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0")
        self.nesterov = bool(nesterov)

    def _needs(self, name: str) -> bool:
        return self.momentum != 0

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        return sgd_scalars(self.lr, self.momentum, self._decay(weight_decay))

    def launch_flags(self) -> tuple:
        return (self.nesterov,)

    def launch(self, backend, params, grads, n_decay, table, row) -> None:
        backend._sgd_step(params, grads, self._state.get("momentum_buffer"), table, row, self.nesterov, n_decay)

    def get_config(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop (not centered), as ``torch.optim.RMSprop``."""

    _state_names = ("square_avg", "momentum_buffer")

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.alpha = check_real(alpha, "alpha", minimum=0.0, maximum=1.0)
        self.eps = check_real(eps, "eps", minimum=0.0)
        self.momentum = check_real(momentum, "momentum", minimum=0.0)

    def _needs(self, name: str) -> bool:
        return name == "square_avg" or self.momentum > 0

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        return rmsprop_scalars(self.lr, self.alpha, self.eps, self.momentum, self._decay(weight_decay))

    def launch(self, backend, params, grads, n_decay, table, row) -> None:
        backend._rmsprop_step(params, grads, self._state["square_avg"], self._state.get("momentum_buffer"),
                              table, row, n_decay)

    def get_config(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 decay added to the gradient; ``amsgrad`` not supported)."""

    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (check_real(betas[0], "betas[0]", minimum=0.0, maximum=1.0, max_inclusive=False),
                      check_real(betas[1], "betas[1]", minimum=0.0, maximum=1.0, max_inclusive=False))
        self.eps = check_real(eps, "eps", minimum=0.0)

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        return adam_scalars(self.lr, self.betas[0], self.betas[1], self.eps, step, self._decay(weight_decay))

    def launch(self, backend, params, grads, n_decay, table, row) -> None:
        backend._adam_step(params, grads, self._state["exp_avg"], self._state["exp_avg_sq"], table, row,
                           self._decoupled, n_decay)

    def get_config(self) -> dict:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: decay decoupled from the gradient (``p *= 1 - lr * weight_decay``).

    The default ``weight_decay`` is 0.01, as in PyTorch.
    """

    _decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr, betas, eps, weight_decay)


class ScikitSGD(SGD):
    """SGD with scikit-learn's rule (``sklearn.neural_network``'s ``SGDOptimizer``), for the estimators.

    scikit-learn keeps a velocity ``v = momentum * v - lr * g`` and adds it
    to the parameters (with Nesterov: ``momentum * v - lr * g``).  With a
    constant learning rate that is PyTorch's rule (the buffer is ``-v / lr``);
    when the learning rate changes (the ``invscaling`` and ``adaptive``
    schedules change it between epochs) the velocity keeps its size while
    PyTorch's buffer would be rescaled.  So the first update after a change
    scales the buffer's momentum by ``old_lr / new_lr`` (Nesterov's lookahead
    keeps ``momentum``), which gives scikit-learn's parameters exactly.
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, momentum, nesterov and momentum > 0, weight_decay)
        self._last_lr: float | None = None  # learning rate of the last staged update

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        momentum = self.momentum
        if self._last_lr is not None and step == self.steps + 1 and self._last_lr != self.lr:
            momentum = self.momentum * self._last_lr / self.lr
        return sgd_scalars(self.lr, momentum, self._decay(weight_decay), self.momentum)

    def _staged(self, count: int) -> None:
        self._last_lr = self.lr

    def reset(self) -> None:
        super().reset()
        self._last_lr = None


class ScikitAdam(Adam):
    """Adam with scikit-learn's rule (``AdamOptimizer``), for the estimators.

    scikit-learn adds ``epsilon`` to ``sqrt(v)`` before the bias correction of
    the second moment (``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``,
    ``p -= lr_t * m / (sqrt(v) + eps)``); PyTorch adds it after.  Staging
    ``eps / sqrt(1 - beta2**t)`` as each step's epsilon gives scikit-learn's
    update from PyTorch's kernel.
    """

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        beta2 = self.betas[1]
        eps = self.eps / math.sqrt(1 - beta2**step)
        return adam_scalars(self.lr, self.betas[0], beta2, eps, step, self._decay(weight_decay))

    @property
    def learning_rate(self) -> float:
        """scikit-learn's ``learning_rate`` of Adam: the bias-corrected step size of the last update."""
        t = self.steps
        if t == 0:
            return self.lr
        return self.lr * math.sqrt(1 - self.betas[1]**t) / (1 - self.betas[0]**t)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``) with keyword arguments."""
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {tuple(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name.lower()](**kwargs)


#: Each optimizer's settings for a training run that names only the optimizer (``mlp train``'s defaults):
#: the class defaults, except SGD's learning rate and momentum (PyTorch's lr=0.01 without momentum trains an
#: MLP slowly) and RMSprop's learning rate (PyTorch's 0.01 is large for one).  The settings a class does not
#: list here keep its own defaults; a setting absent for an optimizer does not apply to it.
DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "rmsprop": {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "weight_decay": 0.01},
}
