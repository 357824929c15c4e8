"""The CUDA-graph machinery without a GPU: the trainer's capture-and-replay bookkeeping and the capture's checks.

A real capture needs a GPU (``tests/test_cuda_graphs.py``).  Here a NumPy
backend that "captures" by remembering what to run and "replays" by running
it stands in for the device, so the trainer's side (first epoch eager, one
capture per fit, a recapture when something baked changes, step counts,
statistics read once per epoch) is checked in CI; and ``_cuda_graph.capture``
runs against a scripted driver to check that a capture holding fewer launches
than were made is refused.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import mlp
from mlp import optim
from mlp.backends import _cuda_graph
from mlp.backends.numpy_backend import NumpyBackend


class ReplayingBackend(NumpyBackend):
    """NumPy arrays; ``capture`` records the function and ``replay`` calls it (host work is immediate)."""

    name = "numpy"
    supports_graphs = True

    def __init__(self) -> None:
        super().__init__()
        self.captures = 0

    def capture(self, record, keepalive=None):
        self.captures += 1
        # like a real graph, it keeps the buffers it points at alive
        return types.SimpleNamespace(replay=record, close=lambda: None, launches=None, keepalive=keepalive)


def _fit(backend, graphs, make_opt, epochs=4, **kwargs):
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 12), dtype=np.float32), rng.integers(0, 4, 300)
    model = mlp.MLP((12, 16, 4), seed=3)
    trainer = mlp.Trainer(model, make_opt(), backend=backend, batch_size=64, seed=1, cuda_graphs=graphs)
    history = trainer.fit(X, y, epochs=epochs, verbose=0, **kwargs)
    return model.params.copy(), trainer, history


@pytest.mark.parametrize("make_opt", [lambda: optim.SGD(lr=0.05, momentum=0.9), lambda: optim.Adam(lr=1e-2),
                                      lambda: optim.AdamW(lr=1e-2)], ids=["sgd-momentum", "adam", "adamw"])
def test_replayed_epochs_equal_eager_epochs(make_opt):
    be = ReplayingBackend()
    p_eager, eager, h_eager = _fit(mlp.get_backend("numpy"), False, make_opt)
    p_graph, graphed, h_graph = _fit(be, None, make_opt)
    assert graphed.uses_cuda_graphs and not eager.uses_cuda_graphs
    assert be.captures == 1 and graphed.loop.replays == 3 and graphed.loop.eager_epochs == 1
    np.testing.assert_array_equal(p_graph, p_eager)
    assert h_graph["loss"] == h_eager["loss"]
    assert graphed.optimizer.steps == eager.optimizer.steps == 4 * 5


def test_cuda_graphs_false_keeps_the_eager_path():
    be = ReplayingBackend()
    _, trainer, _ = _fit(be, False, lambda: optim.Adam(lr=1e-2))
    assert be.captures == 0 and trainer.loop.replays == 0 and trainer.loop.eager_epochs == 4


def test_a_change_of_what_the_graph_bakes_in_leads_to_a_recapture():
    be = ReplayingBackend()
    _, trainer, _ = _fit(be, True, lambda: optim.SGD(lr=0.05), epochs=3)
    loop = trainer.loop
    assert be.captures == 1
    loop.epoch()
    assert be.captures == 1  # nothing changed
    trainer.optimizer.reset()
    trainer.optimizer.momentum = 0.9  # a momentum buffer appears: a different update
    loop.epoch()
    assert be.captures == 2
    be.gemm_config = "64x64"  # a different product configuration
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
    be = ReplayingBackend()
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 12), dtype=np.float32), rng.integers(0, 4, 200)
    ref = mlp.MLP((12, 16, 4), seed=3)
    got = mlp.MLP((12, 16, 4), seed=3)
    t_ref = mlp.Trainer(ref, optim.Adam(lr=1e-2), backend="numpy", batch_size=64, seed=1, cuda_graphs=False)
    t_got = mlp.Trainer(got, optim.Adam(lr=1e-2), backend=be, batch_size=64, seed=1)
    for t in (t_ref, t_got):
        t.fit(X, y, epochs=3, verbose=0)
        t.optimizer.lr = 1e-3
        t.fit(X, y, epochs=3, verbose=0)
    assert be.captures == 2
    np.testing.assert_array_equal(got.params, ref.params)


# ------------------------------------------------------------- the capture's checks
class ScriptedDriver:
    """The few ``cuda.bindings.driver`` calls ``capture`` makes, answering as a driver would."""

    class CUresult:
        CUDA_SUCCESS = 0

    class CUstreamCaptureMode:
        CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1

    def __init__(self, nodes: int) -> None:
        self.nodes, self.calls, self.destroyed = nodes, [], []

    def cuStreamBeginCapture(self, handle, mode):
        self.calls.append("begin")
        return (0,)

    def cuStreamEndCapture(self, handle):
        self.calls.append("end")
        return (0, "graph")

    def cuGraphGetNodes(self, graph, n):
        return (0, [], self.nodes)

    def cuGraphInstantiate(self, graph, flags):
        return (0, "exec")

    def cuGraphDestroy(self, graph):
        self.destroyed.append(graph)
        return (0,)


@pytest.fixture
def scripted(monkeypatch):
    def install(nodes):
        drv = ScriptedDriver(nodes)
        monkeypatch.setattr(_cuda_graph, "_driver", lambda: drv)
        return drv
    return install


def test_capture_accepts_a_graph_holding_every_launch(scripted):
    drv = scripted(nodes=5)
    graph = _cuda_graph.capture(types.SimpleNamespace(handle=7), lambda: 5, keepalive="buffers")
    assert graph.launches == 5 and graph.keepalive == "buffers" and drv.calls == ["begin", "end"]
    graph._exec = None  # nothing real to destroy


def test_capture_refuses_a_graph_missing_a_launch(scripted):
    drv = scripted(nodes=4)
    with pytest.raises(_cuda_graph.CaptureError, match="holds 4 kernel launches but 5 were made"):
        _cuda_graph.capture(types.SimpleNamespace(handle=7), lambda: 5)
    assert drv.destroyed == ["graph"]


def test_capture_ends_the_capture_when_recording_fails(scripted):
    drv = scripted(nodes=0)

    def broken():
        raise ValueError("bad launch")

    with pytest.raises(ValueError, match="bad launch"):
        _cuda_graph.capture(types.SimpleNamespace(handle=7), broken)
    assert drv.calls == ["begin", "end"] and drv.destroyed == ["graph"]


class RefusingBackend(ReplayingBackend):
    """A backend whose driver refuses to capture (as an unsupported driver or build would)."""

    def capture(self, record, keepalive=None):
        self.captures += 1
        raise RuntimeError("cuStreamBeginCapture failed: CUDA_ERROR_NOT_SUPPORTED")


class EscapingBackend(ReplayingBackend):
    def capture(self, record, keepalive=None):
        from mlp.backends.base import GraphCaptureError

        raise GraphCaptureError("the captured graph holds 11 kernel launches but 12 were made")


def test_a_refused_capture_warns_once_and_trains_on_eagerly():
    be = RefusingBackend()
    p_eager, _, h_eager = _fit(mlp.get_backend("numpy"), False, lambda: optim.Adam(lr=1e-2))
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed .*CUDA_ERROR_NOT_SUPPORTED.*eager"):
        p, trainer, history = _fit(be, True, lambda: optim.Adam(lr=1e-2))
    assert be.captures == 1 and trainer.loop.eager_epochs == 4 and not trainer.loop.use_graphs
    np.testing.assert_array_equal(p, p_eager)
    assert history["loss"] == h_eager["loss"]


def test_an_escaped_launch_is_an_error_not_a_fallback():
    from mlp.backends.base import GraphCaptureError

    with pytest.raises(GraphCaptureError, match="12 were made"):
        _fit(EscapingBackend(), True, lambda: optim.Adam(lr=1e-2))
