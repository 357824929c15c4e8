"""Many networks trained at once on the device: the ``stacks`` part of ``bench/gpu_session.py``.

Three measurements, each a key of ``stacks.json`` (rewritten after every
row, so that a part cut short keeps what it measured; a row that did not
run says why, and one that was still running when the part was stopped
says so):

``search``
    The digits grid search of ``bench/bench_search.py`` (its grid, folds,
    epochs, estimator arguments, scorer and epoch-count check; float32) as
    ``mlp.search.GridSearchCV(mlp.MLPClassifier(backend=...))``, then
    scikit-learn's ``GridSearchCV(MLPClassifier, n_jobs=-1)`` on every CPU
    core of the same machine, each after a small untimed search; the
    seconds of each and ``sklearn_over_mlp``, the speed-up of the stacked
    search.
``torch_func``
    64 networks of the reference size (784-512-256-10, ReLU, softmax
    cross-entropy, Adam lr 1e-3, batch 128, float32) on the same synthetic
    rows, each model with its own initialisation and its own shuffle: the
    epoch of the whole stack through :class:`mlp.TrainingLoop` (as
    ``mlp.search`` drives it; no L2 term), through PyTorch's ``torch.func``
    (:class:`TorchFuncStack`: ``stack_module_state`` and
    ``vmap(functional_call)``, one ``torch.optim.Adam`` over the stacked
    parameters, so one learning rate for all models: ``torch.func``'s
    limit), and the same with the loss under ``torch.compile``; their epochs
    over mlp's (``torch_func_over_mlp``, ``torch_compile_over_mlp``).
``padding``
    Networks whose hidden sizes differ, on digits: 30 each of (32,), (64,)
    and (100,) trained as three stacks (what ``mlp.search`` does: one stack
    per shape) against one stack of 90 networks of (100,) (what padding
    every model to the widest would compute at least): ``padded_over_grouped``.

Times are medians of the epochs after the first (compilation; on a device
that captures CUDA graphs the second epoch also captures, and the later
ones replay).  ``tiny`` shrinks everything to a check of the code itself.
The rows run in priority order: the search, the two eager stacks, padding,
then ``torch.compile`` (the longest to prepare).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: the goal for the stacked search on a GPU: scikit-learn's all-cores search time over mlp's
SEARCH_TARGET = 50.0
#: seconds scikit-learn's full search must have left to start (the 2-core CPU record took about 23 s)
SKLEARN_NEEDS_S = 30.0
#: seconds ``torch.compile``'s row must have left to start (its compilation alone can take about this long)
COMPILE_NEEDS_S = 30.0
#: what a row still running when the part is stopped leaves in ``stacks.json``
UNFINISHED = "still running when the part's time ran out"


@dataclass(frozen=True)
class StackSizes:
    """``models`` networks of ``layers`` on ``samples`` rows, ``batch`` rows a step, ``epochs`` epochs (the
    first one left out of the median: compilation)."""

    models: int
    layers: tuple[int, ...]
    samples: int
    batch: int
    epochs: int


#: the stack of reference networks and its check-sized twin
REFERENCE_STACK = StackSizes(64, (784, 512, 256, 10), 8192, 128, 7)
TINY_STACK = StackSizes(4, (20, 16, 8, 3), 256, 128, 2)
#: the padding comparison: hidden sizes, models of each, digits rows used (None: all), batch, epochs
PADDING = {"hidden": [32, 64, 100], "per_size": 30, "rows": None, "batch": 200, "epochs": 10}
TINY_PADDING = {"hidden": [4, 6, 8], "per_size": 2, "rows": 256, "batch": 200, "epochs": 2}


# ------------------------------------------------------------------ timing
def _time_epochs(stage: Callable[[], Any], epoch: Callable[[], Any], epochs: int, deadline: float,
                 sync: Callable[[], Any] = lambda: None) -> dict[str, Any]:
    """Time ``epoch()`` (which returns every model's mean loss) after ``stage()``, ``epochs`` times or until
    ``deadline`` (``time.monotonic()``; the first epoch always runs); ``sync`` waits for the device."""
    from bench.gpu_session import _summary

    seconds, staging, losses = [], [], None
    for e in range(epochs):
        if e and time.monotonic() > deadline:
            break
        start = time.perf_counter()
        stage()
        sync()
        staged = time.perf_counter()
        losses = epoch()
        sync()
        seconds.append(time.perf_counter() - staged)
        staging.append(staged - start)
    row = {**_summary(seconds), "stage_median_s": round(statistics.median(staging), 5),
           "mean_loss_last_epoch": float(np.mean(losses))}
    if len(seconds) < epochs:
        row["cut_short"] = f"out of time after {len(seconds)} of {epochs} epochs"
    return row


def mlp_stack_epochs(backend: str, layers: tuple[int, ...], X: np.ndarray, y: np.ndarray, models: int, batch: int,
                     epochs: int, deadline: float, seed: int = 0) -> dict[str, Any]:
    """Epoch times of ``models`` networks of ``layers`` trained as one stack on all of ``X`` (n, features)
    float32 and labels ``y`` (n,) int64: :class:`mlp.TrainingLoop` with Adam(lr=1e-3), model ``m``
    initialised with seed ``seed + m`` and shuffled by its own generator each epoch."""
    import mlp
    from mlp.network import Networks

    be = mlp.get_backend(backend)
    n = X.shape[0]
    net = Networks.stack([mlp.MLP(layers, seed=seed + m, dtype="float32") for m in range(models)], be)
    loop = mlp.TrainingLoop(net, [mlp.optim.Adam(lr=1e-3) for _ in range(models)], be,
                            be.asarray(X, dtype=np.float32), be.asarray(np.ascontiguousarray(y, dtype=np.int64)), batch,
                            cuda_graphs=True)
    rngs = [np.random.default_rng(seed + m) for m in range(models)]

    def epoch():
        loop.epoch()
        return loop.totals()[:, 0] / n

    try:
        row = _time_epochs(lambda: loop.stage([r.permutation(n) for r in rngs]), epoch, epochs, deadline)
        row.update(models=models, layers=list(layers), replays=loop.replays, eager_epochs=loop.eager_epochs,
                   uses_graphs=loop.use_graphs, steps_per_epoch=loop.steps)
    finally:
        loop.close()
    return row


class TorchFuncStack:
    """``models`` copies of a PyTorch ``nn.Sequential`` of ``layers`` trained at once with ``torch.func``.

    The copies' parameters are stacked (``stack_module_state``: one
    ``(models, ...)`` tensor per parameter); a step gathers every model's own
    batch (``X[idx]``, idx ``(models, batch)``), computes each model's mean
    cross-entropy with ``vmap(functional_call)``, backpropagates their sum
    (each model's gradient is its own loss's) and takes one
    ``torch.optim.Adam(lr=1e-3)`` step over the stacked parameters (one
    learning rate for every model).  ``compiled`` puts the gather, forward
    and loss under ``torch.compile`` (AOTAutograd compiles the backward
    too; the optimizer step stays eager).
    """

    def __init__(self, torch, X: np.ndarray, y: np.ndarray, sizes: StackSizes, device: str,
                 compiled: bool = False) -> None:
        from torch.func import functional_call, stack_module_state

        from bench._peers import torch_mlp

        self.torch, self.device, self.sizes = torch, device, sizes
        copies = []
        for m in range(sizes.models):
            net = torch_mlp(torch, sizes.layers, device)
            torch.manual_seed(m)  # torch_mlp seeds every copy alike: each model its own initialisation
            for layer in net:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            copies.append(net)
        self.params, self.buffers = stack_module_state(copies)
        shape = copy.deepcopy(copies[0]).to("meta")  # the structure functional_call runs, without storage
        self.X = torch.from_numpy(X).to(device)
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)

        def model_loss(params, buffers, xb, yb):
            return torch.nn.functional.cross_entropy(functional_call(shape, (params, buffers), (xb,)), yb)

        every_loss = torch.vmap(model_loss)

        def losses(idx):
            return every_loss(self.params, self.buffers, self.X[idx], self.y[idx])

        self.losses = torch.compile(losses) if compiled else losses
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=1e-3)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.order = None

    def stage(self) -> None:
        """Every model's own shuffle of the rows for the next epoch: ``order`` (models, samples)."""
        torch, n = self.torch, self.X.shape[0]
        keys = torch.rand((self.sizes.models, n), generator=self.generator, device=self.device)
        self.order = torch.argsort(keys, dim=1)

    def epoch(self) -> np.ndarray:
        """One pass of every model over its staged order; returns each model's mean loss (reads it: waits)."""
        torch, n, B = self.torch, self.X.shape[0], self.sizes.batch
        total = torch.zeros(self.sizes.models, device=self.device)
        for start in range(0, n, B):
            idx = self.order[:, start:start + B]
            losses = self.losses(idx)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            self.optimizer.step()
            total += losses.detach() * idx.shape[1]
        return (total / n).cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def torch_func_epochs(sizes: StackSizes, X: np.ndarray, y: np.ndarray, backend: str, deadline: float,
                      compiled: bool = False) -> dict[str, Any]:
    """Epoch times of :class:`TorchFuncStack` (on the GPU with the CUDA backend, else on the CPU), the
    first epoch untimed (for ``compiled``: its compilation, recorded as ``first_epoch_s``)."""
    try:
        import torch
    except ImportError as exc:
        return {"absent": f"PyTorch is not installed ({exc})"}
    from bench._peers import configure_torch

    configure_torch(torch)
    device = "cuda" if backend == "cuda" and torch.cuda.is_available() else "cpu"
    stack = TorchFuncStack(torch, X, y, sizes, device, compiled=compiled)
    row = _time_epochs(stack.stage, stack.epoch, sizes.epochs, deadline, stack.synchronize)
    row.update(device=device, torch=torch.__version__, models=sizes.models, layers=list(sizes.layers),
               first_epoch_s=row["epoch_seconds"][0], learning_rates="one for all models (torch.func)")
    del stack
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------ rows
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as bench_search reads it (X / 16, in [0, 1]), float32, and int64 labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def _search(make: Callable[[Any], Any], plan: Any, X: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """One search of ``plan`` built by ``make(plan)``, timed after an untimed ``make(plan.warmup())``, as
    ``bench_search.test_search`` runs it; returns its row and its full summary."""
    from threadpoolctl import threadpool_limits

    from bench import bench_search as bs

    start = time.perf_counter()
    bs._fit(make(plan.warmup()), X, y)
    warm = time.perf_counter() - start
    with threadpool_limits(limits=bs.BLAS_THREADS, user_api="blas"):
        start = time.perf_counter()
        done = bs._fit(make(plan), X, y)
        seconds = time.perf_counter() - start
    summary = bs.summarise(done.cv_results_, plan.epochs)
    row = {"seconds": round(seconds, 3), "warmup_seconds": round(warm, 3),
           **{k: v for k, v in summary.items() if k != "candidates_params"}}
    return row, summary


class _Rows:
    """The document of ``stacks.json`` and the discipline of its rows: each runs only before the deadline,
    leaves :data:`UNFINISHED` in the file while it runs, records its error rather than stop the others, and
    the file is rewritten after it."""

    def __init__(self, path: Path, doc: dict[str, Any], deadline: float) -> None:
        self.path, self.doc, self.deadline = path, doc, deadline

    def save(self) -> None:
        from bench.gpu_session import _write_json

        _write_json(self.path, self.doc)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, section: str, key: str, row: Callable[[], dict[str, Any]], needs_s: float = 0.0) -> dict:
        import json

        left = self.left()
        if left < max(needs_s, 0.0) or left <= 0:
            result = {"skipped": f"out of time: {max(left, 0):.0f} s left" + (f", it needs {needs_s:.0f} s"
                                                                               if needs_s else "")}
        else:
            self.doc[section][key] = {"skipped": UNFINISHED}
            self.save()
            try:
                result = row()
            except Exception as exc:  # one failed row must not lose the others
                result = {"error": f"{type(exc).__name__}: {exc}"}
        self.doc[section][key] = result
        self.save()
        print(f"{section}/{key}", json.dumps(result, default=str), flush=True)
        return result


