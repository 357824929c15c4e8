"""The backend contract: the only operations the model, optimizers and trainer use.

A backend owns where arrays live (host memory for NumPy, device memory for
CUDA) and how the handful of operations an MLP needs are computed.  Everything
above ``mlp/backends`` is written once against this class, so switching device
is a constructor argument, never a code change.

Two layers, so that inputs are validated once:

* The public methods (``affine_forward``, ``softmax_cross_entropy``, ...)
  are the contract anyone may call: they check dtypes, shapes, layouts and
  label ranges, raise ``ValueError``/``TypeError`` naming the argument, and
  allocate outputs the caller did not supply.
* The underscored methods (``_affine_forward``, ``_softmax_xent``, ...) are
  what each backend implements, and the fast path of the model and the
  trainer, which validated their data once at their own boundary: they
  assume C-contiguous inputs of matching shapes and dtypes and preallocated
  outputs, and check nothing.  Even so, no kernel or loop reads or writes
  outside its arrays whatever the labels hold (an out-of-range label gives a
  NaN loss for its row, caught as a non-finite loss).

Conventions
-----------
* Float arrays of one call share one dtype, ``float32`` or ``float64``.
* Labels and row indices are ``int64``.
* Weights are stored ``(in_features, out_features)``: ``y = x @ W + b``.
* Matrix dimensions follow the BLAS convention used by ``mlp.kernels``: a
  product ``(m, k) @ (k, n)``, so for a layer ``m`` is the batch, ``k`` its
  inputs and ``n`` its outputs.
* Every ``out``-style argument is optional.  Passing preallocated outputs is
  how the trainer avoids any allocation inside its step loop.
* ``stats`` is a ``float64`` array of shape ``(STATS_SIZE,)`` made by
  :meth:`new_stats` that loss kernels *accumulate* into, on the device,
  without synchronising.  Its slots are named by ``STATS_LOSS_SUM`` (sum of
  per-sample losses), ``STATS_CORRECT`` (number of correct argmax
  predictions) and ``STATS_FIRST_NONFINITE_STEP`` (the smallest ``step``
  whose loss was not finite, stored as a float; ``inf`` when none).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPE = np.dtype(np.int64)
STATS_LOSS_SUM = 0
STATS_CORRECT = 1
STATS_FIRST_NONFINITE_STEP = 2
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


def is_c_contiguous(a: Any) -> bool:
    """Whether ``a`` (a NumPy array, a Numba device array or a CuPy array) is C-contiguous."""
    flags = getattr(a, "flags", None)
    if flags is not None:
        return bool(flags["C_CONTIGUOUS"])
    test = getattr(a, "is_c_contiguous", None)
    return True if test is None else bool(test())


def check_out(out: Any, name: str, shape: Sequence[int], dtype: Any) -> None:
    """Raise unless a caller-supplied output buffer has exactly this shape and dtype, C-contiguous."""
    if tuple(getattr(out, "shape", ())) != tuple(shape) or np.dtype(out.dtype) != np.dtype(dtype) \
            or not is_c_contiguous(out):
        raise ValueError(
            f"{name}: expected a C-contiguous output of shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
            f"got {_describe(out)}"
        )


# --------------------------------------------------------- optimizer scalars
# The columns of each optimizer's scalars table (see Backend's optimizer
# section).  Derived scalars are computed here once, in float64 on the host
# (as torch.optim does for its non-capturable path), for every backend.
SGD_SCALARS = ("lr", "momentum", "weight_decay")
RMSPROP_SCALARS = ("lr", "alpha", "one_minus_alpha", "eps", "momentum", "weight_decay")
ADAM_SCALARS = ("one_minus_beta1", "beta2", "one_minus_beta2", "eps", "step_size", "bc2_sqrt",
                "weight_decay", "decay_factor")


def sgd_scalars(lr: float, momentum: float, weight_decay: float) -> tuple[float, ...]:
    return (lr, momentum, weight_decay)


def rmsprop_scalars(lr: float, alpha: float, eps: float, momentum: float, weight_decay: float) -> tuple[float, ...]:
    return (lr, alpha, 1 - alpha, eps, momentum, weight_decay)


def adam_scalars(lr: float, beta1: float, beta2: float, eps: float, step: int,
                 weight_decay: float) -> tuple[float, ...]:
    """Adam/AdamW at ``step`` (from 1): step size ``lr / (1 - beta1**step)``, ``sqrt(1 - beta2**step)``,
    and AdamW's decoupled decay factor ``1 - lr * weight_decay``."""
    return (1 - beta1, beta2, 1 - beta2, eps, lr / (1 - beta1**step), math.sqrt(1 - beta2**step),
            weight_decay, 1 - lr * weight_decay)


class GraphCaptureError(RuntimeError):
    """A captured graph does not hold every launch that was made: one escaped the capture."""


class BackendStatus(NamedTuple):
    """Whether a backend is usable on this machine, and why or why not."""

    usable: bool
    reason: str
    #: whether ``get_backend("auto")`` may choose it (the CUDA simulator is usable but never chosen)
    auto_eligible: bool = True
    #: appended to the error when it is asked for but unusable (how to make it usable)
    hint: str = ""


