"""The benchmark report: ``report.md`` and its plots, from the results folder's ``benchmark.json``.

Everything here reads the results folder only, so a report can be rebuilt
from committed results (``python -m bench.report DIR``) without rerunning
anything.  The benchmarks are one pandas DataFrame (:mod:`bench.frame`);
every table and ratio is derived from it, the targets come from the table in
:mod:`bench.targets`, the plots from :mod:`bench.plots`, and the header from
pytest-benchmark's own ``machine_info`` and ``commit_info`` plus what the
suites add to them (``machine_info["mlp"]``: backends present and why not,
library versions, GPU, BLAS).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench._env import SUBJECTS
from bench._measure import N_SAMPLES
from bench.fmt import fmt_int, fmt_num, fmt_pct, fmt_time, fmt_x, markdown
from bench.frame import BENCHMARK_JSON, LEGACY_ENVIRONMENT_JSON, first, load, select
from bench.plots import IMPL_LABELS, PLOTS, adam_epochs, limits, write_plots
from bench.targets import Outcome, Target, bound_text, evaluate_all

REPORT = "report.md"
_GEMM_KEY = ["m", "k", "n"]
_LIBRARIES = ("numpy", "numba", "numba-cuda", "cupy", "torch", "scikit-learn", "pandas", "matplotlib")


def clean(folder: Path) -> None:
    """Remove the files a previous run wrote here (only those names)."""
    for name in (REPORT, BENCHMARK_JSON, LEGACY_ENVIRONMENT_JSON, *PLOTS):
        (Path(folder) / name).unlink(missing_ok=True)


def _beside(left: pd.DataFrame, right: pd.DataFrame, key: list[str], suffix: str,
            columns: tuple[str, ...] = ("seconds", "gflops")) -> pd.DataFrame:
    """``left`` with ``right``'s ``columns`` (named ``<column>_<suffix>``) of the row that matches on ``key``."""
    right = right.drop_duplicates(key)[[*key, *columns]].rename(columns={c: f"{c}_{suffix}" for c in columns})
    return left.merge(right, on=key, how="left")


# ------------------------------------------------------------------ header
def _date(env: dict[str, Any]) -> str:
    if env.get("datetime"):
        when = _dt.datetime.fromisoformat(env["datetime"]).astimezone(_dt.timezone.utc)
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return env.get("date") or "not recorded"


def _commit(env: dict[str, Any]) -> str:
    info = env.get("commit_info") or {}
    if info.get("id"):
        text = f"`{info['id']}{'-dirty' if info.get('dirty') else ''}`"
        return text + (f" (branch {info['branch']})" if info.get("branch") else "")
    return f"`{env['git_commit']}`" if env.get("git_commit") else "not recorded"


def _mode(env: dict[str, Any]) -> str:
    opts = env.get("options", {})
    mode = "tiny (a check of the harness)" if opts.get("tiny") else "quick" if opts.get("quick") else \
        "full" if opts else "not recorded"
    if opts.get("skip_cpu"):
        mode += ", --skip-cpu"
    if opts.get("parts"):
        mode += f", a session of {len(opts['parts'])} benchmark parts ({', '.join(opts['parts'])})"
    suites = env.get("outcomes", {}).get("suites")
    return mode + (f" (suites: {', '.join(suites)})" if suites else "")


def _gpu_line(env: dict[str, Any]) -> str:
    gpu = env.get("gpu")
    if gpu and "error" not in gpu:
        cc = ".".join(str(x) for x in gpu.get("compute_capability") or [])
        mem = gpu.get("total_memory_bytes")
        extra = [f"CuPy built for CUDA runtime {gpu['cupy_runtime_version']}" if gpu.get("cupy_runtime_version")
                 else "", f"PyTorch built for CUDA {gpu['torch_cuda_version']}" if gpu.get("torch_cuda_version")
                 else ""]
        return (f"{gpu.get('name')} (compute capability {cc}, {gpu.get('sm_count')} SMs"
                + (f", {mem / 2**30:.0f} GiB" if mem else "") + f"); driver {gpu.get('driver_version') or '?'}, "
                f"CUDA runtime {gpu.get('runtime_version') or 'unknown'}" + "".join(f"; {e}" for e in extra if e))
    if gpu:
        return f"present, but describing it failed ({gpu['error']})"
    reason = env.get("availability", {}).get("cuda", {}).get("detail")
    return f"none usable ({reason})" if reason else "not recorded"


def _header(env: dict[str, Any], title: str) -> list[str]:
    machine, legacy_cpu = env.get("machine_info") or {}, env.get("cpu") or {}
    cpu = (machine.get("cpu") or {}).get("brand_raw") or legacy_cpu.get("model")
    cores = env.get("cores") or legacy_cpu.get("cores") or (machine.get("cpu") or {}).get("count")
    ram = env.get("ram_bytes") or legacy_cpu.get("ram_bytes")
    v = dict(env.get("versions") or {})
    v["python"] = machine.get("python_version") or v.get("python")
    v["pytest-benchmark"] = env.get("pytest_benchmark") or v.get("pytest-benchmark")
    platform = (f"{machine['system']} {machine.get('release', '')} ({machine.get('machine', '')}), "
                f"{machine.get('python_implementation', 'Python')} built with {machine.get('python_compiler', '?')}"
                if machine.get("system") else env.get("platform") or "not recorded")
    lines = [f"# mlp benchmarks: {title}", "",
             f"- **Date**: {_date(env)}; **commit**: {_commit(env)}; **run**: {_mode(env)}",
             f"- **CPU**: {cpu or 'not recorded'}, {cores or '?'} cores" + (f", {ram / 2**30:.0f} GiB RAM" if ram else "")]
    lines += [f"- **BLAS** (NumPy): {lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')}, "
              f"{lib.get('num_threads')} threads, `{lib.get('library')}`)" for lib in env.get("blas", [])[:1]]
    lines += [f"- **GPU**: {_gpu_line(env)}",
              "- **Versions**: " + ", ".join(f"{n} {v[n] or 'not installed'}"
                                             for n in ("python", *_LIBRARIES, "pytest-benchmark") if n in v),
              f"- **Platform**: {platform}"]
    lacking = [what for what, key in (("which backends and peers were present", "availability"),
                                      ("library versions", "versions"), ("the run's options", "options"),
                                      ("skipped and failed benchmarks", "outcomes"))
               if key not in env]
    if lacking:
        lines.append(f"- **Not recorded in these results**: {', '.join(lacking)} (written by an older or a plain "
                     "pytest-benchmark run); the sections that need them say so.")
    return lines


# ----------------------------------------------------------------- targets
def _why_absent(env: dict[str, Any]):
    def reason(target: Target) -> str:
        avail = env.get("availability", {})
        for name in target.needs:
            entry = avail.get(name)
            if entry is not None and not entry.get("present", False):
                return f"{name} absent: {entry.get('detail', '')}"
        ran = env.get("outcomes", {}).get("suites")
        if ran is not None and target.suite not in ran:
            return f"the {target.suite} suite was not run"
        if target.cpu_only and env.get("options", {}).get("skip_cpu"):
            return "not run: --skip-cpu"
        return "no result in this run (left out by -k, or failed: see below)"
    return reason


