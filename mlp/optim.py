"""Optimizers over the model's flat parameter buffer.

Each follows the update rule ``torch.optim`` documents for the optimizer of
the same name, in the same order of operations, so that from the same weights
and batches the parameters agree with PyTorch to float rounding.  One
difference is deliberate: weight decay applies to weights only, never to
biases (the classic L2 formulation); in PyTorch terms, the biases sit in a
parameter group with ``weight_decay=0``.

An optimizer keeps its state (momentum buffers, moment estimates) on the
backend of the parameters it updates; the state is created on the first
update and re-created if the model moves to another backend.  A training
loop applies the optimizers of its networks (one network, or a stack of
many) as one :class:`OptimizerGroup`: their state stacked, one launch per
update for all of them, whatever the rule (SGD, RMSprop, Adam, AdamW).

The floating-point scalars of each step (learning rate, Adam's bias
corrections, ...) are computed here, once, on the host (the formulas are in
``mlp.kernels.scalars``, beside the table's named columns), and handed to
the backend as rows of a small table on the device
(:meth:`OptimizerGroup.stage`): a loop stages a whole epoch's rows with one
copy, and a captured epoch (a CUDA graph) reads them from device memory, so
a changed learning rate takes effect without recapturing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._validation import check_int, check_real, describe
from .backends import Backend
from .kernels.scalars import COLUMNS, adam_scalars, rmsprop_scalars, sgd_scalars


class Optimizer:
    """Base class: hyperparameters, a step counter and lazily created state buffers.

    An optimizer updates one network; it is always applied through an
    :class:`OptimizerGroup` (a training loop's optimizers, one per network of
    the loop, stacked), which stages the scalars of every network's updates as
    one table and launches one stacked update for all of them.
    """

    #: the update rule: names the backend's stacked update and the scalars table's columns (``COLUMNS``)
    rule: str = ""
    #: names of the state buffers, in the order the backend operation takes them
    _state_names: tuple[str, ...] = ()
    #: the state buffers of running squared gradients (>= 0; +inf where a gradient's square overflowed, a state
    #: a run reaches and goes on from: the weight it belongs to stops moving, as in torch.optim)
    _second_moments: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = check_real(lr, "lr", minimum=0.0, min_inclusive=False)
        self.weight_decay = check_real(weight_decay, "weight_decay", minimum=0.0)
        self.steps = 0
        self._state: dict[str, Any] = {}
        self._state_key: tuple | None = None
        self._backend: Backend | None = None
        self._loaded: dict[str, np.ndarray] | None = None

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

    def _bind_state(self, backend: Backend, state: dict[str, Any]) -> None:
        """Take ``state`` (name -> this optimizer's (P,) rows of a group's buffers) as its own."""
        any_buf = next(iter(state.values()), None)
        if any_buf is not None:
            self._state_key = (id(backend), int(any_buf.shape[0]), np.dtype(any_buf.dtype))
        self._state, self._backend, self._loaded = dict(state), backend, None

    def step(self, backend: Backend, params: Any, grads: Any, n_decay: int) -> None:
        """Apply one update to ``params`` (flat) from ``grads``; decay applies to ``params[:n_decay]``."""
        backend._check_flat(params, grads=grads)
        n = int(params.shape[0])
        group = OptimizerGroup([self], backend, params.reshape(1, n))
        group.stage(1)
        group.launch(params.reshape(1, n), grads.reshape(1, n), n_decay, 0)
        group.advance([0], 1)

    def scalars(self, step: int, weight_decay: float | None = None) -> tuple[float, ...]:
        """The scalars row of update number ``step`` (from 1), in the order of ``COLUMNS[self.rule]``.

        ``weight_decay`` replaces :attr:`weight_decay` for this row (see :meth:`scalar_rows`).
        """
        raise NotImplementedError

    def _decay(self, weight_decay: float | None) -> float:
        return self.weight_decay if weight_decay is None else weight_decay

    def scalar_rows(self, count: int, weight_decay: Any = None) -> np.ndarray:
        """The scalars of the next ``count`` updates as a host float64 table ``(count, columns)``.

        Row ``i`` belongs to update ``steps + 1 + i``.  ``weight_decay``, when
        given, is a sequence of ``count`` decays, one per update, replacing
        :attr:`weight_decay` (scikit-learn's L2 term is ``alpha`` over each
        batch's sample count, so it changes with the last, shorter batch).
        """
        decays = [None] * count if weight_decay is None else [float(d) for d in weight_decay]
        if len(decays) != count:
            raise ValueError(f"weight_decay: expected {count} values (one per update), got {len(decays)}")
        rows = np.array([self.scalars(self.steps + 1 + i, decays[i]) for i in range(count)], dtype=np.float64)
        self._staged(count)
        return rows.reshape(count, len(COLUMNS[self.rule]))

    def _staged(self, count: int) -> None:
        """Called once a table of ``count`` rows is computed (rules that remember what they staged use it)."""

    @property
    def learning_rate(self) -> float:
        """The current learning rate (scikit-learn's name for it on its optimizers)."""
        return self.lr

    def launch_flags(self) -> tuple:
        """Settings a launch takes as arguments rather than from the table (every optimizer of a group shares
        them; a change needs a new capture)."""
        return ()

    def group_key(self) -> tuple:
        """What the optimizers of one group must share: the rule and the launch flags."""
        return (self.rule, *self.launch_flags())

    @classmethod
    def _launch(cls, backend: Backend, flags: tuple, params: Any, grads: Any, state: dict, table: Any, row: int,
                n_decay: int, rows: Any) -> None:
        """The backend's stacked update of this rule (``state``: name -> (M, P) buffer, absent when unused)."""
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
        state = {k: v for k, v in self.__dict__.items() if k not in ("_state", "_state_key", "_backend", "_loaded")}
        state["_loaded"] = self.state_numpy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state, self._state_key, self._backend = {}, None, None

    def get_config(self) -> dict:
        """The constructor arguments, for ``type(opt)(**opt.get_config())``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class OptimizerGroup:
    """The optimizers of a training loop's ``M`` networks (one each, of one rule), applied together.

    Their state lives in ``(M, P)`` buffers of the backend, each optimizer
    holding its own row (so its :meth:`~Optimizer.state_dict` and a checkpoint
    read it); for a single network the optimizer's own buffers are used
    as they are, so its state carries over from one fit to the next.  The
    scalars of every network's next updates are staged as one ``(M, steps,
    columns)`` table (:meth:`stage`) and each update is one launch of the
    backend's stacked update (:meth:`launch`) for every network that trains.
    """

    def __init__(self, optimizers: Sequence[Optimizer], backend: Backend, params: Any) -> None:
        self.optimizers = list(optimizers)
        M = int(params.shape[0])
        if len(self.optimizers) != M:
            raise ValueError(f"optimizers: expected {M} (one per network), got {len(self.optimizers)}")
        for i, opt in enumerate(self.optimizers):
            if not isinstance(opt, Optimizer):
                raise TypeError(f"optimizers[{i}]: expected an mlp.optim.Optimizer, got {type(opt).__name__}")
        self.backend, self.params = backend, params
        self.dtype = np.dtype(params.dtype)
        self.state: dict[str, Any] = {}
        self._bound: list[dict[str, Any]] = []  # what each optimizer was given (its rows), to notice a reset
        self.table: Any = None
        self._sync()

    def _sync(self) -> None:
        """Take up what changed in the optimizers since the last epoch: a reset (new state), a rule or flag
        changed by hand.  A group of one uses the optimizer's own buffers; a larger group re-stacks its state
        only when some optimizer's buffers are no longer the rows it was given."""
        keys = {opt.group_key() for opt in self.optimizers}
        if len(keys) != 1:
            raise ValueError(f"optimizers: expected one update rule and one set of launch flags, got {sorted(keys)}")
        first, be, params = self.optimizers[0], self.backend, self.params
        self.rule, self.flags = first.rule, first.launch_flags()
        M, P = int(params.shape[0]), int(params.shape[1])
        names = [n for n in first._state_names if any(o._needs(n) for o in self.optimizers)]
        if M == 1:
            first._ensure_state(be, params[0])
            bound = {n: first._state[n] for n in names if n in first._state}
            if not self._bound or any(self._bound[0].get(n) is not b for n, b in bound.items()) \
                    or set(bound) != set(self._bound[0]):
                self.state = {n: b.reshape(1, P) for n, b in bound.items()}
                self._bound = [bound]
            return
        if self._bound and set(names) == set(self.state) and all(
                opt._state.get(n) is rows[n] for opt, rows in zip(self.optimizers, self._bound) for n in names):
            return
        self.state = {}
        for n in names:
            host = np.zeros((M, P), dtype=self.dtype)
            for m, opt in enumerate(self.optimizers):
                have = opt.state_numpy()
                if n in have and have[n].shape == (P,):
                    host[m] = have[n]
            self.state[n] = be.asarray(host, dtype=self.dtype)
        self._bound = []
        for opt in self.optimizers:
            rows = {n: b[len(self._bound)] for n, b in self.state.items()}
            opt._bind_state(be, rows)
            self._bound.append(rows)

    def stage(self, count: int, weight_decay: Sequence[Any] | None = None,
              active: Sequence[bool] | None = None) -> Any:
        """Stage the scalars of the next ``count`` updates of every network that trains (``active``, default
        all); ``weight_decay[m]``: network m's per-update decays or None (see :meth:`Optimizer.scalar_rows`).
        The device table ``(M, count, columns)`` is kept while its shape holds (a captured update points at
        it) and returned."""
        self._sync()
        M, cols = len(self.optimizers), len(COLUMNS[self.rule])
        host = np.zeros((M, count, cols), dtype=np.float64)
        for m, opt in enumerate(self.optimizers):
            if active is None or active[m]:
                host[m] = opt.scalar_rows(count, None if weight_decay is None else weight_decay[m])
        if self.table is None or tuple(self.table.shape) != host.shape:
            self.table = self.backend.empty(host.shape, self.dtype)
        # float64 -> the parameters' dtype, as the update computes in it
        self.backend.copy_(self.table, host.astype(self.dtype))
        return self.table

    def launch(self, params: Any, grads: Any, n_decay: int, row: int, rows: Any = None,
               models: slice = slice(None)) -> None:
        """One update of the networks ``models`` of ``params`` (M, P) from ``grads`` with row ``row`` of the
        staged table; ``rows`` (M,) int64 (-1: a network that does not train, see the backend's stacked
        operations; None: all).  Counts nothing (see :meth:`advance`)."""
        state = {n: b[models] for n, b in self.state.items()}
        type(self.optimizers[0])._launch(self.backend, self.flags, params, grads, state, self.table[models], row,
                                         n_decay, rows)

    def advance(self, models: Sequence[int], count: int) -> None:
        """Count ``count`` updates as done for the networks ``models`` (indices)."""
        for m in models:
            self.optimizers[m].advance(count)

    def buffers(self) -> tuple:
        """The device buffers a captured update points at: the state buffers and the scalars table."""
        return (*(self.state[n] for n in sorted(self.state)), self.table)

    def structure(self) -> tuple:
        """What a captured update bakes in besides buffer contents: the rule, flags and buffers (by identity;
        whoever keeps a capture keeps :meth:`buffers` alive, so that no identity is reused meanwhile)."""
        return (self.rule, self.flags, tuple(sorted(self.state)), tuple(id(b) for b in self.buffers()))


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD`` (dampening 0)."""

    rule = "sgd"
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

    @classmethod
    def _launch(cls, backend, flags, params, grads, state, table, row, n_decay, rows) -> None:
        backend._sgd_step_stacked(params, grads, state.get("momentum_buffer"), table, row, flags[0], n_decay, rows)

    def get_config(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop (not centered), as ``torch.optim.RMSprop``."""

    rule = "rmsprop"
    _state_names = ("square_avg", "momentum_buffer")
    _second_moments = ("square_avg",)

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

    @classmethod
    def _launch(cls, backend, flags, params, grads, state, table, row, n_decay, rows) -> None:
        backend._rmsprop_step_stacked(params, grads, state["square_avg"], state.get("momentum_buffer"), table, row,
                                      n_decay, rows)

    def get_config(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 decay added to the gradient; ``amsgrad`` not supported)."""

    rule = "adam"
    _state_names = ("exp_avg", "exp_avg_sq")
    _second_moments = ("exp_avg_sq",)
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

    def launch_flags(self) -> tuple:
        return (self._decoupled,)

    @classmethod
    def _launch(cls, backend, flags, params, grads, state, table, row, n_decay, rows) -> None:
        backend._adam_step_stacked(params, grads, state["exp_avg"], state["exp_avg_sq"], table, row, flags[0],
                                   n_decay, rows)

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
