"""What is known of the CUDA backend before importing it (and Numba's CUDA support, a few tenths of a second).

On a machine with no NVIDIA driver at all, choosing ``backend="auto"`` then
costs nothing: the driver library is looked for directly.  Wherever one is
found, or the simulator or a driver path is asked for, the backend module
itself decides (:meth:`mlp.backends.cuda_backend.CudaBackend.status`).
"""

from __future__ import annotations

import ctypes
import os
import sys

from .base import BackendStatus

#: the names the NVIDIA driver library has on Linux and Windows
DRIVER_LIBRARIES = ("nvcuda.dll",) if sys.platform.startswith("win") else ("libcuda.so.1", "libcuda.so")
HINT = (": install an NVIDIA driver and the 'cuda12' or 'cuda13' extra, or set NUMBA_ENABLE_CUDASIM=1 before "
        "importing numba to run the kernels on Numba's CUDA simulator")


def status() -> BackendStatus | None:
    """The CUDA backend's status when no driver library can be loaded (unusable), else None (ask the backend)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0") or os.environ.get("NUMBA_CUDA_DRIVER"):
        return None
    for name in DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return None
    return BackendStatus(False, f"no CUDA driver library ({', '.join(DRIVER_LIBRARIES)}) could be loaded",
                         hint=HINT)