def target_outcomes(df: pd.DataFrame, env: dict[str, Any]) -> list[Outcome]:
    """Every target of :data:`bench.targets.TARGETS` read against the run; unmeasured ones say why."""
    return evaluate_all(df, _why_absent(env))


def _targets_section(df: pd.DataFrame, env: dict[str, Any]) -> list[str]:
    outcomes = target_outcomes(df, env)
    table = pd.DataFrame({
        "target": [o.target.what for o in outcomes],
        "bound": [bound_text(o.target) for o in outcomes],
        "measured": [o.measured for o in outcomes],
        "status": [o.status if o.status == "not measured" else f"**{o.status}**" for o in outcomes],
        "note": [o.note for o in outcomes],
        "figures from": [o.target.source for o in outcomes],
    })
    return ["## Targets", "",
            "Each target is a ratio of two figures of this run (benchmarks, never test assertions); the table of "
            "targets and the source of each figure is `bench/targets.py`. A target whose inputs were not measured "
            "here says why.", "", markdown(table, "lrllll", drop_empty=False), ""]


# ----------------------------------------------------------------- kernels
def _limits_section(lim: dict[str, pd.Series | None]) -> list[str]:
    labels = {"gpu_sgemm": "GPU: cuBLAS SGEMM (CuPy, FP32, TF32 off)", "gpu_copy": "GPU: device-to-device copy",
              "cpu_sgemm": "CPU: BLAS SGEMM (numpy.matmul)", "cpu_copy": "CPU: memory copy (numpy.copyto, 1 thread)"}
    rows = []
    for key, label in labels.items():
        r = lim[key]
        if r is None:
            continue
        if key.endswith("sgemm"):
            rows.append([label, f"{r['m']}³ float32", f"{fmt_num(r['gflops'])} GFLOP/s", fmt_time(r["seconds"])])
        else:
            rows.append([label, f"{r['bytes'] / 2 / 2**20:,.0f} MiB", f"{fmt_num(r['gbps'])} GB/s (read + write)",
                         fmt_time(r["seconds"])])
    if not rows:
        return ["No limit was measured in this run, so fractions of the limits are not shown.", ""]
    return [markdown(pd.DataFrame(rows, columns=["limit", "size", "measured", "time"])), ""]


def _gemm_rows(df: pd.DataFrame, op: str, device: str) -> pd.DataFrame:
    mine = select(df, op=op, device=device, impl="mlp")
    return mine.assign(_square=mine["group"] != "reference", _k=-mine["k"]).sort_values(["_square", "m", "_k"])


def _text(column: pd.Series) -> pd.Series:
    return column.map(lambda v: v if isinstance(v, str) else "")


def _of(value: pd.Series, limit: pd.Series | None, column: str) -> pd.Series:
    return value / limit[column] if limit is not None else pd.Series(float("nan"), index=value.index)


_WHAT = {"forward": "forward: relu(x @ W + b)", "backward": "backward: dW, db (and dx) with the ReLU mask"}


def _gemm_section_gpu(df: pd.DataFrame, op: str, lim: dict[str, pd.Series | None]) -> list[str]:
    mine = _gemm_rows(df, op, "gpu")
    if mine.empty:
        return []
    t = _beside(mine, select(df, op=op, device="gpu", impl="cublas"), _GEMM_KEY, "cublas")
    t = _beside(t, select(df, op=op, device="gpu", impl="cublas+epilogue"), _GEMM_KEY, "alt")
    t = _beside(t, select(df, op=op, device="cpu", impl="mlp"), _GEMM_KEY, "cpu")
    alt_name = "bias+ReLU" if op == "forward" else "mask + column sum"
    table = pd.DataFrame({
        "shape": t["shape"], "mlp": t["seconds"].map(fmt_time), "GFLOP/s": t["gflops"].map(fmt_num),
        "% of SGEMM limit": _of(t["gflops"], lim["gpu_sgemm"], "gflops").map(fmt_pct),
        "cuBLAS only": t["seconds_cublas"].map(fmt_time), "% of cuBLAS": (t["gflops"] / t["gflops_cublas"]).map(fmt_pct),
        f"cuBLAS + {alt_name}": t["seconds_alt"].map(fmt_time),
        "speedup vs that": (t["seconds_alt"] / t["seconds"]).map(fmt_x),
        "speedup vs NumPy backend": (t["seconds_cpu"] / t["seconds"]).map(fmt_x),
        "tiles (auto)": _text(t["plan"]),
    })
    return [f"#### GPU, affine {_WHAT[op]}", "", markdown(table, "lrrrrrrrrl"), ""]


def _gemm_section_cpu(df: pd.DataFrame, op: str, lim: dict[str, pd.Series | None]) -> list[str]:
    mine = _gemm_rows(df, op, "cpu")
    if mine.empty:
        return []
    t = _beside(mine, select(df, op=op, device="cpu", impl="matmul"), _GEMM_KEY, "mm")
    table = pd.DataFrame({
        "shape": t["shape"], "NumPy backend": t["seconds"].map(fmt_time), "GFLOP/s": t["gflops"].map(fmt_num),
        "% of SGEMM limit": _of(t["gflops"], lim["cpu_sgemm"], "gflops").map(fmt_pct),
        "numpy.matmul only": t["seconds_mm"].map(fmt_time), "GFLOP/s ": t["gflops_mm"].map(fmt_num),
        "backend / matmul": (t["seconds"] / t["seconds_mm"]).map(fmt_x),
    })
    return [f"#### CPU, affine {_WHAT[op]}", "", markdown(table), ""]


def _tiles_section(df: pd.DataFrame) -> list[str]:
    tiles = select(df, op="forward_tiles", device="gpu")
    if tiles.empty:
        return []
    cub = first(df, op="forward", device="gpu", impl="cublas", group="square", m=4096)
    table = pd.DataFrame({"tiles": tiles["config"], "time": tiles["seconds"].map(fmt_time),
                          "GFLOP/s": tiles["gflops"].map(fmt_num),
                          "% of cuBLAS": _of(tiles["gflops"], cub, "gflops").map(fmt_pct)})
    return ["#### GPU, fused forward at 4096³ by tile configuration", "", markdown(table), ""]


