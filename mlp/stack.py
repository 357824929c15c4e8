"""Many networks of one shape trained at once: a stack.

What people do with small networks is train many of them (the candidates
and folds of a hyperparameter search, the members of an ensemble).  One
small network cannot fill a GPU, nor even two CPU cores: each step is a
handful of tiny matrix products and the time goes to launches and Python.
A stack trains ``M`` networks of the same layer sizes, activation, output
and dtype together: every operation of the step runs once for the whole
stack, with the model index as the leading axis of every array (the
backend's ``*_stacked`` operations), while each model keeps

* its own parameters and optimizer state (rows of ``(M, P)`` buffers),
* its own training rows (indices into one copy of the data on the device),
  in its own order each epoch, with its own batches,
* its own hyperparameters (each model's optimizer computes its own rows of
  the ``(M, steps, columns)`` scalars table: learning rate and schedule,
  momentum, betas, epsilon, L2 decay),
* its own stopping: a model that stopped is frozen (its updates and loss
  are skipped) while the others go on.

On the NumPy backend each model's step is computed with exactly the
arithmetic of its own fit (the same single-model loops and BLAS products,
model by model), so a model of a stack ends with the parameters its own fit
would have, bit for bit.  On CUDA the losses and updates run the
single-model kernels' own code per model, while the products are the
stacked kernels of ``kernels/gemm_stacked`` (one launch for every model),
whose sums may round differently from the single-model products': there a
model ends with its own fit's parameters within float tolerance.

:class:`StackedNetwork` holds the parameters, :class:`StackedLoop` runs the
steps.  The scikit-learn searches and ensembles (``mlp.search``) drive them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .backends import Backend
from .backends.base import STATS_LOSS_SUM, StackedLayer
from .loop import EpochGraph
from .model import MLP
from .optim import SGD, Adam, Optimizer


def _layer_views(backend: Backend, flat: Any, sizes: Sequence[int]) -> tuple[list, list]:
    """``(Ws, bs)``: every layer's stacked weights (M, in, out) and biases (M, out) as views of ``flat`` (M, P),
    laid out per model like :class:`mlp.MLP`'s flat buffer (all weights, then all biases)."""
    Ws, bs, off = [], [], 0
    M = flat.shape[0]
    host = isinstance(flat, np.ndarray)
    for k, n in zip(sizes[:-1], sizes[1:]):
        Ws.append(flat[:, off:off + k * n].reshape(M, k, n) if host else StackedLayer(flat, off, (k, n)))
        off += k * n
    for n in sizes[1:]:
        bs.append(flat[:, off:off + n] if host else StackedLayer(flat, off, (n,)))
        off += n
    return Ws, bs


class StackedNetwork:
    """``M`` networks of one shape (layer sizes, activation, output, dtype) with stacked parameters.

    ``params`` is ``(M, P)`` on the backend, row ``m`` laid out as
    :attr:`mlp.MLP.params`; built from ``M`` :class:`mlp.MLP` of one shape.
    """

    def __init__(self, models: Sequence[MLP], backend: Backend) -> None:
        if not models:
            raise ValueError("models: expected at least one network, got none")
        first = models[0]
        shape = (first.layer_sizes, first.activation, first.output, first.dtype)
        for i, m in enumerate(models):
            if (m.layer_sizes, m.activation, m.output, m.dtype) != shape:
                raise ValueError(f"models[{i}]: expected the shape of models[0] {shape}, got "
                                 f"{(m.layer_sizes, m.activation, m.output, m.dtype)}")
        self.backend = backend
        self.M = len(models)
        self.layer_sizes, self.activation, self.output, self.dtype = shape
        self._act = first._act
        self.n_weights, self.n_params = first.n_weights, first.n_params
        host = np.stack([np.asarray(m.backend.to_numpy(m.params), dtype=self.dtype) for m in models])
        self.params = backend.asarray(host, dtype=self.dtype)
        self.grads = backend.zeros((self.M, self.n_params), self.dtype)
        self._W, self._b = _layer_views(backend, self.params, self.layer_sizes)
        self._dW, self._db = _layer_views(backend, self.grads, self.layer_sizes)

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def new_workspace(self, batch: int) -> dict:
        be, dt, M = self.backend, self.dtype, self.M
        return {"acts": [be.empty((M, batch, n), dt) for n in self.layer_sizes[1:]],
                "grads_in": [be.empty((M, batch, n), dt) for n in self.layer_sizes[1:-1]],
                "dlogits": be.empty((M, batch, self.layer_sizes[-1]), dt)}

    def forward(self, x: Any, ws: dict, rows: Any = None, models: slice = slice(None)) -> Any:
        """Logits (M, B, outputs) of the batches ``x`` (M, B, inputs); every layer's output kept in ``ws``.
        ``rows``: each model's rows, -1 for a model that stopped (see the backend's stacked ops; None: all);
        ``models``: the range of models ``x``, ``ws`` and ``rows`` hold (all by default)."""
        be, last, a = self.backend, self.n_layers - 1, x
        for i in range(self.n_layers):
            be._affine_forward_stacked(a, self._W[i][models], self._b[i][models], self._act if i < last else 0,
                                       ws["acts"][i], rows)
            a = ws["acts"][i]
        return a

    def backward(self, x: Any, ws: dict, rows: Any = None, models: slice = slice(None)) -> None:
        """Gradients into :attr:`grads` from ``ws["dlogits"]`` (filled by the loss)."""
        be, last, dy = self.backend, self.n_layers - 1, ws["dlogits"]
        for i in range(last, -1, -1):
            x_in = ws["acts"][i - 1] if i > 0 else x
            y = ws["acts"][i] if i < last else None
            dx = ws["grads_in"][i - 1] if i > 0 else None
            be._affine_backward_stacked(dy, x_in, self._W[i][models], y, dx, self._dW[i][models],
                                        self._db[i][models], self._act, rows)
            dy = dx

    def params_numpy(self) -> np.ndarray:
        """Host copy of the parameters, (M, P)."""
        return np.array(self.backend.to_numpy(self.params), copy=True)


