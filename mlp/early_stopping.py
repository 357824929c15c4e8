"""Early stopping: the rule (:class:`EarlyStopping`) and what a run tracks to apply it (:class:`BestEpoch`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np

from ._validation import check_int, check_real, describe
from .backends.names import CLASSIFICATION_OUTPUTS
from .history import History

#: the figures of a :class:`~mlp.history.History` record early stopping can watch
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model ends with the weights of its best epoch.
    ``"accuracy"`` and ``"val_accuracy"`` can be watched for classification
    outputs only (a regression model's accuracy is NaN).
    """

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = True

    def __post_init__(self) -> None:
        self.patience = check_int(self.patience, "patience", minimum=1)
        self.min_delta = check_real(self.min_delta, "min_delta", minimum=0.0)
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor: expected one of {MONITORS}, got {self.monitor!r}")

    def improved(self, value: float, best: float) -> bool:
        if self.monitor.endswith("accuracy"):
            return value > best + self.min_delta
        return value < best - self.min_delta

    def check_usable(self, model: Any, validated: bool) -> None:
        """Raise ``ValueError`` when a run of ``model`` cannot produce the monitored figure: a ``val_`` one
        without validation data (``validated`` False), an accuracy for a regression output."""
        if self.monitor.startswith("val_") and not validated:
            raise ValueError(f"early_stopping: monitoring {self.monitor!r} needs validation_data "
                             "or validation_split")
        if self.monitor.endswith("accuracy") and model.output not in CLASSIFICATION_OUTPUTS:
            raise ValueError(f"early_stopping: monitoring {self.monitor!r} needs a classification output; "
                             f"the model's output is {model.output!r} (regression, no accuracy): monitor "
                             "'val_loss' or 'loss'")

    @classmethod
    def from_state(cls, state: dict) -> "EarlyStopping":
        """The rule stored in a checkpoint by :meth:`BestEpoch.state`."""
        return cls(**{k: state[k] for k in cls.__dataclass_fields__})


def as_early_stopping(early_stopping: Union[EarlyStopping, int, None]) -> EarlyStopping | None:
    """``fit``'s ``early_stopping`` argument as a rule: an :class:`EarlyStopping`, a patience (int) or None."""
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        # a patience given here is checked under this argument's name
        return EarlyStopping(patience=check_int(early_stopping, "early_stopping (a patience)", minimum=1))
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected an EarlyStopping, a patience (int) or None, "
                        f"got {describe(early_stopping)}")
    return early_stopping


class BestEpoch:
    """What a run tracks for its early stopping ``rule`` (None: nothing is tracked, nothing stops).

    ``best`` is the monitored value of the best epoch so far and ``wait`` the
    epochs since it.  The best epoch's weights themselves are kept by the
    epoch runner (:mod:`mlp.runner`) when the rule restores them; ``train_params``
    (host) holds the last epoch's weights once the best were put back at the
    end of the run, so that a checkpoint can resume training from where it
    really stopped.
    """

    def __init__(self, rule: EarlyStopping | None, resumed: dict | None = None) -> None:
        """``resumed``: the :meth:`state` a checkpoint stored."""
        self.rule = rule
        self.best: float | None = None
        self.wait = 0
        self.train_params: np.ndarray | None = None
        if resumed is not None:
            self.best, self.wait = resumed["best"], resumed["wait"]

    @property
    def keeps_weights(self) -> bool:
        """Whether the best epoch's weights are kept, to be put back at the end."""
        return self.rule is not None and self.rule.restore_best

    def says_stop(self, record: dict[str, float], epoch: int, history: History) -> tuple[bool, bool]:
        """Take in epoch ``epoch``'s ``record`` (setting ``history.best_epoch`` when it is the best so far);
        returns ``(stop, best)``: whether the rule ends the run now, and whether this epoch is the best."""
        rule = self.rule
        if rule is None:
            return False, False
        value = record[rule.monitor]
        if self.best is None or rule.improved(value, self.best):
            self.best, self.wait, history.best_epoch = value, 0, epoch
            return False, True
        self.wait += 1
        return self.wait >= rule.patience, False

    def restores(self, epoch: int, history: History) -> bool:
        """At the end of a run (after epoch ``epoch``): whether the best epoch's weights replace the last."""
        return self.keeps_weights and history.best_epoch is not None and history.best_epoch != epoch

    def state(self) -> dict | None:
        """The rule with ``best`` and ``wait``, for a checkpoint's JSON header (None without a rule)."""
        return None if self.rule is None else {**asdict(self.rule), "best": self.best, "wait": self.wait}
