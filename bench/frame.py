"""A results folder as one pandas DataFrame (the benchmarks) and one dict (the run and the machine).

The frame has one row per benchmark of pytest-benchmark's JSON: ``name``,
pytest-benchmark's statistics of a round (``median``, ``min``, ``iqr``,
``rounds``), every ``extra_info`` key the suites record (``suite``, ``op``,
``device``, ``impl``, ``group``, ``batch``, ``optimizer``, ``m``/``k``/``n``,
``epoch_seconds``, ...), and columns derived from them:

``seconds``
    One operation, in seconds: the round's median over ``inner`` (calls per
    round); for an epoch, the median of the trainer's own epoch times; for a
    limit (a ceiling), the fastest round.
``call_seconds``
    pytest-benchmark's median round over ``inner`` (for an epoch: the whole
    ``fit`` call).
``spread``
    Interquartile range over the median of the rounds (of the epochs, for an epoch).
``gflops``, ``gbps``, ``epoch_60k``
    Throughput, and seconds per epoch of 60 000 samples (scaled when fewer were timed).
``products_ratio``, ``products_median``, ``products_fastest_ratio``, ``products_rounds``
    For a NumPy-backend epoch whose matrix products were timed before every
    round: the median of the per-round ratios epoch / products (a drift in
    machine speed cancels out of each pair), the products' median, the
    fastest epoch over the fastest products, and the number of pairs.
``shape``
    A label for tables: ``4096³``, ``batch 128, 784→512``, ``1,000 × 10``.

Rows without the suites' ``extra_info`` (no ``suite``) are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench._measure import N_SAMPLES

BENCHMARK_JSON = "benchmark.json"
#: The machine and availability record of results written before it moved into ``benchmark.json``.
LEGACY_ENVIRONMENT_JSON = "environment.json"

#: ``extra_info`` keys the report reads, present as columns even when no benchmark recorded them.
INFO_COLUMNS = ("suite", "op", "device", "impl", "group", "config", "plan", "optimizer", "sweep", "inner", "m",
                "k", "n", "rows", "classes", "bytes", "flop", "batch", "samples", "width", "steps", "threads",
                "launches_per_epoch", "launches_per_step", "epoch_seconds", "products_seconds")
_INTEGERS = ("inner", "m", "k", "n", "rows", "classes", "bytes", "flop", "batch", "samples", "width", "steps",
             "threads", "launches_per_epoch")
_STATS = ("median", "min", "iqr", "rounds")


def _median(values: Any) -> float:
    return float(np.median(values)) if isinstance(values, list) and values else np.nan


def _spread(values: Any) -> float:
    if not isinstance(values, list) or len(values) < 2:
        return np.nan
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float((q3 - q1) / np.median(values))


def _paired_ratio(row: pd.Series) -> float:
    """Median of epoch / products over the rounds (one products timing right before each epoch)."""
    epochs, products = row["epoch_seconds"], row["products_seconds"]
    if not isinstance(products, list) or not products:
        return np.nan
    if isinstance(epochs, list) and len(epochs) == len(products):
        return float(np.median(np.asarray(epochs) / np.asarray(products)))
    return row["seconds"] / float(np.median(products))


def _fastest_ratio(row: pd.Series) -> float:
    epochs, products = row["epoch_seconds"], row["products_seconds"]
    if isinstance(epochs, list) and epochs and isinstance(products, list) and products:
        return min(epochs) / min(products)
    return np.nan


def _shape(row: pd.Series) -> str:
    if pd.notna(row["rows"]) and pd.notna(row["classes"]):
        return f"{row['rows']:,} × {row['classes']:,}"
    if pd.isna(row["m"]):
        return ""
    if row["group"] == "square" or str(row["op"]).startswith("limit_"):
        return f"{row['m']}³"
    return f"batch {row['m']}, {row['k']}→{row['n']}"


def frame(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per benchmark of pytest-benchmark's JSON ``doc``, with the derived columns above."""
    raw = pd.json_normalize(doc.get("benchmarks", []), max_level=1)
    info = (raw.filter(regex=r"^extra_info\.").rename(columns=lambda c: c.removeprefix("extra_info."))
            .reindex(columns=list(dict.fromkeys([*INFO_COLUMNS, *(c.removeprefix("extra_info.") for c in raw
                                                                  if c.startswith("extra_info."))]))))
    stats = raw.reindex(columns=[f"stats.{s}" for s in _STATS]).set_axis(list(_STATS), axis=1)
    df = pd.concat([raw.reindex(columns=["name"]), stats, info], axis=1)
    if "group" in raw:  # pytest-benchmark's own group, where the suites set none of theirs
        df["group"] = df["group"].combine_first(raw["group"])
    df = df[df["suite"].notna() & df["median"].notna()].reset_index(drop=True)
    df[list(_INTEGERS)] = df[list(_INTEGERS)].apply(pd.to_numeric, errors="coerce").round().astype("Int64")

    inner = df["inner"].fillna(1).clip(lower=1).astype(float)
    ceiling = df["op"].astype(str).str.startswith("limit_")
    df["call_seconds"] = df["median"] / inner
    df["seconds"] = df["epoch_seconds"].map(_median).fillna(df["min"].where(ceiling, df["median"]) / inner)
    df["spread"] = df["epoch_seconds"].map(_spread).fillna(df["iqr"] / df["median"])
    df["samples"] = df["samples"].fillna(N_SAMPLES)
    df["epoch_60k"] = df["seconds"] * N_SAMPLES / df["samples"].astype(float)
    df["gflops"] = df["flop"].astype(float) / df["seconds"] / 1e9
    df["gbps"] = df["bytes"].astype(float) / df["seconds"] / 1e9
    df["logits_bytes"] = df["rows"].astype(float) * df["classes"].astype(float) * 4
    df["products_median"] = df["products_seconds"].map(_median)
    df["products_rounds"] = df["products_seconds"].map(lambda v: len(v) if isinstance(v, list) else 0)
    if df.empty:
        df["products_ratio"] = df["products_fastest_ratio"] = df["shape"] = pd.Series(dtype=float)
        return df
    df["products_ratio"] = df.apply(_paired_ratio, axis=1)
    df["products_fastest_ratio"] = df.apply(_fastest_ratio, axis=1)
    df["shape"] = df.apply(_shape, axis=1)
    return df


