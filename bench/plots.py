"""The report's plots (matplotlib, PNG), drawn from the benchmark frame of :mod:`bench.frame`.

Each ``_plot_*`` returns a figure, or None when the run has no data for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.fmt import fmt_num, fmt_time
from bench.frame import first, select

#: Implementations of an epoch, in the order the plots and tables list them, with their labels.
IMPL_LABELS = {
    "mlp-numpy": "mlp, NumPy backend",
    "torch-cpu": "PyTorch CPU",
    "sklearn": "scikit-learn MLPClassifier",
    "mlp-cuda": "mlp, CUDA backend",
    "torch-cuda": "PyTorch CUDA (eager)",
    "mlp-numpy-fast": "mlp, NumPy, trainer's loop",
    "mlp-cuda-eager": "mlp, CUDA, trainer's loop, eager launches",
    "mlp-cuda-graphs": "mlp, CUDA, trainer's loop, CUDA graphs",
    "torch-cuda-graphs": "PyTorch CUDA, step as a CUDA graph",
}
PLOTS = ("gemm.png", "softmax.png", "epoch.png", "scaling.png")


def limits(df: pd.DataFrame) -> dict[str, pd.Series | None]:
    """The ceilings measured in the run: ``gpu_sgemm``, ``gpu_copy``, ``cpu_sgemm``, ``cpu_copy``."""
    return {f"{device}_{what}": first(df, op=f"limit_{what}", device=device)
            for device in ("gpu", "cpu") for what in ("sgemm", "copy")}


def write_plots(df: pd.DataFrame, folder: Path) -> list[str]:
    """Write the plots that have data into ``folder``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = limits(df)
    written = []
    for name, draw in zip(PLOTS, (_plot_gemm, _plot_softmax, _plot_epoch, _plot_scaling)):
        fig = draw(plt, df, lim)
        if fig is not None:
            fig.savefig(Path(folder) / name, dpi=110, bbox_inches="tight")
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


def _line(ax, pts: pd.DataFrame, x: str, y: str, style: str, **kw) -> None:
    if not pts.empty:
        pts = pts.sort_values(x)
        ax.plot(pts[x].astype(float), pts[y].astype(float), style, **kw)


def _plot_gemm(plt, df, lim):
    """Per device: forward and backward GFLOP/s against batch size for each layer, and the square sizes."""
    from matplotlib.ticker import FuncFormatter

    devices = [d for d in ("gpu", "cpu") if not select(df, op="forward", device=d, impl="mlp").empty]
    if not devices:
        return None
    fig, axes = plt.subplots(len(devices), 3, figsize=(15, 4.3 * len(devices)), squeeze=False)
    for row, device in zip(axes, devices):
        mine_label = "mlp CUDA" if device == "gpu" else "mlp NumPy backend"
        alt = {"gpu": ("cublas+epilogue", "cuBLAS + epilogue"), "cpu": ("matmul", "numpy.matmul only")}[device]
        impls = (("mlp", "o-", mine_label), (alt[0], "x--", alt[1]))
        for ax, op in zip(row[:2], ("forward", "backward")):
            ref = select(df, op=op, device=device, group="reference")
            layers = ref[["k", "n"]].drop_duplicates().sort_values(["k", "n"], ascending=False)
            for color, (k, n) in enumerate(layers.itertuples(index=False)):
                for impl, style, label in impls:
                    _line(ax, select(ref, impl=impl, k=k, n=n), "m", "gflops", style, color=f"C{color}",
                          label=f"{label}, {k}→{n}")
            ax.set_xlabel("batch size")
            ax.set_title(f"{device.upper()} {op}, layers of 784-512-256-10")
        for color, op in ((0, "forward"), (3, "backward")):
            for impl, style, label in impls:
                _line(row[2], select(df, op=op, device=device, impl=impl, group="square"), "m", "gflops", style,
                      color=f"C{color}", label=f"{label}, {op}")
        row[2].set_xlabel("n (n × n × n products)")
        row[2].set_title(f"{device.upper()}: square sizes")
        peak = lim[f"{device}_sgemm"]
        for ax in row:
            if peak is not None:
                ax.axhline(peak["gflops"], color="gray", linestyle=":",
                           label=f"SGEMM {fmt_num(peak['gflops'])} GFLOP/s ({peak['m']}³)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _log_axis(ax.yaxis, _plain_number)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0f}"))
            ax.set_ylabel("GFLOP/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6.5)
    fig.tight_layout()
    return fig


def _plot_softmax(plt, df, lim):
    devices = [d for d in ("gpu", "cpu") if not select(df, op="softmax_xent", device=d).empty]
    if not devices:
        return None
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.2), squeeze=False)
    for ax, device in zip(axes[0], devices):
        for impl, label, color in (("mlp", "mlp", "C0"), ("cupy", "CuPy composed", "C1")):
            pts = select(df, op="softmax_xent", device=device, impl=impl)
            _line(ax, pts.assign(mib=pts["bytes"].astype(float) / 2**20), "mib", "gbps", "o-", color=color,
                  label=label)
        copy = lim[f"{device}_copy"]
        if copy is not None:
            ax.axhline(copy["gbps"], color="gray", linestyle=":", label=f"copy {fmt_num(copy['gbps'])} GB/s")
            if device == "gpu":
                ax.axhline(0.7 * copy["gbps"], color="gray", linestyle="--", linewidth=0.8, label="70% of copy")
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


