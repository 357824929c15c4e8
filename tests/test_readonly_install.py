"""The package imports and trains when installed read-only, with no writable home or cache folder.

Numba's ``cache=True`` looks for a writable folder when a function is
decorated (``__pycache__`` beside the module, the user's cache directory,
``NUMBA_CACHE_DIR``) and raises when there is none.  These tests copy the
package in its installed layout (``mlp/`` with ``kernels/`` as
``mlp/kernels/``) into a folder made read-only, point ``HOME`` at a read-only
folder, unset ``NUMBA_CACHE_DIR`` and run ``import mlp`` and a small fit in a
subprocess.

Permission bits do not stop root, whose ``CAP_DAC_OVERRIDE`` capability
writes anywhere; run as root, the subprocess is started without that
capability (and without ``CAP_DAC_READ_SEARCH`` and ``CAP_FOWNER``, which
would let it read past or change the bits), so the bits hold for it as for
any user.  The subprocess first checks that writing into the package and the
home folder is refused; a test is skipped, saying why, only where that cannot
be arranged.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys, warnings

out = {"refused": {}}
for name in ("package", "home"):
    folder = sys.argv[1] if name == "package" else os.path.expanduser("~")
    try:
        with open(os.path.join(folder, "write-probe"), "w"):
            pass
        out["refused"][name] = False
    except OSError:
        out["refused"][name] = True

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    import mlp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    model = mlp.MLP([5, 8, 3], seed=0)
    trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-2), backend="numpy", batch_size=16, seed=0)
    out["loss"] = trainer.fit(X, y, epochs=5, verbose=0)["loss"]
    out["evaluated"] = mlp.evaluate(model, X, y)["loss"]
    # a CUDA kernel, compiled on a GPU (its decoration asks for the disk cache too) or made by the simulator
    from mlp.kernels import fill

    out["kernel"] = type(fill.fill_kernel(np.dtype(np.float32))).__name__
out["mlp"] = mlp.__file__
out["kernels"] = __import__("mlp.kernels", fromlist=["_"]).__file__
out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
print(json.dumps(out))
"""

#: Linux capabilities that let root ignore permission bits (linux/capability.h), and prctl's PR_CAPBSET_DROP
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


def _drop_root_file_capabilities() -> None:
    """In the child before exec: drop the capabilities from the bounding set, so that the program run keeps
    none of them (root's capabilities after exec are those of the bounding set)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_only(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for root, dirs, files in os.walk(path, topdown=False):
        os.chmod(root, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def _writable_again(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        os.chmod(root, stat.S_IRWXU)
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def read_only_install(tmp_path):
    """``(site, home)``: the package copied in its installed layout under ``site``, both folders read-only."""
    site, home = tmp_path / "site", tmp_path / "home"
    no_caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    shutil.copytree(REPO_ROOT / "mlp", site / "mlp", ignore=no_caches)
    shutil.copytree(REPO_ROOT / "kernels", site / "mlp" / "kernels", ignore=no_caches)
    home.mkdir()
    _read_only(site)
    _read_only(home)
    yield site, home
    _writable_again(tmp_path)


def _run(site: Path, home: Path, cache_dir: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "XDG_", "PYTHONPATH"))}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    preexec = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if not sys.platform.startswith("linux"):
            pytest.skip("run as root on a system without Linux capabilities: permission bits cannot stop it")
        preexec = _drop_root_file_capabilities
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(site / "mlp")], capture_output=True, text=True,
                              env=env, cwd=home, timeout=600, preexec_fn=preexec)
    except subprocess.SubprocessError as exc:
        if "prctl" in str(exc) or "preexec_fn" in str(exc):
            pytest.skip(f"run as root and cannot drop the capabilities that bypass permission bits: {exc}")
        raise
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not all(out["refused"].values()):
        pytest.skip(f"writes into the read-only copy were not refused here ({out['refused']}): the test would "
                    "not exercise a read-only install")
    assert Path(out["mlp"]).parent == site / "mlp" and Path(out["kernels"]).parent == site / "mlp" / "kernels"
    return out


def _cache_notices(out: dict) -> list:
    return [w for w in out["warnings"] if "NUMBA_CACHE_DIR" in w[1] or "cache" in w[1].lower()]


def test_import_and_fit_on_a_read_only_install_say_once_that_nothing_is_cached(read_only_install):
    site, home = read_only_install
    out = _run(site, home)
    assert out["loss"][-1] < out["loss"][0] and out["evaluated"] > 0  # the compiled loops ran and trained
    notices = _cache_notices(out)
    assert len(notices) == 1, f"expected one notice about the compile cache, got {out['warnings']}"
    category, message = notices[0]
    assert category == "CompileCacheWarning" and "NUMBA_CACHE_DIR" in message


def test_numba_cache_dir_restores_the_cache_on_a_read_only_install(read_only_install, tmp_path):
    site, home = read_only_install
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    out = _run(site, home, cache_dir=cache)
    assert not _cache_notices(out), out["warnings"]
    assert any(p.suffix == ".nbi" for p in cache.rglob("*")), "no index of compiled code in NUMBA_CACHE_DIR"


def test_the_decorator_compiles_in_memory_only_when_numba_has_no_cache_location(monkeypatch):
    from mlp.kernels import _compile_cache

    monkeypatch.setattr(_compile_cache, "_warned", False)
    asked = []

    def jit(*args, cache, **options):  # as numba.njit / numba.cuda.jit decorate where nothing is writable
        asked.append((args, cache, options))

        def decorate(fn):
            if cache:
                raise RuntimeError(f"cannot cache function {fn.__name__!r}: no locator available for file 'x.py'")
            return ("compiled", fn)

        return decorate

    def f():
        pass

    with pytest.warns(_compile_cache.CompileCacheWarning, match="NUMBA_CACHE_DIR") as caught:
        assert _compile_cache.jit_with_disk_cache(jit, "sig", nogil=True)(f) == ("compiled", f)
        assert _compile_cache.jit_with_disk_cache(jit)(f) == ("compiled", f)
    assert len(caught) == 1  # once per process, however many functions
    assert asked[:2] == [(("sig",), True, {"nogil": True}), (("sig",), False, {"nogil": True})]

    def broken_jit(*args, cache, **options):
        def decorate(fn):
            raise RuntimeError("Unknown cache locator class: 'x'")

        return decorate

    with pytest.raises(RuntimeError, match="Unknown cache locator"):  # any other error is not ours to hide
        _compile_cache.jit_with_disk_cache(broken_jit)(f)
