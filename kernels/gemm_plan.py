"""Which tile configuration and how many K splits each matrix product of ``gemm`` gets.

:func:`plan` answers for one product of ``m x n`` outputs over ``k`` (the
generic product's dimensions; ``gemm_kernel.product_shape`` maps a layer's
``batch, in, out`` onto them).  ``"auto"`` takes the current device's measured
tuning table entry for the product (``kernels/tuning/``, written by
``bench/tune_gemm.py``, read by :func:`tuning_table`), else picks by output
size against the SM count.  :func:`selectable_kernels` lists every kernel
the launchers can pick, so that a warm-up can build them all.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ._config import check_float_dtype, sm_count
from . import _tuning
from ._launch import ceil_div
from .gemm_kernel import TILES, VARIANTS, TileConfig

#: Names accepted by the launchers' ``config`` argument.
CONFIG_NAMES = ("auto", *TILES)

MAX_SPLIT_K = 32

#: Tiles the heuristic of :func:`plan` picks from, by dtype: float64 never
#: takes 128x128 (64 float64 accumulators per thread exhaust the registers).
AUTO_TILES: dict[str, tuple[str, ...]] = {
    "float32": ("32x64", "64x64", "128x128"),
    "float64": ("32x64", "64x64"),
}
_LARGE, _FEW_ROWS, _MEDIUM = "128x128", "32x64", "64x64"
_FEW_ROWS_MAX = 32


@functools.lru_cache(maxsize=None)
def tuning_table() -> dict:
    """The measured table for the current device (``kernels/tuning/``), empty if none or on the simulator."""
    name = _tuning.current_device_name()
    if name is None:
        return {}
    return _tuning.load_table(_tuning.table_path(name), TILES)


def plan(m: int, n: int, k: int, config: str = "auto", split_k: int | None = None,
         dtype: Any = np.float32, variant: str | None = None) -> tuple[str, int]:
    """``(tile configuration, K splits)`` for an (m x k) @ (k x n) product (see ``product_shape``).

    ``auto`` with ``split_k=None``: the current device's tuning table entry
    for ``(variant, dtype, m, n, k)`` when there is one, else the heuristic:
    the 128x128 tile when it alone yields a full wave of blocks (float32
    only, see ``AUTO_TILES``), 32x64 for at most 32 rows, else 64x64; K is
    split only when the tiles cannot fill the device: up to two blocks per
    SM, at least four K slices per split, at most ``MAX_SPLIT_K``.
    """
    if config not in TILES and config != "auto":
        raise ValueError(f"config: expected one of {CONFIG_NAMES}, got {config!r}")
    dt = check_float_dtype(dtype)
    if config == "auto" and split_k is None and variant is not None:
        config, split_k = tuning_table().get(_tuning.key(variant, dt, m, n, k), ("auto", None))
    sms = sm_count()

    def tiles(cfg: TileConfig) -> int:
        return max(1, ceil_div(m, cfg.bm)) * ceil_div(n, cfg.bn)

    if config == "auto":
        if _LARGE in AUTO_TILES[dt.name] and tiles(TILES[_LARGE]) >= sms:
            config = _LARGE
        elif m <= _FEW_ROWS_MAX:
            config = _FEW_ROWS
        else:
            config = _MEDIUM
    cfg = TILES[config]
    k_slices = ceil_div(k, cfg.bk)
    if split_k is None:
        blocks = tiles(cfg)
        split_k = 1
        if blocks < sms:
            split_k = max(1, min(ceil_div(2 * sms, blocks), k_slices // 4, MAX_SPLIT_K))
    split_k = int(split_k)
    if split_k < 1:
        raise ValueError(f"split_k: expected an integer >= 1, got {split_k}")
    return config, min(split_k, MAX_SPLIT_K, max(1, k_slices))


def selectable_kernels(dtype: Any, config: str = "auto") -> set[tuple[str, str]]:
    """Every ``(tile configuration, variant)`` the launchers can pick for ``dtype`` and ``config``.

    ``auto``: the heuristic's ``AUTO_TILES`` and the current device's tuning
    table entries for the dtype; a named configuration: that one alone.
    The tile does not depend on the activation, and every pair is launched
    with each activation code (the identity's backward whenever ``y`` is
    None), so the kernels a launcher can pick are
    ``gemm_kernel(dtype, c, VARIANTS[v], act)`` for every pair and every
    ``act`` in ``range(len(ACTIVATIONS))``.
    """
    dt = check_float_dtype(dtype)
    if config != "auto":
        plan(1, 1, 1, config, 1, dt)  # validates the name
        return {(config, v) for v in VARIANTS}
    picks = {(c, v) for c in AUTO_TILES[dt.name] for v in VARIANTS}
    picks |= {(c, key[0]) for key, (c, _) in tuning_table().items() if key[1] == dt.name}
    return picks
