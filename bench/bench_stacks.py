"""Many networks trained at once on a device: a search, one large stack, and hidden sizes that differ.

Three measurements, the ``stacks`` part of a GPU session (``python -m bench
--session``):

``op == "search"`` (:func:`test_stack_search`)
    The digits grid search of ``bench_search.py`` (its grid, folds, epochs,
    estimator arguments, scorer and epoch-count check; float32) as
    ``mlp.GridSearchCV(mlp.MLPClassifier(backend="cuda"))``, against
    scikit-learn's ``GridSearchCV(MLPClassifier, n_jobs=-1)`` on every CPU
    core of the same machine; each after an untimed small search.
``op == "stack_epoch"`` (:func:`test_stack_epoch`)
    64 networks of the reference size (784-512-256-10, ReLU, softmax
    cross-entropy, Adam lr 1e-3, batch 128, float32) on 8,192 synthetic
    rows, each model with its own initialisation and its own shuffle: the
    epoch of the whole stack through :class:`mlp.TrainingLoop` (as
    ``mlp.search`` drives it, CUDA graphs on; no L2 term), through PyTorch's
    ``torch.func`` (:class:`bench._peers.TorchFuncStack`: ``vmap`` over the
    stacked parameters, one ``Adam`` for all, so one learning rate for every
    model), and the same with the loss under ``torch.compile``.
``op == "padding_epoch"`` (:func:`test_stack_padding`)
    Networks whose hidden sizes differ, on digits: 30 each of (32,), (64,)
    and (100,) trained as three stacks (what ``mlp.search`` does: one stack
    per shape) against one stack of 90 networks of (100,) (what padding
    every model to the widest would compute at least).

An epoch is one round: each model's new order is staged untimed before it,
and the round ends when every model's loss is read back (which waits for
the device); the two epochs before the rounds compile, and capture the CUDA
graph the later epochs replay.  The reference stack and the search are GPU
measurements: their CPU rows (the NumPy backend, PyTorch on the CPU) run
only in a ``--mlp-tiny`` check of the harness, where everything shrinks
(the search suite times the CPU searches).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bench import bench_search as bs
from bench._measure import measure


@dataclass(frozen=True)
class StackSizes:
    """``models`` networks of ``layers`` on ``samples`` rows, ``batch`` rows a step."""

    models: int
    layers: tuple[int, ...]
    samples: int
    batch: int


#: the stack of reference networks and its check-sized twin
REFERENCE_STACK = StackSizes(64, (784, 512, 256, 10), 8192, 128)
TINY_STACK = StackSizes(4, (20, 16, 8, 3), 256, 128)
#: the padding comparison: hidden sizes, models of each, digits rows used (None: all), batch
PADDING = {"hidden": (32, 64, 100), "per_size": 30, "rows": None, "batch": 200}
TINY_PADDING = {"hidden": (4, 6, 8), "per_size": 2, "rows": 256, "batch": 200}
#: seconds a row must have left to start (``--mlp-deadline``): scikit-learn's search on the cores; the
#: compilation of ``torch.compile``
SKLEARN_NEEDS_S = 30
COMPILE_NEEDS_S = 30

CPU_ONLY_IN_TINY = ("a GPU measurement: its CPU row runs only in a --mlp-tiny check of the harness (the search "
                    "suite times the CPU searches)")


def _device_backend(request, settings, backend: str):
    """The backend fixture for ``backend``; the NumPy one only in a tiny check."""
    if backend == "numpy":
        if not settings.tiny:
            pytest.skip(CPU_ONLY_IN_TINY)
        return request.getfixturevalue("numpy_backend")
    return request.getfixturevalue("cuda_backend")


def _digits32() -> tuple[np.ndarray, np.ndarray]:
    """Digits as the search suite reads it (X / 16, in [0, 1]), float32, and int64 labels."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (the searches and the data set)")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


# ------------------------------------------------------------------ search
#: The search rows in the order they run: the stacked search first (the scikit-learn row is compared with it).
SEARCH_RUNS = [pytest.param("mlp-search", "numpy", id="mlp-search-numpy"),
               pytest.param("mlp-search", "cuda", id="mlp-search-cuda"),
               pytest.param("sklearn-search", None, id="sklearn-search",
                            marks=pytest.mark.needs_seconds(SKLEARN_NEEDS_S))]
