"""Test configuration shared by every test module.

Kernel tests run on a real NVIDIA GPU when one is usable and otherwise on
Numba's CUDA simulator.  The simulator must be chosen before Numba is first
imported, so this runs before any test module imports ``mlp``.  Set
``NUMBA_ENABLE_CUDASIM`` yourself (0 or 1) to override the choice.
"""

from __future__ import annotations

import ctypes
import os
import zlib

import numpy as np
import pytest


def _real_gpu_present() -> bool:
    """Probe the CUDA driver directly (without importing Numba)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
        except AttributeError:
            return False
    return False


# scikit-learn's estimator checks include an array-API check that runs only with this set.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if _real_gpu_present() else "1"

ON_SIMULATOR = os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0")

#: Whole trainings on the CUDA backend compared with NumPy: on a real GPU only.  Under the simulator each
#: kernel is checked against its twin (tests/test_kernels*.py) and one stacked training runs end to end
#: (tests/test_search.py), which covers the same operations in a fraction of the time.
real_gpu_training = pytest.mark.skipif(ON_SIMULATOR, reason="whole CUDA trainings run on a real GPU; under the "
                                       "simulator the kernel twin tests and one stacked training cover them")


@pytest.fixture(scope="session")
def cuda():
    """The CUDA backend (a real GPU, or Numba's CUDA simulator); the test is skipped, saying why, without one."""
    import mlp

    try:
        return mlp.get_backend("cuda")
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def torch():
    """PyTorch, an optional peer; the test is skipped, saying why, where it is not installed.

    Every test that uses PyTorch takes this fixture (never a module-level skip), and is marked
    ``needs_torch`` by :func:`pytest_collection_modifyitems`, so ``pytest -m needs_torch`` runs exactly those.
    """
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch); this test needs it")


#: the optional peers a test reaches through a fixture of this file, and the marker each adds
PEER_MARKERS = {"torch": "needs_torch"}


#: test files that take minutes on their own: run first, so that in a parallel run (pytest-xdist) the other
#: workers take the many short tests meanwhile instead of waiting for them at the end
LONGEST_FIRST = ("test_kernels_compile.py",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in PEER_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    items.sort(key=lambda item: getattr(item, "path", None) is None or item.path.name not in LONGEST_FIRST)


@pytest.fixture
def rng(request):
    """A fresh random stream per test, reproducible from the test's name."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.fixture
def small_grids(monkeypatch):
    """Cap grid-stride kernels at two blocks (per model, for a stack's) so that their loops run several times."""
    from mlp.kernels import _launch

    monkeypatch.setattr(_launch, "MAX_GRID_BLOCKS", 2)


def pytest_report_header(config):
    where = "Numba CUDA simulator" if ON_SIMULATOR else "real CUDA device"
    return f"mlp CUDA tests run on: {where}"
