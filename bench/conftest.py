"""Options, fixtures and bookkeeping shared by the benchmark suites.

Options (``python -m bench`` passes them; ``pytest bench/bench_*.py`` accepts them too):

``--mlp-quick``
    Fewer sizes and rounds (tests marked ``full`` are deselected).
``--mlp-skip-cpu``
    On a GPU machine, leave out the CPU-only work (tests marked ``cpu_heavy``)
    and the CPU peers, which are then listed as absent.
``--mlp-tiny``
    Tiny networks and data sets where a suite has them: a check of the
    harness itself (``python -m bench --session --tiny`` rehearses a GPU
    session on any machine), never a measurement.
``--mlp-deadline``
    A wall-clock time (seconds since the epoch): a benchmark that would
    start after it, or with less time left than its ``needs_seconds``
    marker asks, is skipped with the reason (``python -m bench --seconds``).

What the report needs beyond pytest-benchmark's own records goes into the same
JSON (``--benchmark-json``): ``machine_info["mlp"]`` holds which backends and
peers are present (and why not), library versions, the GPU and NumPy's BLAS
(:func:`bench._env.machine_extras`); ``"mlp"`` at the top holds the run's
options and what was skipped or failed, with the reasons.  With
``--benchmark-json``, the file is rewritten as each benchmark starts and ends
(pytest-benchmark writes it once, at the end): a run stopped on the way keeps
what it measured, and names the benchmark that was running.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench import _env
from bench._measure import Budget, fashion_like


@dataclass(frozen=True)
class Settings:
    """What kind of run this is, and how long each kind of benchmark may take."""

    quick: bool
    skip_cpu: bool
    tiny: bool = False

    @property
    def gpu_kernel(self) -> Budget:
        return Budget(round_s=2e-3, total_s=0.1 if self.quick else 0.2, min_rounds=5 if self.quick else 10,
                      max_rounds=30 if self.quick else 60)

    @property
    def cpu_kernel(self) -> Budget:
        return Budget(round_s=10e-3, total_s=0.3 if self.quick else 1.0, min_rounds=3, max_rounds=50)

    @property
    def epoch(self) -> Budget:
        return Budget(round_s=0.0, total_s=3.0 if self.quick else 15.0, min_rounds=2 if self.quick else 5,
                      max_rounds=5 if self.quick else 10)

    @property
    def scaling(self) -> Budget:
        return Budget(round_s=0.0, total_s=2.0 if self.quick else 4.0, min_rounds=2, max_rounds=5)

    @property
    def step(self) -> Budget:
        return Budget(round_s=20e-3, total_s=0.3 if self.quick else 1.0, min_rounds=5, max_rounds=50)

    def options(self) -> dict:
        return {"quick": self.quick, "skip_cpu": self.skip_cpu, "tiny": self.tiny}


# ---------------------------------------------------------------- options
def pytest_addoption(parser):
    group = parser.getgroup("mlp-bench", "mlp benchmark suites")
    group.addoption("--mlp-quick", action="store_true", default=False, help="short run: fewer sizes and rounds")
    group.addoption("--mlp-skip-cpu", action="store_true", default=False,
                    help="leave out CPU-only benchmarks and CPU peers (for GPU machines)")
    group.addoption("--mlp-tiny", action="store_true", default=False,
                    help="tiny networks and data sets: a check of the harness, not a measurement")
    group.addoption("--mlp-deadline", type=float, default=None, metavar="UNIX_TIME",
                    help="skip, saying so, every benchmark that would start after this time")


def _settings(config) -> Settings:
    return Settings(quick=bool(config.getoption("--mlp-quick")), skip_cpu=bool(config.getoption("--mlp-skip-cpu")),
                    tiny=bool(config.getoption("--mlp-tiny")))


# What was skipped (with the reason) or failed in this session, and what is running; reset per session.
_outcomes: dict = {}
# The benchmarks that finished in this session (pytest-benchmark's records of them), and the machine and
# commit records, made once: what the JSON written as the run goes holds.
_progress: dict = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "full: only in a full run (deselected by --mlp-quick)")
    config.addinivalue_line("markers", "cpu_heavy: CPU-only work, deselected by --mlp-skip-cpu")
    config.addinivalue_line("markers", "needs_seconds(s): not started with less than s seconds left (--mlp-deadline)")
    _outcomes.clear()
    _outcomes.update(suites=[], skipped=[], failed=[], deselected=0, running=None)
    _progress.clear()
    _progress["finished"] = []


def pytest_collection_modifyitems(config, items):
    s = _settings(config)
    _outcomes["suites"] = sorted({Path(str(item.path)).stem.removeprefix("bench_") for item in items})
    keep, drop = [], []
    for item in items:
        if (s.quick and item.get_closest_marker("full")) or (s.skip_cpu and item.get_closest_marker("cpu_heavy")):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        _outcomes["deselected"] += len(drop)


def pytest_runtest_setup(item):
    """Skip, with the reason, a benchmark that would start too late for ``--mlp-deadline``."""
    deadline = item.config.getoption("--mlp-deadline")
    if deadline is None:
        return
    marker = item.get_closest_marker("needs_seconds")
    needs = float(marker.args[0]) if marker else 0.0
    left = deadline - time.time()
    if left <= max(needs, 0.0):
        pytest.skip(f"out of time: {max(left, 0):.0f} s left of the run" + (f", it needs {needs:.0f} s" if needs else ""))


# ------------------------------------------------------------ bookkeeping
def _write_progress(config) -> None:
    """Rewrite ``--benchmark-json`` with the benchmarks that finished so far (atomically: a run killed while
    writing leaves the previous version), through pytest-benchmark's own hooks."""
    path = config.getoption("benchmark_json", None)
    if path is None or config.getoption("benchmark_disable", False):
        return
    hook = config.hook
    if "machine_info" not in _progress:
        machine_info = hook.pytest_benchmark_generate_machine_info(config=config)
        hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
        commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
        hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
        _progress.update(machine_info=machine_info, commit_info=commit_info)
    finished = _progress["finished"]
    doc = hook.pytest_benchmark_generate_json(config=config, benchmarks=finished, include_data=True,
                                              machine_info=_progress["machine_info"],
                                              commit_info=_progress["commit_info"])
    hook.pytest_benchmark_update_json(config=config, benchmarks=finished, output_json=doc)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    if call.when == "setup":
        _outcomes["running"] = item.nodeid
        _write_progress(item.config)
    elif call.when == "teardown":
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        stats = getattr(fixture, "stats", None)
        if stats is not None and not getattr(fixture, "has_error", False):
            _progress["finished"].append(stats)
        _outcomes["running"] = None
        _write_progress(item.config)


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _outcomes["skipped"].append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})
    elif report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        _outcomes["failed"].append({"test": report.nodeid, "when": report.when,
                                    "message": text.splitlines()[0] if text else ""})


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add what pytest-benchmark does not record and the report shows (see :func:`bench._env.machine_extras`)."""
    machine_info["mlp"] = _env.machine_extras(_env.probe(_settings(config).skip_cpu))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """The run's options, and what was skipped (with the reason) or failed."""
    output_json["mlp"] = {"options": _settings(config).options(),
                          "outcomes": {k: (list(v) if isinstance(v, list) else v) for k, v in _outcomes.items()}}


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def settings(pytestconfig) -> Settings:
    return _settings(pytestconfig)


