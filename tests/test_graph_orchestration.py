"""The CUDA-graph machinery without a GPU: the training loop's capture-and-replay bookkeeping and the capture's checks.

A real capture needs a GPU (``tests/test_cuda_graphs.py``).  Here a NumPy
backend stands in for the device the way a graph behaves: ``capture`` runs
nothing and records each operation with its arguments (arrays by identity,
as a graph bakes in their addresses, scalars by value), and ``replay`` runs
exactly those recorded calls.  A value the loop failed to recapture for
(a launch argument changed after the capture, a buffer replaced) is then
replayed stale, and the parameters part from those of eager epochs.  So the
loop's side (first complete epoch eager, one capture per fit, a recapture
when something baked changes, step counts, statistics read once per epoch,
the fallback to eager launches) is checked in CI; and
``_cuda_graph.capture`` runs against a scripted driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

import numpy as np
import pytest

import mlp
from mlp import optim
from mlp.backends import _cuda_graph
from mlp.backends.base import GraphCaptureError
from mlp.backends.numpy_backend import NumpyBackend
from mlp.loop import TrainingLoop

from conftest import ON_SIMULATOR

#: the operations a training step can issue (what a graph would hold): every ``_``-prefixed method the
#: NumPy backend implements but its scratch-buffer helper
OPERATIONS = tuple(name for name, f in vars(NumpyBackend).items()
                   if name.startswith("_") and not name.startswith("__") and callable(f) and name != "_scratch")


class RecordedGraph:
    """The calls recorded by :meth:`RecordingBackend.capture`, replayed as they were recorded."""

    def __init__(self, backend: "RecordingBackend", calls: list, keepalive) -> None:
        self.backend, self.calls, self.keepalive = backend, calls, keepalive
        self.launches = len(calls)

    def replay(self) -> None:
        for name, args, kwargs in self.calls:
            getattr(NumpyBackend, name)(self.backend, *args, **kwargs)
        self.backend.replays += 1

    def close(self) -> None:
        self.calls = []


class RecordingBackend(NumpyBackend):
    """NumPy arrays; ``capture`` records the operations with their arguments and runs none of them.

    Like a device, it cannot capture the first launch of a batch size it has
    never run (that launch would build its configuration and allocate its
    scratch, which a capture forbids): such a capture fails.  ``setting``
    stands for a backend setting that changes launches (the CUDA backend's
    product configuration); it is this backend's :meth:`graph_key`.
    """

    name = "numpy"
    supports_graphs = True

    def __init__(self) -> None:
        super().__init__()
        self.captures = self.replays = 0
        self.setting = "a"
        self._tape: list | None = None
        self._batch_sizes_run: set[int] = set()

    def graph_key(self) -> tuple:
        return (self.setting,)

    def capture(self, record, keepalive=None) -> RecordedGraph:
        self.captures += 1
        self._tape = []
        try:
            record()
            calls = self._tape
        finally:
            self._tape = None
        return RecordedGraph(self, calls, keepalive)


def _recorded(name: str):
    def operation(self, *args, **kwargs):
        if self._tape is None:
            if name == "_take_rows":
                self._batch_sizes_run.add(args[2].shape[0])
            getattr(NumpyBackend, name)(self, *args, **kwargs)
            return
        if name == "_take_rows" and args[2].shape[0] not in self._batch_sizes_run:
            raise RuntimeError(f"a first launch for batch size {args[2].shape[0]} during a capture "
                               "(it would allocate)")
        # the copies hold arrays by identity, and numbers (immutable) by value
        self._tape.append((name, tuple(args), dict(kwargs)))

    operation.__name__ = name
    return operation


for _name in OPERATIONS:
    setattr(RecordingBackend, _name, _recorded(_name))

N, FEATURES, CLASSES, BATCH = 300, 12, 4, 64  # 5 steps, the last one of 44 samples


def _data():
    rng = np.random.default_rng(0)
    return rng.random((N, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, N)


def _fit(backend, graphs, make_opt, epochs=4, **kwargs):
    X, y = _data()
    model = mlp.MLP((FEATURES, 16, CLASSES), seed=3)
    trainer = mlp.Trainer(model, make_opt(), backend=backend, batch_size=BATCH, seed=1, cuda_graphs=graphs)
    history = trainer.fit(X, y, epochs=epochs, verbose=0, **kwargs)
    return model.params.copy(), trainer, history


def test_a_capture_runs_nothing_and_a_replay_runs_what_was_recorded():
    be = RecordingBackend()
    a = np.zeros(3)
    value = 2.0
    graph = be.capture(lambda: be._fill(a, value))
    np.testing.assert_array_equal(a, 0.0)  # recorded, not run
    value = 5.0  # noqa: F841  (a scalar argument was baked in by value)
    graph.replay()
    np.testing.assert_array_equal(a, 2.0)
    a[:] = 0
    graph.replay()  # into the same buffer, by identity
    np.testing.assert_array_equal(a, 2.0)
    assert graph.launches == 1 and be.replays == 2


@pytest.mark.parametrize("make_opt", [lambda: optim.SGD(lr=0.05, momentum=0.9), lambda: optim.Adam(lr=1e-2),
                                      lambda: optim.AdamW(lr=1e-2)], ids=["sgd-momentum", "adam", "adamw"])
def test_replayed_epochs_equal_eager_epochs(make_opt):
    be = RecordingBackend()
    p_eager, eager, h_eager = _fit(mlp.get_backend("numpy"), False, make_opt)
    p_graph, graphed, h_graph = _fit(be, None, make_opt)
    assert graphed.uses_cuda_graphs and not eager.uses_cuda_graphs
    assert be.captures == 1 and be.replays == graphed.loop.replays == 3 and graphed.loop.eager_epochs == 1
    # per step: 2 gathers, 2 forward products, the loss, 2 backward products, the update
    assert graphed.loop.graph_launches == 5 * 8
    np.testing.assert_array_equal(p_graph, p_eager)
    assert h_graph["loss"] == h_eager["loss"]
    assert graphed.optimizer.steps == eager.optimizer.steps == 4 * 5


def test_cuda_graphs_false_keeps_the_eager_path():
    be = RecordingBackend()
    _, trainer, _ = _fit(be, False, lambda: optim.Adam(lr=1e-2))
    assert be.captures == 0 and trainer.loop.replays == 0 and trainer.loop.eager_epochs == 4


# ----------------------------------------------------- what a graph bakes in
def _epochs(backend, graphs: bool, changes: dict, epochs: int = 6):
    """Epochs of one loop in a fixed order, with ``changes[e](optimizer)`` applied before epoch ``e``."""
    X, y = _data()
    model = mlp.MLP((FEATURES, 16, CLASSES), seed=3)
    trainer = mlp.Trainer(model, optim.SGD(lr=0.05, momentum=0.9), backend=backend, batch_size=BATCH,
                          cuda_graphs=graphs)
    loop = trainer.training_loop(X, y)
    rng = np.random.default_rng(7)
    for e in range(epochs):
        if e in changes:
            changes[e](trainer.optimizer)
        loop.set_order(rng.permutation(N).astype(np.int64))
        loop.epoch()
    return model.params.copy(), loop


def _set(reset=False, **values):
    def change(opt):
        if reset:
            opt.reset()
        for k, v in values.items():
            setattr(opt, k, v)
    return change


#: a launch argument passed by value (nesterov), a table entry (lr), new state buffers (reset)
CHANGES = {2: _set(nesterov=True), 3: _set(lr=0.02), 4: _set(reset=True)}


def test_every_change_after_the_capture_reaches_the_replayed_epochs():
    be = RecordingBackend()
    p_eager, _ = _epochs(mlp.get_backend("numpy"), False, dict(CHANGES))
    p_graph, loop = _epochs(be, True, dict(CHANGES))
    assert loop.replays == 5 and be.captures == 3  # nesterov and the new buffers recapture; lr is staged
    np.testing.assert_array_equal(p_graph, p_eager)


def test_the_stand_in_replays_a_stale_launch_argument_when_the_key_misses_it(monkeypatch):
    """The check above can fail: with ``nesterov`` left out of what the loop compares, the replayed
    epochs keep the value recorded at capture, and the parameters part from the eager ones."""
    p_eager, _ = _epochs(mlp.get_backend("numpy"), False, {2: _set(nesterov=True)})
    structure = optim.OptimizerGroup.structure
    monkeypatch.setattr(optim.OptimizerGroup, "structure", lambda self: structure(self)[:1] + structure(self)[2:])
    be = RecordingBackend()
    p_graph, _ = _epochs(be, True, {2: _set(nesterov=True)})
    assert be.captures == 1
    assert not np.array_equal(p_graph, p_eager)


def test_a_change_of_what_the_graph_bakes_in_leads_to_a_recapture():
    be = RecordingBackend()
    _, trainer, _ = _fit(be, True, lambda: optim.SGD(lr=0.05), epochs=3)
    loop = trainer.loop
    assert be.captures == 1
    loop.epoch()
    assert be.captures == 1  # nothing changed
    trainer.optimizer.reset()
    trainer.optimizer.momentum = 0.9  # a momentum buffer appears: a different update
    loop.epoch()
    assert be.captures == 2
    be.setting = "b"  # the backend's part of the key (the CUDA backend's product configuration)
    loop.epoch()
    assert be.captures == 3
    trainer.optimizer.reset()  # the same kind of state, in new buffers
    loop.epoch()
    assert be.captures == 4
    trainer.optimizer.nesterov = True  # a launch argument, not a table entry
    loop.epoch()
    assert be.captures == 5
    loop.epoch()
    assert be.captures == 5


def test_a_new_fit_captures_anew_and_a_changed_learning_rate_is_staged():
    be = RecordingBackend()
    X, y = _data()
    ref = mlp.MLP((FEATURES, 16, CLASSES), seed=3)
    got = mlp.MLP((FEATURES, 16, CLASSES), seed=3)
    t_ref = mlp.Trainer(ref, optim.Adam(lr=1e-2), backend="numpy", batch_size=BATCH, seed=1, cuda_graphs=False)
    t_got = mlp.Trainer(got, optim.Adam(lr=1e-2), backend=be, batch_size=BATCH, seed=1)
    for t in (t_ref, t_got):
        t.fit(X, y, epochs=3, verbose=0)
        t.optimizer.lr = 1e-3
        t.fit(X, y, epochs=3, verbose=0)
    assert be.captures == 2
    np.testing.assert_array_equal(got.params, ref.params)


def test_an_epoch_cut_short_is_not_the_eager_epoch_before_the_capture():
    """Only a complete eager epoch has run every step once (the short last batch included): a capture
    after an interrupted one would hold the first launch of a batch size, which a device cannot capture."""
    be = RecordingBackend()
    X, y = _data()
    trainer = mlp.Trainer(mlp.MLP((FEATURES, 16, CLASSES), seed=3), optim.Adam(lr=1e-2), backend=be,
                          batch_size=BATCH)
    loop = trainer.training_loop(X, y)
    assert loop.epoch(on_step=lambda done: done == 2) == 2
    assert loop.eager_epochs == 0 and trainer.optimizer.steps == 2
    with warnings_as_errors():
        assert loop.epoch() == 5  # eager again, to the end
        assert be.captures == 0 and loop.eager_epochs == 1
        loop.epoch()
    assert be.captures == 1 and loop.replays == 1 and loop.use_graphs
    assert trainer.optimizer.steps == 12


@contextlib.contextmanager
def warnings_as_errors():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------- the loop's API
def test_begin_epoch_and_step_advance_the_optimizer_like_epoch():
    """The documented custom loop (``begin_epoch()``, then ``step(i)`` for each step) gives, bit for bit,
    the parameters of ``epoch()``: each step counts its update, so the next epoch stages Adam's next
    bias corrections."""
    X, y = _data()
    results = []
    for manual in (False, True):
        model = mlp.MLP((FEATURES, 16, CLASSES), seed=3)
        opt = optim.Adam(lr=1e-2)
        loop = mlp.Trainer(model, opt, backend="numpy", batch_size=BATCH).training_loop(X, y)
        rng = np.random.default_rng(5)
        for _ in range(2):
            loop.set_order(rng.permutation(N).astype(np.int64))
            if manual:
                loop.begin_epoch()
                for i in range(loop.steps):
                    loop.step(i)
            else:
                loop.epoch()
        results.append((model.params.copy(), opt.steps))
    (p_epoch, steps_epoch), (p_manual, steps_manual) = results
    assert steps_manual == steps_epoch == 2 * 5
    np.testing.assert_array_equal(p_manual, p_epoch)


def test_the_backend_contract_says_whether_and_what_a_graph_bakes_in():
    from mlp.backends.cuda_backend import CudaBackend

    be = NumpyBackend()
    assert be.supports_graphs is False and be.graph_key() == ()
    with pytest.raises(NotImplementedError, match="cannot capture"):
        be.capture(lambda: None)
    cuda_be = CudaBackend(gemm_config="64x64", split_k=2)
    assert cuda_be.graph_key() == ("64x64", 2)
    assert cuda_be.supports_graphs is (not ON_SIMULATOR)


# ------------------------------------------------- a capture that cannot be made
class FailingBackend(RecordingBackend):
    """A backend whose capture fails with ``error`` (a driver that refuses, a launch it rejects, no bindings)."""

    error: BaseException = RuntimeError("cuStreamBeginCapture failed: CUDA_ERROR_NOT_SUPPORTED")

    def capture(self, record, keepalive=None):
        self.captures += 1
        raise self.error


class CUDAError(Exception):
    """As cuda-core and numba raise them (``CUDAError``, ``CudaAPIError``): not RuntimeErrors."""


@pytest.mark.parametrize("error", [RuntimeError("cuStreamBeginCapture failed: CUDA_ERROR_NOT_SUPPORTED"),
                                   CUDAError("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"),
                                   ImportError("No module named 'cuda.bindings'")],
                         ids=["runtime-error", "driver-error", "import-error"])
def test_a_failed_capture_warns_once_and_trains_on_eagerly(error):
    be = FailingBackend()
    be.error = error
    p_eager, _, h_eager = _fit(mlp.get_backend("numpy"), False, lambda: optim.Adam(lr=1e-2))
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed .*eager") as caught:
        p, trainer, history = _fit(be, True, lambda: optim.Adam(lr=1e-2))
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1
    assert str(error) in str(caught[0].message)
    assert be.captures == 1 and trainer.loop.eager_epochs == 4 and not trainer.loop.use_graphs
    np.testing.assert_array_equal(p, p_eager)
    assert history["loss"] == h_eager["loss"]
    assert trainer.optimizer.steps == 4 * 5


def test_an_escaped_launch_is_an_error_not_a_fallback():
    be = FailingBackend()
    be.error = GraphCaptureError("the captured graph holds 11 kernel launches but 12 were made")
    with pytest.raises(GraphCaptureError, match="12 were made"):
        _fit(be, True, lambda: optim.Adam(lr=1e-2))


def test_an_interrupt_during_a_capture_is_not_a_fallback():
    be = FailingBackend()
    be.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _fit(be, True, lambda: optim.Adam(lr=1e-2))


# ------------------------------------------------------------- the capture's checks
class ScriptedDriver:
    """The few ``cuda.bindings.driver`` calls ``capture`` and a replay make, answering as a driver would."""

    class CUresult:
        CUDA_SUCCESS = 0

    class CUstreamCaptureMode:
        CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1

    def __init__(self, nodes: int) -> None:
        self.nodes, self.calls, self.destroyed, self.streams = nodes, [], [], []

    def cuStreamBeginCapture(self, handle, mode):
        self.calls.append("begin")
        self.streams.append(handle)
        return (0,)

    def cuStreamEndCapture(self, handle):
        self.calls.append("end")
        self.streams.append(handle)
        return (0, "graph")

    def cuGraphGetNodes(self, graph, n):
        return (0, [], self.nodes)

    def cuGraphInstantiate(self, graph, flags):
        return (0, "exec")

    def cuGraphLaunch(self, exec_, handle):
        self.calls.append("launch")
        self.streams.append(handle)
        return (0,)

    def cuGraphExecDestroy(self, exec_):
        return (0,)

    def cuGraphDestroy(self, graph):
        self.destroyed.append(graph)
        return (0,)


class Stream:
    """A Numba stream as numba-cuda before 0.30 has it: ``handle`` a ctypes ``c_void_p``, ``int()`` the CUstream."""

    def __init__(self, value: int = 7) -> None:
        self.handle = ctypes.c_void_p(value)

    def __int__(self) -> int:
        return self.handle.value


@pytest.fixture
def scripted(monkeypatch):
    def install(nodes):
        drv = ScriptedDriver(nodes)
        monkeypatch.setattr(_cuda_graph, "_driver", lambda: drv)
        return drv
    return install


@pytest.fixture
def deferred(monkeypatch):
    """Numba's ``cuda.defer_cleanup`` replaced by one that says whether it is active."""
    from numba import cuda

    state = {"active": 0, "entered": 0}

    @contextlib.contextmanager
    def defer_cleanup():
        state["active"] += 1
        state["entered"] += 1
        try:
            yield
        finally:
            state["active"] -= 1

    monkeypatch.setattr(cuda, "defer_cleanup", defer_cleanup)
    return state