class Backend(ABC):
    """Abstract base of the NumPy and CUDA backends.  See the module docstring."""

    #: short name used by :func:`mlp.get_backend` and in reports; a module ``<name>_backend.py`` defines it
    name: str = "abstract"
    #: ``get_backend("auto")`` picks the usable, eligible backend with the highest priority
    auto_priority: int = 0

    @classmethod
    def status(cls) -> BackendStatus:
        """Whether this backend can be created here (checked before :func:`mlp.get_backend` creates it)."""
        return BackendStatus(True, "always available")

    @classmethod
    def owns(cls, a: Any) -> bool:
        """Whether ``a`` is an array that lives on this kind of backend's device (not host memory)."""
        return False

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

    def _require_contiguous(self, **arrays: Any) -> None:
        for name, a in arrays.items():
            if a is not None and not is_c_contiguous(a):
                raise ValueError(f"{name}: expected a C-contiguous array (use backend.asarray), "
                                 f"got strides {getattr(a, 'strides', None)}")

    def synchronize(self) -> None:
        """Block until queued work has finished (a no-op on the host)."""

    def warmup(self, dtype: Any = np.float32) -> None:
        """Compile (or load from cache) everything a training step needs for ``dtype``, ahead of the first step."""

    #: kernel launches issued so far (device backends count them; host backends leave it 0)
    launch_count: int = 0

    def new_stats(self) -> Any:
        """A fresh ``stats`` accumulator: loss sum 0, correct 0, first non-finite step inf (float64)."""
        stats = np.zeros(STATS_SIZE)
        stats[STATS_FIRST_NONFINITE_STEP] = math.inf
        return self.asarray(stats, dtype=np.float64)

    def reset_stats(self, stats: Any) -> None:
        """Reset an accumulator made by :meth:`new_stats` in place."""
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
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
        self._require_contiguous(X=X, idx=idx)
        if idx.shape[0]:
            host = self.to_numpy(idx)
            lo, hi = int(host.min()), int(host.max())
            if lo < 0 or hi >= shape[0]:
                raise ValueError(f"idx: expected row indices in [0, {shape[0] - 1}] (X has {shape[0]} rows), "
                                 f"got values in [{lo}, {hi}]")
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

        x: (m, k), W: (k, n), b: (n,); returns (m, n) of x's dtype.
        """
        check_matrix(x, "x")
        m, k = x.shape
        check_matrix(W, "W", rows=k)
        n = W.shape[1]
        check_vector(b, "b", size=n)
        check_same_dtype(x, "x", W=W, b=b)
        self._require_contiguous(x=x, W=W, b=b)
        if out is None:
            out = self.empty((m, n), x.dtype)
        else:
            check_out(out, "out", (m, n), x.dtype)
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
        Shapes: dy and y (m, n), x (m, k), W (k, n).  Returns ``(dx, dW, db)``
        with shapes (m, k), (k, n), (n,); ``dx`` is ``None`` when ``need_dx``
        is false.
        """
        check_matrix(dy, "dy")
        m, n = dy.shape
        check_matrix(x, "x", rows=m)
        k = x.shape[1]
        check_matrix(W, "W", rows=k, cols=n)
        if y is not None:
            check_matrix(y, "y", rows=m, cols=n)
        check_same_dtype(dy, "dy", x=x, W=W, y=y)
        self._require_contiguous(dy=dy, x=x, W=W, y=y)
        dt = dy.dtype
        dx = None
        if need_dx:
            if dx_out is None:
                dx = self.empty((m, k), dt)
            else:
                check_out(dx_out, "dx_out", (m, k), dt)
                dx = dx_out
        if dW_out is None:
            dW_out = self.empty((k, n), dt)
        else:
            check_out(dW_out, "dW_out", (k, n), dt)
        if db_out is None:
            db_out = self.empty((n,), dt)
        else:
            check_out(db_out, "db_out", (n,), dt)
        self._affine_backward(dy, x, W, y, dx, dW_out, db_out)
        return dx, dW_out, db_out

    @abstractmethod
    def _affine_backward(self, dy: Any, x: Any, W: Any, y: Any, dx: Any, dW: Any, db: Any) -> None: ...

    # ---------------------------------------------------------------- softmax
    def softmax(self, logits: Any, out: Any = None) -> Any:
        """Row-wise softmax, computed stably (row max subtracted)."""
        check_matrix(logits, "logits")
        self._require_contiguous(logits=logits)
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
        self._require_contiguous(logits=logits, labels=labels)
        # Reading the labels' range costs a device-to-host copy on a GPU; the
        # trainer checked its labels once per fit and takes the fast path.
        host = self.to_numpy(labels)
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"labels: expected class indices in [0, {c - 1}] (logits has {c} columns), "
                             f"got values in [{lo}, {hi}]")
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
    #
    # The public methods take the hyperparameters as numbers.  Underneath,
    # every update reads its floating-point scalars from row ``row`` of a
    # ``scalars`` table (an array of this backend, the parameters' dtype, one
    # row per step, columns as in SGD_SCALARS / RMSPROP_SCALARS /
    # ADAM_SCALARS), so that a captured update (a CUDA graph) picks up a new
    # learning rate or Adam's next bias corrections from device memory.  The
    # table's rows are computed once, on the host, by ``*_scalars`` above.
    def _check_flat(self, params: Any, **state: Any) -> None:
        check_vector(params, "params")
        if np.dtype(params.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"params: expected dtype float32 or float64, got {params.dtype}")
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

    def __repr__(self) -> str:
        return f"<mlp backend {self.name!r}>"
