"""Many fits of ``mlp.MLPClassifier``/``MLPRegressor`` at once: :func:`fit_many`, the engine of the searches
and the ensembles.

Each fit is ``estimators[i].fit(X[rows[i]], y[rows[i]])``; the "sgd"/"adam"
fits that share a network's shape train together as one stack (one
:class:`mlp.TrainingLoop` over their networks, :func:`mlp.runner.train`
running each fit's own :class:`~mlp.sklearn_run.StochasticRun`): one copy of
the data on the device, each network with its own rows, seed,
hyperparameters and stopping, each ending with the weights its own fit
would have (bit for bit on the NumPy backend, where a stack runs every
product on one BLAS thread: the fit on one BLAS thread, since a BLAS that
splits a product among threads may round it otherwise).  A fit fails on its own, as
it would alone.  Stacks that do not fit the memory budget are split (a
:class:`StackSplitWarning` says so); stacks are dispatched through
scikit-learn's ``Parallel`` (joblib: ``n_jobs``, a Dask cluster inside
``joblib.parallel_backend("dask")``), whose workers apply the caller's
warning filters and scikit-learn configuration.  The fits of a sparse X train
one at a time, each batch by batch (a :class:`SparseInputWarning` says so).
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:
    raise ImportError("mlp's searches and ensembles need scikit-learn: pip install 'numba-mlp[sklearn]'") from None

import contextlib
import math
import numbers
import os
import sys
import threading
import time
import warnings
from typing import Any, Sequence

import numpy as np
from joblib import effective_n_jobs
from sklearn import config_context
from sklearn.utils import _safe_indexing
from sklearn.utils.parallel import Parallel, delayed  # joblib's, passing on scikit-learn's config and warning filters

from .backends import get_backend
from .fit_cache import OUTPUT, print_output
from .loop import TrainingLoop
from .network import Networks
from .runner import train
from .sklearn_base import _STOCHASTIC_SOLVERS, _BaseMLP
from .sklearn_run import StochasticRun
from .sparse import as_matrix, is_sparse

__all__ = ["fit_many", "StackSplitWarning", "SparseInputWarning", "stack_threads"]

#: the environment variable that sets how many threads each worker's stacks step in on a host backend
STACK_THREADS_ENV = "MLP_STACK_THREADS"


def stack_threads(workers: int) -> int:
    """Threads each of ``workers`` worker processes steps a stack's models in (ranges of the models, on a host
    backend): ``MLP_STACK_THREADS`` when set, else the cores left to each worker (at least one)."""
    value = os.environ.get(STACK_THREADS_ENV, "").strip()
    if not value:
        return max(1, (os.cpu_count() or 1) // workers)
    threads = int(value) if value.isdigit() else 0
    if threads < 1:
        raise ValueError(f"{STACK_THREADS_ENV}: expected a whole number of threads >= 1, got {value!r}")
    return threads


class StackSplitWarning(UserWarning):
    """A set of fits did not fit the device's memory as one stack and was split into several."""


# ---------------------------------------------------------------------------------------------------------
# Fitting many estimators at once
# ---------------------------------------------------------------------------------------------------------
def _model_bytes(est: _BaseMLP, layer_units: Sequence[int], batch: int, itemsize: int) -> int:
    """Device memory one model of a stack needs: parameters, gradients and two state buffers, and its
    batch's activations, their gradients and inputs."""
    params = sum(k * n + n for k, n in zip(layer_units[:-1], layer_units[1:]))
    acts = batch * (sum(layer_units) + sum(layer_units[1:]))
    return itemsize * (4 * params + 2 * acts)