def _softmax_section(df: pd.DataFrame, lim: dict[str, pd.Series | None]) -> list[str]:
    out = []
    for device in ("gpu", "cpu"):
        mine = select(df, op="softmax_xent", device=device, impl="mlp")
        if mine.empty:
            continue
        t = _beside(mine.sort_values(["logits_bytes", "classes"]), select(df, op="softmax_xent", device=device,
                                                                           impl="cupy"), ["rows", "classes"], "cupy")
        table = pd.DataFrame({
            "rows × classes": t["shape"], "MiB moved": (t["bytes"].astype(float) / 2**20).map("{:,.1f}".format),
            "time": t["seconds"].map(fmt_time), "GB/s": t["gbps"].map(fmt_num),
            "% of copy bandwidth": _of(t["gbps"], lim[f"{device}_copy"], "gbps").map(fmt_pct),
        })
        if device == "gpu":
            table["CuPy composed"] = t["seconds_cupy"].map(fmt_time)
            table["speedup vs CuPy"] = (t["seconds_cupy"] / t["seconds"]).map(fmt_x)
        label = "GPU, CUDA kernel" if device == "gpu" else "CPU, NumPy backend (Numba loop, 1 thread)"
        out += [f"#### Softmax with cross-entropy: {label}", "", markdown(table), ""]
    return out


# ---------------------------------------------------------------- training
def _impl_label(impl: pd.Series) -> pd.Series:
    return impl.map(lambda i: IMPL_LABELS.get(i, i))


def _scaled(df: pd.DataFrame) -> pd.Series:
    return (df["samples"] != N_SAMPLES).fillna(False).map({True: " *", False: ""})


_SCALED_NOTE = "\\* timed on fewer samples (quick run) and scaled to 60,000"


def _epoch_section(df: pd.DataFrame) -> list[str]:
    epochs = select(df, suite="training", op="epoch")
    if epochs.empty:
        return []
    order = epochs["impl"].map(lambda i: list(IMPL_LABELS).index(i) if i in IMPL_LABELS else 99)
    e = epochs.assign(_order=order).sort_values(["batch", "_order", "optimizer"])
    launches = e["launches_per_epoch"].astype(float) / e["steps"].astype(float)
    table = pd.DataFrame({
        "implementation": _impl_label(e["impl"]), "optimizer": _text(e["optimizer"]), "batch": e["batch"].map(fmt_int),
        "epoch": e["epoch_60k"].map(fmt_time) + _scaled(e),
        "rounds / IQR": e["rounds"].map(fmt_int) + " / " + e["spread"].map(fmt_pct),
        "samples/s": (e["samples"].astype(float) / e["seconds"]).map("{:,.0f}".format),
        "fit(epochs=1)": e["call_seconds"].where(e["epoch_seconds"].notna()).map(fmt_time),
        "launches/step": launches.map(lambda v: "—" if pd.isna(v) or v == 0 else f"{v:.1f}"),
        "CPU threads": e["threads"].map(fmt_int),
    })
    lines = ["### Epoch of the reference network (60,000 samples)", "", markdown(table, "lllrrrrrr"), ""]
    if (e["samples"] != N_SAMPLES).any():
        lines += [f"{_SCALED_NOTE}; samples/s is as measured.", ""]
    lines += ["*epoch* is the trainer's own per-epoch time (first batch to the loss read-back, which waits for the "
              "device); *fit(epochs=1)* adds `fit`'s one-time input checks and copy of the data to the backend. "
              "PyTorch loops keep the data on their device; scikit-learn's time is its whole `fit`.", ""]

    by_impl = adam_epochs(df).pivot_table(index="batch", columns="impl", values="epoch_60k")
    by_impl = by_impl.reindex(columns=list(IMPL_LABELS))
    ratios = pd.DataFrame({
        "CUDA backend speedup over NumPy backend": by_impl["mlp-numpy"] / by_impl["mlp-cuda"],
        "NumPy backend time / PyTorch CPU time": by_impl["mlp-numpy"] / by_impl["torch-cpu"],
        "NumPy backend time / scikit-learn time": by_impl["mlp-numpy"] / by_impl["sklearn"],
        "CUDA backend time / PyTorch CUDA time": by_impl["mlp-cuda"] / by_impl["torch-cuda"],
    }).reset_index().melt(id_vars="batch", var_name="comparison", value_name="ratio").dropna(subset=["ratio"])
    ratios = ratios.sort_values("batch", kind="stable")
    if not ratios.empty:
        table = pd.DataFrame({"comparison": ratios["comparison"], "batch": ratios["batch"].map(fmt_int),
                              "ratio": ratios["ratio"].map(fmt_x)})
        lines += ["Ratios (Adam; below 1× means mlp takes less time than the peer):", "", markdown(table), ""]
    return lines


def _step_section(df: pd.DataFrame) -> list[str]:
    steps = select(df, suite="training", op="step")
    if steps.empty:
        return []
    order = steps["impl"].map(lambda i: list(IMPL_LABELS).index(i) if i in IMPL_LABELS else 99)
    s = steps.assign(_order=order).sort_values(["batch", "_order"])
    table = pd.DataFrame({"implementation": _impl_label(s["impl"]), "batch": s["batch"].map(fmt_int),
                          "time per step": s["seconds"].map(fmt_time),
                          "kernel launches per step": s["launches_per_step"].map(
                              lambda v: "—" if pd.isna(v) or not v else f"{v:.0f}")})
    return ["### One training step (Adam)", "", markdown(table), "",
            "Steps run back to back on device-resident data (take_rows, forward, loss, backward, optimizer), "
            "with one synchronisation per round of steps.", ""]


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def _graph_section(df: pd.DataFrame) -> list[str]:
    """The trainer's loop on the GPU: host work per epoch, and the replayed epoch against its kernels alone."""
    g = select(df, suite="training", op="epoch", impl="mlp-cuda-graphs")
    if g.empty:
        return []
    g = g.sort_values(["batch", "optimizer"])
    device = _col(g, "replayed_epoch_device_seconds").astype(float)
    kernels = _col(g, "kernel_seconds_sum").astype(float)
    table = pd.DataFrame({
        "optimizer": _text(g["optimizer"]), "batch": g["batch"].map(fmt_int), "epoch": g["seconds"].map(fmt_time),
        "host calls per epoch": _text(_col(g, "host_calls_per_epoch")),
        "kernels in the graph": _col(g, "kernels_per_epoch").map(fmt_int),
        "replayed epoch, device time": device.map(fmt_time),
        "sum of its kernels' times": kernels.map(fmt_time),
        "device / kernels": (device / kernels).map(fmt_x),
    })
    return ["### Epoch replayed as a CUDA graph", "", markdown(table, "lrrlrrrr"), "",
            "The graph holds every step of the epoch; the host copies the new shuffle and the optimizer's "
            "scalars, resets the statistics, launches the graph once and reads the statistics once. *device "
            "time* is the replay's span between CUDA events; *sum of its kernels' times* times each kernel of "
            "one eager epoch alone with events, the floor a gapless replay would reach.", ""]


#: Held-out accuracy or R² within this of scikit-learn's counts as equal quality.
SKLEARN_QUALITY_TOLERANCE = 0.01


def _score(v: Any) -> str:
    return "—" if pd.isna(v) else f"{v:.3f}"


