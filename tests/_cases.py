"""Parameter matrices for the kernel tests: the full product on a GPU, every pair of values on the simulator.

Numba's CUDA simulator runs each GPU thread as a Python thread, so a test
there costs about a second; the full product of five small axes is a hundred
and more of them.  Kernel bugs show in one value or in the meeting of two
(a dtype with a width, weights with a row count), so on the simulator the
tests run a set of cases in which every pair of values of any two axes meets
at least once; on a real GPU they run every combination.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Sequence

ON_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def pairwise(*axes: Sequence[Any]) -> list[tuple]:
    """Cases covering every pair of values of any two axes (greedy: each new case covers the most pairs
    not yet covered), in a fixed order."""
    pairs = list(itertools.combinations(range(len(axes)), 2))
    todo = {(i, a, j, b) for i, j in pairs for a in range(len(axes[i])) for b in range(len(axes[j]))}
    candidates = list(itertools.product(*(range(len(a)) for a in axes)))
    chosen = []
    while todo:
        best = max(candidates, key=lambda c: sum((i, c[i], j, c[j]) in todo for i, j in pairs))
        chosen.append(best)
        todo -= {(i, best[i], j, best[j]) for i, j in pairs}
    if not pairs:  # one axis: every value
        chosen = candidates
    return [tuple(axes[k][c[k]] for k in range(len(axes))) for c in chosen]


def matrix(*axes: Sequence[Any]) -> list[tuple]:
    """Every combination of the axes on a GPU; :func:`pairwise` cases on the simulator."""
    return pairwise(*axes) if ON_SIMULATOR else list(itertools.product(*axes))
