"""Where an epoch of the NumPy backend spends its time, operation by operation.

Wraps the NumPy backend's operations and the Numba loops behind them with a
timer, trains the reference network 784-512-256-10 for a few epochs on
synthetic data, and prints, per epoch, the seconds spent in each operation
and what is left (the trainer's own Python work per step).  The matrix
products are the affine operations minus their Numba epilogues.  The timers
cost about a microsecond per call (some 20 calls per step), which this does
not subtract.

Usage::

    python -m bench.profile_epoch [--optimizer adam|sgd] [--batch 128] [--epochs 3] [--samples 60000]
"""
from __future__ import annotations

import argparse
import collections
import functools
import time
from collections.abc import Callable

import numpy as np

import mlp
from bench._measure import N_SAMPLES, REFERENCE_LAYERS
from mlp.backends import _cpu_loops as loops
from mlp.backends.numpy_backend import NumpyBackend

BACKEND_OPS = ("_take_rows", "_affine_forward", "_affine_backward", "_softmax_xent", "_adam_step", "_sgd_step")
LOOPS = ("bias_act_inplace", "relu_mask_colsum", "colsum")


def _timed(fn: Callable, key: str, totals: collections.Counter) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
    return wrapper


def instrument(totals: collections.Counter) -> Callable[[], None]:
    """Install the timers; returns a function that removes them."""
    saved = []
    for name in BACKEND_OPS:
        saved.append((NumpyBackend, name, getattr(NumpyBackend, name)))
        setattr(NumpyBackend, name, _timed(getattr(NumpyBackend, name), name, totals))
    for name in LOOPS:
        saved.append((loops, name, getattr(loops, name)))
        setattr(loops, name, _timed(getattr(loops, name), name, totals))

    def restore() -> None:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    return restore


def breakdown(epoch_seconds: float, totals: collections.Counter) -> dict[str, float]:
    """Seconds per category of one epoch; the categories add up to ``epoch_seconds``."""
    epilogues = totals["bias_act_inplace"]
    masks = totals["relu_mask_colsum"] + totals["colsum"]
    parts = {
        "matrix products (BLAS)": totals["_affine_forward"] + totals["_affine_backward"] - epilogues - masks,
        "optimizer update": totals["_adam_step"] + totals["_sgd_step"],
        "batch gather (take_rows)": totals["_take_rows"],
        "bias + ReLU epilogues": epilogues,
        "ReLU mask + bias gradients": masks,
        "softmax with cross-entropy": totals["_softmax_xent"],
    }
    parts["the rest (trainer's Python per step)"] = epoch_seconds - sum(parts.values())
    return parts


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(prog="python -m bench.profile_epoch", description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="adam (lr 1e-3) or sgd (lr 0.01, momentum 0.9, weight decay 1e-4)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=N_SAMPLES, help="training samples per epoch (default: 60000)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.random((args.samples, REFERENCE_LAYERS[0]), dtype=np.float32)
    y = rng.integers(0, REFERENCE_LAYERS[-1], args.samples)
    opt = (mlp.optim.Adam(lr=1e-3) if args.optimizer == "adam"
           else mlp.optim.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4))
    trainer = mlp.Trainer(mlp.MLP(list(REFERENCE_LAYERS), seed=0), opt, backend="numpy", batch_size=args.batch)
    trainer.fit(X[:2000], y[:2000], epochs=1, verbose=0)  # compile the loops, allocate workspaces

    totals: collections.Counter = collections.Counter()
    restore = instrument(totals)
    rows = []
    try:
        for epoch in range(args.epochs):
            totals.clear()
            seconds = trainer.fit(X, y, epochs=1, verbose=0)["seconds"][0]
            parts = breakdown(seconds, totals)
            rows.append({"epoch": seconds, **parts})
            print(f"epoch {epoch + 1}: {seconds:.3f} s")
            for name, value in parts.items():
                print(f"  {name:<38} {value:7.3f} s  {100 * value / seconds:5.1f}%")
    finally:
        restore()
    return rows


if __name__ == "__main__":
    main()
