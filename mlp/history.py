"""The per-epoch record of a training run: :class:`History`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Union

from .plotting import plot_history


class History:
    """Per-epoch records of a ``fit``: ``history["loss"]`` is the list of epoch losses.

    Keys: ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``
    and ``seconds``.  ``loss`` is the mean loss of the model's output (see
    :attr:`mlp.MLP.loss`; half the mean squared error for regression).
    ``accuracy`` is the fraction of rows predicted right for a classification
    output (softmax: the largest logit is the label; logistic: every output
    is on the right side of 0.5) and NaN for a regression output
    (``"identity"``, ``"exp"``).  The ``val_`` figures are NaN without
    validation data.  ``stopped_early`` and ``best_epoch`` tell what early
    stopping did.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self.stopped_early = False
        self.best_epoch: int | None = None

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
        """Loss and accuracy per epoch, training and (when recorded) validation; returns the matplotlib Figure.

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
        """The inverse of :meth:`as_dict`."""
        history = cls()
        history.records = [{k: float(v) for k, v in r.items()} for r in state["records"]]
        history.best_epoch = state["best_epoch"]
        history.stopped_early = bool(state["stopped_early"])
        return history
