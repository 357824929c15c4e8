"""Training benchmarks: one step and one epoch of the reference network, per backend and per peer.

The reference configuration is 784-512-256-10 (ReLU, softmax cross-entropy,
float32), Adam with lr 1e-3, batches of 128 and 1024, on synthetic data of
Fashion-MNIST's shape (60 000 samples).  Peers, when installed: PyTorch on the
same device (eager, FP32 with TF32 off; on the CPU with as many threads as
NumPy's BLAS) and scikit-learn's ``MLPClassifier`` on the CPU.

On the CPU the epoch's matrix products alone (the eight products of every
step, into preallocated outputs) are timed between the rounds of the NumPy
backend's epoch, so the report can say how close that epoch comes to its
BLAS work.

Every mlp row runs the trainer's own step (``mlp.TrainingLoop``), never a
copy of it.  ``test_epoch_loop`` times the loop's epoch alone (the data
already on the device): on a GPU with CUDA graphs (one replay per epoch) and
without (``mlp-cuda-eager``), next to PyTorch eager and PyTorch with the step
captured as a CUDA graph; on the CPU the fast path.  ``test_fit_epochs``
times whole ``fit`` calls of several epochs, with and without CUDA graphs,
and keeps every epoch's time within each fit (the first: compilation, and
the eager epoch before a capture), the launches and the replays.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pytest

import mlp
from bench import _env
from bench._measure import (
    REFERENCE_LAYERS,
    Budget,
    epoch_batches,
    measure,
    measure_fit_epochs,
    random_array,
    sizes,
)
from bench._peers import TorchGraphTrainer, TorchTrainer, sklearn_epoch
from mlp.backends import get_backend

BATCHES = sizes((128, 1024), (128,), ids=["b128", "b1024"])
#: scikit-learn's epoch in a quick run covers this many samples (the report says so).
QUICK_SKLEARN_SAMPLES = 10_000
#: epochs of every fit of ``test_fit_epochs``; in a ``--mlp-tiny`` check, its network and samples
FIT_EPOCHS = 6
TINY_LAYERS, TINY_SAMPLES, TINY_EPOCHS = (32, 16, 10), 1000, 3

OPTIMIZERS = {
    "adam": lambda: mlp.optim.Adam(lr=1e-3),
    # A modest rate: random labels must not make the loss diverge mid-benchmark.
    "sgd-momentum": lambda: mlp.optim.SGD(lr=0.01, momentum=0.9),
}

MLP_RUNS = [
    pytest.param("numpy", "adam", id="numpy-adam"),
    pytest.param("numpy", "sgd-momentum", id="numpy-sgd-momentum", marks=pytest.mark.cpu_heavy),
    pytest.param("cuda", "adam", id="cuda-adam"),
    pytest.param("cuda", "sgd-momentum", id="cuda-sgd-momentum"),
]


def _backend(request, name: str):
    return request.getfixturevalue("numpy_backend" if name == "numpy" else "cuda_backend")


def _info(op: str, impl: str, device: str, **extra) -> dict:
    return {"suite": "training", "op": op, "impl": impl, "device": device, "layers": list(REFERENCE_LAYERS),
            **extra}


def _loop(be, X: np.ndarray, y: np.ndarray, batch: int, optimizer: str, cuda_graphs: bool = False):
    """The trainer's step loop over the reference network with ``X, y`` on the backend."""
    trainer = mlp.Trainer(mlp.MLP(REFERENCE_LAYERS, seed=0), OPTIMIZERS[optimizer](), backend=be,
                          batch_size=batch, seed=0, cuda_graphs=cuda_graphs)
    return trainer.training_loop(X, y)