def _sklearn_section(df: pd.DataFrame) -> list[str]:
    """mlp's ``MLPClassifier``/``MLPRegressor`` fits beside scikit-learn's, with the quality each reached."""
    fits = select(df, suite="sklearn", op="fit")
    mine = fits[fits["impl"] != "sklearn"]
    if mine.empty:
        return []
    key = ["estimator", "optimizer", "dtype"]
    t = _beside(mine, select(fits, impl="sklearn"), key, "sk", columns=("seconds", "score", "n_iter"))
    order = {"MLPClassifier": 0, "MLPRegressor": 1, "adam": 0, "sgd": 1, "lbfgs": 2}
    t = t.assign(_e=t["estimator"].map(order), _s=t["optimizer"].map(order)).sort_values(["_e", "_s", "dtype", "impl"])
    gap = (t["score"] - t["score_sk"]).astype(float)
    table = pd.DataFrame({
        "estimator": t["estimator"] + " (" + t["dataset"] + ")", "solver": t["optimizer"], "dtype": t["dtype"],
        "implementation": _impl_label(t["impl"]), "fit": t["seconds"].map(fmt_time),
        "scikit-learn fit": t["seconds_sk"].map(fmt_time), "speed-up": (t["seconds_sk"] / t["seconds"]).map(fmt_x),
        "iterations": t["n_iter"].map(fmt_int) + " / " + t["n_iter_sk"].map(fmt_int),
        "held-out score": t["metric"] + " " + t["score"].map(_score) + " / " + t["score_sk"].map(_score),
        "equal quality": gap.map(lambda g: "—" if pd.isna(g) else "yes" if g >= -SKLEARN_QUALITY_TOLERANCE
                                 else f"no ({g:+.3f})"),
    })
    return ["## scikit-learn drop-in: fit against scikit-learn", "", markdown(table, "llllrrrrll"), "",
            "Both sides get the same constructor arguments (one hidden layer of 100 ReLU units, `random_state=0`, "
            "a fixed `max_iter`; for adam and sgd `tol=0` and `n_iter_no_change=max_iter`, so both run every "
            "epoch): `MLPClassifier` on digits (1,347 training rows, 64 features, 10 classes), `MLPRegressor` on "
            "diabetes (331 rows, 10 features, standardised target); both data sets ship with scikit-learn. "
            "*iterations* and *held-out score* (accuracy or R² on the 25% held out) read mlp / scikit-learn; "
            f"the quality is equal when mlp's is at most {SKLEARN_QUALITY_TOLERANCE} below. A fit is one round; "
            "the time is the median round; CPU rows run with one BLAS thread on both sides.", ""]


def _count(v: Any) -> str:
    return "?" if pd.isna(v) else f"{int(v):,}"


def _mib(v: Any) -> str:
    return "—" if pd.isna(v) else f"{v / 2**20:,.0f} MiB"


def _sparse_section(df: pd.DataFrame) -> list[str]:
    """``MLPClassifier.fit`` on sparse X against scikit-learn's: time and peak memory, with the quality reached."""
    fits = select(df, suite="sparse", op="fit")
    mine = fits[fits["impl"] != "sklearn"]
    if mine.empty:
        return []
    t = _beside(mine, select(fits, impl="sklearn"), ["group"], "sk",
                columns=("seconds", "peak_bytes", "score", "n_iter"))
    t = t.sort_values(["dataset", "dtype"], ascending=[False, False])
    first_row = t.iloc[0]
    table = pd.DataFrame({
        "data": t["dataset"] + " " + t["rows"].map(_count) + " × " + t["features"].map(_count) + ", "
                + t["nnz"].map(_count) + " non-zeros",
        "dtype": t["dtype"], "mlp fit": t["seconds"].map(fmt_time), "scikit-learn fit": t["seconds_sk"].map(fmt_time),
        "time / scikit-learn's": (t["seconds"] / t["seconds_sk"]).map(fmt_x),
        "mlp peak memory": t["peak_bytes"].map(_mib), "scikit-learn peak memory": t["peak_bytes_sk"].map(_mib),
        "memory / scikit-learn's": (t["peak_bytes"] / t["peak_bytes_sk"]).map(fmt_x),
        "epochs": t["n_iter"].map(fmt_int) + " / " + t["n_iter_sk"].map(fmt_int),
        "held-out accuracy": t["score"].map(_score) + " / " + t["score_sk"].map(_score),
    })
    params = first_row.get("params") or {}
    return ["## Sparse X: fit against scikit-learn", "", markdown(table, "llrrrrrrll"), "",
            "`MLPClassifier` (mlp on the NumPy backend, the first layer reading the CSR rows) and scikit-learn's, "
            f"with the same arguments ({', '.join(f'`{k}={v}`' for k, v in params.items())}), on "
            "`scipy.sparse` CSR data generated from a seed (`bench/bench_sparse.py`): *tfidf* is TF-IDF-like "
            "(class-dependent word distributions, idf-weighted counts, rows of unit L2 norm, 20 classes), "
            "*scattered* a few non-zeros at uniform positions with random labels (its accuracy is chance). "
            "*held-out accuracy* (5,000 rows) and *epochs* read mlp / scikit-learn. The time is the median of "
            "rounds of one fit in the benchmark's process, after an untimed fit on a small slice; the peak "
            "memory is one more fit in a fresh process: its peak resident memory over what was resident when the "
            "fit began (Linux's `VmHWM`, reset just before the fit), the data already loaded. One BLAS thread on "
            "both sides.", ""]


_SEARCH_ENGINES = {
    "mlp-search": "mlp.GridSearchCV (stacked), a thread per core",
    "mlp-search-1-thread": "mlp.GridSearchCV (stacked), one thread (MLP_STACK_THREADS=1)",
    "mlp-search-all-cores": "mlp.GridSearchCV (stacked)",
    "sklearn-search-mlp": "scikit-learn GridSearchCV(mlp.MLPClassifier), one fit at a time",
    "sklearn-search": "scikit-learn GridSearchCV(sklearn MLPClassifier)",
    "stack-products": "the stacks' matrix products alone, in the threads of one process",
    "stack-products-padded": "the same products with the one-layer models padded to the widest",
    "mlp-search-pipeline": "mlp.GridSearchCV(Pipeline(StandardScaler(), mlp MLPClassifier))",
    "sklearn-search-pipeline": "scikit-learn GridSearchCV(Pipeline(StandardScaler(), sklearn MLPClassifier))",
}


def _agrees(v: Any) -> str:
    return "—" if pd.isna(v) else "yes" if v == 1 else f"no ({v:.0%} of them)"


