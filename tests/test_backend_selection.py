"""Backend selection: ``auto`` never picks the simulator; ``cuda`` without a GPU says why."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ON_SIMULATOR

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not ON_SIMULATOR, reason="needs a machine without a usable GPU")
def test_cuda_without_gpu_raises_and_says_why():
    r = _run("""
        import mlp
        try:
            mlp.get_backend("cuda")
        except RuntimeError as exc:
            print("ERROR:", exc)
        """, NUMBA_ENABLE_CUDASIM="0")
    assert r.returncode == 0, r.stderr
    assert "ERROR: backend 'cuda' is not available:" in r.stdout
    assert "NUMBA_ENABLE_CUDASIM=1" in r.stdout  # says how to use the simulator instead


@pytest.mark.skipif(not ON_SIMULATOR, reason="needs a machine without a usable GPU")
def test_auto_falls_back_to_numpy_with_one_notice():
    r = _run("""
        import mlp
        a = mlp.get_backend("auto")
        b = mlp.get_backend("auto")
        print("CHOSE", a.name, a is b, mlp.available_backends())
        """, NUMBA_ENABLE_CUDASIM="0")
    assert r.returncode == 0, r.stderr
    assert "CHOSE numpy True ['numpy']" in r.stdout
    notices = [ln for ln in r.stderr.splitlines() if "falls back to NumPy" in ln]
    assert len(notices) == 1, r.stderr


def _driver_library_loads() -> bool:
    import ctypes

    from mlp.backends.cuda_probe import DRIVER_LIBRARIES

    for name in DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


def test_auto_without_a_driver_library_never_imports_numbas_cuda_support():
    """Without an NVIDIA driver, 'auto' is decided without importing Numba's CUDA support (a few tenths of a
    second of every first fit)."""
    if _driver_library_loads():
        pytest.skip("an NVIDIA driver library is installed here: the backend itself decides")
    r = _run("""
        import sys
        import mlp
        mlp.get_backend("auto")
        print("CUDA MODULES", sorted(m for m in sys.modules if m.startswith(("numba.cuda", "mlp.backends.cuda_b"))))
        print("STATUS", mlp.backends.backend_status("cuda"))
        """, NUMBA_ENABLE_CUDASIM="0")
    assert r.returncode == 0, r.stderr
    assert "CUDA MODULES []" in r.stdout
    assert "usable=False" in r.stdout and "no CUDA driver library" in r.stdout


def test_the_probe_leaves_the_decision_to_the_backend_where_a_driver_loads(monkeypatch):
    from mlp.backends import cuda_probe

    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    monkeypatch.delenv("NUMBA_CUDA_DRIVER", raising=False)
    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", lambda name: object())  # a driver library that loads
    assert cuda_probe.status() is None
    monkeypatch.setenv("NUMBA_CUDA_DRIVER", "/opt/driver/libcuda.so")  # a path Numba is told to use
    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    assert cuda_probe.status() is None
    monkeypatch.delenv("NUMBA_CUDA_DRIVER")
    assert cuda_probe.status().usable is False


@pytest.mark.skipif(not ON_SIMULATOR, reason="the simulator is only used where no GPU is present")
def test_auto_never_picks_the_simulator_but_cuda_runs_on_it():
    r = _run("""
        import mlp
        print("AUTO", mlp.get_backend("auto").name)
        print("CUDA", type(mlp.get_backend("cuda")).__name__)
        """, NUMBA_ENABLE_CUDASIM="1")
    assert r.returncode == 0, r.stderr
    assert "AUTO numpy" in r.stdout and "CUDA CudaBackend" in r.stdout
    assert "only Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1) is enabled, which 'auto' never picks" in r.stderr


@pytest.mark.skipif(ON_SIMULATOR, reason="needs a real GPU")
def test_auto_picks_cuda_on_a_gpu():
    r = _run("""
        import logging, mlp
        logging.basicConfig(level=logging.INFO)
        print("AUTO", mlp.get_backend("auto").name)
        """)
    assert r.returncode == 0, r.stderr
    assert "AUTO cuda" in r.stdout and "chose CUDA" in r.stderr
