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

Numba keys a cached function by a stamp of its own source file only (a hash
of its contents in Numba 0.68, its modification time and size in
numba-cuda's cache), so a compiled function that inlines or calls code from
another module (the stacked loops call the single-model loops, the kernels
their device functions) would load stale machine code after that other
module changed, and compute the old arithmetic without a word.  Every
function decorated here is therefore keyed also by a digest of all the
package's compiled sources (:func:`sources_digest`: the kernels and the CPU
backend's folders): any change to any of them compiles afresh.

This module imports nothing but the standard library, so the CPU loops can
use it without loading Numba's CUDA target.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path
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


_digest: str | None = None


def source_folders() -> list[Path]:
    """The folders holding every compiled function and what it calls: the kernels (this module's folder) and the
    CPU backend's loops (``mlp/backends``: beside ``mlp/kernels`` when installed, ``mlp/backends`` beside
    ``kernels/`` in the repository)."""
    here = Path(__file__).resolve().parent
    return [here, *(p for p in (here.parent / "backends", here.parent / "mlp" / "backends") if p.is_dir())]


def sources_digest() -> str:
    """A digest of every ``.py`` file in :func:`source_folders` (names and contents; read once per process)."""
    global _digest
    if _digest is None:
        h = hashlib.sha256()
        for folder in source_folders():
            for path in sorted(folder.glob("*.py")):
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _digest = h.hexdigest()
    return _digest


def _key_by_sources(dispatcher: Any) -> Any:
    """Make the disk cache of ``dispatcher`` (a Numba dispatcher with ``cache=True``) valid only for the sources
    of :func:`sources_digest`: its index stores Numba's stamp of the function's own file with the digest, and an
    index with another stamp is not loaded (``numba.core.caching.IndexDataCacheFile``, and numba-cuda's copy)."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, sources_digest())
    return dispatcher


def jit_with_disk_cache(jit: Callable[..., Any], *args: Any, **options: Any) -> Callable[[Callable], Any]:
    """``jit(*args, cache=True, **options)`` as a decorator (``jit``: ``numba.njit``, ``numba.cuda.jit``).

    Where Numba has no writable cache location the function is compiled by
    ``jit(*args, cache=False, **options)`` instead, and a
    :class:`CompileCacheWarning` (at most one per process) says how to
    enable the cache.  Any other error of the decoration propagates.  The cache is keyed by the package's
    compiled sources as well as the function's own file (see the module's docstring).
    """
    def decorate(fn: Callable) -> Any:
        try:
            return _key_by_sources(jit(*args, cache=True, **options)(fn))
        except RuntimeError as exc:
            if _NO_LOCATOR not in str(exc):
                raise
        _warn_once()
        return jit(*args, cache=False, **options)(fn)

    return decorate
