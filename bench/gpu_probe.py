"""A standalone GPU measurement, kept because a committed record quotes it.

``bench/results/gpu-h100/README.md`` quotes the output of one run of this
script on an H100.  It times, with a host timer around ``cuda.synchronize()``
(median of 5 repeats of n back-to-back calls):

* the fused forward product for several tile configurations against CuPy's
  cuBLAS, with and without a separate bias and ReLU, and the relative error of
  each candidate against a float64 product;
* softmax-with-loss against a device-to-device copy of the logits;
* a training epoch of 784-512-256-10 with Adam on the CUDA backend against
  PyTorch eager on the same GPU (TF32 off), and the launches per step.

Four extra tile configurations are registered for the run only, as
candidates; ``128x128k16`` is the forward product the ``128x128`` tile now
uses.  The pytest-benchmark suites (``python -m bench``) supersede this script
for reports; it stays so that the quoted figures can be reproduced.

Usage, on a GPU machine with CuPy and PyTorch::

    PYTHONPATH=. python bench/gpu_probe.py [OUTPUT_DIR]

writes ``probe.json`` in OUTPUT_DIR (default: the current folder).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

EPOCH_SAMPLES = 60_000
REPEATS = 5

#: candidates registered for the run: (name, BM, BN, BK, TM, TN, min_blocks)
EXTRA_TILES = (
    ("128x128mb2", 128, 128, 8, 8, 8, 2),
    ("128x64", 128, 64, 16, 8, 4, None),
    ("64x128", 64, 128, 16, 4, 8, None),
    ("128x128k16", 128, 128, 16, 8, 8, None),
)
EXTRA = tuple(t[0] for t in EXTRA_TILES)


def median_seconds(fn: Callable[[], object], n: int = 20, warm: int = 3) -> float:
    """Median over REPEATS of the mean time of n back-to-back calls, synchronised."""
    from numba import cuda

    for _ in range(warm):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        cuda.synchronize()
        times.append((time.perf_counter() - start) / n)
    return float(np.median(times))


def register_extra_tiles() -> None:
    from mlp.kernels.gemm import TILES, TileConfig

    for name, bm, bn, bk, tm, tn, min_blocks in EXTRA_TILES:
        cfg = TileConfig(name, bm, bn, bk, tm, tn, min_blocks=min_blocks)
        cfg.check()
        TILES[cfg.name] = cfg


def gemm_case(be, rng, M: int, K: int, N: int, configs: tuple[str, ...], n: int = 10) -> dict:
    """TFLOP/s of ``relu(x @ W + b)`` for each tile config, cuBLAS, and cuBLAS + bias + ReLU."""
    import cupy as cp

    from mlp.kernels import gemm

    x = be.asarray(rng.standard_normal((M, K), dtype=np.float32))
    W = be.asarray((rng.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32))
    b = be.asarray(rng.standard_normal(N, dtype=np.float32))
    out = be.empty((M, N), np.float32)
    flops = 2.0 * M * N * K
    row: dict = {"shape": (M, K, N)}
    for cfg in configs:
        try:
            row[cfg] = flops / median_seconds(lambda cfg=cfg: gemm.affine_forward(x, W, b, True, out, config=cfg), n) / 1e12
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is recorded, not fatal
            row[cfg] = f"ERR {type(exc).__name__}: {exc}"[:120]

    cx, cW, cb = cp.asarray(x), cp.asarray(W), cp.asarray(b)
    co = cp.empty((M, N), cp.float32)

    def cublas_bias_relu() -> None:
        cp.matmul(cx, cW, out=co)
        cp.add(co, cb, out=co)
        cp.maximum(co, 0, out=co)

    row["cublas"] = flops / median_seconds(lambda: cp.matmul(cx, cW, out=co), n) / 1e12
    row["cublas+bias+relu"] = flops / median_seconds(cublas_bias_relu, n) / 1e12

    if M * N * K <= 4096**3:  # a float64 host reference is affordable up to here
        ref = np.maximum(cp.asnumpy(cx).astype(np.float64) @ cp.asnumpy(cW) + cp.asnumpy(cb), 0)
        for cfg in configs:
            if cfg == "auto" or cfg in EXTRA:
                gemm.affine_forward(x, W, b, True, out, config=cfg)
                err = np.linalg.norm(out.copy_to_host() - ref) / np.linalg.norm(ref)
                row["relerr_" + cfg] = float(err)
    print("GEMM TFLOP/s", row, flush=True)
    return row


def xent_case(be, rng, rows: int, classes: int) -> dict:
    """GB/s of softmax-with-loss (logits read, gradient written, labels read) and of a copy."""
    import cupy as cp

    logits = be.asarray(rng.standard_normal((rows, classes), dtype=np.float32))
    labels = be.asarray(rng.integers(0, classes, rows))
    dlogits = be.empty((rows, classes), np.float32)
    stats = be.new_stats()
    seconds = median_seconds(lambda: be.softmax_cross_entropy_into(logits, labels, dlogits, stats), n=10)
    src = cp.asarray(logits)
    dst = cp.empty_like(src)
    copy_seconds = median_seconds(lambda: dst.__setitem__(Ellipsis, src), n=10)
    matrix_bytes = 2 * rows * classes * 4
    row = {"shape": (rows, classes),
           "GB/s": (matrix_bytes + rows * 8) / seconds / 1e9,
           "copy GB/s": matrix_bytes / copy_seconds / 1e9}
    print("XENT", row, flush=True)
    return row


def torch_epoch_seconds(X: np.ndarray, y: np.ndarray, batch: int, rounds: int = 3) -> list[float]:
    """Seconds per epoch of the same network and optimizer in PyTorch eager on the GPU."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    n = len(X)

    def epoch() -> None:
        perm = torch.randperm(n, device=dev)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()

    epoch()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return [round(t, 4) for t in times]


