"""The backend contract, optimizer updates: SGD, RMSprop and Adam/AdamW over a flat parameter buffer.

Part of :class:`mlp.backends.base.Backend` (a base class of it); the update rules are
``torch.optim``'s, their scalars computed once by the formulas of ``mlp.kernels.scalars``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from .._validation import check_float_array
from ..kernels.scalars import adam_scalars, rmsprop_scalars, sgd_scalars
from .checks import check_vector


class OptimizerOps(ABC):
    """The optimizer updates of the backend contract."""

    # -------------------------------------------------------------- optimizers
    # Each is one pass over the flat parameter buffer.  L2 weight decay
    # (``g += weight_decay * p``) applies to the first ``n_decay`` elements
    # only: the model lays out all weights first and all biases after them.
    #
    # The public methods take the hyperparameters as numbers.  Underneath,
    # every update reads its floating-point scalars from row ``row`` of a
    # ``scalars`` table (an array of this backend, the parameters' dtype, one
    # row per step, columns named in ``mlp.kernels.scalars``), so that a
    # captured update (a CUDA graph) picks up a new learning rate or Adam's
    # next bias corrections from device memory.  The table's rows are computed
    # once, on the host, by the formulas of ``mlp.kernels.scalars`` (the
    # optimizers of ``mlp.optim`` stage them).
    def _check_flat(self, params: Any, **state: Any) -> None:
        check_vector(params, "params")
        check_float_array(params, "params")
        for name, a in state.items():
            if a is not None:
                check_vector(a, name, size=params.shape[0], dtype=params.dtype)
        self._require_contiguous(params=params, **state)

    def scalar_table(self, rows: Sequence[Sequence[float]], dtype: Any) -> Any:
        """An optimizer scalars table of this backend: ``rows`` cast to ``dtype`` (the parameters' dtype)."""
        return self.asarray(np.asarray(rows, dtype=np.float64).astype(dtype), dtype=dtype)

    def sgd_step(
        self, params: Any, grads: Any, buf: Any, *, lr: float, momentum: float,
        nesterov: bool, weight_decay: float, n_decay: int,
    ) -> None:
        """``torch.optim.SGD`` (dampening 0).  ``buf`` may be None when momentum is 0."""
        self._check_flat(params, grads=grads, buf=buf)
        if momentum != 0 and buf is None:
            raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
        table = self.scalar_table([sgd_scalars(lr, momentum, weight_decay)], params.dtype)
        self._sgd_step(params, grads, buf if momentum != 0 else None, table, 0, bool(nesterov), int(n_decay))

    @abstractmethod
    def _sgd_step(self, params, grads, buf, scalars, row, nesterov, n_decay) -> None:
        """Momentum is used exactly when ``buf`` is not None."""

    def rmsprop_step(
        self, params: Any, grads: Any, square_avg: Any, buf: Any, *, lr: float, alpha: float,
        eps: float, momentum: float, weight_decay: float, n_decay: int,
    ) -> None:
        """``torch.optim.RMSprop`` (not centered).  ``buf`` may be None when momentum is 0."""
        self._check_flat(params, grads=grads, square_avg=square_avg, buf=buf)
        if momentum > 0 and buf is None:
            raise ValueError("buf: a momentum buffer is required when momentum is non-zero")
        table = self.scalar_table([rmsprop_scalars(lr, alpha, eps, momentum, weight_decay)], params.dtype)
        self._rmsprop_step(params, grads, square_avg, buf if momentum > 0 else None, table, 0, int(n_decay))

    @abstractmethod
    def _rmsprop_step(self, params, grads, square_avg, buf, scalars, row, n_decay) -> None:
        """Momentum is used exactly when ``buf`` is not None."""

    def adam_step(
        self, params: Any, grads: Any, exp_avg: Any, exp_avg_sq: Any, *, lr: float, beta1: float,
        beta2: float, eps: float, step: int, weight_decay: float, decoupled: bool, n_decay: int,
    ) -> None:
        """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``decoupled=True``); ``step`` counts from 1."""
        self._check_flat(params, grads=grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        if step < 1:
            raise ValueError(f"step: expected an integer >= 1, got {step}")
        table = self.scalar_table([adam_scalars(lr, beta1, beta2, eps, int(step), weight_decay)], params.dtype)
        self._adam_step(params, grads, exp_avg, exp_avg_sq, table, 0, bool(decoupled), int(n_decay))

    @abstractmethod
    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, scalars, row, decoupled, n_decay) -> None: ...
