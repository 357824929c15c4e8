"""The array views of the backend contract that are more than one array: a layer of every model of a stack
(:class:`StackedLayer`) and a sparse matrix in CSR form (:class:`CSRMatrix`)."""

from __future__ import annotations

from typing import Any

import numpy as np


class StackedLayer:
    """One layer's weights (or biases) of every model of a stack, as views of the stack's flat ``(M, P)``
    buffer ``source``: model m's are ``source[m, offset:offset + prod(shape)]`` read as ``shape`` (row-major).

    For backends whose arrays cannot be reshaped when not contiguous: ``layer[m]`` is model m's
    ``shape`` array, ``layer[a:b]`` the same layer of models a to b (``models``); a device backend
    launches on :attr:`flat` and ``offset`` directly (one launch for every model).
    """

    def __init__(self, source: Any, offset: int, shape: tuple[int, ...]) -> None:
        self.source, self.offset, self.shape = source, int(offset), tuple(shape)
        self.models = range(source.shape[0])
        size = int(np.prod(shape))
        self._views = [source[m, offset:offset + size].reshape(shape) for m in self.models]
        self._flat = source

    @property
    def flat(self) -> Any:
        """The ``(len(models), P)`` rows of :attr:`source` this layer's models hold."""
        return self._flat

    def same_models(self, other: "StackedLayer") -> bool:
        """Whether ``other`` is a layer of the same buffer and models (a device launch reads both from it)."""
        return other.source is self.source and other.models == self.models

    def __getitem__(self, m: Any) -> Any:
        if isinstance(m, slice):
            if m.step not in (None, 1):
                raise ValueError(f"models: expected a contiguous range, got step {m.step}")
            part = object.__new__(StackedLayer)
            part.source, part.offset, part.shape = self.source, self.offset, self.shape
            part.models, part._views = self.models[m], self._views[m]
            part._flat = self.source[part.models.start:part.models.stop]
            return part
        return self._views[m]

    def __len__(self) -> int:
        return len(self._views)


class CSRMatrix:
    """A sparse matrix in compressed sparse row (CSR) form whose arrays belong to one backend.

    Row ``r`` holds the values ``data[indptr[r]:indptr[r + 1]]`` in the columns
    ``indices[indptr[r]:indptr[r + 1]]``; every other entry is zero.  ``data`` is float32 or float64,
    ``indptr`` (rows + 1,) and ``indices`` int64, all C-contiguous.  ``data`` and ``indices`` may be
    longer than ``indptr[rows]``: a batch buffer is made for the largest batch it may hold, and the rest
    is unused.  :meth:`Backend.csr_asarray` makes one from a ``scipy.sparse`` matrix, canonical (each
    row's columns increasing, none repeated); :meth:`Backend.new_csr_batch` makes batch buffers.
    """

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, data: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> None:
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def __repr__(self) -> str:
        return (f"CSRMatrix(shape={self.shape}, dtype={self.dtype}, capacity={self.data.shape[0]} non-zeros, "
                f"{type(self.data).__name__})")
