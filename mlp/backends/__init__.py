"""Backends: where arrays live and how the MLP's operations are computed.

A backend is one module of this package named ``<name>_backend.py`` that
defines a :class:`Backend` subclass whose ``name`` is ``<name>``; the
registry below finds it by that file name, so adding a backend is adding
that one module (``register_backend`` adds one from elsewhere).  The CLI,
``mlp info`` and the estimator read their choices from :func:`backend_names`.

``get_backend("numpy")`` always works.  ``get_backend("cuda")`` needs a usable
NVIDIA GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
Numba is imported, for tests).  ``get_backend("auto")`` picks the usable
backend with the highest ``auto_priority`` whose status allows automatic
choice (CUDA on a real GPU, never the simulator) and otherwise falls back to
NumPy with a one-line notice.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import pkgutil
import threading
from typing import Any, Union

from .base import Backend, BackendStatus
from .numpy_backend import NumpyBackend

__all__ = ["Backend", "BackendStatus", "NumpyBackend", "get_backend", "available_backends", "backend_names",
           "backend_status", "register_backend", "cuda_status", "BACKEND_NAMES"]

log = logging.getLogger("mlp")

_SUFFIX = "_backend"
_lock = threading.RLock()
_instances: dict[str, Backend] = {}
_classes: dict[str, type[Backend] | BaseException] = {}
_auto_choice: str | None = None


@functools.lru_cache(maxsize=1)
def _module_names() -> tuple[str, ...]:
    """Backend names from this package's ``<name>_backend`` modules (no import needed; read once: every
    estimator call looks a backend up by name)."""
    return tuple(sorted(m.name[:-len(_SUFFIX)] for m in pkgutil.iter_modules(__path__) if m.name.endswith(_SUFFIX)))


def backend_names() -> tuple[str, ...]:
    """Every backend name :func:`get_backend` accepts: ``"numpy"`` first, ``"auto"`` last."""
    return (*sorted(set(_module_names()) | set(_classes), key=lambda n: (n != "numpy", n)), "auto")


#: the names :func:`get_backend` accepts (as of import; see :func:`backend_names`)
BACKEND_NAMES = backend_names()


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make ``cls`` (a Backend subclass with a unique ``name``) available by name; usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)) or cls.name in ("auto", Backend.name):
        raise TypeError(f"cls: expected a Backend subclass with its own name, got {cls!r}")
    with _lock:
        _classes[cls.name] = cls
    return cls


def _backend_class(name: str) -> type[Backend] | BaseException:
    """The class of backend ``name``, importing its module on first use; the exception if that failed."""
    with _lock:
        if name not in _classes:
            try:
                module = importlib.import_module(f"{__name__}.{name}{_SUFFIX}")
                found = [c for c in vars(module).values()
                         if isinstance(c, type) and issubclass(c, Backend) and c.name == name]
                if len(found) != 1:
                    raise ImportError(f"module {module.__name__} defines {len(found)} Backend classes named {name!r}")
                _classes[name] = found[0]
            except Exception as exc:  # a missing driver or library: reported by backend_status
                _classes[name] = exc
        return _classes[name]


def _quick_status(name: str) -> BackendStatus | None:
    """The status a backend's optional ``<name>_probe`` module knows without importing the backend, or None."""
    if name in _classes or importlib.util.find_spec(f"{__name__}.{name}_probe") is None:
        return None
    return importlib.import_module(f"{__name__}.{name}_probe").status()


def backend_status(name: str) -> BackendStatus:
    """Whether backend ``name`` is usable here and why (or why not)."""
    quick = _quick_status(name)
    if quick is not None:
        return quick
    cls = _backend_class(name)
    if isinstance(cls, BaseException):
        return BackendStatus(False, f"its module could not be imported ({_first_line(cls)})")
    try:
        return cls.status()
    except Exception as exc:
        return BackendStatus(False, _first_line(exc))


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)`` for the CUDA backend: usable on a real GPU and under the simulator."""
    st = backend_status("cuda")
    return st.usable, st.reason


def simulator_enabled() -> bool:
    """Whether Numba's CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(" :")
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def compiler_versions() -> dict[str, str]:
    """The versions of what compiles the backends' code: Numba, and numba-cuda when it is installed."""
    from importlib.metadata import PackageNotFoundError, version

    import numba

    found = {"Numba": numba.__version__}
    try:
        found["numba-cuda"] = version("numba-cuda")
    except PackageNotFoundError:
        pass
    return found


def available_backends() -> list[str]:
    """Names of the backends usable here (``"numpy"`` always)."""
    return [n for n in backend_names()[:-1] if backend_status(n).usable]


def _choose_auto() -> str:
    best, notes = None, []
    for name in backend_names()[:-1]:
        st = backend_status(name)
        if st.usable and st.auto_eligible:
            if best is None or _backend_class(name).auto_priority > _backend_class(best).auto_priority:
                best = name
        elif name != "numpy":
            notes.append(f"{name}: {st.reason}" if not st.usable else
                         f"{name}: only {st.reason} is enabled, which 'auto' never picks")
    if best is None or best == "numpy":
        why = "; ".join(notes) if notes else "no other backend"
        log.warning("mlp: no usable GPU backend (%s); backend 'auto' falls back to NumPy", why)
        return "numpy"
    log.info("mlp: backend 'auto' chose %s on %s", best.upper(), backend_status(best).reason)
    return best


def get_backend(name: Union[str, Backend] = "auto") -> Backend:
    """The backend called ``name`` (one of :func:`backend_names`), or ``name`` itself if it is one.

    Backends are created once per process and shared.  Raises ``ValueError``
    for an unknown name and ``RuntimeError`` (saying why) when a backend is
    asked for but unusable.
    """
    global _auto_choice
    if isinstance(name, Backend):
        return name
    names = backend_names()
    if not isinstance(name, str):
        raise TypeError(f"backend: expected one of {names} or a Backend instance, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in names:
        raise ValueError(f"backend: expected one of {names}, got {name!r}")
    with _lock:
        if key == "auto":
            if _auto_choice is None:
                _auto_choice = _choose_auto()
            key = _auto_choice
        if key not in _instances:
            st = backend_status(key)
            if not st.usable:
                raise RuntimeError(f"backend {key!r} is not available: {st.reason}. Use backend='numpy' "
                                   f"(or 'auto'){st.hint}")
            _instances[key] = _backend_class(key)()
        return _instances[key]


def host_copy(a: Any) -> Any:
    """A host NumPy copy of ``a`` if it lives on another backend's device (it says so by ``owns``),
    else ``a`` unchanged: how the NumPy backend accepts device arrays without knowing their kinds."""
    for name in backend_names()[:-1]:
        cls = _backend_class(name)
        if name != "numpy" and not isinstance(cls, BaseException) and cls.owns(a):
            return get_backend(name).to_numpy(a)
    return a
