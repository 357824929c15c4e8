"""What a training run shows while it runs: a progress bar per epoch and a line per epoch (on stderr)."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from .backends.base import STATS_LOSS_SUM
from .interrupt import StopAtStepBoundary
from .loop import TrainingLoop


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar of ``total`` steps that disappears when closed."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def print_epoch(record: dict[str, float], epochs: int, has_val: bool, has_accuracy: bool) -> None:
    """One line per epoch: its loss, its accuracy (classification outputs) and their validation figures."""
    keys = ["loss", "accuracy"] if has_accuracy else ["loss"]
    keys += [f"val_{key}" for key in keys] if has_val else []
    figures = "".join(f"  {key} {record[key]:.4f}" for key in keys)
    print(f"epoch {int(record['epoch'])}/{epochs}{figures}  ({record['seconds']:.2f} s)", file=sys.stderr, flush=True)


def step_callback(loop: TrainingLoop, bar: Any, interrupt: StopAtStepBoundary) -> Callable[[int], bool]:
    """The loop's ``on_step``: advance the progress bar, and end the epoch when Ctrl-C was pressed.

    Where the loss statistics live in host memory (a NumPy array), reading
    them costs nothing, and the bar shows the epoch's running loss; on a
    device it would cost a synchronisation per step, so the bar counts steps only.
    """
    stats, batch, n = loop.stats, loop.batch_size, loop.n_samples
    live_loss = bar is not None and isinstance(stats, np.ndarray)

    def on_step(done: int) -> bool:
        if bar is not None:
            if live_loss:
                bar.set_postfix_str(f"loss {stats[0, STATS_LOSS_SUM] / min(done * batch, n):.4f}", refresh=False)
            bar.update()
        return interrupt.requested

    return on_step