def test_capture_accepts_a_graph_holding_every_launch_and_replays_on_its_stream(scripted):
    drv = scripted(nodes=5)
    graph = _cuda_graph.capture(Stream(7), lambda: 5, keepalive="buffers")
    graph.replay()
    assert graph.launches == 5 and graph.keepalive == "buffers" and drv.calls == ["begin", "end", "launch"]
    assert drv.streams == [7, 7, 7]  # the CUstream, from int(stream): int(c_void_p) would raise
    graph.close()


def test_capture_refuses_a_graph_missing_a_launch(scripted):
    drv = scripted(nodes=4)
    with pytest.raises(_cuda_graph.CaptureError, match="holds 4 kernel launches but 5 were made"):
        _cuda_graph.capture(Stream(), lambda: 5)
    assert drv.destroyed == ["graph"]


def test_capture_ends_the_capture_when_recording_fails(scripted, deferred):
    drv = scripted(nodes=0)

    def broken():
        raise ValueError("bad launch")

    with pytest.raises(ValueError, match="bad launch"):
        _cuda_graph.capture(Stream(), broken)
    assert drv.calls == ["begin", "end"] and drv.destroyed == ["graph"]
    assert gc.isenabled() and deferred["active"] == 0


def test_nothing_is_released_while_recording(scripted, deferred):
    """Numba's deferred deallocations stay deferred and the garbage collector paused during the recording,
    and both are as before afterwards."""
    scripted(nodes=1)
    seen = []

    def record():
        seen.append((gc.isenabled(), deferred["active"]))
        return 1

    assert gc.isenabled()
    _cuda_graph.capture(Stream(), record)
    assert seen == [(False, 1)]
    assert gc.isenabled() and deferred["active"] == 0
    gc.disable()
    try:
        _cuda_graph.capture(Stream(), record)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    assert deferred["entered"] == 2


