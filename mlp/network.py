"""The forward and backward pass of ``M`` networks of one shape, written once.

A single :class:`mlp.MLP` is a stack of one: its flat parameter buffer,
seen as a ``(1, P)`` array, is what :class:`Networks` runs on.  A search's
or an ensemble's many networks are a stack of ``M``: the rows of one
``(M, P)`` buffer.  Every operation is the backend's stacked operation, with
the model index as the leading axis of every array; the backend picks the
kernels (on a GPU a stack of one runs the tuned single-network products, a
stack of many the stacked ones), the Python here never forks on ``M``.

Each row of the buffer is laid out as :attr:`mlp.MLP.params`: every layer's
weights ``(in, out)`` first, then every bias (``mlp.backends.base.layer_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .backends import Backend
from .backends.base import CSRMatrix


@dataclass
class Workspace:
    """The activations of a batch of ``M`` networks, kept for the backward pass: each layer's output
    ``(M, B, size)``, the gradient with respect to each hidden layer's output, and the loss's gradient with
    respect to the logits ``(M, B, outputs)``.  Owned by whoever made it (one loop, one call)."""

    acts: list = field(default_factory=list)
    grads_in: list = field(default_factory=list)
    dlogits: Any = None

    def first_rows(self, rows: int) -> "Workspace":
        """Views of every buffer's first ``rows`` rows of each model's batch (for a last, shorter chunk)."""
        return Workspace([a[:, :rows] for a in self.acts], [g[:, :rows] for g in self.grads_in],
                         None if self.dlogits is None else self.dlogits[:, :rows])


class Networks:
    """``M`` networks of one shape (layer sizes, hidden activation code, output, dtype) on ``backend``.

    ``params`` and ``grads`` are ``(M, P)`` arrays of the backend (views of a
    single network's flat buffers for ``M = 1``; ``grads`` None for inference
    only); each model's layers are read
    through the backend's layer views (:meth:`Backend.layer_views`).
    ``output`` names the output layer and its loss (``mlp.backends.base.OUTPUTS``).
    """

    def __init__(self, backend: Backend, layer_sizes: Sequence[int], act: int, output: str, dtype: Any,
                 params: Any, grads: Any) -> None:
        self.backend = backend
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.act, self.output = int(act), output
        self.dtype = np.dtype(dtype)
        self.params, self.grads = params, grads
        self.M = int(params.shape[0])
        self.n_layers = len(self.layer_sizes) - 1
        self.n_weights = sum(k * n for k, n in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        self._W, self._b = backend.layer_views(params, self.layer_sizes)
        self._dW, self._db = ([], []) if grads is None else backend.layer_views(grads, self.layer_sizes)
        self._parts: dict = {}

    @classmethod
    def stack(cls, models: Sequence[Any], backend: Backend) -> "Networks":
        """A new stack on ``backend`` holding copies of the parameters of ``models`` (:class:`mlp.MLP` of one
        shape: layer sizes, activation, output, dtype), and zeroed gradients."""
        if not models:
            raise ValueError("models: expected at least one network, got none")
        first = models[0]
        shape = (first.layer_sizes, first.activation, first.output, first.dtype)
        for i, m in enumerate(models):
            if (m.layer_sizes, m.activation, m.output, m.dtype) != shape:
                raise ValueError(f"models[{i}]: expected the shape of models[0] {shape}, got "
                                 f"{(m.layer_sizes, m.activation, m.output, m.dtype)}")
        host = np.stack([np.asarray(m.backend.to_numpy(m.params), dtype=first.dtype) for m in models])
        return cls(backend, first.layer_sizes, first._act, first.output, first.dtype,
                   backend.asarray(host, dtype=first.dtype), backend.zeros(host.shape, first.dtype))

    def params_numpy(self) -> np.ndarray:
        """Host copy of the parameters, (M, P)."""
        return np.array(self.backend.to_numpy(self.params), copy=True)

    def new_workspace(self, batch: int, training: bool = True) -> Workspace:
        """Buffers for batches of ``batch`` rows of every network (``training=False``: the layers' outputs only,
        for a forward pass)."""
        be, dt, M = self.backend, self.dtype, self.M
        if not training:
            return Workspace(acts=[be.empty((M, batch, n), dt) for n in self.layer_sizes[1:]])
        return Workspace(acts=[be.empty((M, batch, n), dt) for n in self.layer_sizes[1:]],
                         grads_in=[be.empty((M, batch, n), dt) for n in self.layer_sizes[1:-1]],
                         dlogits=be.empty((M, batch, self.layer_sizes[-1]), dt))

    def forward(self, x: Any, ws: Workspace, rows: Any = None, models: slice = slice(None)) -> Any:
        """Logits ``(M, B, outputs)`` of the batches ``x`` ``(M, B, inputs)``; each layer's output kept in ``ws``.
        For a stack of one, ``x`` may be a CSR batch of the backend (sparse input rows: its rows are the
        batch's rows, the first of ``ws``'s).

        ``rows``: each model's row count in its batch, -1 for a model that does
        not train (see the backend's stacked operations; None: every row);
        ``models``: the range of models ``x``, ``ws`` and ``rows`` hold.
        """
        be, last, a = self.backend, self.n_layers - 1, x
        W, b = self._layers(models)[:2]
        for i in range(self.n_layers):
            act = self.act if i < last else 0
            if i == 0 and isinstance(x, CSRMatrix):  # sparse rows (a stack of one): the backend's sparse product
                be._csr_affine_forward(x, self._W[0][0], self._b[0][0], act, ws.acts[0][0][:x.shape[0]])
            else:
                be._affine_forward_stacked(a, W[i], b[i], act, ws.acts[i], rows)
            a = ws.acts[i]
        return a

    def backward(self, x: Any, ws: Workspace, rows: Any = None, models: slice = slice(None)) -> None:
        """Gradients of the loss into :attr:`grads`, from ``ws.dlogits`` (written by the loss)."""
        be, last, dy = self.backend, self.n_layers - 1, ws.dlogits
        W, _, dW, db = self._layers(models)
        for i in range(last, -1, -1):
            x_in = ws.acts[i - 1] if i > 0 else x
            y = ws.acts[i] if i < last else None  # the last layer has no activation to differentiate
            dx = ws.grads_in[i - 1] if i > 0 else None
            if i == 0 and isinstance(x, CSRMatrix):  # sparse rows: no gradient with respect to the input
                r = x.shape[0]
                be._csr_affine_backward(dy[0][:r], x, None if y is None else y[0][:r], self._dW[0][0],
                                        self._db[0][0], self.act)
            else:
                be._affine_backward_stacked(dy, x_in, W[i], y, dx, dW[i], db[i], self.act, rows)
            dy = dx

    def _layers(self, models: slice) -> tuple[list, list, list, list]:
        """Every layer's weights, biases and their gradients for the models ``models``, as the stacked operations
        take them; made once per range (a step would otherwise build them anew for every layer)."""
        key = (models.start, models.stop, models.step)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = tuple([v[models] for v in views]
                                             for views in (self._W, self._b, self._dW, self._db))
        return parts

    def loss(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int, weights: Any = None,
             rows: Any = None, clip: bool = False) -> None:
        """The output layer's loss of every model's batch: accumulated into ``stats`` (M, STATS_SIZE), its
        gradient with respect to the logits written into ``dlogits`` (None: statistics only).  ``targets``
        (M, B) int64 labels for a softmax, else (M, B, outputs); ``weights`` (M, B) per-sample weights or None;
        ``step`` is recorded as the first non-finite step when a loss is not finite; ``clip``: scikit-learn's
        log-losses, whose probabilities are clipped (``names.log_loss_eps``), the gradient unchanged."""
        self.backend._loss_stacked(self.output, logits, targets, dlogits, stats, step, weights, rows, clip)
