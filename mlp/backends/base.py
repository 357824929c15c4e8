"""The backend contract: the only operations the model, optimizers and trainer use.

A backend owns where arrays live (host memory for NumPy, device memory for
CUDA) and how the handful of operations an MLP needs are computed.  Everything
above ``mlp/backends`` is written once against this class, so switching device
is a constructor argument, never a code change.

The public methods here check shapes and dtypes (cheap, host-side metadata
only: they never read array *contents*, which on a GPU would force a
synchronisation) and allocate outputs that the caller did not supply; the
subclass implements the underscored methods, which may assume validated,
C-contiguous inputs and preallocated outputs.

Conventions
-----------
* Float arrays of one call share one dtype, ``float32`` or ``float64``.
* Labels and row indices are ``int64``.
* Weights are stored ``(in_features, out_features)``: ``y = x @ W + b``.
* Every ``out``-style argument is optional.  Passing preallocated outputs is
  how the trainer avoids any allocation inside its step loop.
* ``stats`` is a ``float64`` array of shape ``(3,)`` made by :meth:`new_stats`
  that loss kernels *accumulate* into, on the device, without synchronising:
  ``[sum of per-sample losses, number of correct argmax predictions,
  first step index whose loss was not finite (inf when none)]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPE = np.dtype(np.int64)
STATS_SIZE = 3


def _describe(a: Any) -> str:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"array of shape {tuple(shape)} and dtype {dtype}"


def check_matrix(a: Any, name: str, rows: int | None = None, cols: int | None = None) -> None:
    """Raise unless ``a`` is a 2-D float array with the given extents."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {_describe(a)}")
    if np.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} rows, got {_describe(a)}")
    if cols is not None and shape[1] != cols:
        raise ValueError(f"{name}: expected {cols} columns, got {_describe(a)}")


