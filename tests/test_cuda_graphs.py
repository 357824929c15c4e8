"""Training with each epoch replayed as a CUDA graph gives what step-by-step launches give.

Real GPU only: Numba's CUDA simulator cannot capture graphs (the eager path,
which it runs, is what every other trainer test covers).  The parameters must
agree bit for bit; only the loss and accuracy sums, which the kernels reduce
with atomics in whatever order the blocks finish, may differ in rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlp
from mlp import optim
from mlp.backends._cuda_graph import CaptureError

from conftest import ON_SIMULATOR

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(ON_SIMULATOR, reason="CUDA graphs need a real GPU; the simulator cannot capture")]

LAYERS = (64, 48, 32, 10)
N, BATCH = 1000, 96  # 11 steps, the last one partial (40 samples)

OPTIMIZERS = {
    "sgd-momentum": lambda: optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda: optim.Adam(lr=1e-3, weight_decay=1e-4),
    "adamw": lambda: optim.AdamW(lr=1e-3, weight_decay=0.05),
}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((N, LAYERS[0]), dtype=np.float32), rng.integers(0, LAYERS[-1], N)


def _fit(graphs, make_opt, epochs=4, **fit_kwargs):
    model = mlp.MLP(LAYERS, seed=1)
    trainer = mlp.Trainer(model, make_opt(), backend="cuda", batch_size=BATCH, seed=2, cuda_graphs=graphs)
    X, y = _data()
    history = trainer.fit(X, y, epochs=epochs, verbose=0, **fit_kwargs)
    return model, trainer, history


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_graph_and_eager_epochs_give_identical_parameters(cuda, name):
    eager_model, eager, h_eager = _fit(False, OPTIMIZERS[name])
    graph_model, graphs, h_graphs = _fit(True, OPTIMIZERS[name])
    assert graphs.loop.replays == 3 and eager.loop.replays == 0  # epoch 1 eager, epochs 2-4 replayed
    # per step: 2 gathers, 3 forward products, the loss, 3 dW and 2 dx products, the optimizer update
    assert graphs.loop.graph_launches == eager.loop.steps * 12
    np.testing.assert_array_equal(cuda.to_numpy(graph_model.params), cuda.to_numpy(eager_model.params))
    assert graphs.optimizer.steps == eager.optimizer.steps == 4 * eager.loop.steps
    np.testing.assert_allclose(h_graphs["loss"], h_eager["loss"], rtol=1e-6)  # atomically reduced sums
    assert h_graphs["accuracy"] == h_eager["accuracy"]


def test_a_launch_that_escapes_the_capture_is_an_error(cuda):
    from mlp.backends.cuda_backend import CudaBackend
    from mlp.kernels import fill

    other = CudaBackend()  # its own stream, not capturing
    a, b = cuda.zeros(100, np.float32), other.zeros(100, np.float32)

    def record():
        cuda._fill(a, 1.0)                     # captured
        fill.fill(b, 2.0, stream=other.stream)  # escapes: runs now, outside the graph
        cuda.launch_count += 1                   # counted as one of this capture's launches

    with pytest.raises(CaptureError, match="a launch escaped the capture"):
        cuda.capture(record)
    graph = cuda.capture(lambda: cuda._fill(a, 3.0))
    graph.replay()
    np.testing.assert_array_equal(cuda.to_numpy(a), 3.0)  # the stream is usable after a refused capture


def test_a_changed_learning_rate_takes_effect_between_fits(cuda):
    results = []
    for graphs in (False, True):
        model = mlp.MLP(LAYERS, seed=1)
        opt = optim.Adam(lr=1e-3)
        trainer = mlp.Trainer(model, opt, backend="cuda", batch_size=BATCH, seed=2, cuda_graphs=graphs)
        X, y = _data()
        trainer.fit(X, y, epochs=3, verbose=0)
        opt.lr = 1e-2
        trainer.fit(X, y, epochs=3, verbose=0)
        results.append(cuda.to_numpy(model.params))
    np.testing.assert_array_equal(results[0], results[1])
    # and the new rate was used: training on with the old rate ends elsewhere
    model = mlp.MLP(LAYERS, seed=1)
    trainer = mlp.Trainer(model, optim.Adam(lr=1e-3), backend="cuda", batch_size=BATCH, seed=2, cuda_graphs=True)
    X, y = _data()
    trainer.fit(X, y, epochs=3, verbose=0)
    trainer.fit(X, y, epochs=3, verbose=0)
    assert not np.array_equal(cuda.to_numpy(model.params), results[1])


def test_early_stopping_validation_and_checkpoints_behave_as_on_the_eager_path(cuda, tmp_path):
    runs = {}
    for graphs in (False, True):
        ck = tmp_path / f"ck-{graphs}.npz"
        model, trainer, history = _fit(graphs, OPTIMIZERS["adam"], epochs=8, validation_split=0.2,
                                       early_stopping=mlp.EarlyStopping(patience=2, monitor="val_accuracy"),
                                       checkpoint=ck)
        runs[graphs] = (cuda.to_numpy(model.params), history, mlp.load(ck))
    (p_e, h_e, ck_e), (p_g, h_g, ck_g) = runs[False], runs[True]
    np.testing.assert_array_equal(p_g, p_e)
    assert len(h_g) == len(h_e) and h_g.best_epoch == h_e.best_epoch and h_g.stopped_early == h_e.stopped_early
    assert h_g["val_accuracy"] == h_e["val_accuracy"]
    for (W0, b0), (W1, b1) in zip(ck_e.get_weights(), ck_g.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_a_capture_defers_the_releases_a_garbage_collection_would_make(cuda):
    """Device arrays freed by a garbage-collection pass during a capture are released after it, not inside
    it (``cuMemFree`` would invalidate the capture)."""
    import gc

    from numba import cuda as numba_cuda

    class Cycle:
        pass

    def garbage():  # device memory that only a garbage-collection pass frees
        for _ in range(64):
            c = Cycle()
            c.self, c.buffer = c, numba_cuda.device_array(256, dtype=np.float32)

    a = cuda.zeros(100, np.float32)
    cuda._fill(a, 0.0)  # compiled and loaded before the capture

    def record():
        cuda._fill(a, 4.0)
        gc.collect()  # runs even with the collector paused: its releases must wait

    gc.disable()  # keep the garbage until the capture
    try:
        garbage()
        graph = cuda.capture(record)
    finally:
        gc.enable()
    graph.replay()
    np.testing.assert_array_equal(cuda.to_numpy(a), 4.0)
    graph.close()


def test_an_interrupted_first_epoch_is_followed_by_a_complete_eager_epoch(cuda):
    """The short last batch first runs eagerly, never inside a capture; the parameters are the eager path's."""
    results = []
    for graphs in (False, True):
        model = mlp.MLP(LAYERS, seed=1)
        trainer = mlp.Trainer(model, optim.Adam(lr=1e-3), backend="cuda", batch_size=BATCH, cuda_graphs=graphs)
        X, y = _data()
        loop = trainer.training_loop(X, y)
        rng = np.random.default_rng(3)
        loop.set_order(rng.permutation(N).astype(np.int64))
        assert loop.epoch(on_step=lambda done: done == 3) == 3
        for _ in range(3):
            loop.set_order(rng.permutation(N).astype(np.int64))
            loop.epoch()
        results.append((cuda.to_numpy(model.params), loop.replays))
        loop.close()
    (p_eager, r_eager), (p_graphs, r_graphs) = results
    assert r_eager == 0 and r_graphs == 2  # eager: the cut-short epoch and the next; then one capture
    np.testing.assert_array_equal(p_graphs, p_eager)