def _search_section(df: pd.DataFrame) -> list[str]:
    """One grid search on digits per engine, beside the first row of its group, with the best candidate each
    found; then how one process scales over its cores."""
    rows = select(df, suite="search")
    if rows.empty:
        return []
    order = list(_SEARCH_ENGINES)
    rows = rows.assign(_e=rows["impl"].map(lambda i: order.index(i) if i in order else len(order)))
    rows = rows.sort_values(["dtype", "group", "_e"])
    firsts = rows.sort_values("_e").drop_duplicates("group")[["group", "seconds", "impl"]]
    t = rows.merge(firsts.rename(columns={"seconds": "seconds_first", "impl": "impl_first"}), on="group", how="left")
    table = pd.DataFrame({
        "engine": t["impl"].map(lambda i: _SEARCH_ENGINES.get(i, i)), "dtype": t["dtype"],
        "processes": _col(t, "n_jobs").map(lambda v: "n_jobs=-1: one per core" if v == -1 else "one"),
        "candidates × folds": t["candidates"].map(fmt_int) + " × " + t["folds"].map(fmt_int),
        "time": t["seconds"].map(fmt_time),
        "/ first row of its group": (t["seconds"] / t["seconds_first"]).map(fmt_x),
        "best parameters": _text(_col(t, "best")), "best CV accuracy": _col(t, "best_score").map(_score),
        "same best as the first row": _col(t, "best_agrees").map(_agrees),
        "largest gap in a mean accuracy": _col(t, "score_gap").map(lambda v: "—" if pd.isna(v) else f"{v:.1e}"),
        "load average (1 min)": _col(t, "load_before").map(lambda v: "—" if pd.isna(v) else f"{v:.1f}"),
    })
    first_row = rows.iloc[0]
    grid = ", ".join(f"`{k}` {v}" for k, v in (first_row.get("grid") or {}).items())
    lines = ["## Hyperparameter searches: every candidate and fold at once", "",
             markdown(table, "lllrrrlrlrr"), "",
             f"`GridSearchCV` on digits (1,797 × 64, X/16, 10 classes) over {grid or 'the grid'} (the pipeline "
             "rows: the same parameters of the pipeline's network, 12 candidates), folds of "
             "`StratifiedKFold(shuffle=True, random_state=0)`, adam, `batch_size='auto'`, `random_state=0`, "
             f"{fmt_int(first_row['epochs'])} epochs per fit (`tol=0`, `n_iter_no_change=max_iter`; every fit's "
             "`n_iter_` is checked), `refit=False`; the best candidate is scikit-learn's (first of rank 1). One round "
             "per search, after an untimed small one; the products alone are the median of a few rounds. Every "
             "process runs one BLAS thread; `n_jobs=-1` rows use one worker process per core; the one-process "
             "search steps each stack's models in one thread per core unless `MLP_STACK_THREADS` says otherwise. "
             "scikit-learn's own MLP may find other best parameters; one mlp fit at a time must find the same. "
             "The padded row multiplies every one-layer model at the widest hidden layer, in one stack: the least "
             "that padding hidden sizes, instead of one stack per shape, would compute.", ""]
    one, many = select(rows, impl="mlp-search-1-thread"), select(rows, impl="mlp-search")
    scaling = one.merge(many, on="group", suffixes=("_1", "_n"))
    if not scaling.empty:
        table = pd.DataFrame({"dtype": scaling["dtype_1"], "one thread": scaling["seconds_1"].map(fmt_time),
                              "threads": _col(scaling, "cores_n").map(fmt_int),
                              "a thread per core": scaling["seconds_n"].map(fmt_time),
                              "speed-up": (scaling["seconds_1"] / scaling["seconds_n"]).map(fmt_x)})
        lines += ["### One process over its cores", "", markdown(table, "lrrrr"), "",
                  "`mlp.GridSearchCV(n_jobs=None)`: each stack's models stepped in one thread "
                  "(`MLP_STACK_THREADS=1`) against one thread per core (the default), each product on one BLAS "
                  "thread.", ""]
    return lines


# ----------------------------------------------------------------- stacks
_STACK_ENGINES = {"mlp-numpy": "mlp TrainingLoop, NumPy backend", "mlp-cuda": "mlp TrainingLoop, CUDA backend",
                  "torch-func-cpu": "torch.func vmap, CPU", "torch-func-cuda": "torch.func vmap, GPU (eager)",
                  "torch-compile-cuda": "torch.compile(torch.func vmap), GPU"}


