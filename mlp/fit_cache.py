"""Fits made ahead of time, served to the ``fit`` calls that would make them: the cache a search uses.

A search (:mod:`mlp.search`) makes every fit its loop will make at once, as
stacks, then runs scikit-learn's own search loop inside :func:`serving`: each
``fit`` there whose :func:`fingerprint` (estimator class and parameters, the
bytes of its data) matches a fit made ahead takes that fit's outcome (the
fitted state, or the exception the fit raised) instead of training, each
outcome at most once.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
from typing import Any, Iterable

import numpy as np

from .sparse import as_matrix, is_sparse


#: fits already made by a stacked engine (mlp.search): each fingerprint's outcomes, in order; see adopt
_PREFITTED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mlp_prefitted", default=None)
_SERVED = object()  # the table's key counting the fits served


def _param_key(value: Any) -> str:
    """A parameter's value as a fit sees it: a ``RandomState`` by its state (scikit-learn's ``clone`` gives every
    fit a copy in the same state), anything else by its ``repr``."""
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state()
        h = hashlib.blake2b(np.ascontiguousarray(keys).tobytes(), digest_size=16)
        return f"RandomState({kind}, {h.hexdigest()}, {pos}, {has_gauss}, {cached!r})"
    return repr(value)


def fingerprint(est: Any, X: Any, y: Any, sample_weight: Any) -> tuple:
    """What identifies a fit: the estimator's class and parameters, and the bytes of its data (taken before
    the fit: fitting advances a ``RandomState`` parameter)."""
    return fit_key(est, data_digests(X, y, sample_weight))


def fit_key(est: Any, digests: tuple) -> tuple:
    """:func:`fingerprint` from the data's :func:`data_digests` (computed once for the fits that share data)."""
    params = tuple(sorted((k, _param_key(v)) for k, v in est.get_params(deep=False).items()))
    return (type(est), params, *digests)


def data_digests(X: Any, y: Any, sample_weight: Any) -> tuple:
    """Digests of a fit's data (shape, dtype and bytes of each of ``X``, ``y``, ``sample_weight``; None for
    an absent one)."""
    def digest(a: Any) -> str | None:
        if a is None:
            return None
        if is_sparse(a):  # its canonical CSR arrays: never densified
            a = as_matrix(a)
            h = hashlib.blake2b(digest_size=16)
            h.update(str(("csr", a.shape, a.dtype.str)).encode())
            for part in (a.indptr, a.indices, a.data):
                h.update(np.ascontiguousarray(part, dtype=np.int64 if part.dtype.kind in "iu" else None).tobytes())
            return h.hexdigest()
        a = np.ascontiguousarray(np.asarray(a))
        h = hashlib.blake2b(digest_size=16)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
        return h.hexdigest()

    return digest(X), digest(y), digest(sample_weight)


#: the attribute in which a stacked fit's outcome (its estimator, or the exception its fit raised) carries the fit's
#: ``verbose`` lines until they are printed (:func:`print_output`): a stack's fits train side by side, and their
#: lines printed as they came would interleave
OUTPUT = "_mlp_verbose_output"


def print_output(outcome: Any) -> None:
    """Print (and drop) the ``verbose`` lines a stacked fit's outcome carries, as its own fit would have printed
    them; nothing when it carries none."""
    lines = vars(outcome).pop(OUTPUT, None) if hasattr(outcome, "__dict__") else None
    if lines:
        print("\n".join(lines))


def adopt(est: Any, X: Any, y: Any, sample_weight: Any) -> bool:
    """Inside :func:`serving`, a fit that was already made (same parameters, same data) takes the next
    outcome recorded for it instead of training: the fitted state (True), or the exception that fit raised
    (raised here, as the fit itself would).  False when there is none left, or when ``warm_start`` continues
    an estimator already fitted."""
    table = _PREFITTED.get()
    if not table or (est.warm_start and hasattr(est, "coefs_")):
        return False
    queue = table.get(fingerprint(est, X, y, sample_weight))
    if not queue:
        return False
    outcome = queue.popleft()  # each outcome serves one fit: duplicates of a fit get their own draws
    table[_SERVED] += 1
    print_output(outcome)  # where the loop's own fit would have printed them
    if isinstance(outcome, BaseException):
        raise outcome
    params = est.get_params(deep=False)
    for key, value in outcome.__dict__.items():
        if key not in params:
            setattr(est, key, value)
    if isinstance(est.random_state, np.random.RandomState):  # the fit advanced its own generator: so does this one
        est.random_state.set_state(outcome.random_state.get_state())
        est._random_state = est.random_state
    return True


@contextlib.contextmanager
def serving(outcomes: Iterable[tuple[tuple, Any]]):
    """Within the block, ``fit`` of an estimator whose fingerprint (see :func:`fingerprint`) is among
    ``outcomes`` (``(fingerprint, fitted estimator or the exception its fit raised)`` pairs) takes the next
    outcome recorded under it, each at most once."""
    table: dict[Any, Any] = {_SERVED: 0}
    for key, outcome in outcomes:
        table.setdefault(key, collections.deque()).append(outcome)
    token = _PREFITTED.set(table)
    try:
        yield _Served(table)
    finally:
        _PREFITTED.reset(token)


class _Served:
    """How many fits :func:`serving` has served so far (``count``)."""

    def __init__(self, table: dict) -> None:
        self._table = table

    @property
    def count(self) -> int:
        return self._table[_SERVED]
