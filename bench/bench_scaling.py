"""The cost curve: time per epoch as the batch size and the width grow, on each backend.

Batch sweep: the reference network 784-512-256-10.  Width sweep: 784-W-W/2-10
at batch 128 (W = 512 is the reference).  Adam, float32, ``Trainer.fit`` on
synthetic data of Fashion-MNIST's shape; a quick run uses fewer samples per
epoch (the report scales to 60 000 and says so).
"""

from __future__ import annotations

import pytest

import mlp
from bench import _env
from bench._measure import REFERENCE_LAYERS, measure_fit_epochs

BATCH_SWEEP, QUICK_BATCH_SWEEP = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192), (32, 256, 2048)
WIDTH_SWEEP, QUICK_WIDTH_SWEEP = (128, 256, 512, 1024, 2048, 4096), (256, 1024)
#: Widths the CPU leaves out: an epoch at 4096 takes minutes on a small machine.
CPU_MAX_WIDTH = 2048
QUICK_SAMPLES = 12_000
WIDTH_SWEEP_BATCH = 128


def _points(max_width: int) -> list:
    points = []
    for b in BATCH_SWEEP:
        marks = () if b in QUICK_BATCH_SWEEP else (pytest.mark.full,)
        points.append(pytest.param("batch", b, id=f"batch{b}", marks=marks))
    for w in WIDTH_SWEEP:
        if w <= max_width:
            marks = () if w in QUICK_WIDTH_SWEEP else (pytest.mark.full,)
            points.append(pytest.param("width", w, id=f"width{w}", marks=marks))
    return points


def _layers(sweep: str, value: int) -> tuple[tuple[int, ...], int]:
    if sweep == "batch":
        return REFERENCE_LAYERS, value
    return (REFERENCE_LAYERS[0], value, value // 2, REFERENCE_LAYERS[-1]), WIDTH_SWEEP_BATCH


def _run(benchmark, settings, be, data, sweep: str, value: int, device: str) -> None:
    layers, batch = _layers(sweep, value)
    X, y = data
    if settings.quick:
        X, y = X[:QUICK_SAMPLES], y[:QUICK_SAMPLES]
    trainer = mlp.Trainer(mlp.MLP(layers, seed=0), mlp.optim.Adam(lr=1e-3), backend=be, batch_size=batch, seed=0)
    info = {"suite": "scaling", "op": "epoch", "impl": f"mlp-{be.name}", "device": device, "sweep": sweep,
            "width": layers[1], "layers": list(layers), "optimizer": "adam",
            "threads": _env.blas_threads() if device == "cpu" else None}
    measure_fit_epochs(benchmark, trainer, X, y, budget=settings.scaling, info=info)


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("sweep,value", _points(CPU_MAX_WIDTH))
def test_scaling_numpy(benchmark, settings, numpy_backend, data, sweep, value):
    _run(benchmark, settings, numpy_backend, data, sweep, value, "cpu")


@pytest.mark.parametrize("sweep,value", _points(max(WIDTH_SWEEP)))
def test_scaling_cuda(benchmark, settings, cuda_backend, data, sweep, value):
    _run(benchmark, settings, cuda_backend, data, sweep, value, "gpu")