def fit_many(estimators: Sequence[_BaseMLP], X: Any, y: Any, rows: Sequence[np.ndarray],
             sample_weight: Any = None, *, n_jobs: int | None = None, max_stack: int | None = None,
             progress: bool | None = None, return_exceptions: bool = False) -> list[Any]:
    """Fit ``estimators[i]`` on the rows ``rows[i]`` of ``(X, y)``; returns the fitted estimators.

    ``rows[i]``: integer row indices (negative ones count from the end) or a boolean mask of X's rows.

    The result is what ``estimators[i].fit(X[rows[i]], y[rows[i]], sample_weight[rows[i]])`` gives, but
    the "sgd"/"adam" fits that share a network shape (layer sizes, activation, output, dtype, solver,
    batch size and batches per epoch) train as one stack.  ``max_stack`` caps the models of a stack (default:
    what fits half the free device memory, or a quarter of the RAM).  Stacks are dispatched through joblib
    with ``n_jobs`` workers (each shape's stack is split so that every worker has one); inside
    ``joblib.parallel_backend("dask")`` they run on a Dask cluster.  ``progress`` shows a bar per stack over
    its models' epochs with the lowest training loss so far (default: on a terminal, without workers).
    On a host backend each worker steps ranges of a stack's models in threads: as many as the cores left to
    it, or the environment variable ``MLP_STACK_THREADS`` (:func:`stack_threads`), with every product on one
    BLAS thread: a stacked fit ends as its own fit on one BLAS thread would (``threadpool_limits(1)``), whatever
    the threads, blocks or ``n_jobs``; fits that train on their own (``lbfgs``, sparse X) run as their ``fit`` does.
    The workers apply the caller's warning filters and scikit-learn configuration.
    A sparse X (CSR, or converted to CSR once) is never densified: its fits train one at a time, shared out
    among the workers, with one :class:`SparseInputWarning`.

    Each fit succeeds or fails on its own, as its own ``fit`` would: one that raises (parameters its ``fit``
    rejects, a validation set too small, weights that became non-finite) leaves every other fit, those of its
    stack included, to finish.  Then the first failed fit's exception (in the order of ``estimators``) is
    raised; with ``return_exceptions=True`` it takes that estimator's place in the returned list instead.
    """
    estimators = list(estimators)
    if len(rows) != len(estimators):
        raise ValueError(f"rows: expected one index array per estimator ({len(estimators)}), got {len(rows)}")
    for i, est in enumerate(estimators):
        if not isinstance(est, _BaseMLP):
            raise TypeError(f"estimators[{i}]: expected an mlp.MLPClassifier or mlp.MLPRegressor, "
                            f"got {type(est).__name__}")
    if max_stack is not None and (not isinstance(max_stack, numbers.Integral) or max_stack < 1):
        raise ValueError(f"max_stack: expected None or an integer >= 1, got {max_stack!r}")
    n = np.shape(X)[0]  # a sparse X has its shape too
    rows = [_row_indices(r, n, f"rows[{i}]") for i, r in enumerate(rows)]
    outcomes = _fit_datasets(estimators, [(X, y, sample_weight)], [0] * len(estimators), rows, n_jobs, max_stack,
                             progress)
    for outcome in outcomes:  # each stacked fit's verbose lines together, in the order of the fits
        print_output(outcome)
    if not return_exceptions:
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return outcomes


def _row_indices(rows: Any, n: int, name: str) -> np.ndarray:
    """``rows`` as int64 indices in [0, n): integer indices (negative ones count from the end, as NumPy's) or a
    boolean mask of ``n`` values, the rows ``X[rows]`` selects; anything else raises, naming ``name``."""
    r = np.asarray(rows)
    if r.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of row indices, got shape {r.shape}")
    if r.dtype == bool:
        if len(r) != n:
            raise IndexError(f"{name}: a boolean mask of {len(r)} values for X's {n} rows")
        return np.flatnonzero(r).astype(np.int64)
    if r.size == 0:
        return r.astype(np.int64)
    if r.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer row indices or a boolean mask, got {r.dtype}")
    bad = (r < -n) | (r >= n)
    if bad.any():
        raise IndexError(f"{name}: row index {r[bad][0]} is out of range for X's {n} rows")
    r = r.astype(np.int64)
    return np.where(r < 0, r + n, r)