@pytest.fixture(scope="session")
def availability(settings) -> dict[str, _env.Status]:
    return _env.probe(settings.skip_cpu)


def _require(availability, name: str):
    status = availability[name]
    if not status.present:
        pytest.skip(f"{name} absent: {status.detail}")
    return status


@pytest.fixture(scope="session")
def numpy_backend():
    from mlp.backends import get_backend

    return get_backend("numpy")


@pytest.fixture(scope="session")
def cuda_backend(availability):
    """The shared CUDA backend, with every training kernel compiled for float32 up front."""
    _require(availability, "cuda")
    from mlp.backends import get_backend

    be = get_backend("cuda")
    be.warmup(np.float32)
    return be


@pytest.fixture(scope="session")
def cupy(availability, cuda_backend):
    _require(availability, "cupy")
    import cupy

    return cupy


@pytest.fixture(scope="session")
def torch_cpu(availability):
    _require(availability, "torch-cpu")
    import torch

    from bench._peers import configure_torch

    configure_torch(torch, threads=_env.blas_threads())
    return torch


@pytest.fixture(scope="session")
def torch_cuda(availability):
    _require(availability, "torch-cuda")
    import torch

    from bench._peers import configure_torch

    configure_torch(torch)
    return torch


@pytest.fixture(scope="session")
def sklearn_present(availability) -> bool:
    _require(availability, "sklearn")
    return True


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (X, y) of Fashion-MNIST's training-set shape."""
    return fashion_like()


@pytest.fixture
def gpu_memory(cuda_backend):
    """Free device memory in bytes; afterwards, hand cached blocks back (Numba's and CuPy's pools)."""
    from numba import cuda

    ctx = cuda.current_context()
    ctx.deallocations.clear()
    free, _ = ctx.get_memory_info()
    yield int(free)
    cuda.synchronize()
    ctx.deallocations.clear()
    if "cupy" in sys.modules:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()

