"""Numba's disk cache never serves machine code compiled from other sources than those installed.

Numba keys a cached function by its own source file only; the stacked
loops inline the single-model loops of other modules, the kernels their
device functions.  These tests copy the package in its installed layout,
fill a cache in a subprocess, change a module that a cached function only
calls (not the one that defines it), and check that the next process
compiles the function again and computes the changed arithmetic, while
unchanged sources are served from the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# the stacked L2 penalty (defined in _cpu_stacked.py) sums the squares in _cpu_losses.l2_penalty
SCRIPT = r"""
import json
import numpy as np
from mlp.backends import _cpu_stacked as stacked
from mlp.backends.base import STATS_LOSS_SUM

params = np.arange(1.0, 11.0).reshape(1, 10)
stats = np.zeros((1, 8))
stacked.l2_penalty(params, 10, np.ones((1, 1)), 0, stats, np.zeros(1, np.int64))
hits = sum(stacked.l2_penalty.stats.cache_hits.values())
print(json.dumps({"penalty": float(stats[0, STATS_LOSS_SUM]), "cache_hits": hits, "file": stacked.__file__}))
"""


@pytest.fixture
def installed(tmp_path):
    """``(site, env)``: the package copied in its installed layout under ``site``, and a subprocess
    environment whose Numba cache is an empty folder of its own."""
    site = tmp_path / "site"
    no_caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    shutil.copytree(REPO_ROOT / "mlp", site / "mlp", ignore=no_caches)
    shutil.copytree(REPO_ROOT / "kernels", site / "mlp" / "kernels", ignore=no_caches)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(site), NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), PYTHONDONTWRITEBYTECODE="1")
    return site, env


def _run(site: Path, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=site,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out.pop("file")).parent == site / "mlp" / "backends"  # the copy ran, not another install
    return out


def test_a_change_to_a_called_module_compiles_afresh_and_unchanged_sources_are_cached(installed):
    site, env = installed
    squares = float(sum(v * v for v in range(1, 11)))
    first = _run(site, env)
    assert first == {"penalty": squares, "cache_hits": 0}  # compiled, and written to the cache
    assert _run(site, env) == {"penalty": squares, "cache_hits": 1}  # the same sources: served from the cache

    callee = site / "mlp" / "backends" / "_cpu_losses.py"
    text = callee.read_text()
    old = "stats[STATS_LOSS_SUM] += scale * total"
    assert text.count(old) == 1
    callee.write_text(text.replace(old, "stats[STATS_LOSS_SUM] += 2 * scale * total"))
    # _cpu_stacked.py, which defines the cached function, is unchanged: Numba's own key alone would load the
    # old machine code and give the old penalty
    assert _run(site, env) == {"penalty": 2 * squares, "cache_hits": 0}
    assert _run(site, env) == {"penalty": 2 * squares, "cache_hits": 1}


def test_the_digest_covers_the_kernels_and_the_cpu_loops():
    from mlp.kernels import _compile_cache

    folders = {p.name for p in _compile_cache.source_folders()}
    assert folders == {"kernels", "backends"}
    assert len(_compile_cache.sources_digest()) == 64