def _stacks_section(df: pd.DataFrame) -> list[str]:
    """Many networks at once on a device: the search against scikit-learn's on every core, one stack of
    reference networks against torch.func, and hidden sizes grouped against padded."""
    rows = select(df, suite="stacks")
    if rows.empty:
        return []
    lines = ["## Many networks at once on a device", ""]
    search = select(rows, op="search")
    if not search.empty:
        mine = search[search["impl"].str.startswith("mlp-search")]
        theirs = select(search, impl="sklearn-search")
        table = pd.DataFrame({
            "engine": search["impl"].map(lambda i: f"mlp.GridSearchCV, backend {i.rsplit('-', 1)[-1]}"
                                         if i.startswith("mlp-search") else
                                         "scikit-learn GridSearchCV(n_jobs=-1) on the CPU cores"),
            "cores": _col(search, "cores").map(fmt_int), "time": search["seconds"].map(fmt_time),
            "scikit-learn's time / this": (float(theirs["seconds"].iloc[0]) / search["seconds"]).map(fmt_x)
            if not theirs.empty else "—",
            "best parameters": _text(_col(search, "best")), "best CV accuracy": _col(search, "best_score").map(_score),
            "same best": _col(search, "best_agrees").map(_agrees)})
        first_row = (mine if not mine.empty else search).iloc[0]
        lines += ["### The digits search", "", markdown(table, "lrrrlrl"), "",
                  f"The search suite's grid ({fmt_int(first_row['candidates'])} candidates × "
                  f"{fmt_int(first_row['folds'])} folds, {fmt_int(first_row['epochs'])} epochs, float32), stacked "
                  "on the backend, against scikit-learn's search over its own `MLPClassifier` on every core of "
                  "the same machine.", ""]
    epochs = select(rows, op="stack_epoch")
    if not epochs.empty:
        order = list(_STACK_ENGINES)
        e = epochs.assign(_e=epochs["impl"].map(lambda i: order.index(i) if i in order else len(order)))
        e = e.sort_values(["device", "_e"])
        ref = e[e["impl"].str.startswith("mlp-")][["group", "seconds"]].rename(columns={"seconds": "seconds_mlp"})
        e = e.merge(ref, on="group", how="left")
        warm = _col(e, "warmup_epoch_seconds").map(lambda v: v[0] if isinstance(v, list) and v else np.nan)
        table = pd.DataFrame({
            "engine": e["impl"].map(lambda i: _STACK_ENGINES.get(i, i)), "epoch": e["seconds"].map(fmt_time),
            "/ mlp's epoch": (e["seconds"] / e["seconds_mlp"]).map(fmt_x),
            "first epoch": warm.map(fmt_time), "replays": _col(e, "replays").map(fmt_int),
            "mean loss, last epoch": _col(e, "mean_loss_last_epoch").map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")})
        first_row = e.iloc[0]
        lines += ["### One stack of networks: an epoch", "", markdown(table, "lrrrrr"), "",
                  f"{fmt_int(first_row['models'])} networks of {first_row['layers']}, {fmt_int(first_row['samples'])} "
                  f"synthetic rows, batch {fmt_int(first_row['batch'])}, Adam lr 1e-3 (torch.func: one learning rate "
                  "for all models), each model its own initialisation and shuffle. An epoch is the median round "
                  "(the new orders staged untimed before it; it ends when every loss is read back); *first epoch* "
                  "is the first of two untimed ones (compilation; for mlp on a GPU, the eager epoch before the "
                  "capture).", ""]
    pad = select(rows, op="padding_epoch")
    if not pad.empty:
        grouped, padded = select(pad, layout="grouped"), select(pad, layout="padded")
        t = grouped.merge(padded, on="group", suffixes=("", "_padded"))
        table = pd.DataFrame({
            "backend": t["impl"].map(lambda i: i.removeprefix("mlp-")),
            "one stack per shape": t["seconds"].map(fmt_time),
            "one stack padded to the widest": t["seconds_padded"].map(fmt_time),
            "padded / grouped": (t["seconds_padded"] / t["seconds"]).map(fmt_x)})
        first_row = pad.iloc[0]
        lines += ["### Hidden sizes that differ: an epoch", "", markdown(table, "lrrr"), "",
                  f"{fmt_int(first_row['models_per_stack'])} networks each of hidden sizes {first_row['hidden']} "
                  f"on {fmt_int(first_row['rows'])} digits rows, batch {fmt_int(first_row['batch'])}, as one stack "
                  "per shape (what `mlp.search` trains) against one stack of all of them at the widest (what "
                  "padding would compute at least).", ""]
    return lines


# ------------------------------------------------------------ cold start
_COLD = {"mlp-warm": "mlp, Numba cache filled", "mlp-empty": "mlp, Numba cache empty",
         "sklearn": "scikit-learn"}


def _coldstart_section(df: pd.DataFrame) -> list[str]:
    rows = select(df, suite="coldstart")
    if rows.empty:
        return []
    order = list(_COLD)
    rows = rows.assign(_e=rows["impl"].map(lambda i: order.index(i) if i in order else len(order)))
    rows = rows.sort_values("_e")
    sk = select(rows, impl="sklearn")
    sk_seconds = float(sk["seconds"].iloc[0]) if not sk.empty else np.nan
    table = pd.DataFrame({
        "script": rows["impl"].map(lambda i: _COLD.get(i, i)), "process": rows["seconds"].map(fmt_time),
        "/ scikit-learn's process": (rows["seconds"] / sk_seconds).map(fmt_x),
        "import": _col(rows, "import_median").map(fmt_time), "load digits": _col(rows, "data_median").map(fmt_time),
        "first fit": _col(rows, "fit_median").map(fmt_time), "rounds": rows["rounds"].map(fmt_int)})
    first_row = rows.iloc[0]
    return ["## Cold start: a new process, its import and its first fit", "", markdown(table, "lrrrrrr"), "",
            "Each round is a new Python process running one script: import the library (`import mlp` and "
            "`mlp.MLPClassifier`; or `from sklearn.neural_network import MLPClassifier`), load digits (X/16), "
            f"then `MLPClassifier({first_row.get('params') or 'max_iter=20, random_state=0'}).fit(X, y)`. *process* is "
            "the median wall time of the whole process (interpreter start included), the others the median of the "
            "times the script measures. *Numba cache filled*: a private `NUMBA_CACHE_DIR` filled by one untimed "
            "run before the rounds; *empty*: a new empty `NUMBA_CACHE_DIR` every round (everything compiles). "
            "Every process may write Python's bytecode caches (`PYTHONDONTWRITEBYTECODE` is not passed on), as an "
            "installed package has its `.pyc` files.", ""]


# ---------------------------------------------------------- fit epochs
def _fit_epochs_section(df: pd.DataFrame) -> list[str]:
    rows = select(df, suite="training", op="fit_epochs")
    if rows.empty:
        return []
    rows = rows.sort_values(["batch", "impl"])
    first = _col(rows, "first_epoch_seconds").map(lambda v: float(np.median(v)) if isinstance(v, list) and v
                                                   else np.nan)
    gc_runs = _col(rows, "gc_collections").map(lambda v: sum(v) if isinstance(v, list) else np.nan)
    table = pd.DataFrame({
        "path": rows["impl"], "batch": rows["batch"].map(fmt_int), "epoch": rows["seconds"].map(fmt_time),
        "first epoch": first.map(fmt_time), "last / first timed epoch": _col(rows, "last_over_first").map(fmt_x),
        "host launches per epoch": _col(rows, "host_launches_per_epoch").map(
            lambda v: "—" if pd.isna(v) or not v else f"{v:,.0f}"),
        "kernels in the captured epoch": _col(rows, "graph_launches").map(fmt_int),
        "replays": _col(rows, "replays").map(fmt_int), "garbage collections": gc_runs.map(fmt_int)})
    first_row = rows.iloc[0]
    return ["### Epochs within one fit", "", markdown(table, "lrrrrrrrr"), "",
            f"`Trainer.fit(X, y, epochs={fmt_int(first_row.get('epochs'))})` of {first_row['layers']} (Adam) per "
            f"round on {fmt_int(first_row['samples'])} samples, with CUDA graphs or eager launches. *epoch* is the "
            "median of every epoch after each fit's first; *first epoch* is the fit's first (compilation, and the "
            "eager epoch before a capture); *last / first timed epoch* shows a drift within a fit; *host launches* "
            "count what the host issued per epoch (with graphs: the eager epoch and the capture's recording, "
            "spread over the fit's epochs).", ""]


def _predict_section(df: pd.DataFrame) -> list[str]:
    """Prediction with per-call buffers and the check of coefs_, each beside its baseline timed in turns with it."""
    rows = select(df, suite="predict")
    if rows.empty:
        return []
    mlp_rows = select(rows, op="mlp_predict_proba")
    est = select(rows, op="estimator_predict_proba")
    table = pd.DataFrame({"model": mlp_rows["layers"] + " " + mlp_rows["dtype"], "rows": mlp_rows["rows"].map(fmt_int),
                          "MLP.predict_proba": mlp_rows["seconds"].map(fmt_time),
                          "/ kept workspace": mlp_rows["paired_ratio"].map(fmt_x)})
    key = ["group", "rows"]
    for kept, label in (("views", "coefs_ views"), ("copies", "coefs_ assigned")):
        part = select(est, kept=kept)[[*key, "seconds", "paired_ratio"]]
        part = part.rename(columns={"seconds": f"MLPClassifier ({label})", "paired_ratio": f"/ baseline ({label})"})
        table = table.join(mlp_rows[key].merge(part, on=key, how="left").drop(columns=key).set_axis(table.index))
    for column in table.columns[4:]:
        table[column] = table[column].map(fmt_time if column.startswith("MLPClassifier") else fmt_x)
    return ["## Prediction: buffers per call, coefs_ checked per call", "", markdown(table, "lrrrrrrr"), "",
            "`predict_proba` of a fitted `mlp.MLPClassifier` on the NumPy backend, one BLAS thread: digits "
            "(64-100-10, float64) and the reference network (float32). `MLP.predict_proba` makes its buffers on "
            "every call; its baseline is the same model given a workspace kept per batch size. The estimator also "
            "checks `coefs_`/`intercepts_` on every call: fitted, they are views of the kept network's parameters "
            "(only their identity is checked); assigned arrays of the user's are compared with the network's "
            "weights. Its baseline skips both: kept workspaces, the kept network found by the arrays' "
            "identity. Ratios are medians over pairs of rounds timed in turns (subject / baseline).", ""]


def _launch_section(df: pd.DataFrame) -> list[str]:
    launches = select(df, suite="launch", op="launch")
    if launches.empty:
        return []
    per = launches["median"] / (_col(launches, "inner").astype(float) * _col(launches, "calls").astype(float))
    per_launch = per / _col(launches, "launches_per_call").astype(float)
    empty = per_launch[launches["impl"] == "empty"]
    floor = float(empty.iloc[0]) if not empty.empty else np.nan
    table = pd.DataFrame({"launcher": launches["impl"], "host time per call": (per * 1e6).map("{:.1f} µs".format),
                          "launches per call": _col(launches, "launches_per_call").map(fmt_int),
                          "per launch over the empty kernel's": (per_launch / floor).map(fmt_x)})
    return ["## Launch cost", "", markdown(table, "lrrr"), "",
            "Host time to enqueue one call at batch 128 of the reference network (calls back to back, one "
            "synchronisation per round). The empty kernel goes through the same configured-launch cache: what "
            "a launcher adds on top is the project's own Python work.", ""]


def _cpu_ratio_section(df: pd.DataFrame) -> list[str]:
    e = select(df, suite="training", op="epoch", impl="mlp-numpy").dropna(subset=["products_ratio"])
    if e.empty:
        return []
    e = e.sort_values(["batch", "optimizer"])
    table = pd.DataFrame({
        "optimizer": e["optimizer"], "batch": e["batch"].map(fmt_int), "NumPy backend epoch": e["seconds"].map(fmt_time),
        "matrix products alone": e["products_median"].map(fmt_time), "ratio (median)": e["products_ratio"].map(fmt_x),
        "ratio (fastest rounds)": e["products_fastest_ratio"].map(fmt_x),
        "time outside the products": (e["seconds"] - e["products_median"]).map(fmt_time),
    })
    return ["### CPU: the epoch against its matrix products alone", "", markdown(table, "lrrrrrr"), "",
            "The products alone are the eight BLAS calls of each step (forward 3, dW 3, dx 2) into preallocated "
            "outputs over the same batch sequence, timed right before every round of the epoch; the ratio is the "
            "median of the per-round ratios, and the fastest epoch over the fastest products shows the same ratio "
            "with the least noise from the machine. The rest of the epoch is the gather, the bias/ReLU epilogues, the "
            "loss, the mask and bias gradients and the optimizer update.", ""]


def _scaling_section(df: pd.DataFrame) -> list[str]:
    points = select(df, suite="scaling")
    if points.empty:
        return []
    lines = []
    for sweep, label in (("batch", "batch size (784-512-256-10)"), ("width", "width W (784-W-W/2-10, batch 128)")):
        swept = select(points, sweep=sweep)
        if swept.empty:
            continue
        cells = swept.assign(cell=swept["epoch_60k"].map(fmt_time) + _scaled(swept))
        table = cells.pivot_table(index=sweep, columns="impl", values="cell", aggfunc="first")
        impls = [i for i in ("mlp-numpy", "mlp-cuda") if i in table.columns]
        table = table[impls]
        if len(impls) == 2:
            seconds = swept.pivot_table(index=sweep, columns="impl", values="epoch_60k")
            table["CUDA speedup"] = (seconds["mlp-numpy"] / seconds["mlp-cuda"]).map(fmt_x)
        table = table.rename(columns=IMPL_LABELS).reset_index()
        table[sweep] = table[sweep].map(fmt_int)
        lines += [f"#### Time per epoch (60,000 samples) against {label}", "", markdown(table), ""]
    if (points["samples"] != N_SAMPLES).any():
        lines += [f"{_SCALED_NOTE}.", ""]
    return lines


# ------------------------------------------------------------------ absent
def _absent_section(env: dict[str, Any]) -> list[str]:
    lines = ["## Absent, skipped and failed", ""]
    avail = env.get("availability")
    if avail is None:
        lines += ["These results do not record which backends and peers were present.", ""]
    for name, label in SUBJECTS.items() if avail is not None else ():
        entry = avail.get(name)
        if entry is None:
            lines.append(f"- **{name}** ({label}): not probed")
        else:
            state = "present" if entry.get("present") else "**absent**"
            lines.append(f"- **{name}** ({label}): {state}: {entry.get('detail')}")
    outcomes = env.get("outcomes", {})
    lines.append("")
    skipped = pd.DataFrame(outcomes.get("skipped", []), columns=["test", "reason"])
    if not skipped.empty:
        lines += ["Benchmarks skipped, by reason:", ""]
        lines += [f"- {count} × {reason}" for reason, count in skipped["reason"].value_counts().items()]
        lines.append("")
    if outcomes.get("deselected"):
        opts = env.get("options", {})
        why = " and ".join(w for w, on in (("--quick", opts.get("quick")), ("--skip-cpu", opts.get("skip_cpu")))
                           if on) or "the run's options"
        lines += [f"{outcomes['deselected']} benchmarks were left out by {why}.", ""]
    if outcomes.get("running"):
        lines += [f"**Still running when the run was stopped** (no timing reported): `{outcomes['running']}`", ""]
    failed = outcomes.get("failed", [])
    if failed:
        lines += ["**Failed** (no timing reported for these):", ""]
        lines += [f"- `{f['test']}` ({f.get('when')}): {f.get('message', '')}" for f in failed]
        lines.append("")
    elif outcomes:
        lines += ["No benchmark failed.", ""]
    return lines


def _methodology(env: dict[str, Any]) -> list[str]:
    threads = env.get("blas_threads")
    return [
        "## Methodology", "",
        "- Every figure is a **median** over timed rounds (pytest-benchmark; rounds and the spread of every "
        "benchmark are in `benchmark.json`, with the machine description). One untimed call precedes the rounds "
        "(compilation, cuBLAS handles, first touch of memory); Python's garbage collector is off while timing.",
        "- On the GPU a round launches the operation many times back to back and then synchronises the device "
        "once; the time per operation is the round divided by the launches. CuPy and the CUDA backend share the "
        "legacy default stream and are timed the same way. CuPy's TF32 mode is off (`CUPY_TF32` unset) and "
        "PyTorch's `allow_tf32` flags are false: all products are full FP32.",
        "- The GPU library alternative is cuBLAS (`cupy.matmul`) followed by one CuPy elementwise kernel "
        "(bias + ReLU forward; ReLU mask, then `cupy.sum` for the bias gradient, backward): the strongest unfused "
        "version, one extra pass over the output. *cuBLAS only* is the products without any epilogue.",
        "- Before a CUDA kernel is timed, its result is checked against the CuPy alternative (largest difference "
        "at most 1e-3 of the largest value).",
        f"- CPU: NumPy's BLAS uses {threads or '?'} threads; PyTorch CPU is set to the same number "
        "(`torch.set_num_threads`). The NumPy backend's non-BLAS loops are single-threaded Numba code.",
        "- Data is **synthetic**, of Fashion-MNIST's shape (60,000 × 784 float32 in [0, 1), labels 0–9): "
        "no operation timed here has a data-dependent cost, so the values do not matter.",
        "- Training: 784-512-256-10, ReLU, softmax cross-entropy, float32, Adam (lr 1e-3) unless said otherwise; "
        "SGD with momentum uses lr 0.01, momentum 0.9. Each timed epoch continues training the same model. "
        "PyTorch peers run the same loop eagerly (gather, forward, loss, backward, `Adam.step`, loss and accuracy "
        "accumulated on the device); scikit-learn fits `MLPClassifier(hidden_layer_sizes=(512, 256), "
        "solver='adam', batch_size=B, learning_rate_init=1e-3, alpha=0, max_iter=1, shuffle=True, tol=0)` for "
        "one epoch.",
        "- Limits are measured in the same run: cuBLAS SGEMM at the largest square size and a 1 GiB "
        "device-to-device copy on the GPU; SGEMM at 2048³ and a 256 MiB `numpy.copyto` on the CPU. A limit is a "
        "ceiling, so it is taken from its fastest round (everything else is a median). Copy "
        "bandwidth counts bytes read plus bytes written; softmax traffic counts logits read, labels read and "
        "gradient written.",
        "- A quick run (`--quick`) times fewer sizes with fewer rounds, and epochs of scikit-learn and of the "
        "cost curve on a subset of the samples (marked \\*, scaled to 60,000).",
        "",
    ]


# ------------------------------------------------------------------ report
def _figures(names: list[str], plots: set[str]) -> list[str]:
    return [f"![{p}]({p})\n" for p in names if p in plots]


def _session_section(session: dict[str, Any] | None) -> list[str]:
    """What a session's parts did (``session.json``) and its device tests' totals (``tests-junit.xml``)."""
    if not session:
        return []
    lines = ["## The session", ""]
    record = session.get("record") or {}
    parts = record.get("parts") or {}
    if parts:
        rows = []
        for name, part in parts.items():
            if "skipped" in part:
                status, seconds = f"skipped: {part['skipped']}", None
            else:
                status = "killed at its limit" if part.get("killed") else \
                    "ok" if part.get("exit_status") == 0 else f"exit status {part.get('exit_status')}"
                seconds = part.get("seconds")
            files = ", ".join(f"{k} ({v})" for k, v in (part.get("files") or {}).items())
            rows.append({"part": name, "status": status, "seconds": fmt_num(seconds), "files": files})
        lines += [markdown(pd.DataFrame(rows), "llrl"), "",
                  f"A budget of {fmt_num(record.get('budget_s'))} s of wall time, started {record.get('started')}; "
                  "each part ran in a child process killed at its time limit (`python -m bench --session`).", ""]
    tests = session.get("tests")
    if tests:
        lines += [f"Device tests (`tests-junit.xml`): {tests['tests']} run, {tests['failures']} failed, "
                  f"{tests['errors']} errors, {tests['skipped']} skipped, in {fmt_time(tests['time'])}.", ""]
    return lines


def render(df: pd.DataFrame, env: dict[str, Any], title: str, plots: list[str] | tuple[str, ...] = (),
           session: dict[str, Any] | None = None, note: str = "") -> str:
    """The report's Markdown text, from the benchmark frame and the run record of :func:`bench.frame.load`
    (``session``: what :func:`load_session` found; ``note``: a line under the header)."""
    shown = set(plots)
    lim = limits(df)
    lines = _header(env, title) + ([f"- {note}"] if note else []) + [""] + _targets_section(df, env)
    lines += _session_section(session)
    kernels = (_gemm_section_gpu(df, "forward", lim) + _gemm_section_gpu(df, "backward", lim) + _tiles_section(df)
               + _gemm_section_cpu(df, "forward", lim) + _gemm_section_cpu(df, "backward", lim)
               + _softmax_section(df, lim))
    lines += ["## Kernels", "", "### Limits measured in this run", ""] + _limits_section(lim)
    lines += (kernels or ["No kernel benchmark in this run.", ""]) + _figures(["gemm.png", "softmax.png"], shown)
    training = (_epoch_section(df) + _fit_epochs_section(df) + _graph_section(df) + _step_section(df)
                + _cpu_ratio_section(df))
    lines += ["## Training", ""] + (training or ["No training benchmark in this run.", ""])
    lines += _figures(["epoch.png"], shown)
    lines += ["## Scaling", ""] + (_scaling_section(df) or ["No scaling benchmark in this run.", ""])
    lines += _figures(["scaling.png"], shown)
    lines += _sklearn_section(df)
    lines += _search_section(df)
    lines += _stacks_section(df)
    lines += _coldstart_section(df)
    lines += _predict_section(df)
    lines += _sparse_section(df)
    lines += _launch_section(df)
    lines += _absent_section(env) + _methodology(env)
    return "\n".join(lines).rstrip() + "\n"


SESSION_RECORD, JUNIT = "session.json", "tests-junit.xml"


def load_session(folder: Path) -> dict[str, Any] | None:
    """A session's record and its device tests' totals, where the folder holds them (None: neither)."""
    found: dict[str, Any] = {}
    try:
        found["record"] = json.loads((folder / SESSION_RECORD).read_text())
    except (OSError, ValueError):
        pass
    try:
        root = ET.parse(folder / JUNIT).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        found["tests"] = {k: sum(int(float(s.get(k, 0))) for s in suites)
                          for k in ("tests", "failures", "errors", "skipped")}
        found["tests"]["time"] = sum(float(s.get("time", 0)) for s in suites)
    except (OSError, ET.ParseError):
        pass
    return found or None


def write_report(folder: Path, plots: bool = True) -> Path:
    """Build ``report.md`` (and the plots, where matplotlib is installed) in ``folder`` from the results
    there; returns the report's path."""
    folder = Path(folder)
    df, env = load(folder)
    note = ""
    if plots and importlib.util.find_spec("matplotlib") is None:
        plots, note = False, "**Plots**: left out (matplotlib is not installed here)"
    written = write_plots(df, folder) if plots else []
    path = folder / REPORT
    path.write_text(render(df, env, folder.name, written, load_session(folder), note))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULTS_DIR [--no-plots]``: rebuild a report from saved results."""
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(next((a for a in argv if not a.startswith("-")), "."))
    print(write_report(folder, plots="--no-plots" not in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
