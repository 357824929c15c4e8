"""Per-device tuning tables for the matrix products: measured choices that override ``plan``'s heuristic.

A table lives in ``kernels/tuning/<kind>.json``, where ``kind`` is the device
name as CUDA reports it, normalised by :func:`device_kind` (``"NVIDIA H100
80GB HBM3"`` gives ``nvidia-h100-80gb-hbm3``).  ``bench/tune_gemm.py`` writes
it on that kind of GPU::

    {"device": "NVIDIA H100 80GB HBM3", "kind": "nvidia-h100-80gb-hbm3",
     "entries": [{"variant": "forward", "dtype": "float32", "m": 128, "n": 512, "k": 784,
                  "config": "32x64", "split_k": 4}, ...],
     "measurements": [...]}

``m, n, k`` are the product's dimensions as ``gemm.plan`` sees them (for dW
the batch is K).  ``measurements`` (the raw timings) are kept for the record
and ignored here.  A shape without an entry falls back to the heuristic.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

TUNING_DIR = Path(__file__).resolve().parent / "tuning"

#: ``(variant, dtype name, m, n, k)`` -> ``(tile configuration, split_k)``
Table = Mapping[tuple[str, str, int, int, int], tuple[str, int]]

_VARIANTS = ("forward", "dx", "dw")


def device_kind(name: str | bytes) -> str:
    """The file stem for a device name: lower case, runs of other characters as one ``-``."""
    if isinstance(name, bytes):
        name = name.decode()
    kind = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not kind:
        raise ValueError(f"device name: expected some letters or digits, got {name!r}")
    return kind


def table_path(device_name: str | bytes, directory: Path | None = None) -> Path:
    """Where the table for ``device_name`` lives."""
    return (directory or TUNING_DIR) / f"{device_kind(device_name)}.json"


def key(variant: str, dtype: Any, m: int, n: int, k: int) -> tuple[str, str, int, int, int]:
    return (variant, np.dtype(dtype).name, int(m), int(n), int(k))


def parse_table(doc: Mapping[str, Any], configs: Iterable[str]) -> dict:
    """The lookup table of a tuning document; raises ValueError naming the bad entry."""
    known = set(configs)
    table = {}
    for i, e in enumerate(doc.get("entries", ())):
        try:
            variant, config, split_k = e["variant"], e["config"], int(e["split_k"])
            k_ = key(variant, e["dtype"], e["m"], e["n"], e["k"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tuning entry {i}: expected variant, dtype, m, n, k, config, split_k; "
                             f"got {e!r} ({exc})") from exc
        if variant not in _VARIANTS:
            raise ValueError(f"tuning entry {i}: variant: expected one of {_VARIANTS}, got {variant!r}")
        if config not in known:
            raise ValueError(f"tuning entry {i}: config: expected one of {sorted(known)}, got {config!r}")
        if split_k < 1:
            raise ValueError(f"tuning entry {i}: split_k: expected an integer >= 1, got {split_k}")
        table[k_] = (config, split_k)
    return table


def load_table(path: Path, configs: Iterable[str]) -> dict:
    """The table stored at ``path``, or an empty one when there is no such file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    return parse_table(json.loads(text), configs)


def document(device_name: str, entries: list[dict], measurements: list[dict]) -> dict:
    """A tuning document for ``device_name`` (what :func:`load_table` reads back)."""
    return {"device": device_name, "kind": device_kind(device_name),
            "entries": entries, "measurements": measurements}


@functools.lru_cache(maxsize=None)
def current_device_name() -> str | None:
    """The current CUDA device's name, or None under the simulator."""
    from numba import cuda

    from ._config import ON_SIMULATOR

    if ON_SIMULATOR:
        return None
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)