def _optimizer_kind(opt: Optimizer) -> tuple:
    """What the stacked update bakes in for every model: the rule and its launch flags."""
    if isinstance(opt, SGD):
        return ("sgd", opt.nesterov)
    if isinstance(opt, Adam):
        return ("adam", opt._decoupled)
    raise TypeError(f"optimizers: a stack trains with SGD or Adam rules, got {type(opt).__name__}")


class StackedLoop:
    """The training step of a stack: gather every model's batch, forward, loss, backward, update.

    ``X`` (N, features) and ``targets`` (N,) labels or (N, outputs) are one
    copy of the data on the backend; each epoch :meth:`stage` takes every
    model's sample order (indices into ``X``) and per-step scalars.  Batches
    have ``batch_size`` rows; a model's shorter last batch is padded (its
    padding adds nothing to the loss or the gradient).  ``optimizers`` are
    ``M`` optimizers of one rule (their own hyperparameters and step
    counts); their state lives here, stacked.

    On a backend that captures CUDA graphs (and with ``cuda_graphs``), the
    first complete epoch runs eagerly (it compiles every kernel and makes
    every scratch buffer) and later epochs replay one captured graph of all
    the steps: everything an epoch changes (each model's sample order,
    rows per step, stopped models, optimizer scalars, L2 scales, weights) is
    staged into device tables the captured launches read.
    """

    def __init__(self, net: StackedNetwork, optimizers: Sequence[Optimizer], backend: Backend, X: Any, targets: Any,
                 batch_size: int, steps: int, weighted: bool = False, l2_penalty: bool = False,
                 threads: int = 1, cuda_graphs: bool = True) -> None:
        if len(optimizers) != net.M:
            raise ValueError(f"optimizers: expected {net.M} (one per model), got {len(optimizers)}")
        kinds = {_optimizer_kind(o) for o in optimizers}
        if len(kinds) != 1:
            raise ValueError(f"optimizers: expected one rule for the whole stack, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.net, self.optimizers, self.backend = net, list(optimizers), backend
        self.X, self.targets = X, targets
        be, M, B, dt = backend, net.M, int(batch_size), net.dtype
        self.batch_size, self.steps = B, int(steps)
        self.idx = be.zeros((self.steps, M, B), np.int64)
        self.weights = be.zeros((self.steps, M, B), dt) if weighted else None
        # each step's rows of every model (-1: stopped), staged per epoch: a host table, and the backend's
        # copy the step reads (on a device, from device memory: a captured epoch reads each epoch's values)
        self.counts = np.zeros((self.steps, M), dtype=np.int64)
        self.rows = be.zeros((self.steps, M), np.int64)
        self.active = np.ones(M, dtype=bool)
        self.batch_x = be.empty((M, B, net.layer_sizes[0]), dt)
        self.batch_y = be.empty((M, B, *targets.shape[1:]), targets.dtype)
        self.workspace = net.new_workspace(B)
        self.stats = be.new_stacked_stats(M)
        self.penalty = be.zeros((M, self.steps), dt) if l2_penalty else None
        P = net.n_params
        if self.kind[0] == "sgd":
            self.state = {"momentum_buffer": be.zeros((M, P), dt)} if any(o.momentum for o in optimizers) else {}
        else:
            self.state = {"exp_avg": be.zeros((M, P), dt), "exp_avg_sq": be.zeros((M, P), dt)}
        self.table = None
        # On a host backend the models' steps are independent work for several cores: the stack is cut into
        # ranges of models, each stepped by its own thread (the products and the Numba loops release the GIL).
        parts = max(1, min(int(threads), M)) if backend.stack_threads_help else 1
        bounds = np.linspace(0, M, parts + 1).astype(int)
        self.parts = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._pool = None
        if len(self.parts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=len(self.parts), thread_name_prefix="mlp-stack")
        # every buffer a step touches, cut to each range of models once (views: nothing is copied)
        self._views = {(part.start, part.stop): self._cut(part) for part in self.parts}
        self._wants_graphs = bool(cuda_graphs) and backend.supports_graphs and self._pool is None
        self._graph = EpochGraph(backend, "the stack")
        self._eval_cache: dict[int, tuple] = {}
        self.eager_epochs = 0

    def _cut(self, models: slice) -> dict:
        """The buffers of a step restricted to the models of the range ``models`` (views)."""
        net = self.net
        return {"ws": {k: [a[models] for a in v] if isinstance(v, list) else v[models]
                       for k, v in self.workspace.items()},
                "x": self.batch_x[models], "y": self.batch_y[models], "stats": self.stats[models],
                "params": net.params[models], "grads": net.grads[models],
                "penalty": None if self.penalty is None else self.penalty[models],
                "state": {k: v[models] for k, v in self.state.items()}}

    def stage(self, orders: Sequence[np.ndarray | None], weight_decay: Sequence[Any] | None = None,
              penalty: Sequence[Any] | None = None, sample_weights: Sequence[np.ndarray | None] | None = None) -> None:
        """Stage the next epoch of every model.

        ``orders[m]``: model m's rows of ``X`` in this epoch's order (int64;
        None for a stopped model); ``weight_decay[m]``/``penalty[m]``: its per-step
        decay and L2 loss scale (or None); ``sample_weights[m]``: the weights of
        its rows in that order (or None).
        """
        be, M, S, B = self.backend, self.net.M, self.steps, self.batch_size
        idx = np.zeros((S, M, B), dtype=np.int64)
        w = np.zeros((S, M, B), dtype=self.net.dtype) if self.weights is not None else None
        self.counts[:] = 0
        tables, scales = [], np.zeros((M, S), dtype=self.net.dtype)
        for m, order in enumerate(orders):
            self.active[m] = order is not None
            if order is None:
                tables.append(None)
                continue
            n = len(order)
            if -(-n // B) != S:
                raise ValueError(f"orders[{m}]: {n} rows make {-(-n // B)} batches of {B}, the stack has {S}")
            for s in range(S):
                chunk = order[s * B:(s + 1) * B]
                idx[s, m, :len(chunk)] = chunk
                self.counts[s, m] = len(chunk)
                if w is not None:
                    w[s, m, :len(chunk)] = sample_weights[m][s * B:(s + 1) * B]
            decay = None if weight_decay is None else weight_decay[m]
            tables.append(self.optimizers[m].scalar_rows(S, decay))
            if penalty is not None and penalty[m] is not None:
                scales[m] = penalty[m]
        cols = next(t for t in tables if t is not None).shape[1] if any(t is not None for t in tables) else 1
        table = np.zeros((M, S, cols), dtype=self.net.dtype)
        for m, t in enumerate(tables):
            if t is not None:
                table[m] = t  # float64 -> the parameters' dtype, as the update computes in it
        be.copy_(self.idx, idx)
        be.copy_(self.rows, np.where(self.active, self.counts, -1))
        if w is not None:
            be.copy_(self.weights, w)
        if self.table is None or tuple(self.table.shape) != table.shape:
            self.table = be.empty(table.shape, self.net.dtype)
        be.copy_(self.table, table)
        if self.penalty is not None:
            be.copy_(self.penalty, scales)

    def _step(self, s: int) -> None:
        """Step ``s`` of the staged epoch, for every active model (the optimizers' counts advance in
        :meth:`epoch`, once the epoch has run)."""
        if self._pool is None:
            self._step_models(s, self.parts[0])
        else:
            for done in [self._pool.submit(self._step_models, s, part) for part in self.parts]:
                done.result()

    def _step_models(self, s: int, models: slice) -> None:
        """Step ``s`` for the models of the range ``models`` (every array sliced to them)."""
        be, net, rows = self.backend, self.net, self.rows[s][models]
        v = self._views[(models.start, models.stop)]
        ws, x, y, stats, params, grads = v["ws"], v["x"], v["y"], v["stats"], v["params"], v["grads"]
        idx = self.idx[s][models]
        be._take_rows_stacked(self.X, idx, x)
        be._take_rows_stacked(self.targets, idx, y)
        if v["penalty"] is not None:
            be._l2_penalty_stacked(params, net.n_weights, v["penalty"], s, stats, rows)
        logits = net.forward(x, ws, rows, models)
        be._loss_stacked(net.output, logits, y, ws["dlogits"], stats, s,
                         None if self.weights is None else self.weights[s][models], rows)
        net.backward(x, ws, rows, models)
        table = self.table[models]
        state = v["state"]
        if self.kind[0] == "sgd":
            be._sgd_step_stacked(params, grads, state.get("momentum_buffer"), table, s, self.kind[1], net.n_weights,
                                 rows)
        else:
            be._adam_step_stacked(params, grads, state["exp_avg"], state["exp_avg_sq"], table, s, self.kind[1],
                                  net.n_weights, rows)

    @property
    def use_graphs(self) -> bool:
        """Whether epochs after the first are replayed from a captured graph (False after a failed capture)."""
        return self._wants_graphs and not self._graph.failed

    @property
    def replays(self) -> int:
        """Epochs replayed from a captured graph."""
        return self._graph.replays

    def close(self) -> None:
        """Stop the stack's threads (if any) and release its captured graph."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._graph.close()

    def epoch(self) -> np.ndarray:
        """Run the staged epoch; returns every model's loss sum (M,) (stopped models: 0)."""
        self.backend._fill_stacked_stats(self.stats)
        if not (self.use_graphs and self.eager_epochs > 0 and self._replay()):
            for s in range(self.steps):
                self._step(s)
            self.eager_epochs += 1
        for m in np.flatnonzero(self.active):
            self.optimizers[m].advance(self.steps)
        return self.backend.to_numpy(self.stats)[:, STATS_LOSS_SUM].copy()

    def _replay(self) -> bool:
        """Replay the captured epoch, capturing it first (again when something it bakes in changed): False
        when capturing is not possible here (then the stack has warned, and runs eagerly from then on)."""
        part = self.parts[0]
        return self._graph.replay((id(self.net.params), id(self.table), self.backend.graph_key(), self.steps),
                                  lambda: [self._step_models(s, part) for s in range(self.steps)],
                                  (self.net.params, self.net.grads, self.table))

    def _eval_buffers(self, width: int) -> tuple:
        """``(indices, inputs, workspace)`` for evaluating ``width`` rows of every model, made once per width
        and kept (early stopping evaluates the same validation rows every epoch)."""
        cache = self._eval_cache
        if width not in cache:
            be, net, M = self.backend, self.net, self.net.M
            cache[width] = (be.zeros((M, width), np.int64), be.empty((M, width, net.layer_sizes[0]), net.dtype),
                            net.new_workspace(width))
        return cache[width]

    def logits(self, rows: Sequence[np.ndarray | None], chunk: int = 4096) -> list[np.ndarray | None]:
        """Every model's logits on its own rows of ``X`` (host arrays; None where ``rows[m]`` is None)."""
        be, net, M = self.backend, self.net, self.net.M
        width = max((len(r) for r in rows if r is not None), default=0)
        out: list[Any] = [None if r is None else np.empty((len(r), net.layer_sizes[-1]), net.dtype) for r in rows]
        for start in range(0, width, chunk):
            stop = min(width, start + chunk)
            idx = np.zeros((M, stop - start), dtype=np.int64)
            for m, r in enumerate(rows):
                if r is not None and start < len(r):
                    part = r[start:stop]
                    idx[m, :len(part)] = part
            idx_d, xb, ws = self._eval_buffers(stop - start)
            be.copy_(idx_d, idx)
            be._take_rows_stacked(self.X, idx_d, xb)
            z = be.to_numpy(net.forward(xb, ws))
            for m, r in enumerate(rows):
                if r is not None and start < len(r):
                    n = min(len(r), stop) - start
                    out[m][start:start + n] = z[m, :n]
        return out
