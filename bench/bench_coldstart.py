"""Cold start: a new Python process that imports the library and makes its first fit, against scikit-learn's.

Each round runs :data:`SCRIPT` in a fresh process (``sys.executable``, from
the repository root): import the library (``import mlp`` and
``mlp.MLPClassifier``; or ``from sklearn.neural_network import
MLPClassifier``), load digits (X/16), and fit
``MLPClassifier(max_iter=20, random_state=0)`` on it (its convergence warning
silenced).  pytest-benchmark times the whole process (interpreter start
included: what a user waits for); the script reports the import, the data
and the fit on their own (``extra_info``: every round's, and their medians).

``mlp-warm``
    mlp with Numba's disk cache filled: a private ``NUMBA_CACHE_DIR``, filled
    by one untimed run before the rounds.
``mlp-empty``
    mlp with an empty cache: a new empty ``NUMBA_CACHE_DIR`` for every round,
    so every function the fit needs compiles.
``sklearn``
    scikit-learn's ``MLPClassifier`` (after one untimed run, as ``mlp-warm``:
    files read once are in the OS's cache for both).

Every process may write Python's bytecode caches (``PYTHONDONTWRITEBYTECODE``
is removed from its environment): an installed package has its ``.pyc``
files (pip compiles them), so a process that compiled the library's sources
on every import, as one under ``PYTHONDONTWRITEBYTECODE=1`` does for a source
checkout, would time a cost no installed copy pays (about 0.2 s of ``mlp``'s
import here; scikit-learn's files, in site-packages, were compiled at install).

Targets (``bench/targets.py``): the warm process at most 1.5x scikit-learn's;
the first fit with an empty cache at most 1.5 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench._env import REPO_ROOT

pytestmark = pytest.mark.cpu_heavy

#: the estimator arguments of the first fit, on both sides
PARAMS = "max_iter=20, random_state=0"
SCRIPT = f"""
import json, sys, time, warnings
start = time.perf_counter()
if sys.argv[1] == "mlp":
    import mlp
    MLPClassifier = mlp.MLPClassifier
else:
    from sklearn.neural_network import MLPClassifier
imported = time.perf_counter()
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
X = X / 16.0
loaded = time.perf_counter()
from sklearn.exceptions import ConvergenceWarning
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    MLPClassifier({PARAMS}).fit(X, y)
fitted = time.perf_counter()
print(json.dumps({{"import": imported - start, "data": loaded - imported, "fit": fitted - loaded}}))
"""


def run_script(library: str, cache_dir: str | None) -> dict[str, float]:
    """:data:`SCRIPT` for ``library`` ("mlp" or "sklearn") in a new process, with ``NUMBA_CACHE_DIR`` set to
    ``cache_dir`` (None: as in this process); returns the times the script measured."""
    if library not in ("mlp", "sklearn"):
        raise ValueError(f"library: expected 'mlp' or 'sklearn', got {library!r}")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as an installed package has them
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    done = subprocess.run([sys.executable, "-c", SCRIPT, library], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the {library} script failed (exit status {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache_root():
    with tempfile.TemporaryDirectory(prefix="mlp-coldstart-") as root:
        yield Path(root)


RUNS = [pytest.param("mlp", "warm", id="mlp-warm"), pytest.param("mlp", "empty", id="mlp-empty"),
        pytest.param("sklearn", None, id="sklearn")]


@pytest.mark.parametrize("library,cache", RUNS)
def test_coldstart(benchmark, settings, cache_root, library, cache):
    """A new process: import, load digits, first fit; ``rounds`` processes after one untimed run (none for an
    empty cache: each of its rounds starts from nothing)."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (the estimators and the data set)")
    rounds = 3 if settings.quick else 5
    measured: list[dict[str, float]] = []
    fresh = iter(range(rounds + 1))

    def cache_dir() -> str | None:
        if cache == "warm":
            return str(cache_root / "warm")
        if cache == "empty":  # a new empty folder every round
            path = cache_root / f"empty-{next(fresh)}"
            path.mkdir()
            return str(path)
        return None

    if cache != "empty":
        run_script(library, cache_dir())  # fills the warm cache; reads the files once

    def setup() -> tuple[tuple, dict]:
        return (cache_dir(),), {}

    def one(directory: str | None) -> None:
        measured.append(run_script(library, directory))

    impl = library if cache is None else f"{library}-{cache}"
    benchmark.extra_info.update({"suite": "coldstart", "op": "process", "impl": impl, "device": "cpu",
                                 "dataset": "digits", "params": PARAMS, "inner": 1})
    benchmark.pedantic(one, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    info: dict[str, Any] = {}
    for key in ("import", "data", "fit"):
        values = [m[key] for m in measured]
        info[f"{key}_seconds"] = values
        info[f"{key}_median"] = statistics.median(values)
    benchmark.extra_info.update(info)