def _ratio(num: dict[str, Any], den: dict[str, Any], key: str) -> float | None:
    a, b = num.get(key), den.get(key)
    return round(a / b, 3) if a and b else None


def part_stacks(work: Path, backend: str = "cuda", tiny: bool = False, seconds: float = 120.0, **_: Any) -> int:
    """The search, ``torch.func`` and padding rows of many models at once: ``stacks.json`` in ``work``,
    rewritten after every row; ``seconds``: the part's time (each row checks the clock before it starts)."""
    from bench import bench_search as bs

    rows = _Rows(work / "stacks.json", {"backend": backend, "tiny": tiny, "cpu_count": os.cpu_count(),
                                        "search": {}, "torch_func": {}, "padding": {}},
                 time.monotonic() + seconds - 5)
    doc = rows.doc

    # 1. the digits grid search, stacked on the backend and scikit-learn's on every core
    plan = bs.Plan(bs.QUICK, 2, 2) if tiny else bs.plan(quick=False)
    X, y = _digits()
    doc["search"]["config"] = {
        "dataset": "digits", "rows": int(X.shape[0]), "dtype": "float32", "folds": plan.folds, "epochs": plan.epochs,
        "candidates": plan.candidates, "fits": plan.candidates * plan.folds, "params": plan.params(),
        "grid": {k: [bs._plain_value(v) for v in vals] for k, vals in plan.grid.items()}, "target": SEARCH_TARGET}
    summaries: dict[str, dict] = {}

    def search_row(engine: str, make: Callable[[Any], Any]) -> dict[str, Any]:
        row, summaries[engine] = _search(make, plan, X, y)
        return row

    def mlp_search(p: Any) -> Any:
        import mlp
        from mlp.search import GridSearchCV

        return GridSearchCV(mlp.MLPClassifier(**p.params(), backend=backend), p.grid, cv=p.cv(), scoring=bs.score,
                            refit=False)

    rows.run("search", "mlp", lambda: search_row("mlp", mlp_search))
    sk = rows.run("search", "sklearn", lambda: {**search_row("sklearn", bs._sklearn_search), "n_jobs": -1,
                                                "cpu_count": os.cpu_count()},
                  needs_s=0.0 if tiny else SKLEARN_NEEDS_S)
    if "mlp" in summaries and "sklearn" in summaries:
        sk.update(bs.agreement(summaries["sklearn"], summaries["mlp"]))
    doc["search"]["sklearn_over_mlp"] = _ratio(sk, doc["search"]["mlp"], "seconds")
    rows.save()

    # 2. one stack of reference networks: mlp's loop against torch.func (eager, then compiled last)
    sizes = TINY_STACK if tiny else REFERENCE_STACK
    rng = np.random.default_rng(0)
    Xs = rng.random((sizes.samples, sizes.layers[0]), dtype=np.float32)
    ys = rng.integers(0, sizes.layers[-1], size=sizes.samples, dtype=np.int64)
    doc["torch_func"]["config"] = {**asdict(sizes), "layers": list(sizes.layers), "optimizer": "Adam(lr=1e-3)",
                                   "data": "synthetic: uniform [0, 1) features, uniform labels"}
    mlp_row = rows.run("torch_func", "mlp", lambda: mlp_stack_epochs(
        backend, sizes.layers, Xs, ys, sizes.models, sizes.batch, sizes.epochs, rows.deadline))
    eager = rows.run("torch_func", "torch-func", lambda: torch_func_epochs(sizes, Xs, ys, backend, rows.deadline))
    doc["torch_func"]["torch_func_over_mlp"] = _ratio(eager, mlp_row, "median_s")

    # 3. hidden sizes that differ: one stack per shape against one padded stack
    pad = TINY_PADDING if tiny else PADDING
    Xd, yd = (X, y) if pad["rows"] is None else (X[:pad["rows"]], y[:pad["rows"]])
    doc["padding"]["config"] = {**pad, "rows": int(Xd.shape[0]), "dataset": "digits", "optimizer": "Adam(lr=1e-3)"}

    def stack_of(hidden: int, models: int) -> dict[str, Any]:
        return mlp_stack_epochs(backend, (Xd.shape[1], hidden, 10), Xd, yd, models, pad["batch"], pad["epochs"],
                                rows.deadline)

    def grouped() -> dict[str, Any]:
        stacks = [stack_of(h, pad["per_size"]) for h in pad["hidden"]]
        return {"median_s": round(sum(s["median_s"] for s in stacks), 5),
                "replays": sum(s["replays"] for s in stacks), "stacks": stacks}

    group_row = rows.run("padding", "grouped", grouped)
    padded_row = rows.run("padding", "padded", lambda: stack_of(max(pad["hidden"]),
                                                                pad["per_size"] * len(pad["hidden"])))
    doc["padding"]["padded_over_grouped"] = _ratio(padded_row, group_row, "median_s")
    rows.save()

    # the compiled torch.func stack, last: its compilation may take the rest of the part's time
    if tiny:
        doc["torch_func"]["torch-compile"] = {"skipped": "not in a tiny run"}
    else:
        compiled = rows.run("torch_func", "torch-compile", lambda: torch_func_epochs(
            sizes, Xs, ys, backend, rows.deadline, compiled=True), needs_s=COMPILE_NEEDS_S)
        doc["torch_func"]["torch_compile_over_mlp"] = _ratio(compiled, mlp_row, "median_s")
    rows.save()
    return 0


