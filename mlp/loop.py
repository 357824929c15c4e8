"""The training step, written once: :class:`TrainingLoop`.

``Trainer.fit`` runs it, and so do the benchmarks and the tests: gather a
batch on the backend, forward, softmax cross-entropy, backward, optimizer
update, with every buffer allocated once and kept.  On a backend that can
capture CUDA graphs, the loop records an epoch's steps once and replays them
with one call per epoch.  It uses only the public API of the model and the
optimizer, and the backend's unchecked ``_``-prefixed operations: its
callers validate the data once, before building it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from .backends import Backend
from .backends.base import CSRMatrix, GraphCaptureError
from .model import MLP
from .optim import Optimizer


def capture_epoch(backend: Backend, record: Callable[[], Any], keepalive: Any, owner: str) -> Any:
    """``backend.capture(record)``, or None (with one warning) when capturing is not possible here.

    A launch that escaped the capture (:class:`GraphCaptureError`) is a bug
    and raises.  Any other failure to capture (a driver that refuses, a
    launch the driver rejects while capturing, missing driver bindings) is
    reported as a warning, and the caller goes on with eager launches, which
    compute the same parameters: a capture runs nothing.  ``owner``: what
    takes ``cuda_graphs=False`` to skip the attempt.
    """
    try:
        return backend.capture(record, keepalive=keepalive)
    except GraphCaptureError:
        raise
    except Exception as exc:  # CUDAError, CudaAPIError and ImportError are not RuntimeErrors
        warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); training goes on with eager "
                      f"launches (pass cuda_graphs=False to {owner} to skip the attempt)", RuntimeWarning,
                      stacklevel=5)
        return None


class EpochGraph:
    """One captured epoch of a loop: captured on first use, recaptured when what it bakes in changes.

    ``replay(key, record, keepalive)`` captures ``record`` (every launch of
    an epoch) when there is no graph yet or ``key`` (everything the capture
    bakes in besides buffer contents) differs from the last capture's, then
    replays it; it returns False, once a capture has failed (see
    :func:`capture_epoch`), so that the loop runs eagerly from then on.
    ``keepalive``: buffers the capture points at that others may replace,
    kept with the graph so that none is freed while it lives.
    """

    def __init__(self, backend: Backend, owner: str) -> None:
        self.backend, self.owner = backend, owner
        self.graph: Any = None
        self.key: Any = None
        self.replays = 0
        self.failed = False

    def replay(self, key: Any, record: Callable[[], Any], keepalive: Any) -> bool:
        if self.failed:
            return False
        if self.graph is None or key != self.key:
            self.close()
            self.graph = capture_epoch(self.backend, record, keepalive, self.owner)
            if self.graph is None:
                self.failed = True
                return False
            self.key = key
        self.graph.replay()
        self.replays += 1
        return True

    @property
    def launches(self) -> int | None:
        """Kernel launches recorded in the captured epoch (None before a capture)."""
        return None if self.graph is None else self.graph.launches

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None


class TrainingLoop:
    """The training step, written once: gather a batch, forward, loss, backward, optimizer update.

    Built by :meth:`Trainer.training_loop` (or by ``fit``) for data already
    validated and placed on the backend.  Everything a step touches is
    allocated here, once, and kept for the loop's lifetime: the permutation
    buffer (one view of it per step), the batch buffers, the model's
    workspaces and gradients, the optimizer's state and its scalars table.
    That is what lets an epoch be captured into a CUDA graph and replayed.

    ``step(i)`` runs step ``i`` of the current order and can be called on
    its own (the benchmarks time it); ``epoch()`` runs them all.  Either way
    the optimizer's step count advances by one per update launched, so
    ``begin_epoch()`` followed by ``step(i)`` for every ``i`` gives exactly
    the parameters (and the next epoch's staged scalars) that ``epoch()``
    gives.
    """

    def __init__(self, model: MLP, optimizer: Optimizer, backend: Backend, X: Any, y: Any, batch_size: int,
                 cuda_graphs: bool = False, weights: Any = None, l2_penalty: bool = False) -> None:
        """``X``: (n, features) of the model's dtype, or a :class:`~mlp.backends.base.CSRMatrix` of the backend
        (sparse X); ``y``: int64 labels (n,) for a softmax output, else real targets (n, n_outputs) of the
        model's dtype;
        ``weights``: per-sample weights (n,) of the model's dtype, or None.  With ``l2_penalty`` every step
        adds ``scale * ||W||^2`` (the weights before its update; scale staged per step by
        :meth:`begin_epoch`) to the loss statistics: scikit-learn's L2 term of the loss."""
        self.model, self.optimizer, self.backend = model, optimizer, backend
        be = backend
        self.X, self.y, self.weights = X, y, weights
        n = int(X.shape[0])
        self.n_samples = n
        self.batch_size = B = min(batch_size, n)
        self.steps = math.ceil(n / B)
        self.perm = be.asarray(np.arange(n, dtype=np.int64), dtype=np.int64)
        # Views of the permutation buffer, one per step, made once: refilling
        # the buffer each epoch updates every batch's indices in place.
        self.batch_idx = [self.perm[s * B:min(n, (s + 1) * B)] for s in range(self.steps)]
        sizes = sorted({B, n - (self.steps - 1) * B})
        if isinstance(X, CSRMatrix):  # sparse X: each batch's rows gathered as a CSR batch of the backend
            self.batch_x = {b: be.new_csr_batch(X, b) for b in sizes}
            self._take_x = be._take_rows_csr
        else:
            self.batch_x = {b: be.empty((b, model.n_features), model.dtype) for b in sizes}
            self._take_x = be._take_rows
        self.batch_y = {b: be.empty((b, *y.shape[1:]), y.dtype) for b in sizes}
        self.batch_w = None if weights is None else {b: be.empty((b,), weights.dtype) for b in sizes}
        self.penalty = be.zeros(self.steps, model.dtype) if l2_penalty else None
        self.workspaces = {b: model.new_workspace(b) for b in sizes}
        self.stats = be.new_stats()
        model.grads  # noqa: B018  (allocate the gradient buffer before the first step)
        optimizer.prepare(be, model.params)
        self.table = None
        self.use_graphs = bool(cuda_graphs) and be.supports_graphs
        self._graph = EpochGraph(be, "the Trainer")
        self.eager_epochs = 0

    # ------------------------------------------------------------ the step
    def step(self, i: int) -> None:
        """Training step ``i`` of the current order, with row ``i`` of the optimizer scalars staged by
        :meth:`begin_epoch`; counts one optimizer update."""
        self._launch_step(i)
        self.optimizer.advance(1)

    def _launch_step(self, i: int) -> None:
        """The operations of step ``i``, and nothing on the host: what a captured epoch records."""
        be, model = self.backend, self.model
        idx = self.batch_idx[i]
        b = idx.shape[0]
        xb, yb, ws = self.batch_x[b], self.batch_y[b], self.workspaces[b]
        self._take_x(self.X, idx, xb)
        be._take_rows(self.y, idx, yb)
        wb = None
        if self.batch_w is not None:
            wb = self.batch_w[b]
            be._take_rows(self.weights, idx, wb)
        if self.penalty is not None:
            be._l2_penalty(model.params, model.n_weights, self.penalty, i, self.stats)
        logits = model.forward(xb, ws)
        model.loss_into(logits, yb, ws.dlogits, self.stats, i, wb)
        model.backward(xb, ws)
        self.optimizer.launch(be, model.params, model.grads, model.n_weights, self.table, i)

    # ----------------------------------------------------------- an epoch
    def set_order(self, order: np.ndarray | None) -> None:
        """The sample order of the next epoch (a host int64 permutation; None keeps 0..n-1)."""
        host = np.arange(self.n_samples, dtype=np.int64) if order is None else order
        self.backend.copy_(self.perm, host)

    def begin_epoch(self, weight_decay: Any = None, penalty: Any = None) -> None:
        """Reset the loss statistics and stage this epoch's optimizer scalars (one small copy each).

        ``weight_decay``: one decay per step replacing the optimizer's (see :meth:`Optimizer.stage`);
        ``penalty``: one L2 scale per step (needs ``l2_penalty=True``).
        """
        self.optimizer.prepare(self.backend, self.model.params)  # a no-op unless the state was reset
        self.backend._fill_stats(self.stats)
        self.table = self.optimizer.stage(self.backend, self.model.dtype, self.steps, weight_decay)
        if penalty is not None:
            if self.penalty is None:
                raise ValueError("penalty: this loop was built without l2_penalty=True")
            self.backend.copy_(self.penalty, np.asarray(penalty, dtype=self.model.dtype))

    def epoch(self, on_step: Callable[[int], Any] | None = None, *, weight_decay: Any = None,
              penalty: Any = None) -> int:
        """Run every step of the current order; returns how many steps ran.

        ``on_step(steps_done)`` is called after each step (eager path only;
        a progress bar, an interrupt check) and ends the epoch early when it
        returns ``True``.  With CUDA graphs the loop runs eagerly until one
        epoch has run to its end (that compiles every kernel and allocates
        any scratch, the short last batch's included: nothing may be
        allocated during a capture), later epochs replay one captured graph,
        and an epoch is the unit of interruption.  The optimizer's step count
        advances by the steps run.
        """
        self.begin_epoch(weight_decay, penalty)
        if self.use_graphs and self.eager_epochs > 0 and self._replay():
            self.optimizer.advance(self.steps)
            return self.steps
        ran = 0
        for i in range(self.steps):
            self.step(i)
            ran += 1
            if on_step is not None and on_step(ran) is True:
                break
        if ran == self.steps:  # an epoch cut short left some step (the short last batch) never run
            self.eager_epochs += 1
        return ran

    def totals(self) -> np.ndarray:
        """The epoch's statistics on the host (the epoch's one synchronisation)."""
        return self.backend.to_numpy(self.stats)

    # ------------------------------------------------------------- graphs
    def _baked(self) -> tuple:
        """Everything a captured epoch bakes in besides buffer contents; a change means recapture."""
        return (id(self.model.params), id(self.model.grads), self.optimizer.structure(),
                self.backend.graph_key(), self.steps, self.batch_size)

    def _replay(self) -> bool:
        """Replay the captured epoch (capturing it first if needed); False if capturing is not possible here
        (:func:`capture_epoch`: then the loop warns once and goes on with eager launches)."""
        if self._graph.replay(self._baked(), lambda: [self._launch_step(i) for i in range(self.steps)],
                              self._graph_buffers()):
            return True
        self.use_graphs = False
        return False

    @property
    def replays(self) -> int:
        """Epochs replayed from a captured graph."""
        return self._graph.replays

    def _graph_buffers(self) -> tuple:
        """Buffers a capture points at that others may replace (the loop owns the rest): kept with the graph,
        so that none is freed, or its identity reused, while the graph lives."""
        return (self.model.params, self.model.grads, *self.optimizer.graph_buffers())

    @property
    def graph_launches(self) -> int | None:
        """Kernel launches recorded in the captured epoch (None before a capture)."""
        return self._graph.launches

    def close(self) -> None:
        """Release the captured graph (the loop's buffers go with the loop)."""
        self._graph.close()
