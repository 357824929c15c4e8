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
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import mlp
from bench import _env
from bench._measure import (
    REFERENCE_LAYERS,
    epoch_batches,
    measure,
    measure_fit_epochs,
    random_array,
    sizes,
)
from bench._peers import TorchTrainer, sklearn_epoch
from mlp.backends import get_backend

BATCHES = sizes((128, 1024), (128,), ids=["b128", "b1024"])
#: scikit-learn's epoch in a quick run covers this many samples (the report says so).
QUICK_SKLEARN_SAMPLES = 10_000

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


class StepLoop:
    """Training steps one at a time, as the body of ``Trainer.fit``'s loop runs them.

    The data is on the backend, the epoch's batches are views of one
    permutation, and every call trains on the next batch (cycling), so no
    batch is ever repeated back to back.
    """

    def __init__(self, be, X: np.ndarray, y: np.ndarray, batch: int, optimizer) -> None:
        self.be, self.optimizer = be, optimizer
        self.model = mlp.MLP(REFERENCE_LAYERS, seed=0).to(be)
        be.warmup(self.model.dtype)
        self.X, self.y = be.asarray(X, dtype=np.float32), be.asarray(y, dtype=np.int64)
        n = X.shape[0]
        perm = be.asarray(np.random.default_rng(0).permutation(n).astype(np.int64), dtype=np.int64)
        self.batches = [perm[s * batch:(s + 1) * batch] for s in range(n // batch)]
        self.xb = be.empty((batch, X.shape[1]), np.float32)
        self.yb = be.empty((batch,), np.int64)
        self.ws = self.model._workspace(batch)
        self.stats = be.new_stats()
        self.model.grads  # noqa: B018  (allocates the gradient buffer)
        self.count = 0

    def __call__(self) -> None:
        be, model = self.be, self.model
        idx = self.batches[self.count % len(self.batches)]
        be.take_rows(self.X, idx, out=self.xb)
        be.take_rows(self.y, idx, out=self.yb)
        logits = model.forward(self.xb, self.ws)
        be.softmax_cross_entropy_into(logits, self.yb, self.ws.dlogits, self.stats, step=self.count)
        model.backward(self.xb, self.ws)
        self.optimizer.step(be, model.params, model.grads, model.n_weights)
        self.count += 1


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


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
def test_step_mlp(benchmark, request, settings, data, backend, batch):
    be = _backend(request, backend)
    X, y = data
    step = StepLoop(be, X, y, batch, OPTIMIZERS["adam"]())
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


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_epoch_torch(benchmark, request, settings, data, device, batch):
    torch = _torch(request, device)
    X, y = data
    peer = TorchTrainer(torch, X, y, REFERENCE_LAYERS, batch, device)
    measure(benchmark, peer.epoch, budget=settings.epoch, sync=peer.synchronize,
            info=_info("epoch", f"torch-{device}", "gpu" if device == "cuda" else "cpu", optimizer="adam",
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
