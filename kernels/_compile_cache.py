"""Numba's on-disk cache of compiled code where it can write, compilation in memory where it cannot.

``numba.njit(cache=True)`` and ``numba.cuda.jit(cache=True)`` look for a
folder to keep compiled code in when a function is decorated: ``__pycache__``
beside the module, else the user's cache directory (``~/.cache/numba``), or
``NUMBA_CACHE_DIR`` when set.  When none is writable (a package installed on
a read-only file system, run by a user without a writable home) the
decoration raises ``RuntimeError: cannot cache function ...: no locator
available``, which would make ``import mlp`` fail.  :func:`jit_with_disk_cache`
is the decorator every compiled function of the package goes through: it
asks for the disk cache and, where Numba finds nowhere to keep it, compiles
the function without it, saying so once per process with a
:class:`CompileCacheWarning`.

This module imports nothing but the standard library, so the CPU loops can
use it without loading Numba's CUDA target.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

#: what Numba's error says when no cache location is writable (numba.core.caching and numba-cuda's copy)
_NO_LOCATOR = "no locator available"

_warned = False
_warned_lock = threading.Lock()


class CompileCacheWarning(UserWarning):
    """Compiled code cannot be cached on disk here: every process compiles it again."""


def _warn_once() -> None:
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "mlp: Numba finds no writable folder for its cache of compiled code (neither __pycache__ beside the "
        "installed package nor the user's cache directory), so compiled functions are kept in memory only and "
        "compiled again in every process. Set NUMBA_CACHE_DIR to a writable folder to cache them there.",
        CompileCacheWarning, stacklevel=4)


def jit_with_disk_cache(jit: Callable[..., Any], *args: Any, **options: Any) -> Callable[[Callable], Any]:
    """``jit(*args, cache=True, **options)`` as a decorator (``jit``: ``numba.njit``, ``numba.cuda.jit``).

    Where Numba has no writable cache location the function is compiled by
    ``jit(*args, cache=False, **options)`` instead, and a
    :class:`CompileCacheWarning` (at most one per process) says how to
    enable the cache.  Any other error of the decoration propagates.
    """
    def decorate(fn: Callable) -> Any:
        try:
            return jit(*args, cache=True, **options)(fn)
        except RuntimeError as exc:
            if _NO_LOCATOR not in str(exc):
                raise
        _warn_once()
        return jit(*args, cache=False, **options)(fn)

    return decorate
