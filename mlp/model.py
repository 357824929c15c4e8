"""The multilayer perceptron: parameters in one flat buffer, forward and backward over the backend contract."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ._validation import (check_features, check_float_dtype, check_int, check_labels, check_layer_sizes,
                          check_targets, describe)
from .backends import Backend, get_backend
from . import sparse
from .backends.base import ACTIVATIONS, CSRMatrix, activation_code
from .checkpoint import read_archive, save_model
from .checkpoint import CHECKPOINT_FORMAT, atomic_write_bytes  # noqa: F401  (importable from here, as before)

PathLike = Union[str, "os.PathLike[str]"]

#: rows per chunk when predicting, so inference on a whole dataset needs bounded memory
PREDICT_CHUNK = 8192

#: the output layers and the loss each is trained with.  Each pairs an output activation with its canonical
#: loss, so the gradient with respect to the last layer's pre-activation is ``output - target`` (scaled by
#: the sample weights): softmax with cross-entropy (integer labels), logistic with binary cross-entropy per
#: output (0/1 targets: binary and multilabel classification), identity with half the squared error, and exp
#: with half the Poisson deviance (scikit-learn's ``loss="poisson"``).
OUTPUTS = {"softmax": "cross_entropy", "logistic": "binary_cross_entropy", "identity": "squared_error",
           "exp": "poisson"}


def output_activation(z: np.ndarray, output: str) -> np.ndarray:
    """The output layer's activation applied on the host to logits ``z`` (n, outputs), in ``z``'s dtype."""
    if output == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if output == "logistic":
        from scipy.special import expit

        return expit(z)
    if output == "exp":
        return np.exp(z)
    return z


@dataclass
class _Workspace:
    """Buffers for one batch size, allocated once and reused every step."""

    acts: list = field(default_factory=list)  # output of each layer, (B, size[i+1])
    grads_in: list = field(default_factory=list)  # gradient w.r.t. each hidden layer's output
    dlogits: Any = None


class MLP:
    """A multilayer perceptron: hidden layers affine + ``activation``, last layer affine (the logits).

    Parameters
    ----------
    layer_sizes:
        ``(n_inputs, hidden_1, ..., n_outputs)``, e.g. ``(784, 512, 256, 10)``.
    seed:
        Seed of the He initialisation (weights ~ N(0, 2 / fan_in), biases 0).
    dtype:
        ``"float32"`` (default) or ``"float64"``.
    activation:
        Of the hidden layers: ``"relu"`` (default), ``"tanh"``, ``"logistic"`` or ``"identity"``.
    output:
        The output layer and its loss (see :data:`OUTPUTS`): ``"softmax"`` (default; cross-entropy on
        integer labels), ``"logistic"`` (binary cross-entropy per output: binary or multilabel 0/1
        targets), ``"identity"`` (regression, squared error) or ``"exp"`` (regression, Poisson deviance).

    All parameters live in one flat buffer: every weight matrix first (stored
    ``(in, out)``, so a layer computes ``x @ W + b``), then every bias.  An
    optimizer step is then one update over one array, and L2 weight decay
    applies to the first :attr:`n_weights` elements only (never to biases).

    The model starts on the host (NumPy backend); :class:`mlp.Trainer` moves it
    to its backend, and :meth:`to` moves it explicitly.
    """

    def __init__(self, layer_sizes: Sequence[int], seed: int = 0, dtype: Any = "float32", activation: str = "relu",
                 output: str = "softmax") -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output: expected one of {tuple(OUTPUTS)}, got {output!r}")
        self.output = output
        self.layer_sizes = check_layer_sizes(layer_sizes, min_outputs=2 if output == "softmax" else 1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.dtype = check_float_dtype(dtype)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self._act = activation_code(activation)
        shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        self.n_weights = sum(k * m for k, m in shapes)
        self.n_params = self.n_weights + sum(m for _, m in shapes)
        self.backend: Backend = get_backend("numpy")
        self._params = self.backend.empty(self.n_params, self.dtype)
        self._bind_views()
        rng = np.random.default_rng(self.seed)
        self.set_weights([(rng.standard_normal((k, m)) * np.sqrt(2.0 / k), np.zeros(m)) for k, m in shapes])
        self._grads = None
        self._workspaces: dict[int, _Workspace] = {}
        #: free-form information stored in checkpoints (see :meth:`save`)
        self.metadata: dict = {}

    # ----------------------------------------------------------- structure
    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def loss(self) -> str:
        """The loss the output layer is trained with (see :data:`OUTPUTS`)."""
        return OUTPUTS[self.output]

    @property
    def uses_labels(self) -> bool:
        """Whether training targets are integer class labels (softmax) rather than real-valued rows."""
        return self.output == "softmax"

    @property
    def params(self) -> Any:
        """The flat parameter buffer (an array of :attr:`backend`)."""
        return self._params

    @property
    def grads(self) -> Any:
        """The flat gradient buffer, laid out like :attr:`params` (allocated on first use)."""
        if self._grads is None:
            self._grads = self.backend.zeros(self.n_params, self.dtype)
            self._grad_W, self._grad_b = self._views(self._grads)
        return self._grads

    def _views(self, flat: Any) -> tuple[list, list]:
        Ws, bs, off = [], [], 0
        for k, m in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            Ws.append(flat[off:off + k * m].reshape((k, m)))
            off += k * m
        for m in self.layer_sizes[1:]:
            bs.append(flat[off:off + m])
            off += m
        return Ws, bs

    def parameter_views(self) -> tuple[list, list]:
        """``(Ws, bs)``: every layer's weight (in, out) and bias as views of :attr:`params` on the backend."""
        return self._W, self._b

    def gradient_views(self) -> tuple[list, list]:
        """``(dWs, dbs)``: views of :attr:`grads` laid out like :meth:`parameter_views`."""
        self.grads  # noqa: B018  (allocates the buffer and its views on first use)
        return self._grad_W, self._grad_b

    def _bind_views(self) -> None:
        self._W, self._b = self._views(self._params)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        extra = "" if (self.activation, self.output) == ("relu", "softmax") else \
            f", activation={self.activation!r}, output={self.output!r}"
        return (f"MLP({sizes}, dtype={self.dtype.name}{extra}, params={self.n_params}, "
                f"backend={self.backend.name!r})")

    # ------------------------------------------------------------- devices
    def to(self, backend: Union[str, Backend]) -> "MLP":
        """Move the parameters to ``backend`` (a name or a Backend); returns ``self``."""
        be = get_backend(backend)
        if be is self.backend:
            return self
        host = self.backend.to_numpy(self._params)
        params = be.asarray(np.array(host, dtype=self.dtype), dtype=self.dtype)  # may raise MemoryError: then
        self.backend, self._params = be, params                                   # the model stays where it was
        self._bind_views()
        self._grads = None
        self._workspaces.clear()
        return self

    # ------------------------------------------------------------- weights
    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Host copies of every layer's ``(W, b)``; ``W`` has shape (in, out)."""
        host = np.array(self.backend.to_numpy(self._params), copy=True)
        Ws, bs = self._views(host)
        return [(W.copy(), b.copy()) for W, b in zip(Ws, bs)]

    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every layer's ``(W, b)`` (W of shape (in, out)) from host arrays."""
        if not isinstance(weights, Sequence) or len(weights) != self.n_layers:
            n = len(weights) if isinstance(weights, Sequence) else describe(weights)
            raise ValueError(f"weights: expected a list of {self.n_layers} (W, b) pairs, got {n}")
        host = np.empty(self.n_params, dtype=self.dtype)
        Ws, bs = self._views(host)
        for i, pair in enumerate(weights):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"weights[{i}]: expected a (W, b) pair, got {describe(pair)}")
            for dst, src, nm in ((Ws[i], pair[0], "W"), (bs[i], pair[1], "b")):
                arr = np.asarray(src)
                if arr.shape != dst.shape:
                    raise ValueError(f"weights[{i}] {nm}: expected shape {dst.shape}, got {describe(arr)}")
                if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
                    raise ValueError(f"weights[{i}] {nm}: expected finite real values, got {describe(arr)}")
                dst[...] = arr
        self.backend.copy_(self._params, host)

    # ---------------------------------------------------------- inference
    def _as_input(self, X: Any, name: str = "X") -> Any:
        if isinstance(X, CSRMatrix) or sparse.is_sparse(X):  # stays sparse: a CSRMatrix of the backend
            return sparse.check_features(self.backend, X, self.n_features, self.dtype, name)
        if self.backend.is_array(X) and not isinstance(X, np.ndarray):
            shape = tuple(X.shape)
            if len(shape) != 2 or shape[1] != self.n_features or np.dtype(X.dtype) != self.dtype:
                raise ValueError(f"{name}: expected a device array of shape (n, {self.n_features}) and dtype "
                                 f"{self.dtype}, got {describe(X)}")
            return X
        return self.backend.asarray(check_features(X, self.n_features, self.dtype, name), dtype=self.dtype)

    def _logits_chunks(self, X: Any):
        """Yield ``(start, logits)`` over chunks of validated input ``X`` (an array of the backend)."""
        if isinstance(X, CSRMatrix):  # each chunk's rows gathered as a CSR batch of the backend
            for start, xb in sparse.row_batches(self.backend, X, PREDICT_CHUNK):
                yield start, self.forward(xb, self._workspace(xb.shape[0]))
            return
        n = X.shape[0]
        for start in range(0, n, PREDICT_CHUNK):
            xb = X[start:start + PREDICT_CHUNK]
            yield start, self.forward(xb, self._workspace(xb.shape[0]))

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits, shape (N, n_classes), as a host array."""
        Xd = self._as_input(X)
        out = np.empty((Xd.shape[0], self.n_classes), dtype=self.dtype)
        for start, logits in self._logits_chunks(Xd):
            out[start:start + logits.shape[0]] = self.backend.to_numpy(logits)
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """The output layer's values, shape (N, n_outputs), as a host array: class probabilities for a softmax
        (rows sum to 1) or a logistic output (one probability per output), the predictions otherwise."""
        Xd = self._as_input(X)
        out = np.empty((Xd.shape[0], self.n_outputs), dtype=self.dtype)
        for start, logits in self._logits_chunks(Xd):
            rows = slice(start, start + logits.shape[0])
            if self.output == "softmax":
                out[rows] = self.backend.to_numpy(self.backend.softmax(logits))
            else:
                out[rows] = output_activation(self.backend.to_numpy(logits), self.output)
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predictions: class indices (int64, shape (N,)) for a softmax output, 0/1 indicators (int64,
        shape (N, n_outputs)) for a logistic one, real values (shape (N, n_outputs)) for regression."""
        z = self.decision_function(X)
        if self.output == "softmax":
            return np.argmax(z, axis=1).astype(np.int64)
        if self.output == "logistic":
            return (z > 0).astype(np.int64)
        return output_activation(z, self.output)

    # ----------------------------------------------------- forward/backward
    def new_workspace(self, batch: int) -> _Workspace:
        """Buffers for one batch size on the model's backend, owned by the caller (the training loop
        keeps its own for as long as it runs, so nothing it uses is ever evicted)."""
        be, dt = self.backend, self.dtype
        ws = _Workspace()
        ws.acts = [be.empty((batch, m), dt) for m in self.layer_sizes[1:]]
        ws.grads_in = [be.empty((batch, m), dt) for m in self.layer_sizes[1:-1]]
        ws.dlogits = be.empty((batch, self.n_classes), dt)
        return ws

    def _workspace(self, batch: int) -> _Workspace:
        """A cached workspace for inference: a few batch sizes (full chunks, the last one) at most."""
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self.new_workspace(batch)
            if len(self._workspaces) >= 4:
                self._workspaces.pop(next(iter(self._workspaces)))
            self._workspaces[batch] = ws
        return ws

    def forward(self, x: Any, ws: _Workspace) -> Any:
        """Logits of a batch ``x`` (a validated backend array of the model's dtype, or a CSR batch of the
        backend); every layer's output is kept in ``ws`` for backward.  Calls the backend's unchecked fast path."""
        be = self.backend
        last = self.n_layers - 1
        a = x
        for i in range(self.n_layers):
            op = be._csr_affine_forward if i == 0 and isinstance(x, CSRMatrix) else be._affine_forward
            op(a, self._W[i], self._b[i], self._act if i < last else 0, ws.acts[i])
            a = ws.acts[i]
        return a

    def backward(self, x: Any, ws: _Workspace) -> Any:
        """Gradients of the loss into :attr:`grads`, given ``ws.dlogits`` filled by the loss."""
        be = self.backend
        grads = self.grads  # noqa: F841  (allocates the views on first use)
        last = self.n_layers - 1
        dy = ws.dlogits
        for i in range(last, -1, -1):
            x_in = ws.acts[i - 1] if i > 0 else x
            y = ws.acts[i] if i < last else None
            dx = ws.grads_in[i - 1] if i > 0 else None
            # the last layer has no y: no derivative, whatever act says
            if i == 0 and isinstance(x, CSRMatrix):  # a sparse input needs no dx
                be._csr_affine_backward(dy, x, y, self._grad_W[0], self._grad_b[0], act=self._act)
            else:
                be._affine_backward(dy, x_in, self._W[i], y, dx, self._grad_W[i], self._grad_b[i], act=self._act)
            dy = dx
        return self._grads

    def check_targets(self, y: Any, n_samples: int, name: str = "y") -> np.ndarray:
        """``y`` validated for this model's loss: int64 labels (softmax) or ``(n, n_outputs)`` real targets."""
        if self.uses_labels:
            return check_labels(y, n_samples, self.n_classes, name)
        targets = check_targets(y, n_samples, self.n_outputs, self.dtype, name)
        # the Poisson deviance needs counts (>= 0); the logistic loss, probabilities in [0, 1]
        low, high = {"exp": (0.0, np.inf), "logistic": (0.0, 1.0)}.get(self.output, (-np.inf, np.inf))
        if targets.size and (targets.min() < low or targets.max() > high):
            bad = targets.min() if targets.min() < low else targets.max()
            raise ValueError(f"{name}: the {self.output!r} output expects targets in [{low:g}, {high:g}], "
                             f"got {float(bad):g}")
        return targets

    def loss_into(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int, weights: Any = None) -> None:
        """The output layer's loss of a batch: accumulates into ``stats`` and writes the gradient with respect
        to ``logits`` into ``dlogits`` (None: statistics only).  Backend arrays, validated by the caller;
        ``weights`` (n,) are per-sample weights or None (see the backend's loss operations)."""
        be = self.backend
        op = {"softmax": be._softmax_xent, "logistic": be._logistic_xent, "identity": be._squared_error,
              "exp": be._poisson_loss}[self.output]
        if weights is None:
            op(logits, targets, dlogits, stats, step)
        else:
            op(logits, targets, dlogits, stats, step, weights)

    def loss_and_gradients(self, X: Any, y: Any) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Mean loss of ``(X, y)`` (see :attr:`loss`) and its gradient per layer ``(dW, db)`` as host arrays.

        The data term only: L2 weight decay belongs to the optimizer.  Useful for
        gradient checks and for custom training loops.
        """
        Xd = self._as_input(X)
        if isinstance(Xd, CSRMatrix):
            Xd = sparse.whole_batch(self.backend, Xd)
        targets = self.backend.asarray(self.check_targets(y, Xd.shape[0]))
        ws = self._workspace(Xd.shape[0])
        logits = self.forward(Xd, ws)
        stats = self.backend.new_stats()
        self.loss_into(logits, targets, ws.dlogits, stats, 0)
        loss = float(self.backend.to_numpy(stats)[0]) / Xd.shape[0]
        self.backward(Xd, ws)
        host = np.array(self.backend.to_numpy(self._grads), copy=True)
        Ws, bs = self._views(host)
        return loss, [(W.copy(), b.copy()) for W, b in zip(Ws, bs)]

    # ---------------------------------------------------------- checkpoints
    def __reduce__(self):
        # Pickle the architecture and host parameters: a model trained on a GPU unpickles anywhere (on the host).
        host = np.array(self.backend.to_numpy(self._params), copy=True)
        return _unpickle_mlp, (self.layer_sizes, self.seed, self.dtype.name, host, dict(self.metadata),
                               self.activation, self.output)

    def save(self, path: PathLike, metadata: dict | None = None) -> Path:
        """Write the architecture and the weights to one ``.npz`` file, atomically (see :mod:`mlp.checkpoint`).

        The file is written to a temporary name in the same folder, flushed to
        disk, then renamed over ``path``: a crash mid-save leaves any previous
        file intact.  ``metadata`` (JSON-serialisable; default: the model's
        :attr:`metadata`) is stored alongside.  :func:`mlp.load` reads it back;
        the checkpoints a run resumes from are written by :class:`mlp.Trainer`.
        Returns the path written.
        """
        return save_model(path, self, metadata)


def _unpickle_mlp(layer_sizes, seed, dtype, params, metadata, activation="relu", output="softmax") -> MLP:
    model = MLP(layer_sizes, seed=seed, dtype=dtype, activation=activation, output=output)
    model.backend.copy_(model.params, params)
    model.metadata = metadata
    return model


def load(path: PathLike, backend: Union[str, Backend, None] = None) -> MLP:
    """Read a checkpoint written by :meth:`MLP.save`; the model is placed on ``backend`` (default: host).

    Returns the model; its ``metadata`` attribute holds the stored metadata.
    """
    header, arrays = read_archive(path)
    model = model_from_archive(header, arrays, path)
    if backend is not None:
        model.to(backend)
    return model


def model_from_archive(header: dict, arrays: dict[str, np.ndarray], path: PathLike) -> MLP:
    """The model stored in a checkpoint read by :func:`mlp.checkpoint.read_archive` (on the host)."""
    # checkpoints written before activations and outputs were recorded hold ReLU networks with a softmax
    model = MLP(header["layer_sizes"], seed=header.get("seed", 0), dtype=header["dtype"],
                activation=header.get("activation", "relu"), output=header.get("output", "softmax"))
    params = arrays["params"]
    if params.shape != (model.n_params,):
        raise ValueError(f"path: {str(path)!r} holds {params.shape} parameters, expected ({model.n_params},) "
                         f"for layers {model.layer_sizes}")
    model.backend.copy_(model.params, params.astype(model.dtype, copy=False))
    model.metadata = header.get("metadata", {})
    return model
