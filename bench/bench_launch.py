"""Host cost of one kernel launch: an empty kernel against each launcher of the CUDA backend.

Eager launches serve prediction, evaluation and any step that is not
replayed from a CUDA graph, so what the host spends per launch matters.
Each benchmark enqueues the same launch many times (at the smallest shapes
the reference network uses, so the GPU is never the bottleneck) and divides
by the count; the stream is synchronised only at the end of a round.  The
empty kernel, launched through the same configured-launch cache, is the floor
set by Numba's own dispatch; a launcher's excess over it is the project's own
Python work.  Real GPU only: the simulator's timings mean nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench._measure import measure
from mlp.kernels.scalars import ADAM_COLUMNS, adam_scalars

CALLS = 200  # launches per timed call


@pytest.fixture(scope="module")
def gpu(cuda_backend):
    if not getattr(cuda_backend, "supports_graphs", False):  # the simulator
        pytest.skip("launch costs need a real GPU")
    return cuda_backend


def _empty_kernel(be):
    from numba import cuda

    from mlp.kernels._launch import configured

    @cuda.jit("void()")
    def empty():
        pass

    return configured(empty, (1, 1, 1), (32, 1, 1), be.stream)


def _launchers(be):
    """One zero-argument callable per launcher, each making exactly one launch, at batch 128 of 784-512."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = be.asarray(rng.random((128, 784), dtype=f32))
    W = be.asarray(rng.standard_normal((784, 512)).astype(f32))
    b = be.zeros(512, f32)
    y = be.empty((128, 512), f32)
    dx = be.empty((128, 784), f32)
    dW = be.empty((784, 512), f32)
    db = be.empty(512, f32)
    logits = be.asarray(rng.standard_normal((128, 10)).astype(f32))
    labels = be.asarray(rng.integers(0, 10, 128))
    dlogits = be.empty((128, 10), f32)
    stats = be.new_stats()
    X = be.asarray(rng.random((60_000, 784), dtype=f32))
    idx = be.asarray(rng.permutation(60_000)[:128].astype(np.int64))
    p, g = be.zeros(535_818, f32), be.zeros(535_818, f32)  # the reference network's parameter count
    m, v = be.zeros(535_818, f32), be.zeros(535_818, f32)
    table = be.scalar_table([adam_scalars(1e-3, 0.9, 0.999, 1e-8, 1, 0.0)], f32)
    assert table.shape == (1, len(ADAM_COLUMNS))
    be.affine_forward(x, W, b, True, out=y)  # y > 0 somewhere, so the ReLU mask has work
    return {
        "take_rows": lambda: be._take_rows(X, idx, x),
        "affine_forward": lambda: be._affine_forward(x, W, b, True, y),
        "affine_backward_dw": lambda: be._affine_backward(y, x, W, y, None, dW, db),
        "affine_backward_dx_dw": lambda: be._affine_backward(y, x, W, y, dx, dW, db),
        "softmax_xent": lambda: be._softmax_xent(logits, labels, dlogits, stats, 0),
        "adam_step": lambda: be._adam_step(p, g, m, v, table, 0, False, 0),
        "fill_stats": lambda: be._fill_stats(stats),
    }


LAUNCHERS = ["empty", "take_rows", "affine_forward", "affine_backward_dw", "affine_backward_dx_dw",
             "softmax_xent", "adam_step", "fill_stats"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launch_gpu(benchmark, settings, gpu, launcher):
    if launcher == "empty":
        kern = _empty_kernel(gpu)
        op = kern.__call__
        launches = 1
    else:
        op = _launchers(gpu)[launcher]
        before = gpu.launch_count
        op()
        launches = gpu.launch_count - before

    def many() -> None:
        for _ in range(CALLS):
            op()

    many()  # compile and settle
    gpu.synchronize()
    measure(benchmark, many, budget=settings.step, sync=gpu.synchronize,
            info={"suite": "launch", "op": "launch", "impl": launcher, "device": "gpu", "calls": CALLS,
                  "launches_per_call": launches})