_SEARCHED: dict[str, Any] = {}


@pytest.mark.parametrize("impl,backend", SEARCH_RUNS)
def test_stack_search(benchmark, request, settings, impl, backend):
    """The digits search stacked on a device (one round, after an untimed small one), against
    scikit-learn's search on every core of the same machine."""
    p = bs.plan(settings.quick, settings.tiny)
    X, y = _digits32()
    if impl == "mlp-search":
        _device_backend(request, settings, backend)
        make = lambda q: bs.mlp_search(q, backend=backend)  # noqa: E731
    else:
        request.getfixturevalue("sklearn_present")
        if not settings.tiny:  # the peer of the stacked search on a GPU: nothing to compare with without one
            request.getfixturevalue("cuda_backend")
        make = bs.sklearn_search
    info = dict(bs._info(impl, "float32", p, X, y), suite="stacks", impl=f"{impl}-{backend}" if backend else impl,
                device="gpu" if backend == "cuda" else "cpu", cores=os.cpu_count())
    summary = bs.time_search(benchmark, make, p, X, y, info)
    if impl == "mlp-search":
        _SEARCHED["first"] = summary
    elif "first" in _SEARCHED:
        benchmark.extra_info.update(bs.agreement(summary, _SEARCHED["first"]))


# --------------------------------------------------------------- one stack
class MlpStack:
    """``models`` networks of ``layers`` as one stack in :class:`mlp.TrainingLoop` (Adam lr 1e-3, CUDA
    graphs where the backend captures them), model ``m`` initialised with seed ``seed + m`` and shuffled by its
    own generator each epoch."""

    def __init__(self, be, layers, X: np.ndarray, y: np.ndarray, models: int, batch: int, seed: int = 0) -> None:
        import mlp
        from mlp.network import Networks

        self.n = X.shape[0]
        net = Networks.stack([mlp.MLP(layers, seed=seed + m, dtype="float32") for m in range(models)], be)
        self.loop = mlp.TrainingLoop(net, [mlp.optim.Adam(lr=1e-3) for _ in range(models)], be,
                                     be.asarray(X, dtype=np.float32),
                                     be.asarray(np.ascontiguousarray(y, dtype=np.int64)), batch, cuda_graphs=True)
        self.rngs = [np.random.default_rng(seed + m) for m in range(models)]
        self.losses: np.ndarray | None = None

    def stage(self) -> None:
        self.loop.stage([r.permutation(self.n) for r in self.rngs])

    def epoch(self) -> None:
        self.loop.epoch()
        self.losses = self.loop.totals()[:, 0] / self.n  # reads the statistics back: waits for the device

    def info(self) -> dict[str, Any]:
        loop = self.loop
        return {"replays": loop.replays, "eager_epochs": loop.eager_epochs, "uses_graphs": loop.use_graphs,
                "graph_launches": loop.graph_launches, "steps": loop.steps}


def _epochs(benchmark, settings, stage, epoch, info: dict[str, Any], warmup: int = 2) -> None:
    """Time ``epoch`` (a round each, ``stage`` untimed before it) after ``warmup`` epochs, with the epoch
    budget; ``epoch_seconds`` keeps each round's time."""
    import time

    seconds: list[float] = []
    first: list[float] = []
    for _ in range(warmup):
        stage()
        start = time.perf_counter()
        epoch()
        first.append(time.perf_counter() - start)

    def timed() -> None:
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)

    _, rounds = measure(benchmark, timed, budget=settings.epoch, between=stage,
                        info=dict(info, warmup_epoch_seconds=first))
    benchmark.extra_info["epoch_seconds"] = seconds[-rounds:]


def _reference_data(sizes: StackSizes) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.random((sizes.samples, sizes.layers[0]), dtype=np.float32)
    y = rng.integers(0, sizes.layers[-1], size=sizes.samples, dtype=np.int64)
    return X, y


STACK_RUNS = [pytest.param("mlp", "numpy", id="mlp-numpy"), pytest.param("mlp", "cuda", id="mlp-cuda"),
              pytest.param("torch-func", "cpu", id="torch-func-cpu"),
              pytest.param("torch-func", "cuda", id="torch-func-cuda"),
              pytest.param("torch-compile", "cuda", id="torch-compile-cuda",
                           marks=pytest.mark.needs_seconds(COMPILE_NEEDS_S))]


