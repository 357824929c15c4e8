"""Training curves: the loss, and the accuracy or R², per epoch, from a :class:`~mlp.trainer.History`.

matplotlib is an optional dependency (``pip install 'numba-mlp[plot]'``),
imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Union

from ._files import atomic_write_bytes
from .backends.names import CLASSIFICATION_OUTPUTS, OUTPUTS

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


#: how the curves name each loss of :data:`mlp.model.OUTPUTS`: a panel title and a y-axis label (what the
#: training minimises, as :attr:`mlp.MLP.loss` computes it)
LOSS_LABELS = {
    "cross_entropy": ("cross-entropy loss", "cross-entropy"),
    "binary_cross_entropy": ("binary cross-entropy loss", "binary cross-entropy"),
    "squared_error": ("squared error loss", "half the mean squared error"),
    "poisson": ("Poisson deviance loss", "half the Poisson deviance"),
}
#: the second panel: the accuracy of a classification output, the R² of a regression one
SCORE_LABELS = {"accuracy": ("accuracy", "accuracy"), "r2": ("R²", "R² (coefficient of determination)")}


def plot_history(history: Any, path: Union[str, Path, None] = None) -> Any:
    """Draw the loss and a score per epoch (training, and validation when recorded).

    Returns the matplotlib ``Figure``, two panels side by side: the loss the
    model's output trains on (:data:`LOSS_LABELS`; "loss" when the history
    does not say which output it is), and the accuracy of a classification
    output or the R² of a regression one.  With ``path`` the figure is also
    written there, atomically, in the format its suffix names (``.png``,
    ``.svg``, ``.pdf``...).
    """
    Figure = figure_class()
    fig = Figure(figsize=(10, 4), layout="constrained")
    records = list(history)
    output = getattr(history, "output", None)  # histories pickled before it was kept have none
    if output is None:  # a history built by hand: R² when it recorded some, the accuracy otherwise
        score = "r2" if any(math.isfinite(r.get("r2", math.nan)) for r in records) else "accuracy"
    else:
        score = "accuracy" if output in CLASSIFICATION_OUTPUTS else "r2"
    panels = (("loss", *(LOSS_LABELS[OUTPUTS[output]] if output is not None else ("loss", "loss"))),
              (score, *SCORE_LABELS[score]))
    epochs = [int(r["epoch"]) for r in records]
    for ax, (key, title, label) in zip(fig.subplots(1, 2), panels):
        ax.plot(epochs, [r.get(key, math.nan) for r in records], marker="o", label="training")
        val = [r.get(f"val_{key}", math.nan) for r in records]
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, marker="o", label="validation")
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch, color="0.6", linestyle="--", linewidth=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
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