def test_a_capture_through_the_loop_never_runs_a_step_twice():
    """``TrainingLoop`` records the launches of each step once per capture, counting no update."""
    be = RecordingBackend()
    X, y = _data()
    trainer = mlp.Trainer(mlp.MLP((FEATURES, 16, CLASSES), seed=3), optim.Adam(lr=1e-2), backend=be,
                          batch_size=BATCH)
    loop: TrainingLoop = trainer.training_loop(X, y)
    loop.epoch()
    steps = trainer.optimizer.steps
    loop.begin_epoch()
    assert loop._replay() and trainer.optimizer.steps == steps  # the caller (epoch) counts the replayed steps


# ------------------------------------------------------------- stacks
class OneStreamRecordingBackend(RecordingBackend):
    """A device's stack runs on one stream (no host threads), as the CUDA backend's does."""

    stack_threads_help = False


def _stack_fits(backend):
    """Six fits in one stack: differing seeds, folds (last batches of 10, 9 and 9 rows), hyperparameters and
    stops (two stop early on their own validation split, one at a lower max_iter): what each epoch stages
    differs from the last (orders, rows per step, stopped models, scalars)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import KFold

    from mlp.search import fit_many

    X, y = load_digits(n_class=3, return_X_y=True)
    X, y = X[:160] / 16.0, y[:160]
    folds = [train for train, _ in KFold(3, shuffle=True, random_state=0).split(X)]
    jobs, rows = [], []
    for i, extra in enumerate([{}, {"alpha": 1e-2, "max_iter": 4},
                               {"early_stopping": True, "validation_fraction": 0.25, "n_iter_no_change": 1}]):
        for f in (0, 1):
            params = dict(hidden_layer_sizes=(8,), batch_size=32, max_iter=7, learning_rate_init=1e-2,
                          random_state=3 * i + f, backend=backend)
            jobs.append(mlp.MLPClassifier(**{**params, **extra}))
            rows.append(folds[(i + f) % 3])
    return fit_many(jobs, X, y, rows)


def test_a_stack_replays_one_captured_epoch_and_ends_as_an_eager_stack():
    eager = _stack_fits("numpy")
    graphed = _stack_fits(OneStreamRecordingBackend())
    be = graphed[0].backend
    # two stacks (the early-stopping fits hold out rows: fewer batches per epoch), each captured once and
    # replayed in every epoch after its first
    stacks = [graphed[:4], graphed[4:]]
    assert be.captures == 2 and be.replays == sum(max(e.n_iter_ for e in st) - 1 for st in stacks)
    assert len({e.n_iter_ for e in graphed}) > 1  # models stopped at different epochs
    for a, b in zip(graphed, eager):
        assert a.n_iter_ == b.n_iter_ and a.loss_curve_ == b.loss_curve_
        for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
            np.testing.assert_array_equal(u, v)