# ------------------------------------------------------------------ the record
def stacks_table(doc: dict[str, Any]) -> str:
    """``stacks.json`` as Markdown: per measurement, each engine's time and its ratio to the first row."""
    import pandas as pd

    from bench.fmt import fmt_int, fmt_time, fmt_x, markdown

    search, stack, pad = doc.get("search", {}), doc.get("torch_func", {}), doc.get("padding", {})
    sconf, tconf, pconf = search.get("config", {}), stack.get("config", {}), pad.get("config", {})
    backend = doc.get("backend", "?")
    table = []

    def add(measurement: str, engine: str, row: dict[str, Any] | None, time_key: str, ratio: Any = None,
            note: str = "") -> None:
        row = row or {"skipped": "not recorded"}
        why = row.get("absent") or row.get("skipped") or row.get("error") or row.get("cut_short")
        table.append({"measurement": measurement, "engine": engine, "time": fmt_time(row.get(time_key)),
                      "vs first row": fmt_x(ratio), "replays": fmt_int(row.get("replays")),
                      "note": "; ".join(filter(None, [note, why]))})

    def best(row: dict[str, Any] | None) -> str:
        return f"best {row['best']} ({row['best_score']:.4f})" if row and "best" in row else ""

    sk = search.get("sklearn")
    agrees = sk.get("best_agrees") if sk else None
    add("search (whole)", f"mlp.GridSearchCV, backend {backend}", search.get("mlp"), "seconds",
        note=best(search.get("mlp")))
    add("search (whole)", f"sklearn GridSearchCV, n_jobs=-1 ({doc.get('cpu_count')} cores)", sk, "seconds",
        search.get("sklearn_over_mlp"),
        "; ".join(filter(None, [best(sk), None if agrees is None else f"{100 * agrees:.0f}% of best params agree"])))
    add("one stack (epoch)", f"mlp StackedLoop, backend {backend}", stack.get("mlp"), "median_s")
    add("one stack (epoch)", "torch.func", stack.get("torch-func"), "median_s", stack.get("torch_func_over_mlp"))
    compiled = stack.get("torch-compile") or {}
    add("one stack (epoch)", "torch.compile(torch.func)", compiled, "median_s", stack.get("torch_compile_over_mlp"),
        f"first epoch (compilation) {fmt_time(compiled['first_epoch_s'])}" if "first_epoch_s" in compiled else "")
    add("hidden sizes differ (epoch)", f"{len(pconf.get('hidden', []))} stacks, one per shape", pad.get("grouped"),
        "median_s")
    add("hidden sizes differ (epoch)", "one stack padded to the widest", pad.get("padded"), "median_s",
        pad.get("padded_over_grouped"))
    head = (f"Many models at once, backend {backend}{' (tiny check run)' if doc.get('tiny') else ''}. Search: "
            f"digits, {sconf.get('candidates')} candidates x {sconf.get('folds')} folds, {sconf.get('epochs')} "
            f"epochs, float32; the goal on a GPU: scikit-learn's all-core search at least "
            f"{sconf.get('target', SEARCH_TARGET):.0f}× slower than mlp's. One stack: {tconf.get('models')} networks "
            f"of {tconf.get('layers')}, {tconf.get('samples')} synthetic rows, batch {tconf.get('batch')}, Adam "
            f"lr 1e-3 (torch.func: one learning rate for all models), each model its own shuffle. Hidden sizes "
            f"that differ: {pconf.get('per_size')} networks each of hidden sizes {pconf.get('hidden')} on "
            f"{pconf.get('rows')} digits rows, batch {pconf.get('batch')}. An epoch time is the median of the "
            "epochs after the first; 'vs first row' is a row's time over the first row of its measurement.\n\n")
    return head + markdown(pd.DataFrame(table), align="ll" + "rrr" + "l") + "\n"
