"""The training step, written once: :class:`TrainingLoop`, for one network or a stack of many.

Every training run of the package is this loop: ``Trainer.fit`` (one
network), the scikit-learn estimators' ``fit`` (one network), and the
searches and ensembles (a stack of ``M`` networks of one shape trained
together, :mod:`mlp.search`).  A step gathers every network's batch on the
backend, runs the forward pass, the output loss fused with its gradient,
the backward pass and one optimizer update for all of them, with every
buffer allocated once and kept.  Each network keeps its own training rows
and order (indices into one copy of the data on the device), its own
optimizer and hyperparameters (rows of one scalars table) and its own
stopping (a network that stopped is frozen while the others go on).

On a backend that can capture CUDA graphs, the loop runs epochs eagerly
until one has run to its end, then records an epoch's steps once and
replays them with one call per epoch: everything an epoch changes (orders,
rows per step, stopped networks, optimizer scalars, L2 scales) is staged
into device tables the captured launches read.  The loop uses the backend's
unchecked ``_``-prefixed operations: its callers validate the data once,
before building it.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from .backends import Backend
from .backends.base import CSRMatrix, GraphCaptureError
from .network import Networks
from .optim import Optimizer, OptimizerGroup

#: bytes of a model block's working set on a host backend: about a core's level-2 cache (see TrainingLoop)
CACHE_BYTES = 1 << 20
#: the least work (floating-point operations of one step) a model block of a host backend's stack holds, so
#: that the Python between its operations (tens of microseconds a step, holding the GIL) stays a small share of
#: its step: blocks of small networks are made larger than the cache would say (see TrainingLoop)
BLOCK_MIN_FLOPS = 64e6


def block_models(layer_sizes: Sequence[int], batch: int, itemsize: int) -> int:
    """Networks of ``layer_sizes`` in one block of a host backend's stack (see :class:`TrainingLoop`): as many
    as a core's cache holds (``CACHE_BYTES``: parameters, gradients and two optimizer states, the batch's
    input, activations and their gradients), and at least enough for ``BLOCK_MIN_FLOPS`` of a step's products
    (the Python of a step holds the GIL: blocks of a few small networks would leave threads waiting on each
    other for it)."""
    shapes = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    n_weights = sum(k * n for k, n in shapes)
    n_params = n_weights + sum(n for _, n in shapes)
    per_model = itemsize * (4 * n_params + batch * (2 * sum(layer_sizes[1:]) + 3 * layer_sizes[0]))
    flops = 6 * batch * n_weights  # a step's products: forward 2, backward 4 per weight and row
    return max(1, CACHE_BYTES // per_model, math.ceil(BLOCK_MIN_FLOPS / max(flops, 1)))


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
    """The training step of ``net``'s networks: gather the batches, forward, loss, backward, update.

    ``X`` (N, features) and ``targets`` (N,) int64 labels (softmax) or (N,
    outputs) of the networks' dtype are one copy of the data on ``backend``,
    validated by the caller.  Every epoch, :meth:`stage` takes each network's
    sample order (indices into ``X``; None for a network that stopped) and
    optionally its per-step weight decays, L2 loss scales and sample weights;
    :meth:`epoch` runs it (or :meth:`begin_epoch` and :meth:`step` for each
    step).  Batches have ``batch_size`` rows; a network's shorter last batch
    is padded (the padding adds nothing to the loss or the gradient).
    ``optimizers``: one per network, of one update rule (an
    :class:`~mlp.optim.OptimizerGroup` applies them).

    A single network (``M = 1``) has the conveniences :meth:`set_order` and
    :meth:`for_model`.  On a host backend (``backend.stack_threads_help``),
    ``threads`` > 1 steps ranges of the networks in threads.  ``clip_loss``: the
    log-losses it reports are scikit-learn's, whose probabilities are clipped
    (the estimators'; see :func:`mlp.backends.names.log_loss_eps`), the
    gradients unchanged.
    """

    def __init__(self, net: Networks, optimizers: Sequence[Optimizer], backend: Backend, X: Any, targets: Any,
                 batch_size: int, steps: int | None = None, *, weighted: bool = False, l2_penalty: bool = False,
                 cuda_graphs: bool = False, threads: int = 1, clip_loss: bool = False) -> None:
        self.net, self.backend, self.X, self.targets = net, backend, X, targets
        self.clip_loss = bool(clip_loss)  # scikit-learn's log-losses (names.log_loss_eps)
        be, M, dt = backend, net.M, net.dtype
        self.n_samples = n = int(X.shape[0])
        self.batch_size = B = max(1, min(int(batch_size), n))
        self.steps = S = math.ceil(n / B) if steps is None else int(steps)
        self.group = OptimizerGroup(optimizers, be, net.params)
        self.optimizers = self.group.optimizers
        # each step's batch indices and row counts of every network (-1: stopped), staged per epoch into
        # tables the step reads on the backend (on a device, from device memory: a captured epoch reads
        # each epoch's values)
        self.idx = be.zeros((S, M, B), np.int64)
        self.rows = be.zeros((S, M), np.int64)
        self.sample_weights = be.zeros((S, M, B), dt) if weighted else None
        self.penalty = be.zeros((M, S), dt) if l2_penalty else None
        self.active = np.ones(M, dtype=bool)
        self._training = np.arange(M)  # np.flatnonzero(self.active), kept with it
        self._decays: list | None = None
        self._staged = False
        # sparse X (a CSRMatrix of the backend; one network): each batch's rows gathered as a CSR batch where
        # the backend multiplies sparse rows (per batch size, made when staged), else into the dense batch
        self.sparse = isinstance(X, CSRMatrix)
        if self.sparse and M != 1:
            raise ValueError(f"X: sparse input trains one network at a time, this loop has {M}")
        self._csr_batches: dict[int, Any] | None = {} if self.sparse and be.csr_batch_layout == "csr" else None
        self._host_rows = np.zeros((S, M), dtype=np.int64)
        self.batch_x = None if self._csr_batches is not None else be.empty((M, B, X.shape[1]), dt)
        self.batch_y = be.empty((M, B, *targets.shape[1:]), targets.dtype)
        self.workspace = net.new_workspace(B)
        self.stats = be.new_stacked_stats(M)
        parts = max(1, min(int(threads), M)) if be.stack_threads_help else 1
        bounds = np.linspace(0, M, parts + 1).astype(int)
        self.parts = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix="mlp-stack") if parts > 1 else None
        # On a host backend an epoch goes model block by model block (each block all its steps), the blocks
        # small enough for their parameters, optimizer state and batch buffers to stay in a core's cache: the
        # networks of a stack are independent within an epoch, so each computes exactly what it would in step
        # order, and a thread runs its blocks without waiting for the others at every step.
        # A block also holds at least BLOCK_MIN_FLOPS of a step's work (block_models).
        size = block_models(net.layer_sizes, B, dt.itemsize) if be.stack_threads_help else M
        self.blocks = [[slice(lo, min(lo + size, p.stop)) for lo in range(p.start, p.stop, size)] for p in self.parts]
        self._views = {(c.start, c.stop): self._cut(c) for c in [*self.parts, *(c for b in self.blocks for c in b)]}
        self._wants_graphs = bool(cuda_graphs) and be.supports_graphs and self._pool is None
        self._graph = EpochGraph(be, "the Trainer" if M == 1 else "the stack")
        self._eval_cache: dict[tuple, tuple] = {}
        self.eager_epochs = 0

    @classmethod
    def for_model(cls, model: Any, optimizer: Optimizer, backend: Backend, X: Any, y: Any, batch_size: int,
                  cuda_graphs: bool = False, weights: Any = None, l2_penalty: bool = False,
                  clip_loss: bool = False) -> "TrainingLoop":
        """The loop of one :class:`mlp.MLP` (already on ``backend``), its order 0..n-1 staged; ``weights``:
        per-sample weights (n,) as a host array, or None."""
        loop = cls(model.networks(with_grads=True), [optimizer], backend, X, y, batch_size, weighted=weights is not None,
                   l2_penalty=l2_penalty, cuda_graphs=cuda_graphs, clip_loss=clip_loss)
        loop._host_weights = None if weights is None else np.asarray(weights)
        loop.model, loop.optimizer = model, optimizer
        loop.set_order(None)
        return loop

    def _cut(self, models: slice) -> dict:
        """The buffers of a step restricted to the networks of the range ``models`` (views)."""
        ws = self.workspace
        return {"ws": type(ws)(acts=[a[models] for a in ws.acts], grads_in=[a[models] for a in ws.grads_in],
                               dlogits=ws.dlogits[models]),
                "x": None if self.batch_x is None else self.batch_x[models], "y": self.batch_y[models],
                "stats": self.stats[models],
                "params": self.net.params[models], "grads": self.net.grads[models],
                "penalty": None if self.penalty is None else self.penalty[models]}

    # ------------------------------------------------------------ staging
    def stage(self, orders: Sequence[np.ndarray | None], *, weight_decay: Sequence[Any] | None = None,
              penalty: Sequence[Any] | None = None, sample_weights: Sequence[np.ndarray | None] | None = None) -> None:
        """Stage the next epoch of every network.

        ``orders[m]``: network m's rows of ``X`` in this epoch's order (int64;
        None for a network that stopped); ``weight_decay[m]``/``penalty[m]``:
        its per-step decay and L2 loss scale (or None); ``sample_weights[m]``:
        the weights of its rows in that order (or None).
        """
        be, M, S, B = self.backend, self.net.M, self.steps, self.batch_size
        if len(orders) != M:
            raise ValueError(f"orders: expected {M} (one per network), got {len(orders)}")
        idx = np.zeros((S, M, B), dtype=np.int64)
        counts = np.full((S, M), -1, dtype=np.int64)
        w = np.zeros((S, M, B), dtype=self.net.dtype) if self.sample_weights is not None else None
        scales = np.zeros((M, S), dtype=self.net.dtype)
        for m, order in enumerate(orders):
            self.active[m] = order is not None
            if order is None:
                continue
            n = len(order)
            if -(-n // B) != S:
                raise ValueError(f"orders[{m}]: {n} rows make {-(-n // B)} batches of {B}, the loop has {S}")
            padded = np.zeros(S * B, dtype=np.int64)
            padded[:n] = order
            idx[:, m] = padded.reshape(S, B)
            counts[:, m] = np.minimum(B, n - np.arange(S) * B)
            if w is not None:
                wm = np.zeros(S * B, dtype=self.net.dtype)
                wm[:n] = sample_weights[m]
                w[:, m] = wm.reshape(S, B)
            if penalty is not None and penalty[m] is not None:
                scales[m] = penalty[m]
        self._training = np.flatnonzero(self.active)
        be.copy_(self.idx, idx)
        be.copy_(self.rows, counts)
        if w is not None:
            be.copy_(self.sample_weights, w)
        if self.penalty is not None:
            be.copy_(self.penalty, scales)
        self._host_rows[:] = counts
        if self._csr_batches is not None:  # a CSR batch for each batch size, made before any step runs
            for r in {int(c) for c in counts[:, 0] if c > 0} - set(self._csr_batches):
                self._csr_batches[r] = be.new_csr_batch(self.X, r)
        self._decays = None if weight_decay is None else list(weight_decay)
        self._staged = True

    def set_order(self, order: np.ndarray | None) -> None:
        """One network's sample order for the next epochs (a host int64 permutation of its rows; None:
        0..n-1), with its sample weights in that order if the loop was made by :meth:`for_model` with some."""
        if self.net.M != 1:
            raise ValueError(f"set_order: this loop trains {self.net.M} networks; use stage()")
        order = np.arange(self.n_samples, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
        weights = getattr(self, "_host_weights", None)
        self.stage([order], sample_weights=None if weights is None else [weights[order]])

    # ------------------------------------------------------------ the step
    def begin_epoch(self) -> None:
        """Reset the loss statistics and stage the optimizers' scalars for this epoch's updates (one small
        copy): call before the epoch's steps (:meth:`epoch` does)."""
        if not self._staged:
            raise RuntimeError("begin_epoch: stage the epoch first (stage() or set_order())")
        self.backend._fill_stacked_stats(self.stats)
        self.group.stage(self.steps, self._decays, self.active)

    def step(self, i: int) -> None:
        """Training step ``i`` of the staged epoch for every network that trains; counts one update each."""
        self._run_step(i)
        self.group.advance(self._training, 1)

    def _run_step(self, i: int) -> None:
        if self._pool is None:
            self._launch_step(i, self.parts[0])
        else:
            for done in [self._pool.submit(self._launch_step, i, part) for part in self.parts]:
                done.result()

    def _launch_step(self, s: int, models: slice) -> None:
        """The operations of step ``s`` for the networks ``models``, and nothing on the host: what a captured
        epoch records."""
        be, net, rows = self.backend, self.net, self.rows[s][models]
        v = self._views[(models.start, models.stop)]
        ws, x, stats = v["ws"], v["x"], v["stats"]
        idx = self.idx[s][models]
        if not self.sparse:
            be._take_rows_stacked(self.X, idx, x)
        elif self._csr_batches is None:  # dense batches on this backend: the sparse rows scattered into one
            be._take_rows_csr(self.X, idx[0], x[0])
        else:  # a CSR batch of exactly this step's rows (a stack of one: its row count is known here)
            r = int(self._host_rows[s, 0])
            x = self._csr_batches[r]
            be._take_rows_csr(self.X, idx[0][:r], x)
        be._take_rows_stacked(self.targets, idx, v["y"])
        if v["penalty"] is not None:
            be._l2_penalty_stacked(v["params"], net.n_weights, v["penalty"], s, stats, rows)
        logits = net.forward(x, ws, rows, models)
        weights = None if self.sample_weights is None else self.sample_weights[s][models]
        net.loss(logits, v["y"], ws.dlogits, stats, s, weights, rows, self.clip_loss)
        net.backward(x, ws, rows, models)
        self.group.launch(v["params"], v["grads"], net.n_weights, s, rows, models)

    def epoch(self, on_step: Callable[[int], Any] | None = None) -> int:
        """Run every step of the staged epoch; returns how many steps ran.

        ``on_step(steps_done)`` is called after each step (eager path only; a
        progress bar, an interrupt check) and ends the epoch early when it
        returns ``True``.  With CUDA graphs the loop runs eagerly until one
        epoch has run to its end (that compiles every kernel and allocates any
        scratch: nothing may be allocated during a capture), later epochs
        replay one captured graph, and an epoch is the unit of interruption.
        Each training network's optimizer counts the steps run.
        """
        self.begin_epoch()
        active = self._training
        if self.use_graphs and self.eager_epochs > 0 and self._replay():
            self.group.advance(active, self.steps)
            return self.steps
        if on_step is None and self.backend.stack_threads_help and self.net.M > 1:
            self._by_blocks()
            self.group.advance(active, self.steps)
            self.eager_epochs += 1
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

    def _by_blocks(self) -> None:
        """Every step of the epoch, block of models by block (see ``blocks``), each thread its own blocks."""
        def run(blocks: list) -> None:
            for block in blocks:
                for s in range(self.steps):
                    self._launch_step(s, block)

        if self._pool is None:
            run(self.blocks[0])
        else:
            for done in [self._pool.submit(run, blocks) for blocks in self.blocks]:
                done.result()

    def totals(self) -> np.ndarray:
        """Every network's statistics of the epoch on the host, (M, STATS_SIZE) (the epoch's one
        synchronisation); a network that did not train reads as empty."""
        return np.array(self.backend.to_numpy(self.stats), copy=True)

    # ------------------------------------------------------------- graphs
    @property
    def use_graphs(self) -> bool:
        """Whether epochs after the first complete one replay a captured graph (False after a failed capture)."""
        return self._wants_graphs and not self._graph.failed

    def _baked(self) -> tuple:
        """Everything a captured epoch bakes in besides buffer contents; a change means recapture."""
        return (id(self.net.params), id(self.net.grads), self.group.structure(), self.backend.graph_key(),
                self.steps, self.batch_size)

    def _replay(self) -> bool:
        """Replay the captured epoch (capturing it first if needed); False when capturing is not possible here
        (:func:`capture_epoch`: then the loop warns once and goes on with eager launches)."""
        part = self.parts[0]
        keep = (self.net.params, self.net.grads, *self.group.buffers())
        return self._graph.replay(self._baked(), lambda: [self._launch_step(s, part) for s in range(self.steps)],
                                  keep)

    @property
    def replays(self) -> int:
        """Epochs replayed from a captured graph."""
        return self._graph.replays

    @property
    def graph_launches(self) -> int | None:
        """Kernel launches recorded in the captured epoch (None before a capture)."""
        return self._graph.launches

    def close(self) -> None:
        """Stop the loop's threads (if any) and release its captured graph."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._graph.close()

    # --------------------------------------------------------- evaluation
    def _eval_buffers(self, width: int, features: int) -> tuple:
        """``(indices, inputs, workspace)`` for evaluating ``width`` rows of every network, made once per
        width and kept (early stopping evaluates the same validation rows every epoch)."""
        key = (width, features)
        if key not in self._eval_cache:
            be, net, M = self.backend, self.net, self.net.M
            dense = None if features is None else be.empty((M, width, features), net.dtype)
            self._eval_cache[key] = (be.zeros((M, width), np.int64), dense, net.new_workspace(width, training=False))
        return self._eval_cache[key]

    def logits(self, rows: Sequence[np.ndarray | None], X: Any = None, chunk: int = 4096) -> list[np.ndarray | None]:
        """Every network's logits on its own rows of ``X`` (default: the loop's data), as host arrays (None
        where ``rows[m]`` is None); the networks' current parameters."""
        be, net, M = self.backend, self.net, self.net.M
        X = self.X if X is None else X
        width = max((len(r) for r in rows if r is not None), default=0)
        out: list[Any] = [None if r is None else np.empty((len(r), net.layer_sizes[-1]), net.dtype) for r in rows]
        for start in range(0, width, chunk):
            stop = min(width, start + chunk)
            idx = np.zeros((M, stop - start), dtype=np.int64)
            for m, r in enumerate(rows):
                if r is not None and start < len(r):
                    part = r[start:stop]
                    idx[m, :len(part)] = part
            csr_rows = isinstance(X, CSRMatrix) and be.csr_batch_layout == "csr"
            idx_d, xb, ws = self._eval_buffers(stop - start, None if csr_rows else X.shape[1])
            be.copy_(idx_d, idx)
            if not isinstance(X, CSRMatrix):
                be._take_rows_stacked(X, idx_d, xb)
            elif csr_rows:  # one network: its rows of this chunk as a CSR batch
                xb = be.new_csr_batch(X, stop - start)
                be._take_rows_csr(X, idx_d[0], xb)
            else:
                be._take_rows_csr(X, idx_d[0], xb[0])
            z = be.to_numpy(net.forward(xb, ws))
            for m, r in enumerate(rows):
                if r is not None and start < len(r):
                    n = min(len(r), stop) - start
                    out[m][start:start + n] = z[m, :n]
        return out