class StepCycle:
    """Training steps one at a time through the trainer's loop, cycling over one epoch's batches."""

    def __init__(self, loop) -> None:
        self.loop = loop
        loop.set_order(np.random.default_rng(0).permutation(loop.n_samples).astype(np.int64))
        loop.begin_epoch()
        self.count = 0

    def __call__(self) -> None:
        # The last batch may be partial; cycle over the full ones.
        self.loop.step(self.count % (self.loop.n_samples // self.loop.batch_size))
        self.count += 1


class LoopEpoch:
    """One epoch of the trainer's loop (a fresh shuffle, all steps, the statistics read back, which waits
    for the device); every call's wall time is kept in :attr:`seconds`."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.rng = np.random.default_rng(1)
        self.seconds: list[float] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        self.loop.set_order(self.rng.permutation(self.loop.n_samples).astype(np.int64))
        self.loop.epoch()
        self.loop.totals()
        self.seconds.append(time.perf_counter() - start)


def _device_seconds(be, op) -> float:
    """Device time of ``op`` from CUDA events on the backend's stream (a real GPU only)."""
    from numba import cuda

    start, end = cuda.event(), cuda.event()
    start.record(be.stream)
    op()
    end.record(be.stream)
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / 1e3


def _kernel_seconds_per_epoch(loop) -> float:
    """The sum of the device times of one eager epoch's kernels, each timed alone with CUDA events:
    the floor a replayed epoch could reach with no gaps between kernels."""
    be = loop.backend
    total = 0.0
    ops = ("_take_rows_stacked", "_affine_forward", "_affine_backward", "_loss_stacked", "_l2_penalty_stacked",
           "_sgd_step_stacked", "_rmsprop_step_stacked", "_adam_step_stacked")
    saved = {name: getattr(be, name) for name in ops}

    def timed(fn):
        def run(*args):
            nonlocal total
            total += _device_seconds(be, lambda: fn(*args))
        return run

    try:
        for name, fn in saved.items():
            setattr(be, name, timed(fn))
        loop.begin_epoch()
        for i in range(loop.steps):
            loop.step(i)
    finally:
        for name in saved:
            delattr(be, name)  # back to the class's methods
    return total


class EpochProducts:
    """The matrix products of one NumPy-backend epoch alone: per step forward 3, dW 3, dx 2.

    Operands are laid out as the NumPy backend hands them to BLAS (``x.T`` and
    ``W.T`` as transposed views), outputs are preallocated, and the batch
    sizes follow the trainer's epoch.  Calling the object times one such
    epoch and appends the seconds to :attr:`seconds`.
    """

    def __init__(self, n: int, batch: int, layers=REFERENCE_LAYERS) -> None:
        rng = np.random.default_rng(0)
        host = get_backend("numpy")
        self.batches = epoch_batches(n, batch)
        self.W = [random_array(host, (k, m), rng, scale=1.0 / np.sqrt(k)) for k, m in zip(layers[:-1], layers[1:])]
        self.dW = [np.empty_like(w) for w in self.W]
        self.per_batch = {}
        for b in set(self.batches):
            acts = [random_array(host, (b, s), rng) for s in layers]  # the input, then each layer's output
            outs = [np.empty((b, s), np.float32) for s in layers[1:]]
            grads = [random_array(host, (b, s), rng) for s in layers[1:]]  # gradient at each layer's output
            dx = [np.empty((b, s), np.float32) for s in layers[1:-1]]
            self.per_batch[b] = (acts, outs, grads, dx)
        self.seconds: list[float] = []

    def epoch(self) -> None:
        W, dW, n_layers = self.W, self.dW, len(self.W)
        for b in self.batches:
            acts, outs, grads, dx = self.per_batch[b]
            for i in range(n_layers):
                np.matmul(acts[i], W[i], out=outs[i])
            for i in reversed(range(n_layers)):
                np.matmul(acts[i].T, grads[i], out=dW[i])
                if i > 0:
                    np.matmul(grads[i], W[i].T, out=dx[i - 1])

    def __call__(self) -> None:
        start = time.perf_counter()
        self.epoch()
        self.seconds.append(time.perf_counter() - start)


# ------------------------------------------------------------------ mlp
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("backend,optimizer", MLP_RUNS)
def test_epoch_mlp(benchmark, request, settings, data, backend, optimizer, batch):
    """One epoch through ``Trainer.fit``.  On the CPU, the epoch's matrix products alone are timed
    before every round (interleaved, so that a machine whose speed drifts affects both alike)."""
    be = _backend(request, backend)
    X, y = data
    trainer = mlp.Trainer(mlp.MLP(REFERENCE_LAYERS, seed=0), OPTIMIZERS[optimizer](), backend=be,
                          batch_size=batch, seed=0)
    device = "gpu" if backend == "cuda" else "cpu"
    products = EpochProducts(X.shape[0], batch) if device == "cpu" and not settings.skip_cpu else None
    _, rounds = measure_fit_epochs(benchmark, trainer, X, y, budget=settings.epoch, between=products,
                                   info=_info("epoch", f"mlp-{backend}", device, optimizer=optimizer,
                                              threads=_env.blas_threads() if device == "cpu" else None))
    if products is not None:
        benchmark.extra_info["products_seconds"] = products.seconds[-rounds:]
        benchmark.extra_info["products_per_step"] = 3 * len(products.W) - 1


LOOP_RUNS = [
    pytest.param("numpy", "fast", id="numpy-fast"),
    pytest.param("cuda", "eager", id="cuda-eager"),
    pytest.param("cuda", "graphs", id="cuda-graphs"),
]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum"])
@pytest.mark.parametrize("backend,path", LOOP_RUNS)
def test_epoch_loop(benchmark, request, settings, data, backend, path, optimizer, batch):
    """One epoch of the trainer's step loop, data already on the backend: the eager and CUDA-graph paths
    on a GPU, the fast path on the CPU."""
    be = _backend(request, backend)
    if backend == "cuda" and path == "graphs" and not getattr(be, "supports_graphs", False):
        pytest.skip("CUDA graphs need a real GPU")
    X, y = data
    loop = _loop(be, X, y, batch, optimizer, cuda_graphs=path == "graphs")
    epoch = LoopEpoch(loop)
    device = "gpu" if backend == "cuda" else "cpu"
    impl = f"mlp-{backend}-{path}"
    epoch()  # the warm-up; on the graph path also the eager first epoch, then one capture
    epoch()
    info = _info("epoch", impl, device, optimizer=optimizer, batch=batch, samples=X.shape[0], steps=loop.steps,
                 backend=be.name)
    if device == "gpu":
        start = be.launch_count
        epoch()
        info["launches_per_epoch"] = be.launch_count - start  # kernels launched by the host
        info["host_calls_per_epoch"] = "1 graph replay + 3 copies/fills" if path == "graphs" else \
            f"{be.launch_count - start} kernel launches + 3 copies/fills"
        if path == "graphs":
            info["kernels_per_epoch"] = loop.graph_launches
            info["replayed_epoch_device_seconds"] = _device_seconds(be, epoch)
            info["kernel_seconds_sum"] = _kernel_seconds_per_epoch(loop)
    else:
        info["threads"] = _env.blas_threads()
    inner, rounds = measure(benchmark, epoch, budget=settings.epoch, sync=be.synchronize, info=info)
    benchmark.extra_info["epoch_seconds"] = epoch.seconds[-rounds * inner:]
    loop.close()


FIT_RUNS = [
    pytest.param("numpy", "eager", id="numpy", marks=(pytest.mark.cpu_heavy, pytest.mark.full)),
    pytest.param("cuda", "eager", id="cuda-eager"),
    pytest.param("cuda", "graphs", id="cuda-graphs"),
]


def fit_budget(quick: bool) -> Budget:
    """Whole fits of several epochs: one to three rounds (each fit's epochs are the figures)."""
    return Budget(round_s=0.0, total_s=3.0 if quick else 10.0, min_rounds=1, max_rounds=3)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("backend,path", FIT_RUNS)
def test_fit_epochs(benchmark, request, settings, data, backend, path, batch):
    """``Trainer.fit`` of :data:`FIT_EPOCHS` epochs (Adam) per round, with CUDA graphs or eager launches:
    ``epoch_seconds`` holds every epoch after each fit's first (``first_epoch_seconds``), so the report
    shows the epoch and how it drifts within a fit; also the launches per epoch, the replays and the kernels
    in the captured epoch, and the garbage collections during the fits."""
    import gc

    be = _backend(request, backend)
    if path == "graphs" and not getattr(be, "supports_graphs", False):
        pytest.skip("CUDA graphs need a real GPU")
    X, y = data
    layers, epochs = REFERENCE_LAYERS, FIT_EPOCHS
    if settings.tiny:
        layers, epochs = TINY_LAYERS, TINY_EPOCHS
        X, y = X[:TINY_SAMPLES, :layers[0]], y[:TINY_SAMPLES] % layers[-1]
    later: list[float] = []
    first: list[float] = []
    launches: list[float] = []
    gc_before = [s["collections"] for s in gc.get_stats()]
    trainers = []

    def fit() -> None:
        if trainers:  # one fit's data and captured graph on the device at a time
            trainers.pop().loop.close()
        trainer = mlp.Trainer(mlp.MLP(layers, seed=0), OPTIMIZERS["adam"](), backend=be, batch_size=batch, seed=0,
                              cuda_graphs=path == "graphs")
        start = be.launch_count
        history = trainer.fit(X, y, epochs=epochs, verbose=0)
        first.append(float(history["seconds"][0]))
        later.extend(float(t) for t in history["seconds"][1:])
        launches.append((be.launch_count - start) / epochs)
        trainers.append(trainer)

    info = _info("fit_epochs", f"mlp-{backend}-{path}", "gpu" if backend == "cuda" else "cpu", optimizer="adam",
                 batch=batch, samples=X.shape[0], steps=len(epoch_batches(X.shape[0], batch)), epochs=epochs,
                 layers=list(layers), backend=be.name)
    _, rounds = measure(benchmark, fit, budget=fit_budget(settings.quick), sync=be.synchronize, info=info)
    per_fit = epochs - 1
    loop = trainers[-1].loop
    benchmark.extra_info.update(
        epoch_seconds=later[-rounds * per_fit:], first_epoch_seconds=first[-rounds:],
        last_over_first=later[-1] / later[-per_fit] if later[-per_fit] > 0 else None,
        host_launches_per_epoch=launches[-1], uses_graphs=trainers[-1].uses_cuda_graphs,
        replays=loop.replays, graph_launches=loop.graph_launches,
        gc_collections=[s["collections"] - b for s, b in zip(gc.get_stats(), gc_before)])
    loop.close()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
def test_step_mlp(benchmark, request, settings, data, backend, batch):
    be = _backend(request, backend)
    X, y = data
    step = StepCycle(_loop(be, X, y, batch, "adam"))
    for _ in range(3):  # compile and settle before counting launches
        step()
    before = be.launch_count
    for _ in range(10):
        step()
    be.synchronize()
    launches = (be.launch_count - before) / 10
    device = "gpu" if backend == "cuda" else "cpu"
    info = _info("step", f"mlp-{backend}", device, optimizer="adam", batch=batch)
    if launches:
        info["launches_per_step"] = launches
    measure(benchmark, step, budget=settings.step, sync=be.synchronize, info=info)


# ---------------------------------------------------------------- peers
def _torch(request, device: str):
    return request.getfixturevalue("torch_cpu" if device == "cpu" else "torch_cuda")


TORCH_RUNS = [
    pytest.param("cpu", "eager", id="cpu"),
    pytest.param("cuda", "eager", id="cuda"),
    pytest.param("cuda", "graphs", id="cuda-graphs"),
]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum"])
@pytest.mark.parametrize("device,mode", TORCH_RUNS)
def test_epoch_torch(benchmark, request, settings, data, device, mode, optimizer, batch):
    if device == "cpu" and optimizer != "adam":
        pytest.skip("the CPU peer is compared for Adam only")
    torch = _torch(request, device)
    X, y = data
    make = TorchGraphTrainer if mode == "graphs" else TorchTrainer
    peer = make(torch, X, y, REFERENCE_LAYERS, batch, device, optimizer=optimizer)
    impl = f"torch-{device}" + ("-graphs" if mode == "graphs" else "")
    measure(benchmark, peer.epoch, budget=settings.epoch, sync=peer.synchronize,
            info=_info("epoch", impl, "gpu" if device == "cuda" else "cpu", optimizer=optimizer,
                       batch=batch, samples=X.shape[0], steps=len(epoch_batches(X.shape[0], batch)),
                       threads=torch.get_num_threads() if device == "cpu" else None))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_step_torch(benchmark, request, settings, data, device, batch):
    torch = _torch(request, device)
    X, y = data
    peer = TorchTrainer(torch, X, y, REFERENCE_LAYERS, batch, device)
    measure(benchmark, peer.step, budget=settings.step, sync=peer.synchronize,
            info=_info("step", f"torch-{device}", "gpu" if device == "cuda" else "cpu", optimizer="adam",
                       batch=batch, threads=torch.get_num_threads() if device == "cpu" else None))


@pytest.mark.parametrize("batch", BATCHES)
def test_epoch_sklearn(benchmark, settings, sklearn_present, data, batch):
    X, y = data
    if settings.quick:
        X, y = X[:QUICK_SKLEARN_SAMPLES], y[:QUICK_SKLEARN_SAMPLES]
    measure(benchmark, sklearn_epoch(X, y, REFERENCE_LAYERS[1:-1], batch), budget=settings.epoch,
            info=_info("epoch", "sklearn", "cpu", optimizer="adam", batch=batch, samples=X.shape[0],
                       steps=len(epoch_batches(X.shape[0], batch)), threads=_env.blas_threads()))
