"""The benchmark report: ``report.md`` and plots from pytest-benchmark's JSON and ``environment.json``.

Everything here reads the results folder only, so a report can be rebuilt
from committed results (``python -m bench.report DIR``) without rerunning
anything.  Numbers derive from each benchmark's median round divided by the
operations per round (``extra_info["inner"]``); an epoch is the trainer's own
per-epoch time where it reports one (see ``_measure.measure_fit_epochs``).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bench._env import SUBJECTS
from bench._measure import N_SAMPLES

REPORT = "report.md"
BENCHMARK_JSON = "benchmark.json"
ENVIRONMENT_JSON = "environment.json"
PLOTS = ("gemm.png", "softmax.png", "epoch.png", "scaling.png")
#: Logits at least this large are "large" for the softmax bandwidth target: far beyond any L2 cache.
LARGE_SOFTMAX_BYTES = 256 * 2**20

IMPL_LABELS = {
    "mlp-numpy": "mlp, NumPy backend",
    "mlp-cuda": "mlp, CUDA backend",
    "torch-cpu": "PyTorch CPU",
    "torch-cuda": "PyTorch CUDA (eager)",
    "sklearn": "scikit-learn MLPClassifier",
    "matmul": "numpy.matmul only",
}
PEER_ORDER = ("mlp-numpy", "torch-cpu", "sklearn", "mlp-cuda", "torch-cuda")


# ------------------------------------------------------------------ results
@dataclass
class Result:
    """One benchmark: its ``extra_info`` and the time of one operation (median), in seconds."""

    name: str
    info: dict[str, Any]
    seconds: float
    rounds: int
    spread: float = 0.0  # interquartile range / median of the rounds
    call_seconds: float = math.nan  # pytest-benchmark's median per call (for epochs: the whole fit call)

    def get(self, key: str, default: Any = None) -> Any:
        return self.info.get(key, default)

    @property
    def gflops(self) -> float:
        return self.info["flop"] / self.seconds / 1e9

    @property
    def gbps(self) -> float:
        return self.info["bytes"] / self.seconds / 1e9

    @property
    def samples(self) -> int:
        return int(self.info.get("samples", N_SAMPLES))

    @property
    def epoch_60k(self) -> float:
        """Seconds per epoch of 60 000 samples (scaled when fewer were timed)."""
        return self.seconds * N_SAMPLES / self.samples


def results_from_json(doc: dict[str, Any]) -> list[Result]:
    out = []
    for b in doc.get("benchmarks", []):
        info = dict(b.get("extra_info") or {})
        stats = b.get("stats") or {}
        if "median" not in stats or "suite" not in info:
            continue
        inner = max(1, int(info.get("inner", 1)))
        per_call = float(stats["median"]) / inner
        if str(info.get("op", "")).startswith("limit_"):  # a ceiling: the fastest round is the best estimate
            per_call = float(stats.get("min", stats["median"])) / inner
        epochs = info.get("epoch_seconds")
        seconds = float(statistics.median(epochs)) if epochs else per_call
        spread = float(stats.get("iqr", 0.0)) / float(stats["median"]) if stats["median"] else 0.0
        if epochs and len(epochs) >= 2:
            q1, _, q3 = statistics.quantiles(epochs, n=4, method="inclusive")
            spread = (q3 - q1) / seconds
        out.append(Result(b.get("name", "?"), info, seconds, int(stats.get("rounds", 0)), spread, per_call))
    return out


def load(folder: Path) -> tuple[list[Result], dict[str, Any]]:
    """The results and the environment record of a results folder (either file may be missing)."""
    folder = Path(folder)
    doc: dict[str, Any] = {}
    if (folder / BENCHMARK_JSON).is_file():
        doc = json.loads((folder / BENCHMARK_JSON).read_text())
    env: dict[str, Any] = doc.get("mlp", {})
    if (folder / ENVIRONMENT_JSON).is_file():
        env = json.loads((folder / ENVIRONMENT_JSON).read_text())
    return results_from_json(doc), env


def clean(folder: Path) -> None:
    """Remove the files a previous run wrote here (only those names)."""
    for name in (REPORT, BENCHMARK_JSON, ENVIRONMENT_JSON, *PLOTS):
        (Path(folder) / name).unlink(missing_ok=True)


def find(results: Iterable[Result], **criteria: Any) -> list[Result]:
    return [r for r in results if all(r.info.get(k) == v for k, v in criteria.items())]


def one(results: Iterable[Result], **criteria: Any) -> Result | None:
    found = find(results, **criteria)
    return found[0] if found else None


# --------------------------------------------------------------- formatting
def fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_pct(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"


def fmt_x(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}×"


def table(headers: list[str], rows: list[list[str]], align: str | None = None, drop_empty: bool = True) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column (default: first left, rest right).

    With ``drop_empty``, columns after the first whose cells are all "—" or
    empty (nothing measured for them in this run) are left out.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align: expected {len(headers)} letters, got {align!r}")
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"row {r!r}: expected {len(headers)} cells")
    if drop_empty and rows:
        keep = [0] + [i for i in range(1, len(headers)) if any(str(r[i]) not in ("—", "") for r in rows)]
        headers = [headers[i] for i in keep]
        align = "".join(align[i] for i in keep)
        rows = [[r[i] for i in keep] for r in rows]

    def cells(values: list[str]) -> str:
        if len(values) != len(headers):
            raise ValueError(f"row {values!r}: expected {len(headers)} cells")
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    rule = "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"
    return "\n".join([cells(headers), rule, *(cells(r) for r in rows)])


# ------------------------------------------------------------------ targets
@dataclass
class Target:
    name: str
    measured: str
    status: str  # "met", "not met" or "not measured"
    note: str = ""


def _absent_reason(env: dict[str, Any], needs: Iterable[str], suite: str, cpu_only: bool = False) -> str:
    avail = env.get("availability", {})
    for name in needs:
        entry = avail.get(name)
        if entry is not None and not entry.get("present", False):
            return f"{name} absent: {entry.get('detail', '')}"
    ran = env.get("outcomes", {}).get("suites")
    if ran is not None and suite not in ran:
        return f"the {suite} suite was not run"
    if cpu_only and env.get("options", {}).get("skip_cpu"):
        return "not run: --skip-cpu"
    return "no result in this run (left out by -k, or failed: see below)"


def _missing(name: str, env: dict[str, Any], needs: Iterable[str], suite: str, cpu_only: bool = False) -> Target:
    return Target(name, "—", "not measured", _absent_reason(env, needs, suite, cpu_only))


def products_ratio(epoch: Result) -> tuple[float, float] | None:
    """``(epoch / its matrix products alone, products seconds)`` for a NumPy-backend epoch, if measured.

    The products were timed right before each epoch round, so the ratio is
    the median of the per-round ratios: a drift in machine speed over the
    run cancels out of each pair.
    """
    products = epoch.get("products_seconds")
    epochs = epoch.get("epoch_seconds")
    if not products:
        return None
    if epochs and len(epochs) == len(products):
        ratio = statistics.median(e / p for e, p in zip(epochs, products))
    else:
        ratio = epoch.seconds / statistics.median(products)
    return float(ratio), float(statistics.median(products))


def fastest_ratio(epoch: Result) -> float | None:
    """Fastest epoch round over fastest products round: the same ratio with as little machine noise as possible."""
    products, epochs = epoch.get("products_seconds"), epoch.get("epoch_seconds")
    if not products or not epochs:
        return None
    return min(epochs) / min(products)


def _status(ok: bool) -> str:
    return "met" if ok else "not met"


def compute_targets(results: list[Result], env: dict[str, Any]) -> list[Target]:
    """Each target of the issue, its measured value, and whether it is met."""
    targets: list[Target] = []

    # CPU: the NumPy backend's epoch against the same epoch's matrix products alone.
    for optimizer, label in (("adam", "Adam"), ("sgd-momentum", "SGD with momentum")):
        epoch = one(results, op="epoch", suite="training", impl="mlp-numpy", optimizer=optimizer, batch=128)
        ratio = products_ratio(epoch) if epoch is not None else None
        for limit, source in ((1.10, ""), (1.25, " (core issue)")):
            name = f"CPU: epoch ({label}, batch 128) ≤ {limit:.2f}× its matrix products alone{source}"
            if ratio is None:
                targets.append(_missing(name, env, ["numpy"], "training", cpu_only=True))
                continue
            value, products = ratio
            best = fastest_ratio(epoch)
            targets.append(Target(name, f"{value:.2f}× ({fmt_time(epoch.seconds)} vs {fmt_time(products)})",
                                  _status(value <= limit),
                                  f"median of {len(epoch.get('products_seconds'))} paired rounds; fastest rounds "
                                  f"{fmt_x(best)}" if best else ""))

    # CPU: faster than the CPU peers at the reference configuration.
    mine = one(results, op="epoch", suite="training", impl="mlp-numpy", optimizer="adam", batch=128)
    for impl, peer in (("torch-cpu", "PyTorch CPU"), ("sklearn", "scikit-learn")):
        name = f"CPU: epoch (Adam, batch 128) faster than {peer}"
        other = one(results, op="epoch", suite="training", impl=impl, batch=128)
        if mine is None or other is None:
            targets.append(_missing(name, env, ["numpy", impl], "training", cpu_only=True))
            continue
        ratio = mine.epoch_60k / other.epoch_60k
        note = "" if other.samples == N_SAMPLES else f"{peer} timed on {other.samples:,} samples, scaled to 60,000"
        targets.append(Target(name, f"{fmt_time(mine.epoch_60k)} vs {fmt_time(other.epoch_60k)} "
                                    f"({ratio:.2f}× the peer's time)", _status(ratio < 1.0), note))

    # GPU: fused forward against cuBLAS at 4096^3.
    name = "GPU: fused affine+ReLU ≥ 60% of cuBLAS SGEMM throughput at 4096³"
    fused = one(results, op="forward", device="gpu", impl="mlp", group="square", m=4096)
    cublas = one(results, op="forward", device="gpu", impl="cublas", group="square", m=4096)
    if fused is None or cublas is None:
        targets.append(_missing(name, env, ["cuda", "cupy"], "kernels"))
    else:
        frac = fused.gflops / cublas.gflops
        targets.append(Target(name, f"{fmt_pct(frac)} ({fmt_num(fused.gflops)} vs {fmt_num(cublas.gflops)} GFLOP/s)",
                              _status(frac >= 0.60)))

    # GPU: fused forward against cuBLAS + a separate bias/ReLU pass, at the reference shapes.
    name = "GPU: fused affine+ReLU faster than cuBLAS + separate bias/ReLU at the reference network's shapes"
    pairs = []
    for r in find(results, op="forward", device="gpu", impl="mlp", group="reference"):
        alt = one(results, op="forward", device="gpu", impl="cublas+epilogue", group="reference",
                  m=r.get("m"), k=r.get("k"), n=r.get("n"))
        if alt is not None:
            pairs.append((alt.seconds / r.seconds, r))
    if not pairs:
        targets.append(_missing(name, env, ["cuda", "cupy"], "kernels"))
    else:
        faster = sum(1 for s, _ in pairs if s > 1.0)
        worst, at = min(pairs, key=lambda p: p[0])
        targets.append(Target(name, f"faster at {faster} of {len(pairs)} shapes; lowest speedup {worst:.2f}× "
                                    f"at {_shape(at)}", _status(faster == len(pairs))))

    # GPU: softmax-with-loss bandwidth against a device-to-device copy.
    name = "GPU: softmax-with-loss ≥ 70% of device copy bandwidth at large sizes (logits ≥ 256 MiB)"
    copy = one(results, op="limit_copy", device="gpu")
    large = [r for r in find(results, op="softmax_xent", device="gpu", impl="mlp")
             if r.get("rows", 0) * r.get("classes", 0) * 4 >= LARGE_SOFTMAX_BYTES]
    if copy is None or not large:
        targets.append(_missing(name, env, ["cuda"], "kernels"))
    else:
        fracs = [(r.gbps / copy.gbps, r) for r in large]
        low, at = min(fracs, key=lambda p: p[0])
        targets.append(Target(name, f"lowest {fmt_pct(low)} at {at.get('rows'):,}×{at.get('classes'):,} "
                                    f"({fmt_num(at.gbps)} of {fmt_num(copy.gbps)} GB/s); {len(large)} sizes",
                              _status(all(f >= 0.70 for f, _ in fracs))))

    # GPU: epoch against PyTorch eager on the same GPU.
    name = "GPU: epoch (Adam, batch 128) no slower than PyTorch eager on the same GPU"
    mine = one(results, op="epoch", suite="training", impl="mlp-cuda", optimizer="adam", batch=128)
    other = one(results, op="epoch", suite="training", impl="torch-cuda", batch=128)
    if mine is None or other is None:
        targets.append(_missing(name, env, ["cuda", "torch-cuda"], "training"))
    else:
        ratio = mine.epoch_60k / other.epoch_60k
        targets.append(Target(name, f"{fmt_time(mine.epoch_60k)} vs {fmt_time(other.epoch_60k)} "
                                    f"({ratio:.2f}× PyTorch's time)", _status(ratio <= 1.0)))
    return targets


def _shape(r: Result) -> str:
    if r.get("group") == "square":
        return f"{r.get('m')}³"
    return f"batch {r.get('m')}, {r.get('k')}→{r.get('n')}"


# ------------------------------------------------------------------ sections
def _header(env: dict[str, Any], title: str) -> list[str]:
    cpu = env.get("cpu", {})
    gpu = env.get("gpu")
    v = env.get("versions", {})
    opts = env.get("options", {})
    mode = "quick" if opts.get("quick") else "full"
    if opts.get("skip_cpu"):
        mode += ", --skip-cpu"
    suites = env.get("outcomes", {}).get("suites")
    if suites:
        mode += f" (suites: {', '.join(suites)})"
    ram = cpu.get("ram_bytes")
    lines = [f"# mlp benchmarks: {title}", "",
             f"- **Date**: {env.get('date', 'unknown')}; **commit**: `{env.get('git_commit') or 'unknown'}`; "
             f"**run**: {mode}",
             f"- **CPU**: {cpu.get('model', 'unknown')}, {cpu.get('cores', '?')} cores"
             + (f", {ram / 2**30:.0f} GiB RAM" if ram else "")]
    for lib in env.get("blas", []):
        lines.append(f"- **BLAS** (NumPy): {lib.get('internal_api')} {lib.get('version')} "
                     f"({lib.get('architecture')}, {lib.get('num_threads')} threads, `{lib.get('library')}`)")
        break
    if gpu and "error" not in gpu:
        cc = ".".join(str(x) for x in gpu.get("compute_capability") or [])
        mem = gpu.get("total_memory_bytes")
        extra = [f"CuPy built for CUDA runtime {gpu['cupy_runtime_version']}" if gpu.get("cupy_runtime_version")
                 else "", f"PyTorch built for CUDA {gpu['torch_cuda_version']}" if gpu.get("torch_cuda_version")
                 else ""]
        lines.append(f"- **GPU**: {gpu.get('name')} (compute capability {cc}, {gpu.get('sm_count')} SMs"
                     + (f", {mem / 2**30:.0f} GiB" if mem else "") + f"); driver {gpu.get('driver_version') or '?'}, "
                     f"CUDA runtime {gpu.get('runtime_version') or 'unknown'}"
                     + "".join(f"; {e}" for e in extra if e))
    elif gpu:
        lines.append(f"- **GPU**: present, but describing it failed ({gpu['error']})")
    else:
        reason = env.get("availability", {}).get("cuda", {}).get("detail", "unknown")
        lines.append(f"- **GPU**: none usable ({reason})")
    names = ("python", "numpy", "numba", "numba-cuda", "cupy", "torch", "scikit-learn", "matplotlib",
             "pytest-benchmark")
    lines.append("- **Versions**: " + ", ".join(f"{n} {v.get(n) or 'not installed'}" for n in names))
    lines.append(f"- **Platform**: {env.get('platform', 'unknown')}")
    return lines


def _limits(results: list[Result]) -> dict[str, Result | None]:
    return {key: one(results, op=op, device=dev)
            for key, op, dev in (("gpu_sgemm", "limit_sgemm", "gpu"), ("gpu_copy", "limit_copy", "gpu"),
                                 ("cpu_sgemm", "limit_sgemm", "cpu"), ("cpu_copy", "limit_copy", "cpu"))}


def _limits_section(lim: dict[str, Result | None]) -> list[str]:
    rows = []
    labels = {"gpu_sgemm": "GPU: cuBLAS SGEMM (CuPy, FP32, TF32 off)", "gpu_copy": "GPU: device-to-device copy",
              "cpu_sgemm": "CPU: BLAS SGEMM (numpy.matmul)", "cpu_copy": "CPU: memory copy (numpy.copyto, 1 thread)"}
    for key, label in labels.items():
        r = lim[key]
        if r is None:
            continue
        if "sgemm" in key:
            rows.append([label, f"{r.get('m')}³ float32", f"{fmt_num(r.gflops)} GFLOP/s", fmt_time(r.seconds)])
        else:
            rows.append([label, f"{r.get('bytes') / 2 / 2**20:,.0f} MiB", f"{fmt_num(r.gbps)} GB/s (read + write)",
                         fmt_time(r.seconds)])
    if not rows:
        return ["No limit was measured in this run, so fractions of the limits are not shown.", ""]
    return [table(["limit", "size", "measured", "time"], rows), ""]


def _gemm_rows(results: list[Result], op: str, device: str) -> list[Result]:
    mine = find(results, op=op, device=device, impl="mlp")
    return sorted(mine, key=lambda r: (r.get("group") != "reference", r.get("m"), -r.get("k", 0)))


def _gemm_section_gpu(results: list[Result], op: str, lim: dict[str, Result | None]) -> list[str]:
    rows = []
    peak = lim["gpu_sgemm"]
    for r in _gemm_rows(results, op, "gpu"):
        key = {"op": op, "m": r.get("m"), "k": r.get("k"), "n": r.get("n")}
        cub = one(results, device="gpu", impl="cublas", **key)
        alt = one(results, device="gpu", impl="cublas+epilogue", **key)
        cpu = one(results, device="cpu", impl="mlp", **key)
        rows.append([
            _shape(r), fmt_time(r.seconds), fmt_num(r.gflops),
            fmt_pct(r.gflops / peak.gflops) if peak else "—",
            fmt_time(cub.seconds) if cub else "—",
            fmt_pct(r.gflops / cub.gflops) if cub else "—",
            fmt_time(alt.seconds) if alt else "—",
            fmt_x(alt.seconds / r.seconds) if alt else "—",
            fmt_x(cpu.seconds / r.seconds) if cpu else "—",
            r.get("plan", ""),
        ])
    if not rows:
        return []
    what = "forward: relu(x @ W + b)" if op == "forward" else "backward: dW, db (and dx) with the ReLU mask"
    alt_name = "bias+ReLU" if op == "forward" else "mask + column sum"
    return [f"#### GPU, affine {what}", "",
            table(["shape", "mlp", "GFLOP/s", "% of SGEMM limit", "cuBLAS only", "% of cuBLAS",
                   f"cuBLAS + {alt_name}", "speedup vs that", "speedup vs NumPy backend", "tiles (auto)"],
                  rows, "lrrrrrrrrl"), ""]


def _gemm_section_cpu(results: list[Result], op: str, lim: dict[str, Result | None]) -> list[str]:
    rows = []
    peak = lim["cpu_sgemm"]
    for r in _gemm_rows(results, op, "cpu"):
        mm = one(results, op=op, device="cpu", impl="matmul", m=r.get("m"), k=r.get("k"), n=r.get("n"))
        rows.append([
            _shape(r), fmt_time(r.seconds), fmt_num(r.gflops), fmt_pct(r.gflops / peak.gflops) if peak else "—",
            fmt_time(mm.seconds) if mm else "—", fmt_num(mm.gflops) if mm else "—",
            fmt_x(r.seconds / mm.seconds) if mm else "—",
        ])
    if not rows:
        return []
    what = "forward: relu(x @ W + b)" if op == "forward" else "backward: dW, db (and dx) with the ReLU mask"
    return [f"#### CPU, affine {what}", "",
            table(["shape", "NumPy backend", "GFLOP/s", "% of SGEMM limit", "numpy.matmul only", "GFLOP/s",
                   "backend / matmul"], rows), ""]


def _tiles_section(results: list[Result], lim: dict[str, Result | None]) -> list[str]:
    tiles = find(results, op="forward_tiles", device="gpu")
    if not tiles:
        return []
    cub = one(results, op="forward", device="gpu", impl="cublas", group="square", m=4096)
    rows = [[r.get("config"), fmt_time(r.seconds), fmt_num(r.gflops),
             fmt_pct(r.gflops / cub.gflops) if cub else "—"] for r in tiles]
    return ["#### GPU, fused forward at 4096³ by tile configuration", "",
            table(["tiles", "time", "GFLOP/s", "% of cuBLAS"], rows), ""]


def _softmax_section(results: list[Result], lim: dict[str, Result | None]) -> list[str]:
    out = []
    for device, copy in (("gpu", lim["gpu_copy"]), ("cpu", lim["cpu_copy"])):
        mine = sorted(find(results, op="softmax_xent", device=device, impl="mlp"),
                      key=lambda r: (r.get("rows") * r.get("classes"), r.get("classes")))
        if not mine:
            continue
        rows = []
        for r in mine:
            alt = one(results, op="softmax_xent", device=device, impl="cupy", rows=r.get("rows"),
                      classes=r.get("classes"))
            row = [f"{r.get('rows'):,} × {r.get('classes'):,}", f"{r.get('bytes') / 2**20:,.1f}",
                   fmt_time(r.seconds), fmt_num(r.gbps), fmt_pct(r.gbps / copy.gbps) if copy else "—"]
            if device == "gpu":
                row += [fmt_time(alt.seconds) if alt else "—", fmt_x(alt.seconds / r.seconds) if alt else "—"]
            rows.append(row)
        headers = ["rows × classes", "MiB moved", "time", "GB/s", "% of copy bandwidth"]
        if device == "gpu":
            headers += ["CuPy composed", "speedup vs CuPy"]
        label = "GPU, CUDA kernel" if device == "gpu" else "CPU, NumPy backend (Numba loop, 1 thread)"
        out += [f"#### Softmax with cross-entropy: {label}", "", table(headers, rows), ""]
    return out


def _epoch_section(results: list[Result]) -> list[str]:
    epochs = find(results, op="epoch", suite="training")
    if not epochs:
        return []
    order = {impl: i for i, impl in enumerate(PEER_ORDER)}
    epochs.sort(key=lambda r: (r.get("batch"), order.get(r.get("impl"), 99), r.get("optimizer", "")))
    rows = []
    for r in epochs:
        fit = r.call_seconds if r.get("epoch_seconds") else None
        scaled = r.samples != N_SAMPLES
        rows.append([
            IMPL_LABELS.get(r.get("impl"), r.get("impl")), r.get("optimizer", ""), str(r.get("batch")),
            fmt_time(r.epoch_60k) + (" *" if scaled else ""), f"{r.rounds} / {fmt_pct(r.spread)}",
            f"{r.samples / r.seconds:,.0f}",
            fmt_time(fit) if fit else "—",
            f"{r.get('launches_per_epoch') / r.get('steps'):.1f}" if r.get("launches_per_epoch") else "—",
            str(r.get("threads") or "—"),
        ])
    lines = ["### Epoch of the reference network (60,000 samples)", "",
             table(["implementation", "optimizer", "batch", "epoch", "rounds / IQR", "samples/s", "fit(epochs=1)",
                    "launches/step", "CPU threads"], rows, "lllrrrrrr"), ""]
    if any(r.samples != N_SAMPLES for r in epochs):
        lines += ["\\* timed on fewer samples (quick run) and scaled to 60,000; samples/s is as measured.", ""]
    lines += ["*epoch* is the trainer's own per-epoch time (first batch to the loss read-back, which waits for the "
              "device); *fit(epochs=1)* adds `fit`'s one-time input checks and copy of the data to the backend. "
              "PyTorch loops keep the data on their device; scikit-learn's time is its whole `fit`.", ""]

    ratio_rows = []
    for batch in sorted({r.get("batch") for r in epochs}):
        npy, cud = _adam_epoch(results, "mlp-numpy", batch), _adam_epoch(results, "mlp-cuda", batch)
        pairs = [("CUDA backend speedup over NumPy backend", npy, cud),
                 ("NumPy backend time / PyTorch CPU time", _adam_epoch(results, "torch-cpu", batch), npy),
                 ("NumPy backend time / scikit-learn time", _adam_epoch(results, "sklearn", batch), npy),
                 ("CUDA backend time / PyTorch CUDA time", _adam_epoch(results, "torch-cuda", batch), cud)]
        for label, base, this in pairs:
            if base is not None and this is not None:
                value = base.epoch_60k / this.epoch_60k if "speedup" in label else this.epoch_60k / base.epoch_60k
                ratio_rows.append([label, str(batch), fmt_x(value)])
    if ratio_rows:
        lines += ["Ratios (Adam; below 1× means mlp takes less time than the peer):", "",
                  table(["comparison", "batch", "ratio"], ratio_rows, "lrr"), ""]
    return lines


def _adam_epoch(results: list[Result], impl: str, batch: int) -> Result | None:
    return one(results, op="epoch", suite="training", impl=impl, batch=batch, optimizer="adam")


def _step_section(results: list[Result]) -> list[str]:
    steps = find(results, op="step", suite="training")
    if not steps:
        return []
    order = {impl: i for i, impl in enumerate(PEER_ORDER)}
    steps.sort(key=lambda r: (r.get("batch"), order.get(r.get("impl"), 99)))
    rows = [[IMPL_LABELS.get(r.get("impl"), r.get("impl")), str(r.get("batch")), fmt_time(r.seconds),
             f"{r.get('launches_per_step'):.0f}" if r.get("launches_per_step") else "—"] for r in steps]
    return ["### One training step (Adam)", "",
            table(["implementation", "batch", "time per step", "kernel launches per step"], rows, "lrrr"), "",
            "Steps run back to back on device-resident data (take_rows, forward, loss, backward, optimizer), "
            "with one synchronisation per round of steps.", ""]


def _cpu_ratio_section(results: list[Result]) -> list[str]:
    rows = []
    epochs = sorted(find(results, op="epoch", suite="training", impl="mlp-numpy"), key=lambda r: (r.get("batch"), r.get("optimizer")))
    for epoch in epochs:
        ratio = products_ratio(epoch)
        if ratio is None:
            continue
        value, products = ratio
        rows.append([epoch.get("optimizer"), str(epoch.get("batch")), fmt_time(epoch.seconds), fmt_time(products),
                     fmt_x(value), fmt_x(fastest_ratio(epoch)), fmt_time(epoch.seconds - products)])
    if not rows:
        return []
    return ["### CPU: the epoch against its matrix products alone", "",
            table(["optimizer", "batch", "NumPy backend epoch", "matrix products alone", "ratio (median)",
                   "ratio (fastest rounds)", "time outside the products"], rows, "lrrrrrr"), "",
            "The products alone are the eight BLAS calls of each step (forward 3, dW 3, dx 2) into preallocated "
            "outputs over the same batch sequence, timed right before every round of the epoch; the ratio is the "
            "median of the per-round ratios, and the fastest epoch over the fastest products shows the same ratio "
            "with the least noise from the machine. The rest of the epoch is the gather, the bias/ReLU epilogues, the "
            "loss, the mask and bias gradients and the optimizer update.", ""]


def _scaling_section(results: list[Result]) -> list[str]:
    points = find(results, suite="scaling")
    if not points:
        return []
    lines = []
    for sweep, label in (("batch", "batch size (784-512-256-10)"), ("width", "width W (784-W-W/2-10, batch 128)")):
        by_value: dict[int, dict[str, Result]] = {}
        for r in find(points, sweep=sweep):
            value = r.get("batch") if sweep == "batch" else r.get("width")
            by_value.setdefault(value, {})[r.get("impl")] = r
        if not by_value:
            continue
        impls = [i for i in ("mlp-numpy", "mlp-cuda") if any(i in d for d in by_value.values())]
        rows = []
        for value in sorted(by_value):
            d = by_value[value]
            row = [str(value)] + [fmt_time(d[i].epoch_60k) + (" *" if d[i].samples != N_SAMPLES else "")
                                  if i in d else "—" for i in impls]
            if len(impls) == 2:
                row.append(fmt_x(d["mlp-numpy"].epoch_60k / d["mlp-cuda"].epoch_60k)
                           if all(i in d for i in impls) else "—")
            rows.append(row)
        headers = [sweep] + [IMPL_LABELS[i] for i in impls] + (["CUDA speedup"] if len(impls) == 2 else [])
        lines += [f"#### Time per epoch (60,000 samples) against {label}", "", table(headers, rows), ""]
    if any(r.samples != N_SAMPLES for r in points):
        lines += ["\\* timed on fewer samples (quick run) and scaled to 60,000.", ""]
    return lines


def _absent_section(env: dict[str, Any]) -> list[str]:
    lines = ["## Absent, skipped and failed", ""]
    avail = env.get("availability", {})
    for name, label in SUBJECTS.items():
        entry = avail.get(name)
        if entry is None:
            lines.append(f"- **{name}** ({label}): not probed")
        elif not entry.get("present"):
            lines.append(f"- **{name}** ({label}): **absent**: {entry.get('detail')}")
        else:
            lines.append(f"- **{name}** ({label}): present: {entry.get('detail')}")
    outcomes = env.get("outcomes", {})
    reasons: dict[str, int] = {}
    for s in outcomes.get("skipped", []):
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    lines.append("")
    if reasons:
        lines.append("Benchmarks skipped, by reason:")
        lines.append("")
        lines += [f"- {count} × {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("")
    if outcomes.get("deselected"):
        opts = env.get("options", {})
        why = " and ".join(w for w, on in (("--quick", opts.get("quick")), ("--skip-cpu", opts.get("skip_cpu")))
                           if on) or "the run's options"
        lines += [f"{outcomes['deselected']} benchmarks were left out by {why}.", ""]
    failed = outcomes.get("failed", [])
    if failed:
        lines.append("**Failed** (no timing reported for these):")
        lines.append("")
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
        "benchmark are in `benchmark.json`). One untimed call precedes the rounds (compilation, cuBLAS handles, "
        "first touch of memory); Python's garbage collector is off while timing.",
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


# -------------------------------------------------------------------- plots
def _plot_all(results: list[Result], folder: Path, lim: dict[str, Result | None]) -> list[str]:
    """Write the plots that have data; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, fn in (("gemm.png", _plot_gemm), ("softmax.png", _plot_softmax), ("epoch.png", _plot_epoch),
                     ("scaling.png", _plot_scaling)):
        fig = fn(plt, results, lim)
        if fig is not None:
            fig.savefig(folder / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(name)
    return written


def _log_axis(axis, fmt, subs=(1.0, 2.0, 5.0)) -> None:
    """Log-scale tick labels at ``subs`` times powers of ten, written with ``fmt``."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _plain_number(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:.2g}"


def _plot_gemm(plt, results, lim):
    """Per device: forward and backward GFLOP/s against batch size for each layer, and the square sizes."""
    devices = [d for d in ("gpu", "cpu") if find(results, op="forward", device=d, impl="mlp")]
    if not devices:
        return None
    fig, axes = plt.subplots(len(devices), 3, figsize=(15, 4.3 * len(devices)), squeeze=False)
    for row, device in zip(axes, devices):
        mine_label = "mlp CUDA" if device == "gpu" else "mlp NumPy backend"
        alt = {"gpu": ("cublas+epilogue", "cuBLAS + epilogue"), "cpu": ("matmul", "numpy.matmul only")}[device]
        peak = lim[f"{device}_sgemm"]
        for ax, op in zip(row[:2], ("forward", "backward")):
            layers = sorted({(r.get("k"), r.get("n")) for r in find(results, op=op, device=device, group="reference")},
                            reverse=True)
            for color, (k, n) in enumerate(layers):
                for impl, style, label in (("mlp", "o-", mine_label), (alt[0], "x--", alt[1])):
                    pts = sorted(find(results, op=op, device=device, impl=impl, group="reference", k=k, n=n),
                                 key=lambda r: r.get("m"))
                    if pts:
                        ax.plot([r.get("m") for r in pts], [r.gflops for r in pts], style, color=f"C{color}",
                                label=f"{label}, {k}→{n}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_title(f"{device.upper()} {op}, layers of 784-512-256-10")
        ax = row[2]
        for color, op in ((0, "forward"), (3, "backward")):
            for impl, style, label in (("mlp", "o-", mine_label), (alt[0], "x--", alt[1])):
                pts = sorted(find(results, op=op, device=device, impl=impl, group="square"), key=lambda r: r.get("m"))
                if pts:
                    ax.plot([r.get("m") for r in pts], [r.gflops for r in pts], style, color=f"C{color}",
                            label=f"{label}, {op}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (n × n × n products)")
        ax.set_title(f"{device.upper()}: square sizes")
        for ax in row:
            if peak:
                ax.axhline(peak.gflops, color="gray", linestyle=":",
                           label=f"SGEMM {fmt_num(peak.gflops)} GFLOP/s ({peak.get('m')}³)")
            ax.set_yscale("log")
            _log_axis(ax.yaxis, _plain_number)
            ax.xaxis.set_major_formatter(_int_formatter())
            ax.set_ylabel("GFLOP/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6.5)
    fig.tight_layout()
    return fig


def _int_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:.0f}")


def _plot_softmax(plt, results, lim):
    devices = [d for d in ("gpu", "cpu") if find(results, op="softmax_xent", device=d)]
    if not devices:
        return None
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.2), squeeze=False)
    for ax, device in zip(axes[0], devices):
        for impl, label, color in (("mlp", "mlp", "C0"), ("cupy", "CuPy composed", "C1")):
            pts = sorted(find(results, op="softmax_xent", device=device, impl=impl), key=lambda r: r.get("bytes"))
            if pts:
                ax.plot([r.get("bytes") / 2**20 for r in pts], [r.gbps for r in pts], "o-", color=color, label=label)
        copy = lim[f"{device}_copy"]
        if copy:
            ax.axhline(copy.gbps, color="gray", linestyle=":", label=f"copy {fmt_num(copy.gbps)} GB/s")
            if device == "gpu":
                ax.axhline(0.7 * copy.gbps, color="gray", linestyle="--", linewidth=0.8, label="70% of copy")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis, lambda v: f"{v:g}", subs=(1.0,))
        _log_axis(ax.yaxis, lambda v: f"{v:g}")
        ax.set_xlabel("MiB moved per call (logits + labels + gradient)")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{device.upper()}: softmax with cross-entropy")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_epoch(plt, results, lim):
    from matplotlib.ticker import FuncFormatter

    epochs = [r for r in find(results, op="epoch", suite="training")
              if not r.get("impl", "").startswith("mlp") or r.get("optimizer") == "adam"]
    if not epochs:
        return None
    batches = sorted({r.get("batch") for r in epochs})
    impls = [i for i in PEER_ORDER if any(r.get("impl") == i for r in epochs)]
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * len(impls) * len(batches)))
    y = 0
    ticks, labels = [], []
    for bi, batch in enumerate(batches):
        for impl in impls:
            r = one(epochs, impl=impl, batch=batch)
            if r is None:
                continue
            ax.barh(y, r.epoch_60k, color=f"C{PEER_ORDER.index(impl)}")
            ax.text(r.epoch_60k, y, " " + fmt_time(r.epoch_60k), va="center", fontsize=8)
            ticks.append(y)
            labels.append(f"{IMPL_LABELS[impl]}, batch {batch}")
            y += 1
            ratio = products_ratio(r) if impl == "mlp-numpy" else None
            if ratio is not None:
                ax.barh(y, ratio[1], color="lightgray", hatch="//")
                ax.text(ratio[1], y, " " + fmt_time(ratio[1]), va="center", fontsize=8)
                ticks.append(y)
                labels.append(f"its matrix products alone, batch {batch}")
                y += 1
        y += 0.6
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    spans = [r.epoch_60k for r in epochs]
    if max(spans) / min(spans) > 20:  # CPU and GPU bars together: only a log scale shows both
        ax.set_xscale("log")
        ax.set_xlim(left=min(spans) / 3)
        _log_axis(ax.xaxis, fmt_time)
        ax.set_xlabel("time per epoch (60,000 samples, Adam), log scale")
    else:
        ax.set_xlim(0, max(spans) * 1.15)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_time(v) if v > 0 else "0"))
        ax.set_xlabel("time per epoch (60,000 samples, Adam)")
    ax.set_title("Epoch of 784-512-256-10 by implementation")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_scaling(plt, results, lim):
    from matplotlib.ticker import NullLocator

    points = find(results, suite="scaling")
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, sweep, xlabel in ((axes[0], "batch", "batch size (784-512-256-10)"),
                              (axes[1], "width", "width W (784-W-W/2-10, batch 128)")):
        for impl, color in (("mlp-numpy", "C0"), ("mlp-cuda", "C3")):
            pts = find(points, sweep=sweep, impl=impl)
            key = (lambda r: r.get("batch")) if sweep == "batch" else (lambda r: r.get("width"))
            pts.sort(key=key)
            if pts:
                ax.plot([key(r) for r in pts], [r.epoch_60k for r in pts], "o-", color=color, label=IMPL_LABELS[impl])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        values = sorted({r.get("batch") if sweep == "batch" else r.get("width") for r in find(points, sweep=sweep)})
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        _log_axis(ax.yaxis, fmt_time)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time per epoch (60,000 samples)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Cost curve: batch size")
    axes[1].set_title("Cost curve: width")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------- report
def render(results: list[Result], env: dict[str, Any], title: str, plots: Iterable[str] = ()) -> str:
    """The report's Markdown text."""
    plots = set(plots)
    lim = _limits(results)
    lines = _header(env, title)
    lines += ["", "## Targets", "",
              "The issue's targets, read against the numbers of this run (benchmarks, never test assertions). "
              "A target whose inputs were not measured here says why.", ""]
    targets = compute_targets(results, env)
    lines += [table(["target", "measured", "status", "note"],
                    [[t.name, t.measured, f"**{t.status}**" if t.status != "not measured" else t.status, t.note]
                     for t in targets], "llll", drop_empty=False), ""]

    kernels = (_gemm_section_gpu(results, "forward", lim) + _gemm_section_gpu(results, "backward", lim)
               + _tiles_section(results, lim) + _gemm_section_cpu(results, "forward", lim)
               + _gemm_section_cpu(results, "backward", lim) + _softmax_section(results, lim))
    lines += ["## Kernels", "", "### Limits measured in this run", ""] + _limits_section(lim)
    if kernels:
        lines += kernels
    else:
        lines += ["No kernel benchmark in this run.", ""]
    lines += [f"![{p}]({p})" + "\n" for p in ("gemm.png", "softmax.png") if p in plots]

    training = _epoch_section(results) + _step_section(results) + _cpu_ratio_section(results)
    lines += ["## Training", ""] + (training or ["No training benchmark in this run.", ""])
    lines += [f"![{p}]({p})" + "\n" for p in ("epoch.png",) if p in plots]

    lines += ["## Scaling", ""] + (_scaling_section(results) or ["No scaling benchmark in this run.", ""])
    lines += [f"![{p}]({p})" + "\n" for p in ("scaling.png",) if p in plots]

    lines += _absent_section(env)
    lines += _methodology(env)
    return "\n".join(lines).rstrip() + "\n"


def write_report(folder: Path, plots: bool = True) -> Path:
    """Build ``report.md`` (and the plots) in ``folder`` from the results there; returns the report's path."""
    folder = Path(folder)
    results, env = load(folder)
    written = _plot_all(results, folder, _limits(results)) if plots else []
    path = folder / REPORT
    path.write_text(render(results, env, folder.name, written))
    return path


if __name__ == "__main__":  # python -m bench.report RESULTS_DIR: rebuild a report from saved results
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    print(write_report(target, plots="--no-plots" not in sys.argv))
