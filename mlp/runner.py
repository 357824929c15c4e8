"""The epoch loop, written once: :func:`train` runs a :class:`~mlp.loop.TrainingLoop`'s epochs.

Every training run is this loop: ``Trainer.fit`` (one network), the
scikit-learn estimators' stochastic ``fit`` (one network) and the searches'
and ensembles' stacks (many).  What differs between them is a small
:class:`Policy` per network: how it orders its samples each epoch (and the
per-step weight decay, L2 term and sample weights that go with that order),
what it records, when it stops, and which weights it ends with.  The loop
itself is here: stage every network's epoch, run it, read the statistics
once, evaluate the validation rows the policies ask for, let each policy
take its epoch in, keep the weights a policy calls its best, and at the end
put in place the weights each policy chooses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np

from .loop import TrainingLoop


@dataclass
class EpochPlan:
    """One network's next epoch: its rows of the loop's data in order (int64), and per step its weight decay
    and L2 loss scale (or None), and the sample weights of its rows in that order (or None)."""

    order: np.ndarray
    weight_decay: np.ndarray | None = None
    penalty: np.ndarray | None = None
    sample_weights: np.ndarray | None = None


#: what a network ends with: its last weights, its best (kept by :func:`train`), or given host weights
FinalWeights = Union[str, np.ndarray]


class Policy:
    """What one network's run decides, epoch by epoch; :func:`train` does everything else.

    Subclasses implement :meth:`plan_epoch` and :meth:`end_epoch`, and set
    :attr:`done` when the run is over.  The other methods have defaults that
    do nothing.
    """

    #: the run is over: the network is frozen while the loop's other networks go on
    done: bool = False
    #: rows of the runner's validation data whose logits :meth:`end_epoch` receives (None: no validation)
    validation_rows: np.ndarray | None = None
    #: host weights to start the kept best weights from (a resumed run), or None
    initial_best: np.ndarray | None = None

    def attach(self, runner: "Runner", index: int) -> None:
        """Called once before training: this policy's network is ``runner``'s network ``index``."""
        self.runner, self.index = runner, index

    def begin_epoch(self) -> None:
        """Called before the epoch is planned."""

    def plan_epoch(self) -> EpochPlan:
        raise NotImplementedError

    on_step: Callable[[int], bool] | None = None
    """``on_step(steps_done)`` after every step of an eager epoch (a progress bar, an interrupt); True ends the
    epoch there.  None (the default) for no call per step."""

    def end_epoch(self, totals: np.ndarray, steps_ran: int, val_logits: np.ndarray | None) -> bool:
        """Take in the epoch: ``totals`` (STATS_SIZE,) its loss statistics, ``steps_ran`` how many steps ran,
        ``val_logits`` the logits of :attr:`validation_rows` (or None).  Returns True when the network's
        weights are its best so far (the runner keeps a copy)."""
        raise NotImplementedError

    def final_weights(self) -> FinalWeights:
        """Once :attr:`done`: ``"last"`` (default), ``"best"`` (the last weights :meth:`end_epoch` called best)
        or host weights (P,) to put in place."""
        return "last"

    def finished(self, replaced: np.ndarray | None) -> None:
        """Called after the final weights are in place; ``replaced`` holds the weights they replaced (host
        copy), None when the network kept its last weights."""


class Runner:
    """The state of one :func:`train` call that policies may read: the loop and each network's kept best."""

    def __init__(self, loop: TrainingLoop, policies: Sequence[Policy]) -> None:
        self.loop, self.policies = loop, list(policies)
        self.best: Any = None  # (M, P) on the backend, made when a policy first keeps weights
        self.has_best = np.zeros(loop.net.M, dtype=bool)
        for m, policy in enumerate(self.policies):
            policy.attach(self, m)
            if policy.initial_best is not None:
                self._best_buffer()
                loop.backend.copy_(self.best[m], np.asarray(policy.initial_best, dtype=loop.net.dtype))
                self.has_best[m] = True

    def _best_buffer(self) -> Any:
        if self.best is None:
            net = self.loop.net
            self.best = self.loop.backend.empty((net.M, net.params.shape[1]), net.dtype)
        return self.best

    def keep(self, m: int) -> None:
        """Keep network ``m``'s current weights as its best."""
        self.loop.backend.copy_(self._best_buffer()[m], self.loop.net.params[m])
        self.has_best[m] = True

    def best_host(self, m: int) -> np.ndarray | None:
        """Host copy of network ``m``'s kept best weights (None before any)."""
        if not self.has_best[m]:
            return None
        return np.array(self.loop.backend.to_numpy(self.best[m]), copy=True)

    def params_host(self, m: int) -> np.ndarray:
        """Host copy of network ``m``'s current weights."""
        return np.array(self.loop.backend.to_numpy(self.loop.net.params[m]), copy=True)


