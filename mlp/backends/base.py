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

The contract is one class, :class:`Backend`, written in five modules, one
part each: this one (arrays, graphs, the stats accumulator, the row gather and
the affine layers) and the bases it inherits, ``contract_sparse`` (CSR input),
``contract_losses`` (softmax and the other output losses),
``contract_optimizers`` (SGD, RMSprop, Adam) and ``contract_stacks`` (the same
step over many models of one shape).

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
  per-sample losses; with per-sample weights, each scaled by N * w / S),
  ``STATS_CORRECT`` (number of rows predicted right) and
  ``STATS_FIRST_NONFINITE_STEP`` (the smallest ``step`` whose loss was not
  finite, stored as a float; ``inf`` when none).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .._validation import check_index_range
from .arrays import CSRMatrix, StackedLayer  # noqa: F401  (part of the contract, importable from here)
from .checks import (_describe, check_matrix, check_out, check_same_dtype, check_vector,  # noqa: F401
                     is_c_contiguous)
from .contract_losses import LossOps
from .contract_optimizers import OptimizerOps
from .contract_sparse import SparseInputOps
from .contract_stacks import StackedOps
from .names import (ACTIVATIONS, CLASSIFICATION_OUTPUTS, INDEX_DTYPE, OUTPUTS, STATS_CORRECT,  # noqa: F401
                    STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM, STATS_SIZE, TARGET_RANGES, _backward_activation,
                    activation_code, layer_layout)


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


class Backend(SparseInputOps, LossOps, OptimizerOps, StackedOps, ABC):
    """Abstract base of the NumPy and CUDA backends.  See the module docstring.

    Here: arrays, graphs, the stats accumulator, the gather and the affine layers; the rest of the
    contract comes from its bases, one module each (``contract_sparse``, ``contract_losses``,
    ``contract_optimizers``, ``contract_stacks``)."""

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

    def memory_budget(self) -> int:
        """Bytes one working set (a stack of networks and its batches) may take on this backend: here a
        quarter of the host's memory; a device backend answers from its free memory."""
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError, AttributeError):
            return 4 << 30

    def layer_views(self, flat: Any, sizes: Sequence[int]) -> tuple[list, list]:
        """``(Ws, bs)``: every layer's weights and biases of every model of ``flat`` (M, P), as the stacked
        operations take them (see :func:`layer_layout`).  Here :class:`StackedLayer` views; a backend whose
        arrays reshape freely returns arrays ``(M, in, out)`` and ``(M, out)``."""
        layout = layer_layout(sizes)
        return ([StackedLayer(flat, w, shape) for w, shape, _, _ in layout],
                [StackedLayer(flat, b, (n,)) for _, _, b, n in layout])

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

    def _output(self, out: Any, name: str, shape: Sequence[int], dtype: Any) -> Any:
        """``out`` checked to be a C-contiguous ``shape`` array of ``dtype``, or a new one when it is None."""
        if out is None:
            return self.empty(tuple(shape), dtype)
        check_out(out, name, shape, dtype)
        return out

    def synchronize(self) -> None:
        """Block until queued work has finished (a no-op on the host)."""

    def warmup(self, dtype: Any = np.float32) -> None:
        """Compile (or load from cache) everything a training step needs for ``dtype``, ahead of the first step."""

    #: kernel launches issued so far (device backends count them; host backends leave it 0)
    launch_count: int = 0

    # ------------------------------------------------------------------ graphs
    #: whether :meth:`capture` works here; ``mlp.loop.TrainingLoop`` captures an epoch only when it does
    supports_graphs: bool = False

    def capture(self, record: Callable[[], Any], keepalive: Any = None) -> Any:
        """Record the operations ``record()`` issues, without running them, into a graph replayed later.

        Returns an object with ``replay()`` (run the recorded operations once
        more, with the buffers and scalar arguments they were recorded with),
        ``close()`` and ``launches`` (operations recorded); it keeps
        ``keepalive`` (the buffers it points at) alive.  Raises
        :class:`GraphCaptureError` when an operation escaped the recording,
        and any other exception when this device or driver cannot capture.
        """
        raise NotImplementedError(f"the {self.name!r} backend cannot capture graphs")

    def graph_key(self) -> tuple:
        """This backend's settings that a captured graph bakes in (compared by value; a change means a new
        capture).  Empty for a backend without settings that change its launches."""
        return ()

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
            check_index_range(self.to_numpy(idx), shape[0], "idx", "row indices", f"X has {shape[0]} rows")
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
    def affine_forward(self, x: Any, W: Any, b: Any, activation: str | bool = "relu", out: Any = None) -> Any:
        """``f(x @ W + b)``, fused, into ``out``.

        ``activation``: ``f``, one of :data:`ACTIVATIONS` (or a bool: True
        for relu, False for identity).  x: (m, k), W: (k, n), b: (n,), one
        float dtype; returns (m, n) of x's dtype.
        """
        act = activation_code(activation)
        check_matrix(x, "x")
        m, k = x.shape
        check_matrix(W, "W", rows=k)
        n = W.shape[1]
        check_vector(b, "b", size=n)
        check_same_dtype(x, "x", W=W, b=b)
        self._require_contiguous(x=x, W=W, b=b)
        out = self._output(out, "out", (m, n), x.dtype)
        self._affine_forward(x, W, b, act, out)
        return out

    @abstractmethod
    def _affine_forward(self, x: Any, W: Any, b: Any, act: int, out: Any) -> None:
        """``act``: an activation code (a bool also works: True is relu, False identity)."""

    def affine_backward(
        self,
        dy: Any,
        x: Any,
        W: Any,
        y: Any = None,
        need_dx: bool = True,
        *,
        activation: str | bool | None = None,
        dx_out: Any = None,
        dW_out: Any = None,
        db_out: Any = None,
    ) -> tuple[Any, Any, Any]:
        """Gradients of ``y = f(x @ W + b)`` given ``dy``, the gradient with respect to ``y``.

        ``dy`` is first multiplied by ``f'``, computed from ``y`` (this
        layer's output, as the forward stored it): relu ``[y > 0]``, tanh
        ``1 - y*y``, logistic ``y*(1 - y)``; ``dy`` itself is never modified.
        ``activation``: ``f``, one of :data:`ACTIVATIONS` (or a bool); None
        means relu when ``y`` is given and identity when not.  The identity
        needs no ``y``; every other activation does.
        Shapes: dy and y (m, n), x (m, k), W (k, n).  Returns ``(dx, dW, db)``
        with shapes (m, k), (k, n), (n,); ``dx`` is ``None`` when ``need_dx``
        is false.
        """
        act = _backward_activation(activation, y)
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
        dW_out = self._output(dW_out, "dW_out", (k, n), dt)
        db_out = self._output(db_out, "db_out", (n,), dt)
        self._affine_backward(dy, x, W, y, dx, dW_out, db_out, act)
        return dx, dW_out, db_out

    @abstractmethod
    def _affine_backward(self, dy: Any, x: Any, W: Any, y: Any, dx: Any, dW: Any, db: Any, act: int = 1) -> None:
        """``act``: the activation code (default relu); no derivative is applied when ``y`` is None
        or ``act`` is the identity.  ``dx`` None: not computed."""

    def __repr__(self) -> str:
        return f"<mlp backend {self.name!r}>"