@pytest.mark.parametrize("engine,device", STACK_RUNS)
def test_stack_epoch(benchmark, request, settings, engine, device):
    """One epoch of a stack of reference networks: mlp's loop against ``torch.func`` (eager, compiled)."""
    sizes = TINY_STACK if settings.tiny else REFERENCE_STACK
    X, y = _reference_data(sizes)
    gpu = device == "cuda"
    info = {"suite": "stacks", "op": "stack_epoch", "device": "gpu" if gpu else "cpu", "models": sizes.models,
            "layers": list(sizes.layers), "samples": sizes.samples, "batch": sizes.batch, "optimizer": "adam",
            "group": f"stack-{'gpu' if gpu else 'cpu'}"}
    if engine == "mlp":
        be = _device_backend(request, settings, device)
        stack = MlpStack(be, sizes.layers, X, y, sizes.models, sizes.batch)
        try:
            _epochs(benchmark, settings, stack.stage, stack.epoch, dict(info, impl=f"mlp-{device}", backend=be.name))
            benchmark.extra_info.update(stack.info(), mean_loss_last_epoch=float(np.mean(stack.losses)))
        finally:
            stack.loop.close()
        return
    if not gpu and not settings.tiny:
        pytest.skip(CPU_ONLY_IN_TINY)
    if engine == "torch-compile" and settings.tiny:
        pytest.skip("torch.compile is not compiled in a --mlp-tiny check")
    torch = request.getfixturevalue("torch_cuda" if gpu else "torch_cpu")
    from bench._peers import TorchFuncStack

    peer = TorchFuncStack(torch, X, y, sizes.models, sizes.layers, sizes.batch, device,
                          compiled=engine == "torch-compile")
    losses: list[np.ndarray] = []

    def stage() -> None:  # returns nothing: pytest-benchmark passes what a setup returns to the round
        peer.stage()
        peer.synchronize()

    _epochs(benchmark, settings, stage, lambda: losses.append(peer.epoch()),
            dict(info, impl=f"{engine}-{device}", torch=torch.__version__,
                 learning_rates="one for all models (torch.func)"))
    benchmark.extra_info["mean_loss_last_epoch"] = float(np.mean(losses[-1]))
    del peer
    if gpu:
        torch.cuda.empty_cache()


# --------------------------------------------------------------- padding
@pytest.mark.parametrize("layout", ["grouped", "padded"])
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
def test_stack_padding(benchmark, request, settings, backend, layout):
    """Hidden sizes that differ: one stack per shape (``grouped``) against one stack padded to the widest."""
    be = request.getfixturevalue("numpy_backend" if backend == "numpy" else "cuda_backend")
    pad = TINY_PADDING if settings.tiny else PADDING
    X, y = _digits32()
    if pad["rows"] is not None:
        X, y = X[:pad["rows"]], y[:pad["rows"]]
    hidden = pad["hidden"] if layout == "grouped" else (max(pad["hidden"]),)
    per = pad["per_size"] if layout == "grouped" else pad["per_size"] * len(pad["hidden"])
    stacks = [MlpStack(be, (X.shape[1], h, 10), X, y, per, pad["batch"]) for h in hidden]

    def stage() -> None:
        for st in stacks:
            st.stage()

    def epoch() -> None:
        for st in stacks:
            st.epoch()

    info = {"suite": "stacks", "op": "padding_epoch", "impl": f"mlp-{backend}", "layout": layout,
            "device": "gpu" if backend == "cuda" else "cpu", "group": f"padding-{backend}", "dataset": "digits",
            "rows": X.shape[0], "batch": pad["batch"], "hidden": list(hidden), "models_per_stack": per,
            "models": per * len(hidden), "optimizer": "adam"}
    try:
        _epochs(benchmark, settings, stage, epoch, info)
        benchmark.extra_info.update(replays=sum(st.loop.replays for st in stacks),
                                    mean_loss_last_epoch=float(np.mean([st.losses for st in stacks])))
    finally:
        for st in stacks:
            st.loop.close()
