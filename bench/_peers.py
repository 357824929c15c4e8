"""The peers a training epoch is compared with: PyTorch (CPU and CUDA eager) and scikit-learn.

Each is set up to do the work ``mlp.Trainer`` does in an epoch: the same
layers (784-512-256-10, ReLU), float32, Adam with lr 1e-3, the same batch
size, a fresh shuffle each epoch, and the epoch's mean loss and accuracy.
PyTorch and scikit-learn are imported by the caller (lazily) and passed in.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def configure_torch(torch, threads: int | None = None) -> None:
    """Full-FP32 matrix products on the GPU (TF32 off) and, on the CPU, ``threads`` intra-op threads."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if threads is not None:
        torch.set_num_threads(int(threads))


def torch_mlp(torch, layers: Sequence[int], device: str):
    """``nn.Sequential`` of Linear layers with ReLU between them (float32, PyTorch's default init)."""
    nn = torch.nn
    mods: list = []
    for i, (k, m) in enumerate(zip(layers[:-1], layers[1:])):
        if i:
            mods.append(nn.ReLU())
        mods.append(nn.Linear(k, m))
    torch.manual_seed(0)
    return nn.Sequential(*mods).to(device)


class TorchTrainer:
    """An eager PyTorch training loop over data held on ``device`` (copied there once).

    ``epoch()`` shuffles on the device, gathers each batch with
    ``index_select``, runs forward, cross-entropy, backward and ``Adam.step``
    (PyTorch's default implementation for the device), and accumulates loss
    and correct predictions on the device; it reads them once at the end, which
    also waits for the GPU.  ``step()`` is one iteration of that loop.
    """

    def __init__(self, torch, X: np.ndarray, y: np.ndarray, layers: Sequence[int], batch: int, device: str,
                 optimizer: str = "adam") -> None:
        self.torch = torch
        self.device = device
        self.batch = batch
        self.model = torch_mlp(torch, layers, device)
        self.optimizer = self._optimizer(optimizer)
        self.X = torch.from_numpy(X).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.n = X.shape[0]
        self._perm = torch.randperm(self.n, device=device)
        self._next = 0
        self.loss_sum = torch.zeros((), device=device)
        self.hits = torch.zeros((), dtype=torch.int64, device=device)

    def _optimizer(self, name: str, **extra):
        """The optimizers the mlp rows use: Adam lr 1e-3, or SGD lr 0.01 with momentum 0.9."""
        params = self.model.parameters()
        if name == "adam":
            return self.torch.optim.Adam(params, lr=1e-3, **extra)
        if name == "sgd-momentum":
            return self.torch.optim.SGD(params, lr=0.01, momentum=0.9)
        raise ValueError(f"optimizer: expected 'adam' or 'sgd-momentum', got {name!r}")

    def _step(self, idx) -> None:
        torch = self.torch
        xb = self.X.index_select(0, idx)
        yb = self.y.index_select(0, idx)
        logits = self.model(xb)
        loss = torch.nn.functional.cross_entropy(logits, yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.loss_sum += loss.detach() * idx.shape[0]
            self.hits += (logits.argmax(dim=1) == yb).sum()

    def step(self) -> None:
        """One training step on the next batch of the current permutation (no synchronisation)."""
        if self._next + self.batch > self.n:
            self._perm = self.torch.randperm(self.n, device=self.device)
            self._next = 0
        self._step(self._perm[self._next:self._next + self.batch])
        self._next += self.batch

    def epoch(self) -> tuple[float, float]:
        """One pass over the data; returns (mean loss, accuracy)."""
        torch = self.torch
        perm = torch.randperm(self.n, device=self.device)
        self.loss_sum.zero_()
        self.hits.zero_()
        for start in range(0, self.n, self.batch):
            self._epoch_step(perm[start:start + self.batch])
        return float(self.loss_sum) / self.n, int(self.hits) / self.n

    def _epoch_step(self, idx) -> None:
        self._step(idx)

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


class TorchGraphTrainer(TorchTrainer):
    """The same loop with each training step captured once as a ``torch.cuda.CUDAGraph`` and replayed.

    PyTorch's recipe for whole-step capture: warm-up steps on a side stream,
    then one capture per batch size (the last batch may be smaller) into
    static index buffers, with ``Adam(capturable=True)`` so that its step
    count lives on the device.  An epoch then copies each batch's indices
    into the static buffer and replays the step's graph: two calls per step.
    """

    def __init__(self, torch, X, y, layers, batch, device, optimizer: str = "adam") -> None:
        super().__init__(torch, X, y, layers, batch, device, optimizer="sgd-momentum")
        self.optimizer = self._optimizer(optimizer, **({"capturable": True} if optimizer == "adam" else {}))
        sizes = {batch, self.n - (self.n - 1) // batch * batch}
        self.graphs = {}
        for b in sorted(sizes):
            idx = torch.arange(b, device=device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step(idx)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self._step(idx)
            self.graphs[b] = (idx, graph)

    def _epoch_step(self, chunk) -> None:
        idx, graph = self.graphs[chunk.shape[0]]
        idx.copy_(chunk)
        graph.replay()


def sklearn_epoch(X: np.ndarray, y: np.ndarray, hidden: Sequence[int], batch: int, seed: int = 0):
    """A callable that fits a fresh ``MLPClassifier`` for one epoch (``max_iter=1``) on ``(X, y)``.

    Same layers, batch, optimizer and learning rate as the reference; no L2
    penalty (``alpha=0``), no early stopping; its per-epoch convergence
    warning is silenced.  scikit-learn keeps float32 input in float32.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def fit_one_epoch() -> Any:
        clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), activation="relu", solver="adam",
                            batch_size=batch, learning_rate_init=1e-3, alpha=0.0, max_iter=1, shuffle=True,
                            tol=0.0, early_stopping=False, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return clf.fit(X, y)

    return fit_one_epoch
