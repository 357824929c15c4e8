"""What pytest-benchmark does not record about this machine, and which backends and peers it can time.

pytest-benchmark's JSON already describes the CPU, Python, the platform, the
date and the commit (``machine_info``, ``commit_info``, ``datetime``).  This
module adds the rest the report shows: which backends and peers are present
and, where not, why (no GPU, CuPy not installed, a CPU-only PyTorch build),
the versions of NumPy, Numba, numba-cuda, CuPy and PyTorch, the GPU and its
driver, NumPy's BLAS and its threads, the usable cores and the memory.
:func:`machine_extras` gathers them; ``bench/conftest.py`` stores them in
``machine_info["mlp"]`` so that one JSON file holds everything.

Nothing here imports PyTorch or CuPy at module level: :func:`probe` imports
them once, lazily, to find out whether they work.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Backends and peers a run may time, in the order the report lists them.
SUBJECTS = {
    "numpy": "mlp NumPy backend",
    "cuda": "mlp CUDA backend",
    "cupy": "CuPy (cuBLAS and elementwise kernels: the GPU library alternative)",
    "torch-cpu": "PyTorch on the CPU",
    "torch-cuda": "PyTorch eager on the GPU",
    "sklearn": "scikit-learn MLPClassifier",
}

# Distribution names to look up for the version table (first one installed wins).
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "numba": ("numba",),
    "numba-cuda": ("numba-cuda",),
    "cupy": ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x"),
    "torch": ("torch",),
    "scikit-learn": ("scikit-learn",),
    "matplotlib": ("matplotlib",),
    "pandas": ("pandas",),
    "threadpoolctl": ("threadpoolctl",),
}

#: Modules of the ``bench`` extra, by distribution name: the suites need pytest and pytest-benchmark, the report
#: pandas and tabulate; matplotlib draws the plots (a report without it says they were left out).
BENCH_EXTRA = {"pytest": "pytest", "pytest_benchmark": "pytest-benchmark", "pandas": "pandas",
               "tabulate": "tabulate", "matplotlib": "matplotlib"}
#: What a run of the suites with its report cannot do without.
REQUIRED = ("pytest", "pytest_benchmark", "pandas", "tabulate")


@dataclass(frozen=True)
class Status:
    """Whether a backend or peer can be timed here: ``detail`` names it when present, says why not otherwise."""

    present: bool
    detail: str


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


# ------------------------------------------------------------------ machine
# The CPU model, Python, platform, date and commit are pytest-benchmark's own
# records (``machine_info`` and ``commit_info`` of its JSON); what it does not
# record, and the report needs, is gathered here and added to ``machine_info``
# under ``"mlp"`` (see ``pytest_benchmark_update_machine_info`` in conftest.py).
def cpu_cores() -> int:
    """CPUs this process may run on (the affinity mask, not the host's total that pytest-benchmark records)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ram_bytes(available: bool = False) -> int | None:
    """Total (or currently available) physical memory in bytes, if the OS says."""
    key = "MemAvailable" if available else "MemTotal"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def versions() -> dict[str, str | None]:
    """Installed version of each library the suites use (None: not installed)."""
    found: dict[str, str | None] = {}
    for name, dists in _DISTRIBUTIONS.items():
        found[name] = None
        for dist in dists:
            try:
                found[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl), with their thread counts."""
    try:
        import numpy  # noqa: F401  (loads NumPy's BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "num_threads", "threading_layer", "architecture")
    out = []
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            entry = {k: lib.get(k) for k in keep}
            path = str(lib.get("filepath", ""))
            entry["library"] = Path(path).name
            entry["numpy"] = f"{os.sep}numpy" in path  # NumPy's own (wheels keep it under numpy.libs)
            out.append(entry)
    return sorted(out, key=lambda e: not e["numpy"])  # NumPy's first: the one the NumPy backend uses


def blas_threads() -> int:
    """Threads NumPy's BLAS uses (the first BLAS threadpoolctl reports), else the core count."""
    for lib in blas_info():
        if lib.get("num_threads"):
            return int(lib["num_threads"])
    return cpu_cores()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ------------------------------------------------------------- availability
def _cuda_status() -> Status:
    if simulator_enabled():
        return Status(False, "only Numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1): "
                             "simulator: timings meaningless")
    try:
        from mlp.backends import cuda_status
    except Exception as exc:  # a broken install still gets a report
        return Status(False, f"mlp's CUDA backend could not be imported ({_first_line(exc)})")
    usable, reason = cuda_status()
    return Status(usable, reason)


def _cupy_status(cuda: Status) -> Status:
    if not cuda.present:
        return Status(False, "needs a usable GPU (the CUDA backend is absent)")
    # CuPy reads CUPY_TF32 when it loads; left unset, float32 products are
    # computed in full FP32, which is what every comparison here assumes.
    if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        os.environ.pop("CUPY_TF32")
    try:
        import cupy
    except ImportError:
        return Status(False, "not installed (pip install cupy-cuda12x or cupy-cuda13x)")
    except Exception as exc:
        return Status(False, f"import failed ({_first_line(exc)})")
    try:
        a = cupy.ones((4, 4), dtype=cupy.float32)
        b = cupy.matmul(a, a)
        cupy.maximum(b, 0, out=b)
        ok = float(b.sum().get()) == 64.0
    except Exception as exc:
        return Status(False, f"installed but not working here ({_first_line(exc)})")
    if not ok:
        return Status(False, "installed but a 4x4 matrix product gave a wrong result")
    return Status(True, f"CuPy {cupy.__version__}")


def _torch_status(device: str, skip_cpu: bool) -> Status:
    if device == "cpu" and skip_cpu:
        return Status(False, "not run: --skip-cpu")
    try:
        import torch
    except ImportError:
        return Status(False, "not installed")
    except Exception as exc:
        return Status(False, f"import failed ({_first_line(exc)})")
    if device == "cpu":
        return Status(True, f"PyTorch {torch.__version__}")
    if torch.version.cuda is None:
        return Status(False, f"PyTorch {torch.__version__} is a CPU-only build")
    try:
        if not torch.cuda.is_available():
            return Status(False, f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU")
        name = torch.cuda.get_device_name(0)
    except Exception as exc:
        return Status(False, f"PyTorch CUDA not working ({_first_line(exc)})")
    return Status(True, f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) on {name}")


def _sklearn_status(skip_cpu: bool) -> Status:
    if skip_cpu:
        return Status(False, "not run: --skip-cpu")
    try:
        import sklearn
    except ImportError:
        return Status(False, "not installed")
    except Exception as exc:
        return Status(False, f"import failed ({_first_line(exc)})")
    return Status(True, f"scikit-learn {sklearn.__version__}")


@functools.lru_cache(maxsize=None)
def probe(skip_cpu: bool = False) -> dict[str, Status]:
    """Status of every entry of :data:`SUBJECTS` on this machine (computed once per process)."""
    import numpy as np

    cuda = _cuda_status()
    return {
        "numpy": Status(True, f"NumPy {np.__version__}"),
        "cuda": cuda,
        "cupy": _cupy_status(cuda),
        "torch-cpu": _torch_status("cpu", skip_cpu),
        "torch-cuda": _torch_status("cuda", skip_cpu),
        "sklearn": _sklearn_status(skip_cpu),
    }


# -------------------------------------------------------------------- GPU
def gpu_info(status: Status) -> dict[str, Any] | None:
    """Name, compute capability, SM count, driver and runtime of the GPU the CUDA backend uses."""
    if not status.present:
        return None
    try:
        from mlp.backends.cuda_backend import CudaBackend

        info = CudaBackend().device_info()
    except Exception as exc:
        return {"error": _first_line(exc)}
    info = {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()}
    if "cupy" in sys.modules:  # the runtime CuPy was built against, when the probe loaded it
        try:
            import cupy

            info["cupy_runtime_version"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception:
            pass
    if "torch" in sys.modules:
        import torch

        info["torch_cuda_version"] = torch.version.cuda
    return info


def machine_tag(status: dict[str, Status]) -> str:
    """A folder name for this machine's results: ``gpu-<name>`` on a GPU, else ``cpu-<model>-<cores>c``.

    The CPU model is the one pytest-benchmark records (``machine_info["cpu"]["brand_raw"]``).
    """
    if status["cuda"].present:
        info = gpu_info(status["cuda"]) or {}
        return "gpu-" + slug(str(info.get("name", "unknown")))
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    machine = pytest_benchmark_generate_machine_info()
    model = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or machine.get("machine")
    return f"cpu-{slug(str(model or 'unknown'))}-{cpu_cores()}c"


def machine_extras(status: dict[str, Status]) -> dict[str, Any]:
    """What the report shows and pytest-benchmark's ``machine_info`` lacks, as plain JSON values."""
    return {
        "cores": cpu_cores(),
        "ram_bytes": ram_bytes(),
        "gpu": gpu_info(status["cuda"]),
        "versions": versions(),
        "blas": blas_info(),
        "blas_threads": blas_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "NUMBA_NUM_THREADS", "NUMBA_ENABLE_CUDASIM", "CUPY_TF32")
                if k in os.environ},
        "availability": {name: asdict(s) for name, s in status.items()},
    }


def missing_bench_extra(modules: tuple[str, ...] = REQUIRED) -> list[str]:
    """Distributions of ``modules`` (module names of :data:`BENCH_EXTRA`) that are not installed (empty when
    all are)."""
    missing = []
    for module in modules:
        dist = BENCH_EXTRA[module]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(dist)
    return missing


def bench_extra_message(missing: list[str], what: str = "python -m bench") -> str:
    """The one line printed instead of a traceback when the ``bench`` extra is incomplete."""
    return (f"{what} needs the bench extra; not installed: {', '.join(missing)}. "
            "Install it with: pip install -e '.[bench]'")