def select(df: pd.DataFrame, **criteria: Any) -> pd.DataFrame:
    """The rows whose columns equal every one of ``criteria``."""
    mask = pd.Series(True, index=df.index)
    for column, value in criteria.items():
        mask &= (df[column] == value).fillna(False).astype(bool)
    return df[mask]


def first(df: pd.DataFrame, **criteria: Any) -> pd.Series | None:
    found = select(df, **criteria)
    return None if found.empty else found.iloc[0]


def run_record(doc: dict[str, Any], legacy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine and the run, from pytest-benchmark's records and the suites' additions.

    pytest-benchmark's ``machine_info``, ``commit_info``, ``datetime`` and
    ``version`` are kept as they are; the suites add ``machine_info["mlp"]``
    (backends present and why not, versions, GPU, BLAS: see
    :func:`bench._env.machine_extras`) and ``doc["mlp"]`` (the run's options
    and what was skipped or failed).  Results of the older format kept all of
    it in ``doc["mlp"]`` and a separate ``environment.json`` (``legacy``).
    """
    machine = dict(doc.get("machine_info") or {})
    record: dict[str, Any] = dict(legacy or {})
    record.update(doc.get("mlp") or {})
    record.update(machine.pop("mlp", None) or {})
    record["machine_info"] = machine
    record["commit_info"] = doc.get("commit_info") or {}
    record["datetime"] = doc.get("datetime")
    record["pytest_benchmark"] = doc.get("version")
    return record


def load(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The benchmarks and the run record of a results folder (an empty frame when it has no results)."""
    folder = Path(folder)
    doc = json.loads((folder / BENCHMARK_JSON).read_text()) if (folder / BENCHMARK_JSON).is_file() else {}
    legacy_path = folder / LEGACY_ENVIRONMENT_JSON
    legacy = json.loads(legacy_path.read_text()) if legacy_path.is_file() else None
    return frame(doc), run_record(doc, legacy)
