"""The backend contract, sparse input: a CSR ``X`` kept sparse and read one batch at a time.

Part of :class:`mlp.backends.base.Backend` (a base class of it); the conventions are those of
``base.py``'s docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .._validation import check_float_array, check_float_dtype, check_index_range
from .arrays import CSRMatrix
from .checks import _describe, check_matrix, check_out, check_same_dtype, check_vector
from .names import INDEX_DTYPE, _backward_activation, activation_code


class SparseInputOps(ABC):
    """The CSR operations of the backend contract (see the comment below)."""

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
