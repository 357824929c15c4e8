"""Ctrl-C during training: stop at the next step boundary, never in the middle of an update."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Union


class StopAtStepBoundary:
    """While active in the main thread, Ctrl-C (SIGINT) sets :attr:`requested` instead of raising at once.

    The step loop checks the flag between steps, so the weights are never
    left half-updated.  A second Ctrl-C raises ``KeyboardInterrupt`` straight
    away.  The previous handler comes back on exit.  In another thread, or
    where SIGINT is ignored or handled outside Python, nothing is installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "StopAtStepBoundary":
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None and previous is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, self._request)
                self._previous = previous
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def interrupted_message(epoch: int, where: str, checkpoint: Union[str, Path, None]) -> str:
    """The ``KeyboardInterrupt`` message of a run stopped in ``epoch`` (``where``: "after step k of n", ...)."""
    saved = f"; {checkpoint} holds the last complete epoch" if checkpoint is not None else ""
    return f"training interrupted in epoch {epoch} {where}; trainer.history holds the complete epochs{saved}"
