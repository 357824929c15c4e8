"""Measure every tile configuration and K split on this GPU and write its tuning table.

Usage, on the GPU whose table is wanted (the last part of ``python -m bench
--session``, with the time the session has left)::

    python -m bench.tune_gemm --out tuning.json [--seconds S]
    cp tuning.json kernels/tuning/<device kind>.json   # the table kernels/gemm_plan.py reads on that GPU

For the reference network 784-512-256-10 at batches 128, 256, 1024 and 8192,
and for each layer's forward, dx and dW product (dx only where the model
needs it: not for the first layer), every candidate ``(tile configuration,
split_k)`` of :func:`candidates` is

1. checked against a float64 NumPy product (relative Frobenius error below
   ``CHECK_RTOL``; a candidate that fails is recorded and never chosen), then
2. timed with CUDA events: the median over ``REPEATS`` of the mean time of
   ``INNER`` back-to-back launches.

Where CuPy is installed, cuBLAS SGEMM (``cupy.matmul``) and cuBLAS followed by
a separate bias (+ ReLU) kernel are timed on the same shapes and recorded
next to them (never required, never chosen).  The output JSON is a
``mlp.kernels._tuning`` document: ``entries`` (the fastest candidate per
shape, what ``gemm.plan`` reads) and ``measurements`` (every timing, for the
record).  It is rewritten after every product, so a run stopped on the way
(``--seconds``, or killed) leaves a table of the products it finished: a
shape without an entry falls back to ``plan``'s heuristic.  The file name
``plan`` looks for is the device's normalised name, printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_LAYERS = ((784, 512, True), (512, 256, True), (256, 10, False))
BATCHES = (128, 256, 1024, 8192)
SPLITS = (1, 2, 4, 8, 16, 32)
REPEATS = 7
INNER = 20
WARMUP = 3
# float32 sums over K <= 8192 terms in any order stay within ~1e-5 of the
# float64 product; a wrong tile, mask or split reduction is off by O(1).
CHECK_RTOL = 1e-4
DTYPE = np.float32


@dataclass(frozen=True)
class Product:
    """One product as ``gemm.plan`` sees it: ``variant``, (m x k) @ (k x n), and the layer it comes from."""

    variant: str
    m: int
    n: int
    k: int
    batch: int
    layer: int
    relu: bool


def products(batches=BATCHES, layers=REFERENCE_LAYERS) -> list[Product]:
    """Forward, dW and (except for the first layer) dx of every layer at every batch size."""
    out = []
    for batch in batches:
        for i, (fan_in, fan_out, relu) in enumerate(layers):
            out.append(Product("forward", batch, fan_out, fan_in, batch, i, relu))
            out.append(Product("dw", fan_in, fan_out, batch, batch, i, relu))
            if i > 0:
                out.append(Product("dx", batch, fan_in, fan_out, batch, i, relu))
    return out


def candidates(p: Product, tiles, max_split: int, bk_of) -> list[tuple[str, int]]:
    """Every ``(tile configuration, split_k)`` worth timing for ``p``.

    ``tiles``: configuration names; ``bk_of(name)``: its K slice.  A split is
    kept only if it leaves every split at least one slice and differs from
    the previous split after ``plan``'s rounding (fewer slices than splits).
    """
    out = []
    for name in tiles:
        slices = -(-p.k // bk_of(name))
        for s in SPLITS:
            if s <= max_split and (s == 1 or s <= slices):
                out.append((name, s))
    return out


def best_entries(measurements: list[dict]) -> list[dict]:
    """The fastest correct mlp candidate per shape, as tuning-table entries."""
    best: dict = {}
    for r in measurements:
        if r["impl"] != "mlp" or not r["ok"]:
            continue
        key = (r["variant"], r["dtype"], r["m"], r["n"], r["k"])
        if key not in best or r["seconds"] < best[key]["seconds"]:
            best[key] = r
    return [{"variant": v, "dtype": d, "m": m, "n": n, "k": k, "config": r["config"], "split_k": r["split_k"]}
            for (v, d, m, n, k), r in sorted(best.items())]


def _event_seconds(fn) -> float:
    """Median over REPEATS of the mean seconds of INNER calls, timed with CUDA events."""
    from numba import cuda

    for _ in range(WARMUP):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(REPEATS):
        start, stop = cuda.event(), cuda.event()
        start.record()
        for _ in range(INNER):
            fn()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop) / 1e3 / INNER)
    return statistics.median(times)


def _operands(p: Product, rng):
    """Host operands of ``p`` and its float64 reference."""
    if p.variant == "forward":
        x = rng.standard_normal((p.m, p.k)).astype(DTYPE)
        W = (rng.standard_normal((p.k, p.n)) / np.sqrt(p.k)).astype(DTYPE)
        b = rng.standard_normal(p.n).astype(DTYPE)
        ref = x.astype(np.float64) @ W + b
        return dict(x=x, W=W, b=b), (np.maximum(ref, 0) if p.relu else ref)
    dy = rng.standard_normal((p.batch, p.n if p.variant == "dw" else p.k)).astype(DTYPE)
    y = np.maximum(rng.standard_normal(dy.shape), 0).astype(DTYPE) if p.relu else None
    g = dy.astype(np.float64) * (y > 0) if p.relu else dy.astype(np.float64)
    if p.variant == "dw":
        x = rng.standard_normal((p.batch, p.m)).astype(DTYPE)
        return dict(dy=dy, x=x, y=y), x.T.astype(np.float64) @ g
    W = (rng.standard_normal((p.n, p.k)) / np.sqrt(p.k)).astype(DTYPE)
    return dict(dy=dy, W=W, y=y), g @ W.T


def _mlp_op(p: Product, dev: dict, out, config: str, split_k: int, ws):
    from numba import cuda

    from mlp.kernels import gemm

    opts = dict(config=config, split_k=split_k, workspace=ws)
    if p.variant == "forward":
        return lambda: gemm.affine_forward(dev["x"], dev["W"], dev["b"], p.relu, out, **opts)
    if p.variant == "dx":
        return lambda: gemm.affine_backward_dx(dev["dy"], dev["W"], dev["y"], out, **opts)
    db = cuda.device_array(p.n, dtype=DTYPE)
    return lambda: gemm.affine_backward_dw(dev["dy"], dev["x"], dev["y"], out, db, **opts)


def _cupy_ops(p: Product, host: dict):
    """cuBLAS alone, and cuBLAS plus a separate epilogue (bias + ReLU; or the ReLU mask first)."""
    import cupy as cp

    d = {k: (None if v is None else cp.asarray(v)) for k, v in host.items()}
    if p.variant == "forward":
        out = cp.empty((p.m, p.n), DTYPE)

        def epilogue():
            cp.matmul(d["x"], d["W"], out=out)
            cp.add(out, d["b"], out=out)
            if p.relu:
                cp.maximum(out, 0, out=out)
        return (lambda: cp.matmul(d["x"], d["W"], out=out)), epilogue
    a, b = (d["x"].T, d["dy"]) if p.variant == "dw" else (d["dy"], d["W"].T)
    out = cp.empty((p.m, p.n), DTYPE)

    def masked():
        g = d["dy"] * (d["y"] > 0) if p.relu else d["dy"]
        if p.variant == "dw":
            cp.matmul(d["x"].T, g, out=out)
            g.sum(axis=0)
        else:
            cp.matmul(g, d["W"].T, out=out)
    return (lambda: cp.matmul(a, b, out=out)), masked


def measure(p: Product, rng, device: str, have_cupy: bool) -> list[dict]:
    from numba import cuda

    from mlp.kernels import gemm

    host, ref = _operands(p, rng)
    dev = {k: (None if v is None else cuda.to_device(v)) for k, v in host.items()}
    out = cuda.device_array((p.m, p.n), dtype=DTYPE)
    base = dict(variant=p.variant, dtype=np.dtype(DTYPE).name, m=p.m, n=p.n, k=p.k, batch=p.batch,
                layer=p.layer, device=device)
    rows = []
    bk = {name: cfg.bk for name, cfg in gemm.TILES.items()}
    for config, split_k in candidates(p, gemm.TILES, gemm.MAX_SPLIT_K, bk.__getitem__):
        op = _mlp_op(p, dev, out, config, split_k, gemm.GemmWorkspace())
        op()
        err = float(np.linalg.norm(out.copy_to_host() - ref) / max(np.linalg.norm(ref), 1e-30))
        ok = err < CHECK_RTOL
        seconds = _event_seconds(op) if ok else float("nan")
        rows.append(dict(base, impl="mlp", config=config, split_k=split_k, rel_err=err, ok=ok, seconds=seconds))
        print(p.variant, p.m, p.n, p.k, config, split_k, f"{seconds * 1e6:.1f} us", "" if ok else f"WRONG {err:.1e}",
              flush=True)
    if have_cupy:
        for impl, op in zip(("cublas", "cublas+epilogue"), _cupy_ops(p, host)):
            rows.append(dict(base, impl=impl, config=None, split_k=None, rel_err=None, ok=True,
                             seconds=_event_seconds(op)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (the tuning table)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop starting products after this many seconds (default: tune them all)")
    args = parser.parse_args(argv)

    from mlp.kernels import _tuning
    from mlp.kernels._config import ON_SIMULATOR

    if ON_SIMULATOR:
        print("bench.tune_gemm needs a GPU: timings under the CUDA simulator mean nothing", file=sys.stderr)
        return 2
    try:
        import cupy  # noqa: F401
        have_cupy = True
    except ImportError:
        have_cupy = False
    deadline = None if args.seconds is None else time.monotonic() + args.seconds - 5
    device = _tuning.current_device_name()
    rng = np.random.default_rng(0)
    todo = products()
    measurements: list[dict] = []
    for done, product in enumerate(todo):
        if deadline is not None and time.monotonic() > deadline:
            print(f"out of time: {done} of {len(todo)} products tuned", flush=True)
            break
        measurements += measure(product, rng, device, have_cupy)
        doc = _tuning.document(device, best_entries(measurements), measurements)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, args.out)
    print(f"wrote {args.out}; gemm.plan reads it as kernels/tuning/{_tuning.device_kind(device)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
