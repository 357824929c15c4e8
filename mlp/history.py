"""The per-epoch record of a training run: :class:`History`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Union

from .plotting import plot_history

#: the records of R², added after the others: a history read back without them has them NaN
R2_KEYS = ("r2", "val_r2")


class History:
    """Per-epoch records of a ``fit``: ``history["loss"]`` is the list of epoch losses.

    Keys: ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
    ``r2``, ``val_r2`` and ``seconds``.  ``loss`` is the mean loss of the
    model's output over the epoch's steps (see :attr:`mlp.MLP.loss`; half the
    mean squared error for regression).  ``accuracy`` is the fraction of rows
    predicted right during the epoch for a classification output (softmax: the
    largest logit is the label; logistic: every output is on the right side of
    0.5) and NaN for a regression output (``"identity"``, ``"exp"``).  ``r2``
    is the R² of a regression output's predictions (:func:`mlp.evaluation.r2_score`)
    by the model at the end of the epoch, on the training rows, and NaN for a
    classification output.  The ``val_`` figures are those of the model at the
    end of the epoch on the validation data, NaN without any.  ``output`` is the
    model's output (set by the trainer; it names the plotted loss).
    ``stopped_early`` and ``best_epoch`` tell what early stopping did.
    """

    def __init__(self, output: str | None = None) -> None:
        self.records: list[dict[str, float]] = []
        self.stopped_early = False
        self.best_epoch: int | None = None
        self.output = output

    def __getitem__(self, key: str) -> list[float]:
        if not self.records or key not in self.records[0]:
            raise KeyError(key)
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.records)

    def __repr__(self) -> str:
        last = self.records[-1] if self.records else {}
        return f"History(epochs={len(self)}, last={last})"

    def plot(self, path: Union[str, Path, None] = None) -> Any:
        """The loss, and the accuracy (classification) or R² (regression), per epoch, training and (when
        recorded) validation; returns the matplotlib Figure.

        With ``path`` the figure is also written there, atomically.  Needs
        matplotlib (``pip install 'numba-mlp[plot]'``); see :func:`mlp.plotting.plot_history`.
        """
        return plot_history(self, path)

    def as_dict(self) -> dict:
        """Records, ``best_epoch`` and ``stopped_early`` as plain values (for a checkpoint's JSON header)."""
        return {"records": [dict(r) for r in self.records], "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, state: dict) -> "History":
        """The inverse of :meth:`as_dict`.  Records kept before R² was recorded read it as NaN."""
        history = cls()
        history.records = [{k: float(v) for k, v in r.items()} for r in state["records"]]
        for record in history.records:
            for key in R2_KEYS:
                record.setdefault(key, math.nan)
        history.best_epoch = state["best_epoch"]
        history.stopped_early = bool(state["stopped_early"])
        return history
