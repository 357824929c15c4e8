"""The peers a training epoch is compared with: PyTorch (CPU and CUDA eager) and scikit-learn.

Each is set up to do the work ``mlp.Trainer`` does in an epoch: the same
layers (784-512-256-10, ReLU), float32, Adam with lr 1e-3, the same batch
size, a fresh shuffle each epoch, and the epoch's mean loss and accuracy.
:class:`TorchFuncStack` is the peer of a stack of networks trained at once
(``torch.func``'s ``vmap``).  PyTorch and scikit-learn are imported by the
caller (lazily) and passed in.
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


class TorchFuncStack:
    """``models`` copies of a PyTorch ``nn.Sequential`` of ``layers`` trained at once with ``torch.func``.

    The copies' parameters are stacked (``stack_module_state``: one
    ``(models, ...)`` tensor per parameter), each copy initialised with its
    own seed; a step gathers every model's own batch (``X[idx]``, idx
    ``(models, batch)``), computes each model's mean cross-entropy with
    ``vmap(functional_call)``, backpropagates their sum (each model's gradient
    is its own loss's) and takes one ``torch.optim.Adam(lr=1e-3)`` step over
    the stacked parameters (one learning rate for every model: ``torch.func``'s
    limit).  ``compiled`` puts the gather, forward and loss under
    ``torch.compile`` (AOTAutograd compiles the backward too; the optimizer
    step stays eager).
    """

    def __init__(self, torch, X: np.ndarray, y: np.ndarray, models: int, layers: Sequence[int], batch: int,
                 device: str, compiled: bool = False) -> None:
        import copy

        from torch.func import functional_call, stack_module_state

        self.torch, self.device, self.models, self.batch = torch, device, models, batch
        copies = []
        for m in range(models):
            net = torch_mlp(torch, layers, device)
            torch.manual_seed(m)  # torch_mlp seeds every copy alike: each model its own initialisation
            for layer in net:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            copies.append(net)
        self.params, self.buffers = stack_module_state(copies)
        shape = copy.deepcopy(copies[0]).to("meta")  # the structure functional_call runs, without storage
        self.X = torch.from_numpy(X).to(device)
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)

        def model_loss(params, buffers, xb, yb):
            return torch.nn.functional.cross_entropy(functional_call(shape, (params, buffers), (xb,)), yb)

        every_loss = torch.vmap(model_loss)

        def losses(idx):
            return every_loss(self.params, self.buffers, self.X[idx], self.y[idx])

        self.losses = torch.compile(losses) if compiled else losses
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=1e-3)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.order = None

    def stage(self) -> None:
        """Every model's own shuffle of the rows for the next epoch: ``order`` (models, samples)."""
        torch, n = self.torch, self.X.shape[0]
        keys = torch.rand((self.models, n), generator=self.generator, device=self.device)
        self.order = torch.argsort(keys, dim=1)

    def epoch(self) -> np.ndarray:
        """One pass of every model over its staged order; returns each model's mean loss (reads it: waits)."""
        n, B = self.X.shape[0], self.batch
        total = self.torch.zeros(self.models, device=self.device)
        for start in range(0, n, B):
            idx = self.order[:, start:start + B]
            losses = self.losses(idx)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            self.optimizer.step()
            total += losses.detach() * idx.shape[1]
        return (total / n).cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()
