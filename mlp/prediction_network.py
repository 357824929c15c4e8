"""The network an estimator predicts with, kept in step with its ``coefs_`` and ``intercepts_``.

As in scikit-learn, what a user changes in ``coefs_``/``intercepts_`` (in place
or by assigning) is what ``predict`` uses.  :class:`PredictionNetwork` is the
kept network and what the arrays held when it was made; an entry is never
changed, only replaced whole, so a thread predicting meanwhile keeps a
consistent network.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from .backends import Backend
from .model import MLP


class PredictionNetwork:
    """A network kept for predictions, with what an estimator's ``coefs_`` + ``intercepts_`` held when it was made
    (``held``) and, per array, a read-only copy of its values then, or None where the array is a view of the
    network's own parameters in host memory (it cannot differ from them).  Never changed once made."""

    __slots__ = ("held", "copies", "n_coefs", "options", "network")

    def __init__(self, held: list, copies: list, n_coefs: int, options: tuple, network: MLP) -> None:
        self.held, self.copies, self.n_coefs = tuple(held), tuple(copies), n_coefs
        self.options, self.network = options, network

    @classmethod
    def serving(cls, model: MLP, options: tuple) -> tuple[list, list, "PredictionNetwork"]:
        """``(coefs, intercepts, entry)`` for a network that now serves the predictions: views of its parameters
        where they are host memory, else host copies (with read-only copies of their values in the entry)."""
        if in_host_memory(model.backend, model.params):
            Ws, bs = model.parameter_views()
            coefs, intercepts = [W.view() for W in Ws], [b.view() for b in bs]  # the network's own views stay its
            if all(a.base is model.params for a in chain(coefs, intercepts)):
                return coefs, intercepts, cls(coefs + intercepts, [None] * (len(Ws) + len(bs)), len(Ws), options,
                                              model)
        weights = model.get_weights()
        coefs, intercepts = [W for W, _ in weights], [b for _, b in weights]
        frozen = cls.snapshot(coefs, intercepts)
        return coefs, intercepts, cls(coefs + intercepts, frozen[0] + frozen[1], len(coefs), options, model)

    @staticmethod
    def snapshot(coefs: list, intercepts: list) -> tuple[tuple, tuple]:
        """Read-only copies of the arrays, as they are now."""
        def frozen(a: Any) -> np.ndarray:
            a = np.array(a, copy=True)
            a.flags.writeable = False
            return a

        return tuple(frozen(c) for c in coefs), tuple(frozen(b) for b in intercepts)

    def holds(self, coefs: list, intercepts: list, options: tuple) -> bool:
        """Whether ``coefs``/``intercepts`` (arrays) hold exactly the network's weights (dtypes, shapes, values)
        and ``options`` are its own."""
        if len(coefs) != self.n_coefs or len(coefs) + len(intercepts) != len(self.held):
            return False
        if not all(a == b for a, b in zip(options, self.options)):
            return False
        net = self.network
        for i, (a, held, copy) in enumerate(zip(chain(coefs, intercepts), self.held, self.copies)):
            if copy is not None:
                if not _same_bits(a, copy):
                    return False
            # a view of the network's parameters, unless replaced, reshaped or retyped in place, or a copy of it
            # (copy.deepcopy copies the views into arrays of their own)
            elif a is not held or a.base is not net.params or a.dtype != net.dtype or a.shape != _weight_shape(net, i):
                return False
        return True


def _weight_shape(net: MLP, i: int) -> tuple:
    """The shape of the ``i``-th array of ``coefs_ + intercepts_`` for ``net``."""
    sizes = net.layer_sizes
    return (sizes[i], sizes[i + 1]) if i < net.n_layers else (sizes[i - net.n_layers + 1],)


def in_host_memory(backend: Backend, a: Any) -> bool:
    """Whether ``a``, an array of ``backend``, is host memory (the backend's host view of it is itself)."""
    return backend.to_numpy(a) is a


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtypes, shapes and values; floats compared by their bits (so -0.0 differs from 0.0 and a NaN is
    equal to itself), without copying either array."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):
        bits = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.view(bits), b.view(bits)))
    return bool(np.array_equal(a, b))
