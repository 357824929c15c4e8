"""The multilayer perceptron: parameters in one flat buffer, forward and backward over the backend contract."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ._validation import (check_features, check_float_dtype, check_int, check_labels, check_layer_sizes,
                          check_targets, describe)
from .backends import Backend, get_backend
from . import sparse
from .backends.base import ACTIVATIONS, OUTPUTS, TARGET_RANGES, CSRMatrix, activation_code, layer_layout
from .checkpoint import read_archive, read_model_record, save_model
from ._files import atomic_write_bytes  # noqa: F401  (importable from here, as before)
from .checkpoint import CHECKPOINT_FORMAT  # noqa: F401  (importable from here, as before)
from .network import Networks, Workspace

PathLike = Union[str, "os.PathLike[str]"]

#: rows per chunk when predicting, so inference on a whole dataset needs bounded memory
PREDICT_CHUNK = 8192

def output_activation(z: np.ndarray, output: str) -> np.ndarray:
    """The output layer's activation applied on the host to logits ``z`` (n, outputs), in ``z``'s dtype
    (exponentials that underflow to 0 are a softmax's own: no error where NumPy is set to raise)."""
    if output == "softmax":
        with np.errstate(under="ignore"):
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
    if output == "logistic":
        from scipy.special import expit

        return expit(z)
    if output == "exp":
        return np.exp(z)
    return z


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
        self._net_views: tuple | None = None
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
        layout = layer_layout(self.layer_sizes)
        return ([flat[w:w + k * n].reshape((k, n)) for w, (k, n), _, _ in layout],
                [flat[b:b + n] for _, _, b, n in layout])

    def networks(self, with_grads: bool = False) -> Networks:
        """This network as a stack of one, what the forward and backward passes run on: views of
        :attr:`params` (and, ``with_grads``, of :attr:`grads`) as ``(1, P)`` arrays of the backend.  Made once
        per parameter buffer and kept (it holds views only, so sharing it between threads is safe)."""
        grads = self.grads if with_grads else None
        key = (id(self._params), id(grads), id(self.backend))
        cached = self._net_views
        if cached is None or cached[0] != key:
            P = self.n_params
            net = Networks(self.backend, self.layer_sizes, self._act, self.output, self.dtype,
                           self._params.reshape(1, P), None if grads is None else grads.reshape(1, P))
            cached = self._net_views = (key, net, self._params, grads)  # the buffers, so no id is reused
        return cached[1]

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
        self._net_views = None
        self._bind_views()
        self._grads = None
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
        """Yield ``(start, logits)`` over chunks of validated input ``X`` (an array of the backend, or a CSR
        matrix of it: each chunk's rows gathered as a CSR batch).

        The buffers are this call's own: several threads may predict with one model at once.
        """
        if isinstance(X, CSRMatrix):
            for start, xb in sparse.row_batches(self.backend, X, PREDICT_CHUNK):
                yield start, self.forward(xb, self.new_workspace(xb.shape[0], training=False))
            return
        n = X.shape[0]
        ws = self.new_workspace(min(n, PREDICT_CHUNK), training=False)
        for start in range(0, n, PREDICT_CHUNK):
            xb = X[start:start + PREDICT_CHUNK]
            yield start, self.forward(xb, ws.first_rows(xb.shape[0]))

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
    def new_workspace(self, batch: int, training: bool = True) -> Workspace:
        """Buffers for one batch size on the model's backend, owned by the caller (the model's network as a
        stack of one: every array has a leading axis of 1; ``ws.dlogits[0]`` is the batch's gradient rows).
        The training loop keeps its own for as long as it runs, an inference call makes its own
        (``training=False``: the layers' outputs only).  The model caches none, so that calls from several
        threads never share one."""
        return self.networks().new_workspace(batch, training=training)

    def forward(self, x: Any, ws: Workspace) -> Any:
        """Logits (B, outputs) of a batch ``x`` (B, inputs), a validated backend array of the model's dtype;
        every layer's output is kept in ``ws`` (from :meth:`new_workspace`) for :meth:`backward`.  Calls the
        backend's unchecked fast path."""
        return self.networks().forward(_one(x), ws)[0]

    def backward(self, x: Any, ws: Workspace, grads: Any = None) -> Any:
        """Gradients of the loss into :attr:`grads` (or into ``grads``, a flat buffer laid out like it), given
        ``ws.dlogits`` filled by the loss; returns the buffer written."""
        if grads is None:
            self.networks(with_grads=True).backward(_one(x), ws)
            return self._grads
        P = self.n_params
        Networks(self.backend, self.layer_sizes, self._act, self.output, self.dtype, self._params.reshape(1, P),
                 grads.reshape(1, P)).backward(_one(x), ws)
        return grads

    def check_targets(self, y: Any, n_samples: int, name: str = "y") -> np.ndarray:
        """``y`` validated for this model's loss: int64 labels (softmax) or ``(n, n_outputs)`` real targets."""
        if self.uses_labels:
            return check_labels(y, n_samples, self.n_classes, name)
        targets = check_targets(y, n_samples, self.n_outputs, self.dtype, name)
        # the Poisson deviance needs counts (>= 0); the logistic loss, probabilities in [0, 1]
        low, high = TARGET_RANGES[self.output]
        if targets.size and (targets.min() < low or targets.max() > high):
            bad = targets.min() if targets.min() < low else targets.max()
            raise ValueError(f"{name}: the {self.output!r} output expects targets in [{low:g}, {high:g}], "
                             f"got {float(bad):g}")
        return targets

    def loss_into(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int, weights: Any = None,
                  clip: bool = False) -> None:
        """The output layer's loss of a batch: accumulates into ``stats`` and writes the gradient with respect
        to ``logits`` into ``dlogits`` (None: statistics only).  Backend arrays, validated by the caller;
        ``weights`` (n,) are per-sample weights or None; ``clip``: scikit-learn's log-losses, whose
        probabilities are clipped (see the backend's loss operations)."""
        self.networks().loss(_one(logits), _one(targets), None if dlogits is None else _one(dlogits), _one(stats),
                             step, None if weights is None else _one(weights), clip=clip)

    def loss_and_gradients(self, X: Any, y: Any) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Mean loss of ``(X, y)`` (see :attr:`loss`) and its gradient per layer ``(dW, db)`` as host arrays.

        The data term only: L2 weight decay belongs to the optimizer.  Useful for
        gradient checks and for custom training loops.  Every buffer is the call's
        own (:attr:`grads` is left alone), so threads may call it at once.
        """
        Xd = self._as_input(X)
        if isinstance(Xd, CSRMatrix):
            Xd = sparse.whole_batch(self.backend, Xd)
        targets = self.backend.asarray(self.check_targets(y, Xd.shape[0]))
        ws = self.new_workspace(Xd.shape[0])
        logits = self.forward(Xd, ws)
        stats = self.backend.new_stats()
        self.loss_into(logits, targets, ws.dlogits[0], stats, 0)
        loss = float(self.backend.to_numpy(stats)[0]) / Xd.shape[0]
        grads = self.backward(Xd, ws, self.backend.empty(self.n_params, self.dtype))
        host = np.array(self.backend.to_numpy(grads), copy=True)
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


def _one(a: Any) -> Any:
    """``a`` as the only model of a stack: a view with a leading axis of 1 (a CSR batch, the input of a stack
    of one, as it is)."""
    return a if isinstance(a, CSRMatrix) else a.reshape((1, *a.shape))


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
    """The model stored in a checkpoint read by :func:`mlp.checkpoint.read_archive` (on the host).

    The header is checked first, its layer sizes against the parameters stored
    (:func:`mlp.checkpoint.read_model_record`), so a malformed or oversized one is a ``ValueError`` naming
    the field before any network is allocated.
    """
    record = read_model_record(header, arrays, path)
    model = MLP(record.layer_sizes, seed=record.seed, dtype=record.dtype, activation=record.activation,
                output=record.output)
    model.backend.copy_(model.params, record.params)
    model.metadata = record.metadata
    return model