def epoch_case(be, X: np.ndarray, y: np.ndarray, batch: int, epochs: int = 3) -> dict:
    import mlp

    model = mlp.MLP([784, 512, 256, 10])
    trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-3), backend=be, batch_size=batch)
    trainer.fit(X[:5000], y[:5000], epochs=1, verbose=0)  # warm-up: compile and allocate
    launches_before = be.launch_count
    history = trainer.fit(X, y, epochs=epochs, verbose=0)
    steps = epochs * (-(-len(X) // batch))
    row = {"batch": batch,
           "epoch_s": [round(r["seconds"], 4) for r in history],
           "launches_per_step": (be.launch_count - launches_before) / steps,
           "torch_epoch_s": torch_epoch_seconds(X, y, batch)}
    print("EPOCH", row, flush=True)
    return row


def main(out_dir: str = ".") -> dict:
    from mlp.backends.cuda_backend import CudaBackend

    be = CudaBackend()
    print(be.device_info(), flush=True)
    start = time.perf_counter()
    print("warm-up float32", be.warmup(np.float32), time.perf_counter() - start, flush=True)
    register_extra_tiles()
    rng = np.random.default_rng(0)

    big = ("auto", "64x64", "128x128") + EXTRA
    layer = ("auto", "64x64", "32x64") + EXTRA
    gemm_rows = [gemm_case(be, rng, 4096, 4096, 4096, big, n=5)]
    for batch in (1024, 8192):
        for K, N in ((784, 512), (512, 256)):
            gemm_rows.append(gemm_case(be, rng, batch, K, N, layer))
    for side in (2048, 8192):
        gemm_rows.append(gemm_case(be, rng, side, side, side, big, n=3))

    shapes = ((128, 10), (100_000, 10), (1_000_000, 10), (100_000, 1000), (1_000_000, 1000))
    xent_rows = [xent_case(be, rng, rows, classes) for rows, classes in shapes]

    X = rng.random((EPOCH_SAMPLES, 784), dtype=np.float32)
    y = rng.integers(0, 10, EPOCH_SAMPLES)
    epoch_rows = [epoch_case(be, X, y, batch) for batch in (128, 1024)]

    result = {"gemm": gemm_rows, "xent": xent_rows, "epoch": epoch_rows}
    with open(os.path.join(out_dir, "probe.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
