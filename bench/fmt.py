"""How the report writes figures (times, rates, percentages, ratios) and tables (Markdown, via tabulate)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

MISSING = "—"


def _absent(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v))


def fmt_time(s: Any) -> str:
    if _absent(s):
        return MISSING
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_num(v: Any) -> str:
    if _absent(v):
        return MISSING
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_pct(v: Any) -> str:
    return MISSING if _absent(v) else f"{100 * v:.0f}%"


def fmt_x(v: Any) -> str:
    return MISSING if _absent(v) else f"{v:.2f}×"


def fmt_int(v: Any) -> str:
    return MISSING if _absent(v) else f"{int(v)}"


def markdown(table: pd.DataFrame, align: str | None = None, drop_empty: bool = True) -> str:
    """``table`` (cells already formatted) as a Markdown pipe table.

    ``align`` has one ``l`` or ``r`` per column (default: first left, rest
    right).  With ``drop_empty``, columns after the first whose cells are all
    empty or "—" (nothing measured for them in this run) are left out.
    """
    align = align or "l" + "r" * (table.shape[1] - 1)
    if len(align) != table.shape[1]:
        raise ValueError(f"align: expected {table.shape[1]} letters, got {align!r}")
    cells = table.fillna(MISSING).astype(str).apply(lambda col: col.str.replace("|", "\\|").str.replace("\n", " "))
    if drop_empty and not cells.empty:
        keep = [i for i, c in enumerate(cells.columns) if i == 0 or not cells[c].isin((MISSING, "")).all()]
        cells, align = cells.iloc[:, keep], "".join(align[i] for i in keep)
    return cells.to_markdown(index=False, tablefmt="pipe", disable_numparse=True,
                             colalign=["left" if a == "l" else "right" for a in align])