def train(loop: TrainingLoop, policies: Sequence[Policy], *, validation_X: Any = None,
          after_epoch: Callable[[Sequence[int]], Any] | None = None, interrupt: str = "raise") -> Runner:
    """Run ``loop``'s epochs until every policy is done, then put each network's final weights in place.

    ``policies[m]`` runs network m.  ``validation_X``: the data (on the
    loop's backend) the policies' :attr:`~Policy.validation_rows` index
    (default: the loop's own data).  ``after_epoch(trained)`` is called after
    each epoch with the indices of the networks that trained in it (a
    progress bar).  ``interrupt``: on ``KeyboardInterrupt``, ``"raise"`` it
    (after nothing more), or ``"warn"`` (scikit-learn's rule: one warning,
    training stops, each network ends with its policy's final weights).
    """
    runner = Runner(loop, policies)
    try:
        while not all(p.done for p in policies):
            _epoch(runner, validation_X, after_epoch)
    except KeyboardInterrupt:
        if interrupt != "warn":
            raise
        warnings.warn("Training interrupted by user.")
    be, net = loop.backend, loop.net
    for m, policy in enumerate(policies):
        choice = policy.final_weights()
        replaced = None
        if isinstance(choice, str) and choice == "best":
            if not runner.has_best[m]:
                raise RuntimeError(f"policies[{m}]: asked for its best weights, but none were kept")
            replaced = runner.params_host(m)
            be.copy_(net.params[m], runner.best[m])
        elif not isinstance(choice, str):
            replaced = runner.params_host(m)
            be.copy_(net.params[m], np.asarray(choice, dtype=net.dtype))
        elif choice != "last":
            raise ValueError(f"policies[{m}].final_weights(): expected 'last', 'best' or host weights, got {choice!r}")
        policy.finished(replaced)
    return runner


def _epoch(runner: Runner, validation_X: Any, after_epoch: Callable | None) -> None:
    loop, policies = runner.loop, runner.policies
    active = [m for m, p in enumerate(policies) if not p.done]
    plans: list[EpochPlan | None] = [None] * len(policies)
    for m in active:
        policies[m].begin_epoch()
        plans[m] = policies[m].plan_epoch()
    weighted = loop.sample_weights is not None
    loop.stage([None if p is None else p.order for p in plans],
               weight_decay=[None if p is None else p.weight_decay for p in plans],
               penalty=[None if p is None else p.penalty for p in plans],
               sample_weights=[None if p is None else p.sample_weights for p in plans] if weighted else None)
    callbacks = [policies[m].on_step for m in active if policies[m].on_step is not None]

    def every_callback(done: int) -> bool:  # each is called (a bar advances) even when an earlier one stops
        return any([cb(done) for cb in callbacks])

    ran = loop.epoch(every_callback if callbacks else None)
    totals = loop.totals()  # the epoch's one synchronisation
    wanted = [policies[m].validation_rows if m in active else None for m in range(len(policies))]
    logits = loop.logits(wanted, validation_X) if any(w is not None for w in wanted) else [None] * len(policies)
    for m in active:
        if policies[m].end_epoch(totals[m], ran, logits[m]):
            runner.keep(m)
    if after_epoch is not None:
        after_epoch(active)
