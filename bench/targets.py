"""The performance targets the report reads each figure against: one table, one row per target.

A row names what is compared and the ratio it must reach.  ``subject`` and
``reference`` are pandas queries on the benchmark frame (see
:mod:`bench.frame` for its columns); the figure judged is
``subject[quantity] / reference[quantity]`` for every pair of rows that agree
on the ``on`` columns (with no ``on``, every subject row against every
reference row), or ``subject[quantity]`` itself when there is no reference
(the quantity is then a ratio already).  A target is met when every pair
satisfies ``ratio <compare> bound``; the report shows the worst pair.
``source`` says which benchmarks give the figures; ``needs`` the backends and
peers without which they cannot be measured (the report then says why).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from bench._measure import N_SAMPLES
from bench.fmt import fmt_num, fmt_time

_NUMPY_EPOCH_B128 = "suite == 'training' and op == 'epoch' and impl == 'mlp-numpy' and batch == 128"
# bench_sklearn.py: ``group`` is "<data set>-<dtype>", ``optimizer`` the solver.
_SKLEARN_FIT = "suite == 'sklearn' and op == 'fit'"
# bench_search.py: one grid search on digits per engine (``impl``); ``group`` is "digits-<dtype>".
_SEARCH = "suite == 'search' and op == 'search'"
_STACKED_SEARCH = f"{_SEARCH} and impl == 'mlp-search'"
# bench_coldstart.py: one row per script (``impl``), each round a new process.
_COLD = "suite == 'coldstart' and op == 'process'"
# bench_sparse.py: ``group`` is "<data set>-<dtype>"; ``peak_bytes`` the fit's peak memory in a fresh process.
_SPARSE_FIT = "suite == 'sparse' and op == 'fit'"


@dataclass(frozen=True)
class Target:
    what: str
    subject: str
    quantity: str
    compare: str  # "<", "<=" or ">="
    bound: float
    source: str
    needs: tuple[str, ...]
    suite: str
    reference: str | None = None
    on: tuple[str, ...] = ()
    percent: bool = False  # show the ratio as a percentage rather than as "1.23×"
    cpu_only: bool = False  # left out by --skip-cpu
    note: str = ""  # formatted with the worst pair's columns (the reference's end in "_ref")
    absolute: bool = False  # no reference: the bound is in the quantity's own unit (seconds, ...)


TARGETS: tuple[Target, ...] = (
    *(Target(f"CPU: epoch ({label}, batch 128) / its matrix products alone{origin}",
             subject=f"{_NUMPY_EPOCH_B128} and optimizer == '{optimizer}'", quantity="products_ratio",
             compare="<=", bound=bound,
             source="bench_training.py::test_epoch_mlp: the trainer's epoch time vs the same epoch's BLAS "
                    "products, timed before each round (`products_seconds`)",
             needs=("numpy",), suite="training", cpu_only=True,
             note="median of {products_rounds} paired rounds ({seconds:.2f} s vs {products_median:.2f} s); "
                  "fastest rounds {products_fastest_ratio:.2f}×")
      for optimizer, label in (("adam", "Adam"), ("sgd-momentum", "SGD with momentum"))
      for bound, origin in ((1.10, ""), (1.25, " (core target)"))),
    *(Target(f"CPU: epoch (Adam, batch 128), NumPy backend / {peer}",
             subject=f"{_NUMPY_EPOCH_B128} and optimizer == 'adam'", quantity="epoch_60k", compare="<", bound=1.0,
             reference=f"suite == 'training' and op == 'epoch' and impl == '{impl}' and batch == 128",
             source=f"bench_training.py::test_epoch_mlp vs {test}",
             needs=("numpy", impl), suite="training", cpu_only=True)
      for impl, peer, test in (("torch-cpu", "PyTorch CPU", "test_epoch_torch"),
                               ("sklearn", "scikit-learn MLPClassifier", "test_epoch_sklearn"))),
    Target("GPU: fused affine+ReLU / cuBLAS SGEMM throughput at 4096³",
           subject="op == 'forward' and device == 'gpu' and impl == 'mlp' and group == 'square' and m == 4096",
           reference="op == 'forward' and device == 'gpu' and impl == 'cublas' and group == 'square'",
           on=("m", "k", "n"), quantity="gflops", compare=">=", bound=0.70, percent=True,
           source="bench_kernels.py::test_forward_gpu: mlp vs cublas (CuPy matmul, TF32 off)",
           needs=("cuda", "cupy"), suite="kernels"),
    Target("GPU: fused affine+ReLU time / cuBLAS + separate bias/ReLU, at the reference network's shapes",
           subject="op == 'forward' and device == 'gpu' and impl == 'mlp' and group == 'reference'",
           reference="op == 'forward' and device == 'gpu' and impl == 'cublas+epilogue' and group == 'reference'",
           on=("m", "k", "n"), quantity="seconds", compare="<", bound=1.0,
           source="bench_kernels.py::test_forward_gpu: mlp vs cublas+epilogue",
           needs=("cuda", "cupy"), suite="kernels"),
    *(Target(f"GPU: backward {label} time / cuBLAS + separate mask/bias, at the reference network's shapes",
             subject=f"op == '{op}' and device == 'gpu' and impl == 'mlp' and group == 'reference'",
             reference=f"op == '{op}' and device == 'gpu' and impl == 'cublas+epilogue' and group == 'reference'",
             on=("m", "k", "n"), quantity="seconds", compare="<", bound=1.0,
             source=f"bench_kernels.py::test_backward_product_gpu[{op}]: mlp vs cublas+epilogue",
             needs=("cuda", "cupy"), suite="kernels")
      for op, label in (("affine_dx", "dx (ReLU mask fused)"), ("affine_dw", "dW + db"))),
    Target("GPU: softmax-with-loss bandwidth / device copy bandwidth, ≥ 1,000,000 rows of 10 classes",
           subject="op == 'softmax_xent' and device == 'gpu' and impl == 'mlp' and classes == 10 "
                   "and rows >= 1000000",
           reference="op == 'limit_copy' and device == 'gpu'", quantity="gbps", compare=">=", bound=0.70,
           percent=True, source="bench_kernels.py::test_softmax_xent_gpu vs test_limit_copy_gpu (fastest round)",
           needs=("cuda",), suite="kernels"),
    Target("GPU: softmax-with-loss bandwidth / device copy bandwidth, logits ≥ 256 MiB",
           subject="op == 'softmax_xent' and device == 'gpu' and impl == 'mlp' and logits_bytes >= 2**28",
           reference="op == 'limit_copy' and device == 'gpu'", quantity="gbps", compare=">=", bound=0.70,
           percent=True, source="bench_kernels.py::test_softmax_xent_gpu vs test_limit_copy_gpu (fastest round)",
           needs=("cuda",), suite="kernels"),
    Target("GPU: epoch (Adam, batch 128), CUDA backend / PyTorch eager on the same GPU",
           subject="suite == 'training' and op == 'epoch' and impl == 'mlp-cuda' and optimizer == 'adam' "
                   "and batch == 128",
           reference="suite == 'training' and op == 'epoch' and impl == 'torch-cuda' and batch == 128",
           quantity="epoch_60k", compare="<=", bound=1.0,
           source="bench_training.py::test_epoch_mlp vs test_epoch_torch",
           needs=("cuda", "torch-cuda"), suite="training"),
    Target("GPU: epoch of the trainer's loop with CUDA graphs, batch 128 (goal: 40 ms)",
           subject="suite == 'training' and op == 'epoch' and impl == 'mlp-cuda-graphs' and batch == 128",
           quantity="epoch_60k", compare="<=", bound=0.100, absolute=True,
           source="bench_training.py::test_epoch_loop[cuda-graphs]", needs=("cuda",), suite="training"),
    *(Target(f"GPU: epoch with CUDA graphs, batch 128 / {peer}",
             subject="suite == 'training' and op == 'epoch' and impl == 'mlp-cuda-graphs' and batch == 128",
             reference=f"suite == 'training' and op == 'epoch' and impl == '{impl}' and batch == 128",
             on=("optimizer",), quantity="epoch_60k", compare="<=", bound=bound,
             source=f"bench_training.py::test_epoch_loop[cuda-graphs] vs test_epoch_torch[{test}]",
             needs=("cuda", "torch-cuda"), suite="training")
      for impl, peer, test, bound in (("torch-cuda", "PyTorch eager", "cuda", 0.25),
                                      ("torch-cuda-graphs", "PyTorch with CUDA graphs", "cuda-graphs", 1.0))),
    *(Target(f"CPU: {estimator}.fit ({dataset}, solver='{solver}'), mlp NumPy backend / sklearn's, same arguments",
             subject=f"{_SKLEARN_FIT} and impl == 'mlp-numpy' and optimizer == '{solver}' "
                     f"and group in {[f'{dataset}-{dtype}' for dtype in ('float32', 'float64')]}",
             reference=f"{_SKLEARN_FIT} and impl == 'sklearn' and optimizer == '{solver}'", on=("group",),
             quantity="seconds", compare="<=", bound=bound,
             source="bench_sklearn.py::test_fit_mlp[numpy] vs test_fit_sklearn (float32 and float64)",
             needs=("numpy", "sklearn"), suite="sklearn", cpu_only=True,
             note="worst at {group}: held-out {metric} {score:.3f} vs {score_ref:.3f}, "
                  "{n_iter:.0f} vs {n_iter_ref:.0f} iterations")
      for estimator, dataset in (("MLPClassifier", "digits"), ("MLPRegressor", "diabetes"))
      for solver, bound in (("adam", 0.5), ("sgd", 0.5), ("lbfgs", 1.0))),
    *(Target(f"CPU: digits grid search, {peer} / {ours} (speed-up){goal}",
             subject=f"{_SEARCH} and impl == '{impl}'", reference=f"{_SEARCH} and impl == '{mine}'", on=("group",),
             quantity="seconds", compare=">=", bound=bound,
             source=f"bench_search.py::{test}[{impl}] vs {test}[{mine}]",
             needs=("numpy", "sklearn"), suite="search", cpu_only=True,
             note="at {group}: best {best} ({best_score:.4f}) vs {best_ref} ({best_score_ref:.4f})")
      for impl, peer, mine, ours, bound, goal, test in (
          ("sklearn-search-mlp", "sklearn's GridSearchCV(mlp.MLPClassifier, n_jobs=-1)", "mlp-search-all-cores",
           "mlp.GridSearchCV(n_jobs=-1)", 1.5, "", "test_search"),
          ("sklearn-search", "sklearn's GridSearchCV(sklearn MLPClassifier, n_jobs=-1)", "mlp-search-all-cores",
           "mlp.GridSearchCV(n_jobs=-1)", 4.0, "", "test_search"),
          ("sklearn-search", "sklearn's GridSearchCV(sklearn MLPClassifier, n_jobs=-1)", "mlp-search-all-cores",
           "mlp.GridSearchCV(n_jobs=-1)", 10.0, " (goal)", "test_search"),
          ("sklearn-search-pipeline", "sklearn's GridSearchCV(Pipeline(StandardScaler(), sklearn MLPClassifier), "
           "n_jobs=-1)", "mlp-search-pipeline", "mlp.GridSearchCV(the same pipeline with mlp's, n_jobs=-1)", 3.0,
           "", "test_search_pipeline"))),
    Target("GPU: digits grid search, sklearn's GridSearchCV(n_jobs=-1) on every CPU core / mlp.GridSearchCV on the "
           "GPU (speed-up, goal)",
           subject="suite == 'stacks' and op == 'search' and impl == 'sklearn-search'",
           reference="suite == 'stacks' and op == 'search' and impl == 'mlp-search-cuda'",
           quantity="seconds", compare=">=", bound=50.0,
           source="bench_stacks.py::test_stack_search[sklearn-search] vs [mlp-search-cuda]",
           needs=("cuda", "sklearn"), suite="stacks",
           note="{cores:.0f} CPU cores; best {best} ({best_score:.4f}) vs {best_ref} ({best_score_ref:.4f})"),
    Target("Cold start: a new process importing mlp and fitting digits once (Numba cache filled) / the same with "
           "scikit-learn's MLPClassifier",
           subject=f"{_COLD} and impl == 'mlp-warm'", reference=f"{_COLD} and impl == 'sklearn'",
           quantity="seconds", compare="<=", bound=1.5,
           source="bench_coldstart.py::test_coldstart[mlp-warm] vs [sklearn]", needs=("numpy", "sklearn"),
           suite="coldstart", cpu_only=True,
           note="import {import_median:.2f} s vs {import_median_ref:.2f} s, first fit {fit_median:.2f} s vs "
                "{fit_median_ref:.2f} s"),
    Target("Cold start: mlp's first fit with an empty Numba cache (everything compiles)",
           subject=f"{_COLD} and impl == 'mlp-empty'", quantity="fit_median", compare="<=", bound=1.5,
           absolute=True, source="bench_coldstart.py::test_coldstart[mlp-empty] (the fit the script times)",
           needs=("numpy", "sklearn"), suite="coldstart", cpu_only=True,
           note="import {import_median:.2f} s; the whole process {seconds:.2f} s"),
    *(Target(f"CPU: MLPClassifier.fit on sparse X ({label}), mlp NumPy backend / sklearn's, {what}",
             subject=f"{_SPARSE_FIT} and impl == 'mlp-numpy' "
                     f"and group in {[f'{dataset}-{dtype}' for dtype in ('float32', 'float64')]}",
             reference=f"{_SPARSE_FIT} and impl == 'sklearn'", on=("group",), quantity=quantity, compare="<=",
             bound=bound, source="bench_sparse.py::test_fit_sparse[mlp-numpy] vs [sklearn] (float64 and float32)",
             needs=("numpy", "sklearn"), suite="sparse", cpu_only=True,
             note="worst at {group}: held-out accuracy {score:.3f} vs {score_ref:.3f}, "
                  "{n_iter:.0f} vs {n_iter_ref:.0f} epochs")
      for dataset, label in (("tfidf", "TF-IDF-like 20,000 x 100,000, 0.1% non-zero"),
                             ("scattered", "20,000 x 20,000, 2,000 non-zeros"))
      for quantity, bound, what in (("seconds", 1.0, "fit time"), ("peak_bytes", 2.0, "peak memory of the fit"))),
    Target("CPU: digits grid search, mlp.GridSearchCV (one process) / its stacked matrix products alone on the "
           "same cores",
           subject=_STACKED_SEARCH, reference="suite == 'search' and op == 'products' and impl == 'stack-products'",
           on=("group",),
           quantity="seconds", compare="<=", bound=1.5,
           source="bench_search.py::test_search[mlp-search] vs test_search_products[grouped]",
           needs=("numpy", "sklearn"), suite="search", cpu_only=True,
           note="at {group}: {products_ref:,.0f} products in {stack_threads_ref:.0f} threads, one BLAS thread each"),
    Target("CPU: digits grid search, best parameters of GridSearchCV(mlp.MLPClassifier) one fit at a time "
           "equal to mlp.GridSearchCV's",
           subject=f"{_SEARCH} and impl == 'sklearn-search-mlp'", quantity="best_agrees", compare=">=", bound=1.0,
           percent=True, source="bench_search.py::test_search[sklearn-search-mlp] vs test_search[mlp-search]",
           needs=("numpy", "sklearn"), suite="search", cpu_only=True,
           note="at {group}: {best} ({best_score:.4f}); candidates' mean accuracies differ by at most {score_gap:.1e}"),
)

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


class _OrNan(dict):
    """A row's figures for a target's note; one the row did not record (an older record) reads as NaN."""

    def __missing__(self, key: str) -> float:
        return float("nan")


@dataclass
class Outcome:
    """One target read against a run: ``status`` is "met", "not met" or "not measured"."""

    target: Target
    status: str
    measured: str = "—"
    note: str = ""


def pairs(target: Target, df: pd.DataFrame) -> pd.DataFrame:
    """The subject rows joined with their reference rows, with the judged figure in ``ratio``."""
    if target.quantity not in df.columns:  # recorded by no benchmark of this run
        return df.iloc[:0].assign(ratio=pd.Series(dtype=float))
    subject = df.query(target.subject)
    if target.reference is None:
        return subject.assign(ratio=subject[target.quantity]).dropna(subset=["ratio"])
    reference = df.query(target.reference).add_suffix("_ref")
    if target.on:
        joined = subject.merge(reference, left_on=list(target.on), right_on=[f"{c}_ref" for c in target.on])
    else:
        joined = subject.merge(reference, how="cross")
    joined["ratio"] = joined[target.quantity] / joined[f"{target.quantity}_ref"]
    return joined.dropna(subset=["ratio"])


def _figure(quantity: str, value: float) -> str:
    if quantity == "gflops":
        return f"{fmt_num(value)} GFLOP/s"
    if quantity == "gbps":
        return f"{fmt_num(value)} GB/s"
    if quantity == "peak_bytes":
        return f"{value / 2**20:,.0f} MiB"
    return fmt_time(value)


def evaluate(target: Target, df: pd.DataFrame, why_absent: Callable[[Target], str]) -> Outcome:
    """Read ``target`` against the benchmarks ``df``; ``why_absent`` explains a target with no figures."""
    found = pairs(target, df)
    if found.empty:
        return Outcome(target, "not measured", note=why_absent(target))
    ok = _COMPARE[target.compare](found["ratio"], target.bound)
    worst = found.loc[found["ratio"].idxmin() if target.compare == ">=" else found["ratio"].idxmax()]
    if target.absolute:
        ratio = _figure(target.quantity, worst["ratio"])
    else:
        ratio = f"{100 * worst['ratio']:.0f}%" if target.percent else f"{worst['ratio']:.2f}×"
    measured = ratio
    if target.reference is not None:
        measured += (f" ({_figure(target.quantity, worst[target.quantity])} vs "
                     f"{_figure(target.quantity, worst[f'{target.quantity}_ref'])})")
    if len(found) > 1:
        measured = f"{int(ok.sum())} of {len(found)} within; worst {measured} at {worst['shape']}"
    notes = [target.note.format_map(_OrNan(worst.to_dict()))] if target.note else []
    scaled = [int(worst[c]) for c in ("samples", "samples_ref") if target.quantity == "epoch_60k" and c in worst
              and pd.notna(worst[c]) and worst[c] != N_SAMPLES]
    notes += [f"timed on {n:,} samples, scaled to {N_SAMPLES:,}" for n in scaled]
    return Outcome(target, "met" if ok.all() else "not met", measured, "; ".join(notes))


def bound_text(target: Target) -> str:
    if target.absolute:
        bound = _figure(target.quantity, target.bound)
    else:
        bound = f"{100 * target.bound:.0f}%" if target.percent else f"{target.bound:.2f}×"
    return f"{target.compare.replace('<=', '≤').replace('>=', '≥')} {bound}"


def evaluate_all(df: pd.DataFrame, why_absent: Callable[[Target], str]) -> list[Outcome]:
    return [evaluate(t, df, why_absent) for t in TARGETS]
