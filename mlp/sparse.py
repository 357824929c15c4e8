"""Sparse input: a ``scipy.sparse`` X stays sparse from the library's boundary down to each batch.

Past validation a sparse X is a canonical SciPy CSR matrix (:func:`as_matrix`: CSC and the other
formats are converted once, repeated entries summed), placed on the backend as a
:class:`~mlp.backends.base.CSRMatrix` (:func:`to_backend`).  Training gathers each mini-batch of its
rows with the backend's ``take_rows_csr`` and the first layer reads it with ``csr_affine_forward`` /
``csr_affine_backward`` (see the backend contract, ``mlp/backends/contract_sparse.py``); prediction goes through
the rows in chunks (:func:`row_batches`), and a full-batch evaluation (L-BFGS) takes X whole
(:func:`full_batch`).  Nothing here densifies all of X, except on a device for an X whose dense form is
small (:data:`FULL_BATCH_DENSE_BYTES`).

SciPy is not a dependency of the core package: a sparse X can only exist once ``scipy.sparse`` has been
imported, so :func:`is_sparse` asks only then.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Iterator

import numpy as np

from .backends import Backend, get_backend
from .backends.base import CSRMatrix

#: bytes at most of one dense batch of sparse rows when predicting on a backend whose batches are dense
#: (the chunk of rows shrinks for a wide X: 8192 rows of 100,000 float64 features would take 6.5 GB)
DENSE_BATCH_BYTES = 64 << 20
#: bytes at most of a sparse X densified whole for a full-batch evaluation on a device; a larger X is
#: evaluated on the CPU, sparse
FULL_BATCH_DENSE_BYTES = 1 << 30


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a ``scipy.sparse`` matrix or array."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and bool(sp.issparse(X))


def as_matrix(X: Any, dtype: Any = None) -> Any:
    """``X`` as the library computes on it: a sparse X as a canonical SciPy CSR matrix of ``dtype`` (the
    caller's matrix is never modified; one in that form already is returned as it is), anything else as a
    C-contiguous NumPy array of ``dtype`` (None: its own)."""
    if not is_sparse(X):
        return np.ascontiguousarray(X, dtype=dtype)
    csr = X.tocsr()
    if dtype is not None and np.dtype(csr.dtype) != np.dtype(dtype):
        csr = csr.astype(dtype)
    if not csr.has_canonical_format:
        if csr is X:
            csr = csr.copy()
        csr.sum_duplicates()
    return csr


def to_backend(backend: Backend, X: Any, dtype: Any) -> Any:
    """``X`` on ``backend``: a :class:`CSRMatrix` for a sparse X, else an array of the backend (of ``dtype``)."""
    if is_sparse(X) or isinstance(X, CSRMatrix):
        return backend.csr_asarray(X, dtype)
    return backend.asarray(X, dtype=dtype)


def _check_shape(X: Any, n_features: int, name: str) -> None:
    shape = tuple(X.shape)
    if len(shape) != 2 or shape[0] == 0 or shape[1] != n_features:
        raise ValueError(f"{name}: expected a sparse matrix of shape (n_samples >= 1, {n_features}) ({n_features} "
                         f"features: the model's input size), got shape {shape}")


def check_host(X: Any, n_features: int, dtype: Any, name: str = "X") -> Any:
    """A ``scipy.sparse`` ``X`` checked as a dense one is (2-D, at least one row, ``n_features`` columns, real
    finite values) and returned as a canonical SciPy CSR matrix of ``dtype`` on the host (:func:`as_matrix`):
    rows can be selected from it and it can be hashed before it goes to a backend."""
    _check_shape(X, n_features, name)
    if np.dtype(X.dtype).kind not in "biuf":
        raise TypeError(f"{name}: expected real values, got a sparse matrix of dtype {X.dtype}")
    csr = as_matrix(X, dtype)
    finite = np.isfinite(csr.data)
    if not finite.all():
        raise ValueError(f"{name}: expected finite values, got {finite.size - np.count_nonzero(finite)} NaN or "
                         "infinite entries")
    return csr


def check_features(backend: Backend, X: Any, n_features: int, dtype: Any, name: str = "X") -> CSRMatrix:
    """A sparse ``X`` checked as a dense one is (2-D, at least one row, ``n_features`` columns, finite values)
    and placed on ``backend`` as a CSRMatrix of ``dtype``.  A CSRMatrix already on the backend (the library's
    own: the validation rows of a fit, every epoch) is checked for its shape and dtype only, as a device array
    is."""
    _check_shape(X, n_features, name)
    if isinstance(X, CSRMatrix):
        if X.dtype != np.dtype(dtype) or not backend.is_array(X.data):
            raise ValueError(f"{name}: expected a CSRMatrix of the {backend.name!r} backend and dtype "
                             f"{np.dtype(dtype)}, got {X!r}")
        return X
    return backend.csr_asarray(check_host(X, n_features, dtype, name), dtype)


def row_batches(backend: Backend, X: CSRMatrix, chunk: int) -> Iterator[tuple[int, Any]]:
    """``(start, batch)`` over the rows of ``X`` in order: CSR batches of the backend of at most ``chunk`` rows
    (fewer where batches are dense, so that one takes at most :data:`DENSE_BATCH_BYTES`).  The batches are
    buffers reused from one to the next: use each before taking the next."""
    n, cols = X.shape
    if backend.csr_batch_layout == "dense":
        chunk = max(1, min(chunk, DENSE_BATCH_BYTES // max(1, cols * X.dtype.itemsize)))
    buffers: dict[int, Any] = {}
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        batch = buffers.get(stop - start)
        if batch is None:
            batch = buffers[stop - start] = backend._new_csr_batch(X, stop - start)
        backend._take_rows_csr(X, backend.asarray(np.arange(start, stop, dtype=np.int64)), batch)
        yield start, batch


def whole_batch(backend: Backend, X: CSRMatrix) -> Any:
    """Every row of ``X`` as one CSR batch: ``X`` itself where batches are CSR (nothing copied), else X
    densified on the backend (its rows x features: for an X whose dense form is small)."""
    if backend.csr_batch_layout == "csr":
        return X
    batch = backend._new_csr_batch(X, X.shape[0])
    backend._take_rows_csr(X, backend.asarray(np.arange(X.shape[0], dtype=np.int64)), batch)
    return batch


def full_batch(model: Any, X: Any) -> Any:
    """A sparse host ``X`` as one batch on ``model``'s backend, for a full-batch evaluation (L-BFGS).

    On a backend whose batches are dense, an X whose dense form exceeds :data:`FULL_BATCH_DENSE_BYTES` is
    never densified: the model moves to the NumPy backend (one warning says so) and X stays sparse there.
    """
    be = model.backend
    dense_bytes = X.shape[0] * X.shape[1] * np.dtype(model.dtype).itemsize
    if be.csr_batch_layout == "dense" and dense_bytes > FULL_BATCH_DENSE_BYTES:
        warnings.warn(f"X: a sparse matrix of shape {X.shape} would take {dense_bytes / 2**30:.1f} GiB dense on the "
                      f"{be.name!r} backend; its full-batch loss and gradient are computed on the CPU instead "
                      "(sparse products, NumPy backend)", RuntimeWarning, stacklevel=4)
        model.to(get_backend("numpy"))
        be = model.backend
    return whole_batch(be, be.csr_asarray(X, model.dtype))
