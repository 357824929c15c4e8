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
from dataclasses import dataclass

import numpy as np

import mlp
from bench._measure import N_SAMPLES, REFERENCE_LAYERS
from mlp.backends import _cpu_stacked as loops
from mlp.backends.numpy_backend import NumpyBackend

#: The NumPy backend's operations the training step calls, timed by name.
BACKEND_OPS = ("_take_rows_stacked", "_affine_forward_stacked", "_affine_backward_stacked", "_loss_stacked",
               "_adam_step_stacked", "_sgd_step_stacked")
#: Numba loops timed on their own inside the operations above (the affine layers' products and their bias,
#: activation and gradient epilogues run in one compiled loop: they are timed together)
LOOPS: tuple[str, ...] = ()
REST = "the rest (trainer's Python per step)"


@dataclass
class EpochProfile:
    """One epoch: the trainer's own time, its steps, seconds per category, and calls of each timed function."""

    seconds: float
    steps: int
    parts: dict[str, float]
    calls: dict[str, int]


def _timed(fn: Callable, key: str, seconds: collections.Counter, calls: collections.Counter) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start
            calls[key] += 1
    return wrapper


def instrument(seconds: collections.Counter, calls: collections.Counter) -> Callable[[], None]:
    """Install the timers (looked up by name, when called); returns a function that removes them."""
    targets = [(NumpyBackend, name) for name in BACKEND_OPS] + [(loops, name) for name in LOOPS]
    missing = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in targets if not hasattr(owner, name)]
    if missing:
        raise AttributeError(f"cannot time {', '.join(missing)}: not defined any more")
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    for owner, name, fn in saved:
        setattr(owner, name, _timed(fn, name, seconds, calls))

    def restore() -> None:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    return restore


def breakdown(epoch_seconds: float, totals: collections.Counter) -> dict[str, float]:
    """Seconds per category of one epoch; the last, the rest, is what no timer saw."""
    parts = {
        "affine layers (BLAS products, bias, activation and its gradient)": (totals["_affine_forward_stacked"]
                                                                             + totals["_affine_backward_stacked"]),
        "optimizer update": totals["_adam_step_stacked"] + totals["_sgd_step_stacked"],
        "batch gather (take_rows)": totals["_take_rows_stacked"],
        "softmax with cross-entropy": totals["_loss_stacked"],
    }
    parts[REST] = epoch_seconds - sum(parts.values())
    return parts


def main(argv: list[str] | None = None) -> list[EpochProfile]:
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

    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    restore = instrument(seconds, calls)
    profiles = []
    try:
        for epoch in range(args.epochs):
            seconds.clear()
            calls.clear()
            epoch_seconds = trainer.fit(X, y, epochs=1, verbose=0)["seconds"][0]
            profile = EpochProfile(epoch_seconds, -(-args.samples // args.batch), breakdown(epoch_seconds, seconds),
                                   dict(calls))
            profiles.append(profile)
            print(f"epoch {epoch + 1}: {epoch_seconds:.3f} s, {profile.steps} steps")
            for name, value in profile.parts.items():
                print(f"  {name:<38} {value:7.3f} s  {100 * value / epoch_seconds:5.1f}%")
    finally:
        restore()
    return profiles


if __name__ == "__main__":
    main()
