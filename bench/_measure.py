"""How the suites time things, and the synthetic data they time on.

Every benchmark goes through :func:`measure`: one untimed call first
(compilation, cuBLAS handles, first touch of memory), one more to estimate the
cost, then pytest-benchmark rounds.  A round runs the operation ``inner``
times back to back and then synchronises once, so that on a GPU a round
measures completed device work and short kernels are timed as a stream of
launches rather than one launch plus a synchronisation.  The report divides
by ``inner`` (stored in each benchmark's ``extra_info``) and uses medians.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: Fashion-MNIST's training set: 60 000 images of 28 x 28 pixels, 10 classes.
N_SAMPLES = 60_000
N_FEATURES = 784
N_CLASSES = 10
#: The reference network.
REFERENCE_LAYERS = (784, 512, 256, 10)

#: An operation cheaper than this is not worth a second untimed call to estimate its cost.
_RECALIBRATE_BELOW_S = 0.5
_MAX_INNER = 10_000


@dataclass(frozen=True)
class Budget:
    """Repetitions of one benchmark: rounds of at least ``round_s``, about ``total_s`` in all."""

    round_s: float
    total_s: float
    min_rounds: int
    max_rounds: int

    def plan(self, seconds_per_call: float) -> tuple[int, int]:
        """``(inner, rounds)`` for an operation that takes ``seconds_per_call``."""
        per = max(seconds_per_call, 1e-9)
        inner = 1 if per >= self.round_s else min(_MAX_INNER, math.ceil(self.round_s / per))
        rounds = int(self.total_s / (per * inner))
        return inner, max(self.min_rounds, min(self.max_rounds, rounds))


def _no_sync() -> None:
    pass


def _time_call(op: Callable[[], Any], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    op()
    sync()
    return time.perf_counter() - start


def measure(benchmark, op: Callable[[], Any], *, budget: Budget, info: dict[str, Any],
            sync: Callable[[], None] | None = None, between: Callable[[], None] | None = None) -> tuple[int, int]:
    """Time ``op`` with pytest-benchmark; ``sync`` (e.g. ``backend.synchronize``) ends every round.

    ``info`` goes into the benchmark's ``extra_info`` together with ``inner``
    (calls per round).  ``between``, if given, runs untimed before every
    round (a round is then a single call).  Returns ``(inner, rounds)``.
    """
    sync = sync or _no_sync
    estimate = _time_call(op, sync)  # also the warm-up
    if estimate < _RECALIBRATE_BELOW_S:
        estimate = min(estimate, _time_call(op, sync))
    inner, rounds = budget.plan(estimate)
    if between is not None:
        inner = 1

    def one_round() -> None:
        for _ in range(inner):
            op()
        sync()

    benchmark.extra_info.update(info)
    benchmark.extra_info["inner"] = inner
    benchmark.pedantic(one_round, setup=between, rounds=rounds, iterations=1, warmup_rounds=0)
    return inner, rounds


# --------------------------------------------------------------------- data
_BLOCK = 1 << 22  # random values generated once per array and repeated; timings do not depend on them


def random_array(backend, shape: int | tuple[int, ...], rng: np.random.Generator, scale: float = 1.0,
                 dtype: Any = np.float32) -> Any:
    """A float array of ``backend`` filled with normal values times ``scale``, built on the host in blocks.

    Arrays larger than one block repeat it: the values only need to be
    ordinary floats (no NaN, no denormals), and this keeps a multi-gigabyte
    array cheap to make on either backend.
    """
    dt = np.dtype(dtype)
    out = backend.empty(shape, dt)
    size = int(np.prod(out.shape))
    if size == 0:
        return out
    flat = out.reshape(size)
    block = (rng.standard_normal(min(size, _BLOCK), dtype=np.float32) * np.float32(scale)).astype(dt)
    for start in range(0, size, block.size):
        stop = min(size, start + block.size)
        backend.copy_(flat[start:stop], block[:stop - start])
    return out


def random_labels(backend, n: int, n_classes: int, rng: np.random.Generator) -> Any:
    return backend.asarray(rng.integers(0, n_classes, size=n, dtype=np.int64), dtype=np.int64)


def fashion_like(n: int = N_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic data of Fashion-MNIST's shape: X float32 (n, 784) in [0, 1), y int64 (n,) in [0, 10)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, N_FEATURES), dtype=np.float32), rng.integers(0, N_CLASSES, size=n, dtype=np.int64)


def epoch_batches(n: int, batch: int) -> list[int]:
    """Batch sizes of one epoch as the trainer cuts it: full batches, then the remainder."""
    full, rest = divmod(n, batch)
    return [batch] * full + ([rest] if rest else [])


# --------------------------------------------------------------- parameters
def sizes(values, quick_values, ids=None) -> list:
    """``pytest.param`` per value; values not in ``quick_values`` are marked ``full`` (left out of quick runs)."""
    import pytest

    out = []
    for i, v in enumerate(values):
        marks = () if v in quick_values else (pytest.mark.full,)
        out.append(pytest.param(v, marks=marks, id=None if ids is None else ids[i]))
    return out


def measure_fit_epochs(benchmark, trainer, X: np.ndarray, y: np.ndarray, *, budget: Budget,
                       info: dict[str, Any], between: Callable[[], None] | None = None) -> tuple[int, int]:
    """Time ``trainer.fit(X, y, epochs=1)`` per round, and keep the trainer's own epoch time.

    pytest-benchmark's statistics then cover the whole ``fit`` call, which also
    checks the input and copies it to the backend once; ``extra_info`` gets
    ``epoch_seconds``, the per-epoch wall time the trainer itself reports
    (``History["seconds"]``: from the first batch to the epoch's loss read-back,
    which waits for the device), one value per timed round.  The report uses
    the latter as "the epoch".  ``launches_per_epoch`` is recorded for backends
    that count kernel launches.  ``between`` runs untimed before every round
    (see :func:`measure`).
    """
    be = trainer.backend
    seconds: list[float] = []
    launches: list[int] = []

    def one_epoch() -> None:
        before = be.launch_count
        history = trainer.fit(X, y, epochs=1, verbose=0)
        seconds.append(float(history["seconds"][0]))
        launches.append(be.launch_count - before)

    n, batch = X.shape[0], trainer.batch_size
    info = dict(info, samples=n, batch=batch, steps=len(epoch_batches(n, batch)), backend=be.name)
    inner, rounds = measure(benchmark, one_epoch, budget=budget, info=info, sync=be.synchronize, between=between)
    benchmark.extra_info["epoch_seconds"] = seconds[-rounds * inner:]
    if launches[-1]:
        benchmark.extra_info["launches_per_epoch"] = launches[-1]
    return inner, rounds