def adam_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """The training suite's epochs with Adam (peers run Adam only), ordered by batch, then implementation."""
    epochs = select(df, suite="training", op="epoch")
    epochs = epochs[epochs["impl"].isin(IMPL_LABELS) & (epochs["optimizer"] == "adam").fillna(False)]
    order = epochs["impl"].map(list(IMPL_LABELS).index)
    return epochs.assign(_order=order).sort_values(["batch", "_order"]).drop(columns="_order")


def _plot_epoch(plt, df, lim):
    from matplotlib.ticker import FuncFormatter

    epochs = adam_epochs(df)
    if epochs.empty:
        return None
    bars = []  # (label, seconds, color, hatch); None: a gap between batch sizes
    for batch, group in epochs.groupby("batch", sort=True):
        for r in group.itertuples():
            bars.append((f"{IMPL_LABELS[r.impl]}, batch {batch}", r.epoch_60k, f"C{list(IMPL_LABELS).index(r.impl)}",
                         None))
            if pd.notna(r.products_median):
                bars.append((f"its matrix products alone, batch {batch}", r.products_median, "lightgray", "//"))
        bars.append(None)
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * len(bars)))
    y, ticks, labels = 0.0, [], []
    for bar in bars:
        if bar is None:
            y += 0.6
            continue
        label, seconds, color, hatch = bar
        ax.barh(y, seconds, color=color, hatch=hatch)
        ax.text(seconds, y, " " + fmt_time(seconds), va="center", fontsize=8)
        ticks.append(y)
        labels.append(label)
        y += 1
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    spans = epochs["epoch_60k"]
    if spans.max() / spans.min() > 20:  # CPU and GPU bars together: only a log scale shows both
        ax.set_xscale("log")
        ax.set_xlim(left=spans.min() / 3)
        _log_axis(ax.xaxis, fmt_time)
        ax.set_xlabel("time per epoch (60,000 samples, Adam), log scale")
    else:
        ax.set_xlim(0, spans.max() * 1.15)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_time(v) if v > 0 else "0"))
        ax.set_xlabel("time per epoch (60,000 samples, Adam)")
    ax.set_title("Epoch of 784-512-256-10 by implementation")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_scaling(plt, df, lim):
    from matplotlib.ticker import NullLocator

    points = select(df, suite="scaling")
    if points.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, sweep, xlabel in ((axes[0], "batch", "batch size (784-512-256-10)"),
                              (axes[1], "width", "width W (784-W-W/2-10, batch 128)")):
        swept = select(points, sweep=sweep)
        for impl, color in (("mlp-numpy", "C0"), ("mlp-cuda", "C3")):
            _line(ax, select(swept, impl=impl), sweep, "epoch_60k", "o-", color=color, label=IMPL_LABELS[impl])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        values = sorted(int(v) for v in swept[sweep].dropna().unique())
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
