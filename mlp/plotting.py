"""Training curves: loss and accuracy per epoch, from a :class:`~mlp.trainer.History`.

matplotlib is an optional dependency (``pip install 'numba-mlp[plot]'``),
imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .checkpoint import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import History

PLOT_EXTRA_HINT = "plotting needs matplotlib: pip install 'numba-mlp[plot]'"


def figure_class():
    """matplotlib's ``Figure`` class, or a one-line ImportError naming the extra that provides it.

    A bare ``Figure`` (not ``pyplot.figure``) draws with the Agg canvas and
    never opens a window or registers with pyplot's global state, so it works
    without a display and is garbage-collected like any object.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(PLOT_EXTRA_HINT) from None
    return Figure


def plot_history(history: "History", path: Union[str, Path, None] = None) -> Any:
    """Draw loss and accuracy per epoch (training, and validation when recorded).

    Returns the matplotlib ``Figure`` (two panels side by side).  With ``path``
    the figure is also written there, atomically, in the format its suffix
    names (``.png``, ``.svg``, ``.pdf``...).
    """
    Figure = figure_class()
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    records = list(history)
    epochs = [int(r["epoch"]) for r in records]
    for ax, key, title in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in records], marker="o", label="training")
        val = [r.get(f"val_{key}", math.nan) for r in records]
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, marker="o", label="validation")
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch, color="0.6", linestyle="--", linewidth=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if epochs:
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Any, path: Union[str, Path]) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees a half-written image); returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
    return path