def check_vector(a: Any, name: str, size: int | None = None, dtype: Any = None) -> None:
    """Raise unless ``a`` is a 1-D array of the given size (and dtype)."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"{name}: expected a 1-D array, got {_describe(a)}")
    if size is not None and shape[0] != size:
        raise ValueError(f"{name}: expected {size} elements, got {_describe(a)}")
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")


def check_same_dtype(ref: Any, ref_name: str, **others: Any) -> None:
    for name, a in others.items():
        if a is not None and np.dtype(a.dtype) != np.dtype(ref.dtype):
            raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {a.dtype}")


def check_out(out: Any, name: str, shape: Sequence[int], dtype: Any) -> None:
    """Raise unless a caller-supplied output buffer has exactly this shape and dtype."""
    if tuple(getattr(out, "shape", ())) != tuple(shape) or np.dtype(out.dtype) != np.dtype(dtype):
        raise ValueError(
            f"{name}: expected an output of shape {tuple(shape)} and dtype {np.dtype(dtype)}, got {_describe(out)}"
        )


class AdamConstants(NamedTuple):
    """The per-step scalars of Adam/AdamW, computed on the host in float64 as torch does."""

    step_size: float  # lr / (1 - beta1**step)
    bc2_sqrt: float  # sqrt(1 - beta2**step)
    decay_factor: float  # 1 - lr * weight_decay (AdamW's decoupled decay)


def adam_constants(lr: float, beta1: float, beta2: float, step: int, weight_decay: float) -> AdamConstants:
    return AdamConstants(lr / (1 - beta1**step), math.sqrt(1 - beta2**step), 1 - lr * weight_decay)


class Backend(ABC):
    """Abstract base of the NumPy and CUDA backends.  See the module docstring."""

    #: short name used by :func:`mlp.get_backend` and in reports
    name: str = "abstract"

    # ------------------------------------------------------------------ arrays
    @abstractmethod
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Return ``a`` as a C-contiguous array of this backend (copying only when needed)."""

    @abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        """Return a host NumPy copy (or view, on the NumPy backend) of ``a``."""

    @abstractmethod
    def empty(self, shape: int | Sequence[int], dtype: Any = np.float32) -> Any:
        """Uninitialised array of this backend."""

    @abstractmethod
    def zeros(self, shape: int | Sequence[int], dtype: Any = np.float32) -> Any:
        """Zero-filled array of this backend."""

    def copy_(self, dst: Any, src: Any) -> Any:
        """Copy ``src`` (a NumPy array or an array of this backend) into ``dst`` in place; returns ``dst``."""
        if tuple(getattr(src, "shape", ())) != tuple(dst.shape):
            raise ValueError(f"src: expected shape {tuple(dst.shape)}, got {_describe(src)}")
        self._copy(dst, src)
        return dst

    @abstractmethod
    def _copy(self, dst: Any, src: Any) -> None: ...

    def fill_(self, a: Any, value: float) -> Any:
        """Set every element of ``a`` to ``value`` in place; returns ``a``."""
        self._fill(a, value)
        return a

    @abstractmethod
    def _fill(self, a: Any, value: float) -> None: ...

    def is_array(self, a: Any) -> bool:
        """Whether ``a`` already lives on this backend (no transfer needed)."""
        return isinstance(a, np.ndarray)

    def synchronize(self) -> None:
        """Block until queued work has finished (a no-op on the host)."""

    def warmup(self, dtype: Any = np.float32) -> None:
        """Compile (or load from cache) everything a training step needs for ``dtype``, ahead of the first step."""

    #: kernel launches issued so far (device backends count them; host backends leave it 0)
    launch_count: int = 0

    def new_stats(self) -> Any:
        """A fresh ``stats`` accumulator: ``[0, 0, inf]`` as float64 (see module docstring)."""
        return self.asarray(np.array([0.0, 0.0, math.inf]), dtype=np.float64)

    def reset_stats(self, stats: Any) -> None:
        """Reset an accumulator made by :meth:`new_stats` in place."""
        self._fill_stats(stats)

    @abstractmethod
    def _fill_stats(self, stats: Any) -> None: ...

    # ----------------------------------------------------------------- gather
    def take_rows(self, X: Any, idx: Any, out: Any = None) -> Any:
        """Rows ``X[idx]`` (a mini-batch gather).  X: (N, ...) any dtype, idx: (B,) int64."""
        shape = getattr(X, "shape", None)
        if shape is None or len(shape) not in (1, 2):
            raise ValueError(f"X: expected a 1-D or 2-D array, got {_describe(X)}")
        check_vector(idx, "idx", dtype=INDEX_DTYPE)
        out_shape = (idx.shape[0],) + tuple(shape[1:])
        if out is None:
            out = self.empty(out_shape, X.dtype)
        else:
            check_out(out, "out", out_shape, X.dtype)
        if idx.shape[0]:
            self._take_rows(X, idx, out)
        return out

    @abstractmethod
    def _take_rows(self, X: Any, idx: Any, out: Any) -> None: ...

    # ----------------------------------------------------------------- affine
    def affine_forward(self, x: Any, W: Any, b: Any, relu: bool, out: Any = None) -> Any:
        """``relu(x @ W + b)`` if ``relu`` else ``x @ W + b``, fused, into ``out``.

        x: (N, in), W: (in, out), b: (out,); returns (N, out) of x's dtype.
        """
        check_matrix(x, "x")
        n, k = x.shape
        check_matrix(W, "W", rows=k)
        m = W.shape[1]
        check_vector(b, "b", size=m)
        check_same_dtype(x, "x", W=W, b=b)
        if out is None:
            out = self.empty((n, m), x.dtype)
        else:
            check_out(out, "out", (n, m), x.dtype)
        self._affine_forward(x, W, b, bool(relu), out)
        return out

    @abstractmethod
    def _affine_forward(self, x: Any, W: Any, b: Any, relu: bool, out: Any) -> None: ...

    def affine_backward(
        self,
        dy: Any,
        x: Any,
        W: Any,
        y: Any = None,
        need_dx: bool = True,
        *,
        dx_out: Any = None,
        dW_out: Any = None,
        db_out: Any = None,
    ) -> tuple[Any, Any, Any]:
        """Gradients of ``y = [relu](x @ W + b)``.

        With ``y`` (this layer's ReLU output) given, ``dy`` is first masked by
        ``y > 0`` (the fused ReLU backward); ``dy`` itself is never modified.
        Returns ``(dx, dW, db)`` with shapes (N, in), (in, out), (out,);
        ``dx`` is ``None`` when ``need_dx`` is false.
        """
        check_matrix(dy, "dy")
        n, m = dy.shape
        check_matrix(x, "x", rows=n)
        k = x.shape[1]
        check_matrix(W, "W", rows=k, cols=m)
        if y is not None:
            check_matrix(y, "y", rows=n, cols=m)
        check_same_dtype(dy, "dy", x=x, W=W, y=y)
        dt = dy.dtype
        dx = None
        if need_dx:
            if dx_out is None:
                dx = self.empty((n, k), dt)
            else:
                check_out(dx_out, "dx_out", (n, k), dt)
                dx = dx_out
        if dW_out is None:
            dW_out = self.empty((k, m), dt)
        else:
            check_out(dW_out, "dW_out", (k, m), dt)
        if db_out is None:
            db_out = self.empty((m,), dt)
        else:
            check_out(db_out, "db_out", (m,), dt)
        self._affine_backward(dy, x, W, y, dx, dW_out, db_out)
        return dx, dW_out, db_out

    @abstractmethod
    def _affine_backward(self, dy: Any, x: Any, W: Any, y: Any, dx: Any, dW: Any, db: Any) -> None: ...

    # ---------------------------------------------------------------- softmax
    def softmax(self, logits: Any, out: Any = None) -> Any:
        """Row-wise softmax, computed stably (row max subtracted)."""
        check_matrix(logits, "logits")
        if out is None:
            out = self.empty(logits.shape, logits.dtype)
        else:
            check_out(out, "out", logits.shape, logits.dtype)
        self._softmax(logits, out)
        return out

    @abstractmethod
    def _softmax(self, logits: Any, out: Any) -> None: ...

    def _check_xent(self, logits: Any, labels: Any) -> tuple[int, int]:
        check_matrix(logits, "logits")
        n, c = logits.shape
        if n == 0:
            raise ValueError("logits: expected at least one row, got an empty batch")
        check_vector(labels, "labels", size=n, dtype=INDEX_DTYPE)
        return n, c

    def softmax_cross_entropy(self, logits: Any, labels: Any, dlogits_out: Any = None) -> tuple[float, Any]:
        """Mean softmax cross-entropy of a batch and its gradient.

        Returns ``(loss, dlogits)`` with ``loss`` a Python float (on a GPU this
        reads the device, a synchronisation: the training loop uses
        :meth:`softmax_cross_entropy_into` instead) and
        ``dlogits = (softmax(logits) - onehot(labels)) / N``.
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is None:
            dlogits_out = self.empty((n, c), logits.dtype)
        stats = self.new_stats()
        self.softmax_cross_entropy_into(logits, labels, dlogits_out, stats)
        return float(self.to_numpy(stats)[0]) / n, dlogits_out

    def softmax_cross_entropy_into(
        self, logits: Any, labels: Any, dlogits_out: Any, stats: Any, step: int = 0
    ) -> None:
        """One pass over each row: max, log-sum-exp, loss, gradient and argmax.

        Writes ``(softmax - onehot) / N`` into ``dlogits_out`` (skipped when it
        is ``None``, as in evaluation) and accumulates into ``stats`` (see the
        module docstring); ``step`` is recorded there if a loss is not finite.
        Never synchronises.
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is not None:
            check_out(dlogits_out, "dlogits_out", (n, c), logits.dtype)
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
        self._softmax_xent(logits, labels, dlogits_out, stats, int(step))

    @abstractmethod
    def _softmax_xent(self, logits: Any, labels: Any, dlogits: Any, stats: Any, step: int) -> None: ...

    # -------------------------------------------------------------- optimizers
    # Each is one pass over the flat parameter buffer.  L2 weight decay
    # (``g += weight_decay * p``) applies to the first ``n_decay`` elements
    # only: the model lays out all weights first and all biases after them.
    def _check_flat(self, params: Any, **state: Any) -> None:
        check_vector(params, "params")
        if np.dtype(params.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"params: expected dtype float32 or float64, got {params.dtype}")
        for name, a in state.items():
            if a is not None:
                check_vector(a, name, size=params.shape[0], dtype=params.dtype)

    def sgd_step(
        self, params: Any, grads: Any, buf: Any, *, lr: float, momentum: float,
        nesterov: bool, weight_decay: float, n_decay: int,
    ) -> None:
        """``torch.optim.SGD`` (dampening 0).  ``buf`` may be None when momentum is 0."""
        self._check_flat(params, grads=grads, buf=buf)
        self._sgd_step(params, grads, buf, lr, momentum, bool(nesterov), weight_decay, int(n_decay))

    @abstractmethod
    def _sgd_step(self, params, grads, buf, lr, momentum, nesterov, weight_decay, n_decay) -> None: ...

    def rmsprop_step(
        self, params: Any, grads: Any, square_avg: Any, buf: Any, *, lr: float, alpha: float,
        eps: float, momentum: float, weight_decay: float, n_decay: int,
    ) -> None:
        """``torch.optim.RMSprop`` (not centered).  ``buf`` may be None when momentum is 0."""
        self._check_flat(params, grads=grads, square_avg=square_avg, buf=buf)
        self._rmsprop_step(params, grads, square_avg, buf, lr, alpha, eps, momentum, weight_decay, int(n_decay))

    @abstractmethod
    def _rmsprop_step(self, params, grads, square_avg, buf, lr, alpha, eps, momentum, weight_decay, n_decay) -> None: ...

    def adam_step(
        self, params: Any, grads: Any, exp_avg: Any, exp_avg_sq: Any, *, lr: float, beta1: float,
        beta2: float, eps: float, step: int, weight_decay: float, decoupled: bool, n_decay: int,
    ) -> None:
        """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``decoupled=True``); ``step`` counts from 1."""
        self._check_flat(params, grads=grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        if step < 1:
            raise ValueError(f"step: expected an integer >= 1, got {step}")
        self._adam_step(params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, int(step),
                        weight_decay, bool(decoupled), int(n_decay))

    @abstractmethod
    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step,
                   weight_decay, decoupled, n_decay) -> None: ...

    def __repr__(self) -> str:
        return f"<mlp backend {self.name!r}>"