def _fit_datasets(estimators: Sequence[_BaseMLP], datasets: Sequence[tuple], which: Sequence[int],
                  rows: Sequence[np.ndarray], n_jobs: int | None, max_stack: int | None, progress: bool | None,
                  stacklevel: int = 4, timings: list | None = None) -> list[Any]:
    """Fit ``estimators[i]`` on the rows ``rows[i]`` of ``datasets[which[i]]`` (an ``(X, y, sample_weight)``),
    the fits of one dataset and one network shape stacked; returns each fit's outcome (the fitted estimator or
    the exception its fit raised).  Stacks of every dataset go through one joblib dispatch.  ``timings``, a
    list, receives each fit's seconds (see :func:`_fit_chunk`)."""
    workers = effective_n_jobs(n_jobs)
    # with fewer datasets than workers, each dataset's stacks are split so that every worker has one
    split_for = workers if len(datasets) < workers else 1
    chunks: list[tuple[int, list[int]]] = []
    datasets = list(datasets)
    for d, (X, y, sw) in enumerate(datasets):
        members = [i for i in range(len(estimators)) if which[i] == d]
        if is_sparse(X):
            datasets[d] = (as_matrix(X), y, sw)  # CSR once (a CSC X would be indexed by rows for every fit)
            planned = _sparse_chunks([estimators[i] for i in members], split_for, stacklevel)
        else:
            planned = _plan_chunks([estimators[i] for i in members], X, [rows[i] for i in members], max_stack,
                                   split_for, stacklevel)
        chunks.extend((d, [members[j] for j in chunk]) for chunk in planned)
    if progress is None:
        progress = sys.stderr.isatty()
    show = bool(progress) and workers == 1  # one bar per chunk, shown where it trains
    threads = stack_threads(workers)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_chunk)([estimators[i] for i in chunk], datasets[d][0], datasets[d][1], [rows[i] for i in chunk],
                            datasets[d][2], show, threads)
        for d, chunk in chunks)
    outcomes: list[Any] = [None] * len(estimators)
    seconds = np.zeros(len(estimators))
    for (_, chunk), (done, took) in zip(chunks, results):
        for i, outcome, t in zip(chunk, done, took):
            outcomes[i], seconds[i] = outcome, t
    if timings is not None:
        timings[:] = seconds.tolist()
    return outcomes


class SparseInputWarning(UserWarning):
    """Fits of a sparse X train one at a time: a stack's batches are dense."""


def _sparse_chunks(estimators: Sequence[_BaseMLP], workers: int, stacklevel: int = 5) -> list[list[int]]:
    """A sparse X: every fit trains on its own, batch by batch and never densified (a stack gathers dense
    batches of every model, so X would be densified); the fits are shared out among the workers.  One
    warning says so when some fit could otherwise have been stacked."""
    if any(est.solver in _STOCHASTIC_SOLVERS for est in estimators) and len(estimators) > 1:
        warnings.warn(f"X is sparse: its {len(estimators)} fits train one at a time, each batch by batch on the "
                      "sparse rows, instead of as stacks (a stack's batches are dense: X would be densified)",
                      SparseInputWarning, stacklevel=stacklevel)
    return [list(map(int, c)) for c in np.array_split(np.arange(len(estimators)), min(workers, len(estimators)))
            if len(c)]


