"""Backends: where arrays live and how the MLP's operations are computed.

``get_backend("numpy")`` always works.  ``get_backend("cuda")`` needs a usable
NVIDIA GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
Numba is imported, for tests).  ``get_backend("auto")`` picks CUDA when a real
GPU is usable and otherwise falls back to NumPy with a one-line notice; it
never picks the simulator.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Union

from .base import Backend
from .numpy_backend import NumpyBackend

__all__ = ["Backend", "NumpyBackend", "get_backend", "available_backends", "cuda_status", "BACKEND_NAMES"]

BACKEND_NAMES = ("numpy", "cuda", "auto")

log = logging.getLogger("mlp")

_instances: dict[str, Backend] = {}
_lock = threading.Lock()
_auto_choice: str | None = None


def simulator_enabled() -> bool:
    """Whether Numba's CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)`` for the CUDA backend on this machine.

    ``usable`` is true on a real GPU and under the simulator; ``reason``
    names the device, the simulator, or why neither is available.
    """
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        return False, f"numba-cuda could not be imported ({exc.__class__.__name__}: {exc})"
    if simulator_enabled():
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if not cuda.is_available():
            try:
                cuda.detect()  # prints nothing useful on failure, raises with the driver's reason
            except Exception as exc:
                return False, _first_line(exc)
            return False, "no CUDA driver or no CUDA device found"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        cc = ".".join(map(str, dev.compute_capability))
        return True, f"{name} (compute capability {cc})"
    except Exception as exc:
        return False, _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(" :")
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def available_backends() -> list[str]:
    """Names of the backends usable here (``"numpy"`` always)."""
    usable, _ = cuda_status()
    return ["numpy", "cuda"] if usable else ["numpy"]


def get_backend(name: Union[str, Backend] = "auto") -> Backend:
    """The backend called ``name`` (``"numpy"``, ``"cuda"`` or ``"auto"``), or ``name`` itself if it is one.

    Backends are created once per process and shared.  Raises ``ValueError``
    for an unknown name and ``RuntimeError`` (saying why) when CUDA is asked
    for but unusable.
    """
    global _auto_choice
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend: expected one of {BACKEND_NAMES} or a Backend instance, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in BACKEND_NAMES:
        raise ValueError(f"backend: expected one of {BACKEND_NAMES}, got {name!r}")
    with _lock:
        if key == "auto":
            if _auto_choice is None:
                usable, reason = cuda_status()
                if usable and not simulator_enabled():
                    _auto_choice = "cuda"
                    log.info("mlp: backend 'auto' chose CUDA on %s", reason)
                else:
                    _auto_choice = "numpy"
                    why = "only the CUDA simulator is enabled" if usable else reason
                    log.warning("mlp: no usable CUDA GPU (%s); backend 'auto' falls back to NumPy", why)
            key = _auto_choice
        if key not in _instances:
            _instances[key] = _create(key)
        return _instances[key]


def _create(key: str) -> Backend:
    if key == "numpy":
        return NumpyBackend()
    usable, reason = cuda_status()
    if not usable:
        raise RuntimeError(
            f"backend 'cuda' is not available: {reason}. Use backend='numpy' (or 'auto'), "
            "or set NUMBA_ENABLE_CUDASIM=1 before importing numba to run the kernels on Numba's CUDA simulator."
        )
    from .cuda_backend import CudaBackend

    return CudaBackend()
