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

from .._validation import check_float_array, check_float_dtype, check_index_range
from ..kernels.scalars import adam_scalars, rmsprop_scalars, sgd_scalars
from .arrays import CSRMatrix, StackedLayer  # noqa: F401  (part of the contract, importable from here)
from .checks import (_describe, check_matrix, check_out, check_same_dtype, check_vector,  # noqa: F401
                     is_c_contiguous)
from .names import (ACTIVATIONS, CLASSIFICATION_OUTPUTS, INDEX_DTYPE, OUTPUTS, STATS_CORRECT,  # noqa: F401
                    STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM, STATS_SIZE, TARGET_RANGES, _backward_activation,
                    activation_code, layer_layout)


def _stack_rows(models: int, batch: int, rows: Any):
    """``(m, rows of model m)`` for every model of a stack that trains (see the stacked operations)."""
    for m in range(models):
        r = batch if rows is None else int(rows[m])
        if r >= 0:
            yield m, r


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

    # ------------------------------------------------------------ sparse input
    # A sparse X stays sparse: it lives on the backend as a CSRMatrix and is read one batch at a time, by the
    # first layer only (no gradient with respect to X is ever needed).  A *CSR batch* is what new_csr_batch
    # makes and take_rows_csr fills, in this backend's ``csr_batch_layout``:
    #   "csr"    a CSRMatrix holding the batch rows' non-zeros; the first layer's products run over them
    #            (the NumPy backend: O(non-zeros x outputs) per product, no dense copy of any row);
    #   "dense"  the rows densified into a (B, features) array of this backend, on which the first layer's
    #            products are the dense ones (a device backend: the scatter is one kernel, the products keep
    #            their tuned kernels; the buffer takes B x features elements).
    # The model runs the first layer with csr_affine_forward / csr_affine_backward when its batch is a
    # CSRMatrix, and with the dense operations otherwise.
    #: how this backend holds a batch of sparse rows: "csr" or "dense" (see above)
    csr_batch_layout: str = "csr"

    def csr_asarray(self, X: Any, dtype: Any = None) -> CSRMatrix:
        """``X`` as a canonical :class:`CSRMatrix` of this backend.

        ``X``: a ``scipy.sparse`` matrix or array of any format (CSC and the others are converted to CSR
        once; repeated entries of a row are summed; the caller's matrix is never modified), or a
        CSRMatrix of this backend (returned as it is when its dtype is ``dtype``).  ``dtype``: float32 or
        float64; None keeps X's dtype when it is one of those, else float64.  The values must be finite.
        """
        if isinstance(X, CSRMatrix):
            self._check_csr(X, "X")
            if dtype is None or np.dtype(dtype) == X.dtype:
                return X
            return CSRMatrix(self.asarray(X.data, dtype=check_float_dtype(dtype, "dtype")), X.indices, X.indptr,
                             X.shape)
        if not (hasattr(X, "tocsr") and hasattr(X, "nnz")):
            raise TypeError(f"X: expected a scipy.sparse matrix or a CSRMatrix, got {_describe(X)}")
        if len(X.shape) != 2:
            raise ValueError(f"X: expected a 2-D sparse matrix, got shape {tuple(X.shape)}")
        if dtype is None:
            dtype = X.dtype if np.dtype(X.dtype) in (np.float32, np.float64) else np.float64
        dt = check_float_dtype(dtype, "dtype")
        if np.dtype(X.dtype).kind not in "biuf":
            raise TypeError(f"X: expected real values, got dtype {X.dtype}")
        csr = X.tocsr()
        if not csr.has_canonical_format:
            csr = csr.copy()  # sum_duplicates works in place: never on the caller's matrix
            csr.sum_duplicates()
        data = np.ascontiguousarray(csr.data, dtype=dt)
        if not np.isfinite(data).all():
            raise ValueError(f"X: expected finite values, got {data.size - np.count_nonzero(np.isfinite(data))} "
                             "NaN or infinite entries")
        return CSRMatrix(self.asarray(data, dtype=dt), self.asarray(csr.indices, dtype=INDEX_DTYPE),
                         self.asarray(csr.indptr, dtype=INDEX_DTYPE), csr.shape)

    def _check_csr(self, X: Any, name: str, capacity: int | None = None) -> np.ndarray:
        """Raise unless ``X`` is a well-formed CSRMatrix of this backend (with room for ``capacity`` non-zeros);
        returns its ``indptr`` on the host.  Reads indptr and indices on the host (a copy on a device)."""
        if not isinstance(X, CSRMatrix):
            raise TypeError(f"{name}: expected a CSRMatrix of the {self.name!r} backend (see csr_asarray), "
                            f"got {_describe(X)}")
        rows, cols = X.shape
        for part, a in (("data", X.data), ("indices", X.indices), ("indptr", X.indptr)):
            if not self.is_array(a):
                raise TypeError(f"{name}.{part}: expected an array of the {self.name!r} backend, got {_describe(a)}")
        check_vector(X.data, f"{name}.data")
        check_float_array(X.data, f"{name}.data")
        check_vector(X.indices, f"{name}.indices", size=X.data.shape[0], dtype=INDEX_DTYPE)
        check_vector(X.indptr, f"{name}.indptr", size=rows + 1, dtype=INDEX_DTYPE)
        self._require_contiguous(**{f"{name}.data": X.data, f"{name}.indices": X.indices,
                                    f"{name}.indptr": X.indptr})
        indptr = np.asarray(self.to_numpy(X.indptr))
        if indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] > X.data.shape[0]:
            raise ValueError(f"{name}.indptr: expected 0, then non-decreasing offsets up to at most "
                             f"{X.data.shape[0]} (the length of {name}.data), got {indptr[0]} to {indptr[-1]}")
        if capacity is not None and X.data.shape[0] < capacity:
            raise ValueError(f"{name}: expected room for {capacity} non-zeros, got a buffer of {X.data.shape[0]}")
        used = int(indptr[-1])
        if used:
            check_index_range(np.asarray(self.to_numpy(X.indices))[:used], cols, f"{name}.indices",
                              "column indices", f"{name} has {cols} columns")
        return indptr

    def _check_csr_batch(self, x: Any, name: str, rows: int | None = None, cols: int | None = None) -> None:
        """Raise unless ``x`` is a CSR batch of this backend's layout with the given extents."""
        if self.csr_batch_layout == "csr":
            self._check_csr(x, name)
            got = x.shape
        else:
            if isinstance(x, CSRMatrix) or not self.is_array(x):
                raise TypeError(f"{name}: expected a CSR batch of the {self.name!r} backend (its rows densified: "
                                f"what take_rows_csr returns), got {_describe(x)}")
            check_matrix(x, name)
            self._require_contiguous(**{name: x})
            got = tuple(x.shape)
        if rows is not None and got[0] != rows:
            raise ValueError(f"{name}: expected a batch of {rows} rows, got {got[0]}")
        if cols is not None and got[1] != cols:
            raise ValueError(f"{name}: expected {cols} columns, got {got[1]}")

    def new_csr_batch(self, X: CSRMatrix, rows: int) -> Any:
        """An (unfilled) CSR batch buffer for any ``rows`` rows of ``X``, in this backend's layout: made once,
        filled by :meth:`take_rows_csr` every step."""
        self._check_csr(X, "X")
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 0:
            raise ValueError(f"rows: expected an integer >= 0, got {rows!r}")
        return self._new_csr_batch(X, int(rows))

    @abstractmethod
    def _new_csr_batch(self, X: CSRMatrix, rows: int) -> Any: ...

    def take_rows_csr(self, X: CSRMatrix, idx: Any, out: Any = None) -> Any:
        """The rows ``X[idx]`` of a CSRMatrix as a CSR batch (a mini-batch gather); idx: (B,) int64.

        ``out``: a batch from :meth:`new_csr_batch` for ``B`` rows of ``X`` (made here when None)."""
        indptr = self._check_csr(X, "X")
        check_vector(idx, "idx", dtype=INDEX_DTYPE)
        self._require_contiguous(idx=idx)
        host_idx = np.asarray(self.to_numpy(idx))
        if host_idx.size:
            check_index_range(host_idx, X.shape[0], "idx", "row indices", f"X has {X.shape[0]} rows")
        if out is None:
            out = self._new_csr_batch(X, host_idx.shape[0])
        elif self.csr_batch_layout == "csr":
            self._check_csr(out, "out", capacity=int((indptr[host_idx + 1] - indptr[host_idx]).sum()))
            if out.shape != (host_idx.shape[0], X.shape[1]) or out.dtype != X.dtype:
                raise ValueError(f"out: expected a CSR batch of shape {(host_idx.shape[0], X.shape[1])} and dtype "
                                 f"{X.dtype}, got {out!r}")
        else:
            self._check_csr_batch(out, "out")
            check_out(out, "out", (host_idx.shape[0], X.shape[1]), X.dtype)
        self._take_rows_csr(X, idx, out)
        return out

    @abstractmethod
    def _take_rows_csr(self, X: CSRMatrix, idx: Any, out: Any) -> None: ...

    def csr_affine_forward(self, x: Any, W: Any, b: Any, activation: str | bool = "relu", out: Any = None) -> Any:
        """``f(x @ W + b)`` of a CSR batch ``x`` (m, k) (see :meth:`take_rows_csr`), fused, into ``out`` (m, n).

        As :meth:`affine_forward`, with ``x`` sparse: W (k, n), b (n,) of x's dtype."""
        act = activation_code(activation)
        self._check_csr_batch(x, "x")
        m, k = x.shape
        check_matrix(W, "W", rows=k)
        n = W.shape[1]
        check_vector(b, "b", size=n)
        check_same_dtype(x, "x", W=W, b=b)
        self._require_contiguous(W=W, b=b)
        out = self._output(out, "out", (m, n), x.dtype)
        self._csr_affine_forward(x, W, b, act, out)
        return out

    @abstractmethod
    def _csr_affine_forward(self, x: Any, W: Any, b: Any, act: int, out: Any) -> None: ...

    def csr_affine_backward(self, dy: Any, x: Any, y: Any = None, *, activation: str | bool | None = None,
                            dW_out: Any = None, db_out: Any = None) -> tuple[Any, Any]:
        """``(dW, db)`` of ``y = f(x @ W + b)`` for a CSR batch ``x`` (m, k), given ``dy`` (m, n).

        As :meth:`affine_backward` without ``dx`` (the input needs no gradient): ``dW = x.T @ (dy * f'(y))``
        (k, n) and ``db`` its column sums (n,)."""
        act = _backward_activation(activation, y)
        check_matrix(dy, "dy")
        m, n = dy.shape
        self._check_csr_batch(x, "x", rows=m)
        k = x.shape[1]
        if y is not None:
            check_matrix(y, "y", rows=m, cols=n)
        check_same_dtype(dy, "dy", x=x, y=y)
        self._require_contiguous(dy=dy, y=y)
        dW_out = self._output(dW_out, "dW_out", (k, n), dy.dtype)
        db_out = self._output(db_out, "db_out", (n,), dy.dtype)
        self._csr_affine_backward(dy, x, y, dW_out, db_out, act)
        return dW_out, db_out

    @abstractmethod
    def _csr_affine_backward(self, dy: Any, x: Any, y: Any, dW: Any, db: Any, act: int = 1) -> None:
        """As :meth:`_affine_backward` with ``dx`` None, for a CSR batch ``x``."""

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
        check_index_range(self.to_numpy(labels), c, "labels", "class indices", f"logits has {c} columns")
        return n, c

    def softmax_cross_entropy(
        self, logits: Any, labels: Any, dlogits_out: Any = None, weights: Any = None
    ) -> tuple[float, Any]:
        """Mean softmax cross-entropy of a batch (weighted by ``weights`` when given) and its gradient.

        Returns ``(loss, dlogits)`` with ``loss`` a Python float (on a GPU this
        reads the device, a synchronisation: the training loop uses
        :meth:`softmax_cross_entropy_into` instead) and
        ``dlogits = (softmax(logits) - onehot(labels)) / N``.
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is None:
            dlogits_out = self.empty((n, c), logits.dtype)
        stats = self.new_stats()
        self.softmax_cross_entropy_into(logits, labels, dlogits_out, stats, weights=weights)
        return float(self.to_numpy(stats)[0]) / n, dlogits_out

    def softmax_cross_entropy_into(
        self, logits: Any, labels: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """One pass over each row: max, log-sum-exp, loss, gradient and argmax.

        Writes ``(softmax - onehot) / N`` into ``dlogits_out`` (skipped when it
        is ``None``, as in evaluation) and accumulates into ``stats`` (see the
        module docstring); ``step`` is recorded there if a loss is not finite.
        ``weights``: per-sample weights, (N,) of the logits' dtype, finite,
        >= 0, with a positive sum (see the losses section below).
        Never synchronises (except to check ``labels`` and ``weights``).
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is not None:
            check_out(dlogits_out, "dlogits_out", (n, c), logits.dtype)
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
        self._check_weights(weights, n, logits.dtype)
        self._softmax_xent(logits, labels, dlogits_out, stats, int(step), weights)

    @abstractmethod
    def _softmax_xent(self, logits: Any, labels: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any = None) -> None: ...

    # ------------------------------------------------------------------ losses
    # The output losses other than softmax, each fused with its gradient with
    # respect to the output layer's pre-activation z, as scikit-learn's MLPs
    # define them.  For a batch of N rows with per-sample weights w (all 1
    # when ``weights`` is None) and S = sum(w):
    #
    # * gradient row i: ``w[i] * (out(z[i]) - t[i]) / S`` (``/ N`` unweighted);
    # * ``stats[STATS_LOSS_SUM] += N * w[i] / S * loss_i`` over the rows (the
    #   plain sum of per-row losses unweighted), so an epoch's loss sum over
    #   its sample count is the batch-size-weighted mean of the batches'
    #   weighted means, scikit-learn's ``loss_curve_``;
    # * ``stats[STATS_CORRECT]``: rows predicted right (softmax: argmax equals
    #   the label; logistic: every column's ``z > 0`` equals ``t > 0.5``;
    #   nothing for the regression losses);
    # * ``stats[STATS_FIRST_NONFINITE_STEP]``: ``step``, if smaller, when a
    #   row's loss is not finite.
    #
    # The underscored methods take ``weights`` None or (N,) of z's dtype and
    # trust them; weights summing to 0 give NaN there.
    def _check_weights(self, weights: Any, n: int, dtype: Any) -> None:
        """Raise unless ``weights`` is None or (n,) of ``dtype``, finite, >= 0, with a positive sum."""
        if weights is None:
            return
        check_vector(weights, "weights", size=n, dtype=dtype)
        self._require_contiguous(weights=weights)
        host = np.asarray(self.to_numpy(weights), dtype=np.float64)
        if not np.isfinite(host).all():
            raise ValueError(f"weights: expected finite values, got {host[~np.isfinite(host)][0]} at index "
                             f"{int(np.flatnonzero(~np.isfinite(host))[0])}")
        if host.min() < 0:
            raise ValueError(f"weights: expected values >= 0, got {host.min()} at index {int(host.argmin())}")
        if not host.sum() > 0:
            raise ValueError("weights: expected a positive sum, got 0 (every weight is 0)")

    def _check_targets(self, z: Any, z_name: str, targets: Any, low: float, high: float) -> tuple[int, int]:
        """Raise unless ``z`` is a non-empty (N, C) float matrix and ``targets`` one like it with values in
        ``[low, high]`` (finite).  Returns ``(N, C)``."""
        check_matrix(z, z_name)
        n, c = z.shape
        if n == 0 or c == 0:
            raise ValueError(f"{z_name}: expected at least one row and one column, got {_describe(z)}")
        check_matrix(targets, "targets", rows=n, cols=c)
        check_same_dtype(z, z_name, targets=targets)
        self._require_contiguous(**{z_name: z, "targets": targets})
        # A device-to-host copy on a GPU; the training loop checks its targets
        # once per fit and takes the underscored fast path.
        host = self.to_numpy(targets)
        if not np.isfinite(host).all():
            raise ValueError("targets: expected finite values, got NaN or inf")
        lo, hi = float(host.min()), float(host.max())
        if lo < low or hi > high:
            raise ValueError(f"targets: expected values in [{low}, {high}], got values in [{lo}, {hi}]")
        return n, c

    def _loss_into(self, op: Callable, z_name: str, z: Any, targets: Any, dz_out: Any, stats: Any, step: int,
                   weights: Any, low: float = -math.inf, high: float = math.inf) -> None:
        n, c = self._check_targets(z, z_name, targets, low, high)
        if dz_out is not None:
            check_out(dz_out, f"d{z_name}_out", (n, c), z.dtype)
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
        self._check_weights(weights, n, z.dtype)
        op(z, targets, dz_out, stats, int(step), weights)

    def logistic_cross_entropy_into(
        self, logits: Any, targets: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """Sigmoid outputs with binary cross-entropy summed over the C columns (binary: C = 1; multilabel).

        logits, targets (values in [0, 1]) and ``dlogits_out`` (or None):
        (N, C), one float dtype.  Per row ``sum_j softplus(z_j) - t_j z_j``,
        computed stably as ``max(z, 0) - t z + log1p(exp(-|z|))``; gradient
        ``w (sigmoid(z) - t) / S``; a hit when every column is right.
        Deliberate difference: scikit-learn clips the probabilities to
        ``[eps, 1 - eps]`` before its logarithm, so its loss stops growing
        past ``|z|`` of about 36 (float64) or 16 (float32); this loss keeps
        growing linearly, as the gradient it is the loss of does.
        """
        self._loss_into(self._logistic_xent, "logits", logits, targets, dlogits_out, stats, step, weights,
                        *TARGET_RANGES["logistic"])

    @abstractmethod
    def _logistic_xent(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                       weights: Any = None) -> None: ...

    def squared_error_into(
        self, pred: Any, targets: Any, dpred_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """Identity outputs (regression): per row ``0.5 * mean_j (pred_j - t_j)^2``.

        pred, targets and ``dpred_out`` (or None): (N, C), one float dtype.
        Gradient ``w (pred - t) / S``, not divided by C (as scikit-learn's).
        No hits are counted.
        """
        self._loss_into(self._squared_error, "pred", pred, targets, dpred_out, stats, step, weights)

    @abstractmethod
    def _squared_error(self, pred: Any, targets: Any, dpred: Any, stats: Any, step: int,
                       weights: Any = None) -> None: ...

    def poisson_loss_into(
        self, logits: Any, targets: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """Exp outputs with the Poisson deviance (scikit-learn's ``loss="poisson"``), targets >= 0.

        logits (the log of the predicted mean), targets and ``dlogits_out``
        (or None): (N, C), one float dtype.  Per row
        ``sum_j xlogy(t_j, t_j) - t_j z_j - t_j + exp(z_j)``; gradient
        ``w (exp(z) - t) / S``.  No hits are counted.
        """
        self._loss_into(self._poisson_loss, "logits", logits, targets, dlogits_out, stats, step, weights,
                        *TARGET_RANGES["exp"])

    @abstractmethod
    def _poisson_loss(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any = None) -> None: ...

    @abstractmethod
    def _l2_penalty(self, params: Any, n: int, scales: Any, row: int, stats: Any) -> None:
        """``stats[STATS_LOSS_SUM] += scales[row] * sum(params[:n]**2)``: scikit-learn's
        ``0.5 * alpha * ||W||^2`` term, its scale read from ``scales`` (a 1-D array of the params' dtype)
        so that a captured step follows a new scale."""

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

    # --------------------------------------------------------- stacked models
    # M models of one shape trained at once (``mlp.stack``): every array has a leading model axis and model
    # m's slice is exactly what the single-model operation takes, so a model of a stack computes what its
    # own fit would.  The defaults here run the single-model operations model by model (correct on any
    # backend); a backend overrides them with operations over the whole stack.
    #   x (M, B, k), W (M, k, n), b (M, n), y/out (M, B, n); idx (M, B) int64; params (M, P);
    #   stats (M, STATS_SIZE); optimizer tables (M, steps, columns); L2 scales (M, steps).
    #   On a device backend W/b (and dW/db) are :class:`StackedLayer` views of the (M, P) buffers.
    #   rows (M,) int64, an array of this backend (a device backend also takes a host array, copied at
    #   the launch: not capturable in a CUDA graph): model m's batch is its first rows[m] rows (a shorter
    #   last batch is padded); rows[m] == -1: model m has stopped training, and none of its arrays is read
    #   or written (it is frozen).  None (products only): every row of every model.
    #: whether several host threads stepping disjoint ranges of a stack's models run faster (a host backend's
    #: work runs on the calling thread; a device's is queued on one stream, where threads gain nothing)
    stack_threads_help: bool = False

    def new_stacked_stats(self, models: int) -> Any:
        """A fresh ``(models, STATS_SIZE)`` accumulator (see :meth:`new_stats`)."""
        stats = np.zeros((models, STATS_SIZE))
        stats[:, STATS_FIRST_NONFINITE_STEP] = math.inf
        return self.asarray(stats, dtype=np.float64)

    def _fill_stacked_stats(self, stats: Any) -> None:
        for m in range(stats.shape[0]):
            self._fill_stats(stats[m])

    def _take_rows_stacked(self, X: Any, idx: Any, out: Any) -> None:
        for m in range(idx.shape[0]):
            self._take_rows(X, idx[m], out[m])

    def _host_rows(self, rows: Any) -> Any:
        return None if rows is None else np.asarray(self.to_numpy(rows) if self.is_array(rows) else rows)

    # The products of model m use its first rows[m] rows only, exactly as its own fit's shorter last batch.
    def _affine_forward_stacked(self, x: Any, W: Any, b: Any, act: int, out: Any, rows: Any = None) -> None:
        for m, r in _stack_rows(x.shape[0], x.shape[1], self._host_rows(rows)):
            self._affine_forward(x[m, :r], W[m], b[m], act, out[m, :r])

    def _affine_backward_stacked(self, dy: Any, x: Any, W: Any, y: Any, dx: Any, dW: Any, db: Any,
                                 act: int = 1, rows: Any = None) -> None:
        for m, r in _stack_rows(dy.shape[0], dy.shape[1], self._host_rows(rows)):
            self._affine_backward(dy[m, :r], x[m, :r], W[m], None if y is None else y[m, :r],
                                  None if dx is None else dx[m, :r], dW[m], db[m], act)

    def _loss_stacked(self, output: str, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any, rows: Any) -> None:
        """The output layer's loss (``output`` as :data:`OUTPUTS`) of every training model's batch;
        a padded row's gradient is zero."""
        op = {"softmax": self._softmax_xent, "logistic": self._logistic_xent, "identity": self._squared_error,
              "exp": self._poisson_loss}[output]
        for m, r in _stack_rows(logits.shape[0], logits.shape[1], self._host_rows(rows)):
            dz = None if dlogits is None else dlogits[m, :r]
            w = None if weights is None else weights[m, :r]
            if w is None:
                op(logits[m, :r], targets[m, :r], dz, stats[m], step)
            else:
                op(logits[m, :r], targets[m, :r], dz, stats[m], step, w)
            if dlogits is not None and r < dlogits.shape[1]:
                self._fill(dlogits[m, r:], 0)

    def _training(self, rows: Any) -> np.ndarray:
        return np.flatnonzero(self._host_rows(rows) >= 0)

    def _l2_penalty_stacked(self, params: Any, n: int, scales: Any, row: int, stats: Any, rows: Any) -> None:
        for m in self._training(rows):
            self._l2_penalty(params[m], n, scales[m], row, stats[m])

    def _sgd_step_stacked(self, params: Any, grads: Any, buf: Any, table: Any, row: int, nesterov: bool,
                          n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._sgd_step(params[m], grads[m], None if buf is None else buf[m], table[m], row, nesterov, n_decay)

    def _rmsprop_step_stacked(self, params: Any, grads: Any, square_avg: Any, buf: Any, table: Any, row: int,
                              n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._rmsprop_step(params[m], grads[m], square_avg[m], None if buf is None else buf[m], table[m], row,
                               n_decay)

    def _adam_step_stacked(self, params: Any, grads: Any, exp_avg: Any, exp_avg_sq: Any, table: Any, row: int,
                           decoupled: bool, n_decay: int, rows: Any) -> None:
        for m in self._training(rows):
            self._adam_step(params[m], grads[m], exp_avg[m], exp_avg_sq[m], table[m], row, decoupled, n_decay)

    def __repr__(self) -> str:
        return f"<mlp backend {self.name!r}>"