def _plan_chunks(estimators: Sequence[_BaseMLP], X: Any, rows: Sequence[np.ndarray], max_stack: int | None,
                 workers: int, stacklevel: int = 5) -> list[list[int]]:
    """Indices of ``estimators`` in chunks: fits of one network shape together, split so that each chunk fits
    the memory budget (a warning says so when that splits a shape) and every worker gets a share."""
    n_features = np.shape(X)[1]
    shapes: dict[tuple, list[int]] = {}
    for i, est in enumerate(estimators):
        try:
            key = _stack_shape(est, len(rows[i]))
        except Exception:  # parameters its fit rejects: it fails on its own, as its fit does, in _fit_chunk
            key = None
        shapes.setdefault(("alone", i) if key is None else key, []).append(i)
    chunks, split = [], False
    for key, members in shapes.items():
        if key[0] == "alone":
            chunks.append(members)
            continue
        est = estimators[members[0]]
        budget = get_backend(est.backend).memory_budget() - int(np.prod(np.shape(X))) * 8
        size = _model_bytes(est, [n_features, *est._hidden_sizes(), 10], key[4], 8)
        cap = max(1, budget // max(size, 1))
        if max_stack is not None:
            cap = min(cap, max_stack)
        parts = max(-(-len(members) // cap), min(workers, len(members)))
        split |= -(-len(members) // cap) > 1
        chunks.extend(np.array_split(np.asarray(members), parts))
    chunks = [list(map(int, c)) for c in chunks if len(c)]
    if split:
        warnings.warn(f"{len(estimators)} fits need more memory than one stack may use"
                      + ("" if max_stack is None else f" (or more than max_stack={max_stack} models)")
                      + f": training them as {len(chunks)} stacks", StackSplitWarning, stacklevel=stacklevel)
    return chunks


def _stack_shape(est: _BaseMLP, n_rows: int) -> tuple | None:
    """What the fits of one stack share before their data is seen (None: a fit that trains alone); raises
    what reading parameters that ``fit`` rejects raises."""
    if est.solver not in _STOCHASTIC_SOLVERS:
        return None
    get_backend(est.backend)
    batch = min(200, n_rows) if est.batch_size == "auto" else min(int(est.batch_size), n_rows)
    return (type(est), tuple(est._hidden_sizes()), est.activation, est.solver, batch,
            None if est.dtype is None else np.dtype(est.dtype).name,
            str(est.backend))


def _fit_chunk(estimators: list[_BaseMLP], X: Any, y: Any, rows: list[np.ndarray], sample_weight: Any,
               progress: bool, threads: int = 1) -> tuple[list[Any], list[float]]:
    """Fit a chunk's estimators: the stochastic ones grouped into stacks, any other one on its own.  Returns each
    one's outcome (the fitted estimator, or the exception its fit raised) and its seconds: a fit on its own
    its own time; a stacked fit its set-up and its share of its stack's time (:func:`stack_shares`)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(e.max_iter for e in estimators), unit="epoch", leave=False,
                   desc=f"{len(estimators)} models x epochs", file=sys.stderr, dynamic_ncols=True)
    outcomes: list[Any] = list(estimators)
    seconds = [0.0] * len(estimators)
    groups: dict[tuple, list] = {}
    for i, (est, r) in enumerate(zip(estimators, rows)):
        start = time.perf_counter()
        Xm, ym = _safe_indexing(X, r), _safe_indexing(y, r)
        swm = None if sample_weight is None else _safe_indexing(np.asarray(sample_weight), r)
        try:
            if est.solver not in _STOCHASTIC_SOLVERS or is_sparse(Xm):  # on its own (see _sparse_chunks)
                est.fit(Xm, ym, sample_weight=swm)
                if bar is not None:
                    bar.update(est.max_iter)
                continue
            run = est.start_stacked_fit(Xm, ym, swm)
        except Exception as exc:  # what this fit raises on its own; the others go on
            outcomes[i] = exc
            continue
        finally:
            seconds[i] = time.perf_counter() - start
        groups.setdefault(run.stack_key(), []).append((i, run, r))
    best_loss = math.inf
    with config_context(skip_parameter_validation=True):  # as inside fit: its inner calls are not re-validated
        for members in groups.values():
            best_loss = min(best_loss, _train_stack(members, X, y, bar, threads, outcomes, seconds))
    if bar is not None:
        bar.close()
    return outcomes, seconds


def stack_shares(seconds: float, epochs: Sequence[int]) -> np.ndarray:
    """A stack's ``seconds`` shared among its members in proportion to the epochs each trained in it (its
    members have one shape and batch: an epoch is the same arithmetic for each); equal shares when none
    trained an epoch."""
    epochs = np.asarray(epochs, dtype=np.float64)
    total = epochs.sum()
    if total <= 0:
        return np.full(len(epochs), seconds / max(len(epochs), 1))
    return seconds * epochs / total


_BLAS_LOCK = threading.Lock()
_BLAS_HOLDERS = 0  # callers inside one_blas_thread
_BLAS_LIMITER: Any = None  # threadpoolctl's limiter while they are


@contextlib.contextmanager
def one_blas_thread():
    """The process's BLAS on one thread while any caller is inside: callers in several threads (stacks trained
    concurrently, say under joblib's threading backend) share one limit, applied by the first to enter and
    lifted by the last to leave.  (A limit of each caller's own would be lifted by the first to leave, while the
    others still multiply, and the last would leave the BLAS on the one thread it found.)"""
    global _BLAS_HOLDERS, _BLAS_LIMITER
    with _BLAS_LOCK:
        if _BLAS_HOLDERS == 0:
            from threadpoolctl import threadpool_limits

            _BLAS_LIMITER = threadpool_limits(limits=1, user_api="blas")
        _BLAS_HOLDERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_HOLDERS -= 1
            if _BLAS_HOLDERS == 0:
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None


def _train_stack(members: list[tuple[int, StochasticRun, np.ndarray]], X: Any, y: Any, bar: Any,
                 threads: int, outcomes: list[Any], seconds: list[float]) -> float:
    """Train one stack to the end of every member's fit; returns the lowest training loss reached, and adds each
    member's share of the stack's time to ``seconds[index]`` (:func:`stack_shares`).

    ``members`` are ``(index, run, rows)``: each fit's policy (see :meth:`mlp.MLPClassifier.start_stacked_fit`)
    and its rows of ``X``; a member whose fit raises (at the end of an epoch, or its weights non-finite at the
    end) is frozen, and the exception is its outcome (``outcomes[index]``).  On a host backend every product
    runs on one BLAS thread, and with ``threads`` > 1 ranges of the models step in threads (many small products
    gain more from a core each than from two cores sharing each).  One BLAS thread always, not only with
    threads: a BLAS that splits a product among its threads may round it otherwise in the last bit, so a
    stack's networks end with the weights of their own fits on one BLAS thread whatever the stack's threads,
    blocks or ``n_jobs``."""
    start = time.perf_counter()
    runs = [m[1] for m in members]
    first = runs[0]
    backend = get_backend(first.est.backend)
    host = get_backend("numpy")
    net = Networks.stack([run.network(host) for run in runs], backend)
    loop = TrainingLoop(net, [run.optimizer for run in runs], backend, backend.asarray(X, dtype=net.dtype),
                        backend.asarray(first.targets_of(y)), first.batch_size, first.steps,
                        weighted=first.sw_train is not None, l2_penalty=any(run.est.alpha > 0 for run in runs),
                        cuda_graphs=True, threads=threads, clip_loss=True)
    for (_, run, r) in members:  # each fit's rows of the one copy of the data the stack holds
        run.row_map = r[run.train_rows]
        run.validation_rows = None if run.val_rows is None else r[run.val_rows]
        run.isolated = True  # an error at the end of an epoch ends this fit alone
        run.output = []  # its verbose lines, kept with its outcome (fit_cache.OUTPUT): printed as they came they
        # would interleave with the other fits' lines
    lowest = [math.inf]
    epochs = np.zeros(len(runs), dtype=np.int64)  # epochs each member trained here

    def progress(trained: Sequence[int]) -> None:
        epochs[list(trained)] += 1
        lowest[0] = min([lowest[0], *(runs[m].est.loss_ for m in trained if runs[m].failure is None)])
        if bar is not None:
            bar.update(len(trained))
            bar.set_postfix_str(f"best loss {lowest[0]:.4g}", refresh=False)

    # host: every product on one BLAS thread, however the models are shared out
    blas = one_blas_thread() if backend.stack_threads_help else contextlib.nullcontext()
    try:
        with blas:
            train(loop, runs, after_epoch=progress, interrupt="warn")
    finally:
        loop.close()
    final = net.params_numpy()
    for m, (index, run, _) in enumerate(members):
        if run.failure is not None:
            outcomes[index] = run.failure
            continue
        try:
            run.finish(final[m], backend)
        except Exception as exc:  # e.g. its weights became non-finite: its fit fails as its own would
            outcomes[index] = exc
    for index, run, _ in members:
        if run.output:
            setattr(outcomes[index], OUTPUT, run.output)
    if bar is not None:  # the epochs the models that stopped early did not need
        bar.update(sum(max(0, run.est.max_iter - run.est.n_iter_) for run in runs))
    for (index, _, _), share in zip(members, stack_shares(time.perf_counter() - start, epochs)):
        seconds[index] += float(share)
    return lowest[0]
