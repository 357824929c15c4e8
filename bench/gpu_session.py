"""Everything only a GPU can show, in one command that keeps to a time budget.

On a machine with an NVIDIA GPU, from the repository root (no install needed:
``PYTHONPATH=.`` runs the source tree; the kernels resolve as ``mlp.kernels``;
nothing here needs pooch or platformdirs)::

    PYTHONPATH=. python3 -m bench.gpu_session all --out OUT --budget 500

runs, in priority order, each part as a child process with a hard deadline
(its process group is killed on time, whether or not it prints anything):

1. ``info``: device, driver and versions (``info.json``);
2. ``tests``: the CUDA-graph tests, then the step and trainer tests, the
   stacked kernels and searches, and the other kernel tests, on the device
   (``tests-junit.xml`` when pytest finished; its console output goes to
   ``session.log``);
3. ``training``: epoch times through ``fit`` with CUDA graphs and eager
   launches, PyTorch eager and PyTorch with CUDA graphs in the same run
   (Adam, batch 128 and 1024), launches per epoch and every epoch's time
   within each fit (``training.json``, rewritten after every row);
4. ``stacks``: many models at once (``bench/gpu_stacks.py``): the digits
   grid search stacked on the GPU against scikit-learn's on every CPU core,
   a stack of 64 reference networks against PyTorch's ``torch.func`` (eager
   and compiled), and one stack per hidden size against one padded stack
   (``stacks.json``, rewritten after every row);
5. ``kernels``: the kernel suite against cuBLAS(+epilogue) and the copy
   bandwidth (``benchmark.json``);
6. ``tune``: the per-shape tile table, with the time that is left
   (``tuning.json``).

Each part's results land in ``OUT`` as soon as it ends, so a run cut short
still returns what it measured; ``session.json`` says what each part did
(exit status, seconds, killed or skipped and why) and ``session.log`` holds
the console output of every part.  That is at most 8 files, each kept under
16 MiB.  ``python -m bench.gpu_session PART --work DIR`` runs one
part in this process.  Back on any machine, the returned folder becomes the
committed record::

    python -m bench.gpu_session collect OUT --into bench/results/gpu-h100

which merges the benchmark JSON files into ``benchmark.json``, writes
``report.md`` and its plots (``bench/report.py``), the tables ``training.md``
and ``stacks.md``, and copies the rest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from bench.gpu_stacks import part_stacks, stacks_table

ROOT = Path(__file__).resolve().parents[1]
#: the device tests in priority order: the graphs first, then the step and trainer, the stacked kernels and
#: searches, then the rest
GPU_TESTS = ["tests/test_cuda_graphs.py", "tests/test_graph_orchestration.py", "tests/test_trainer_cuda.py",
             "tests/test_device_scalars.py", "tests/test_cuda_backend.py", "tests/test_search.py",
             "tests/test_kernels_stacked.py", "tests/test_kernels_gemm_stacked.py", "tests/test_kernels.py",
             "tests/test_kernels_tuning.py", "tests/test_kernels_naive.py", "tests/test_backend_contract.py",
             "tests/test_backend_selection.py"]
#: the limits on what a session returns
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
#: a log file stops growing here, whichever parts wrote to it (and says how much it left out): every part's
#: output shares session.log, which must stay under MAX_FILE_BYTES
LOG_LIMIT_BYTES = 8 * 2**20
#: after SIGINT, seconds a part's processes get to wind up (pytest then still writes its JSON and JUnit
#: files with what finished) before SIGKILL
KILL_GRACE_S = 10.0
#: seconds kept back at the end of a session: a last part's wind-up, and copying results
RESERVE_S = KILL_GRACE_S + 5.0


# --------------------------------------------------------------- the session
@dataclass
class Part:
    """One child process of a session: its command, time cap and the result files it leaves in its folder."""

    name: str
    command: list[str]
    cap_s: float
    min_s: float = 10.0
    results: tuple[str, ...] = ()
    log: str = "session.log"
    skip: str | None = None  # why the part cannot run here
    paced: bool = False  # the command takes ``--seconds LIMIT`` and keeps to it


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                PYTHONUNBUFFERED="1")


def _tee(pipe: BinaryIO, log: BinaryIO, echo: bool) -> None:
    """Copy a child's output to its log (until the file holds LOG_LIMIT_BYTES) and to this console."""
    written, left_out = log.tell(), 0
    for line in iter(pipe.readline, b""):
        if echo:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        if written + len(line) <= LOG_LIMIT_BYTES:
            log.write(line)
            written += len(line)
        else:
            left_out += len(line)
    if left_out:
        log.write(f"\n[{left_out} bytes of output left out of this log]\n".encode())


def _kill_group(pgid: int) -> None:
    """SIGINT to a part's process group, SIGKILL to whatever is left after KILL_GRACE_S."""
    for sig, wait in ((signal.SIGINT, KILL_GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def run_part(part: Part, out: Path, timeout: float, echo: bool = True) -> dict[str, Any]:
    """Run ``part.command`` in a process group of its own with a hard ``timeout`` (seconds), output teed into
    ``out/part.log``; returns its record (exit status, seconds, whether it was killed)."""
    start = time.monotonic()
    with open(out / part.log, "ab") as log:
        log.write(f"\n=== {part.name}: {' '.join(part.command)} (limit {timeout:.0f} s)\n".encode())
        log.flush()
        proc = subprocess.Popen(part.command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        reader = threading.Thread(target=_tee, args=(proc.stdout, log, echo), daemon=True)
        reader.start()
        killed = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
        finally:  # on time, or what the part left running, or on Ctrl-C here
            _kill_group(proc.pid)
        code = proc.wait()
        reader.join(timeout=KILL_GRACE_S)  # a process that left the group may hold the pipe: stop reading
        seconds = time.monotonic() - start
        if killed:
            log.write(f"\n[{part.name} killed after {seconds:.0f} s, its limit]\n".encode())
    return {"exit_status": code, "seconds": round(seconds, 1), "killed": killed}


def _keep(work: Path, out: Path, names: Sequence[str]) -> dict[str, str]:
    """Move a part's result files into ``out``; one over MAX_FILE_BYTES stays behind (named in the record)."""
    kept = {}
    for name in names:
        src = work / name
        if not src.is_file():
            kept[name] = "absent"
        elif src.stat().st_size >= MAX_FILE_BYTES:
            kept[name] = f"left out: {src.stat().st_size} bytes"
        else:
            shutil.move(str(src), out / name)
            kept[name] = f"{(out / name).stat().st_size} bytes"
    return kept


def _write_json(path: Path, doc: Any) -> None:
    """Replace ``path`` atomically, so that a part killed while writing leaves the previous version."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


def plan(work: Path, backend: str, tiny: bool, tests: Sequence[str]) -> list[Part]:
    """The parts of a session in priority order; each child writes into ``work/<part>``."""
    me = [sys.executable, "-m", "bench.gpu_session"]
    opts = ["--backend", backend] + (["--tiny"] if tiny else [])
    junit = work / "tests" / "tests-junit.xml"
    pytest_cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-rfEs", "-p", "no:cacheprovider",
                  f"--junitxml={junit}"]
    try:
        import pytest_timeout  # noqa: F401  (on the GPU machine: one hung test must not take the part)

        pytest_cmd.append("--timeout=120")
    except ImportError:
        pass
    cuda_only = None if backend == "cuda" else "needs the CUDA backend"
    return [
        Part("info", [*me, "info", "--work", str(work / "info"), *opts], cap_s=45, results=("info.json",)),
        Part("tests", pytest_cmd, cap_s=150, min_s=30, results=("tests-junit.xml",)),
        Part("training", [*me, "training", "--work", str(work / "training"), *opts], cap_s=120, min_s=30,
             results=("training.json",), paced=True),
        Part("stacks", [*me, "stacks", "--work", str(work / "stacks"), *opts], cap_s=120, min_s=30,
             results=("stacks.json",), paced=True),
        Part("kernels", [*me, "kernels", "--work", str(work / "kernels"), *opts], cap_s=60, min_s=30,
             results=("benchmark.json",), skip=cuda_only),
        Part("tune", [*me, "tune", "--work", str(work / "tune"), *opts], cap_s=float("inf"), min_s=30,
             results=("tuning.json",), skip=cuda_only, paced=True),
    ]


def run_session(parts: Sequence[Part], out: Path, budget_s: float, work: Path, echo: bool = True) -> dict:
    """Run ``parts`` in order within ``budget_s`` seconds of wall time; returns the session record.

    Each part gets its cap or what is left of the budget, whichever is less
    (the last part all that is left); a part with less than its ``min_s``
    left is skipped.  ``session.json`` is rewritten after every part.
    """
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    record: dict[str, Any] = {"budget_s": budget_s, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "parts": {}}
    for i, part in enumerate(parts):
        left = deadline - time.monotonic() - RESERVE_S
        limit = left if i == len(parts) - 1 else min(part.cap_s, left)
        if part.skip or limit < part.min_s:
            reason = part.skip or f"{max(left, 0):.0f} s left of the budget, it needs {part.min_s:.0f} s"
            record["parts"][part.name] = {"skipped": reason}
            print(f"--- {part.name}: skipped ({reason})", flush=True)
        else:
            (work / part.name).mkdir(parents=True, exist_ok=True)
            print(f"--- {part.name}: up to {limit:.0f} s", flush=True)
            paced = replace(part, command=[*part.command, "--seconds", f"{limit:.0f}"]) if part.paced else part
            result = run_part(paced, out, limit, echo)
            result["files"] = _keep(work / part.name, out, part.results)
            record["parts"][part.name] = result
            print(f"--- {part.name}: {result}", flush=True)
        _write_json(out / "session.json", record)
    return record


def _session(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out: expected an empty or new folder, got {out} (it holds files)")
    with tempfile.TemporaryDirectory(prefix="gpu-session-") as work:
        parts = plan(Path(work), args.backend, args.tiny, args.tests or [p for p in GPU_TESTS if (ROOT / p).exists()])
        if args.parts:
            unknown = set(args.parts) - {p.name for p in parts}
            if unknown:
                raise SystemExit(f"--parts: expected names among {[p.name for p in parts]}, got {sorted(unknown)}")
            parts = [p for p in parts if p.name in args.parts]
        record = run_session(parts, out, args.budget, Path(work))
    failed = [n for n, r in record["parts"].items() if r.get("exit_status") not in (None, 0)]
    return 1 if failed else 0


# ------------------------------------------------------------------ the parts
def part_info(work: Path, backend: str = "cuda", **_: Any) -> int:
    """Device, driver and the versions of everything the measurements use: ``info.json``."""
    import numba
    import numpy as np

    import mlp

    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                            "mlp": mlp.__version__, "backends": mlp.available_backends()}
    for name in ("numba_cuda", "cupy", "torch", "sklearn", "cuda.core", "cuda.bindings", "pytest_timeout"):
        try:
            module = __import__(name, fromlist=["_"])
            info[name] = getattr(module, "__version__", "?")
        except Exception as exc:  # recorded, not fatal: the record says what was missing
            info[name] = f"absent ({type(exc).__name__})"
    be = mlp.get_backend(backend)
    info["device"] = be.device_info() if hasattr(be, "device_info") else {"backend": be.name}
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                             "--format=csv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable ({exc})"
    _write_json(work / "info.json", info)
    print(json.dumps(info, indent=1, default=str))
    return 0


def _summary(seconds: list[float]) -> dict[str, Any]:
    """Epoch times of one fit (seconds) and how they move within it: median, first and last of the later epochs."""
    import statistics

    later = seconds[1:] or seconds
    return {"epoch_seconds": [round(t, 5) for t in seconds], "median_s": round(statistics.median(later), 5),
            "last_over_first": round(later[-1] / later[0], 3) if later[0] > 0 else None}


def part_training(work: Path, backend: str = "cuda", tiny: bool = False, seconds: float = 200.0, **_: Any) -> int:
    """Epoch times through ``fit`` (CUDA graphs, eager) and PyTorch's (eager, CUDA graphs), Adam, batch 128 and
    1024, with launches per epoch and every epoch's time: ``training.json``, rewritten after every row."""
    import numpy as np

    import mlp
    from bench import _measure

    deadline = time.monotonic() + seconds - 5
    layers = (32, 16, 10) if tiny else _measure.REFERENCE_LAYERS
    n, epochs = (1000, 3) if tiny else (_measure.N_SAMPLES, 6)
    rng = np.random.default_rng(0)
    X = rng.random((n, layers[0]), dtype=np.float32)
    y = rng.integers(0, layers[-1], size=n, dtype=np.int64)
    be = mlp.get_backend(backend)
    ctx = None
    if backend == "cuda":
        from numba import cuda

        ctx = cuda.current_context()
    doc: dict[str, Any] = {"layers": list(layers), "samples": n, "epochs": epochs, "optimizer": "Adam(lr=1e-3)",
                           "backend": backend, "rows": {}}
    try:
        import torch

        from bench._peers import TorchGraphTrainer, TorchTrainer

        device = "cuda" if backend == "cuda" and torch.cuda.is_available() else "cpu"
    except ImportError as exc:  # each PyTorch row is recorded absent, with the reason, as the stacks part does
        torch, device = None, f"PyTorch is not installed ({exc})"

    def mlp_row(batch: int, graphs: bool) -> dict[str, Any]:
        model = mlp.MLP(layers, seed=0)
        trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-3), backend=be, batch_size=batch, cuda_graphs=graphs)
        gc_before = [s["collections"] for s in gc.get_stats()]
        launches = be.launch_count
        history = trainer.fit(X, y, epochs=epochs, verbose=0)
        loop = trainer.loop
        issued = be.launch_count - launches  # from the host: eager epochs, and each capture's recording
        return {**_summary(history["seconds"]), "uses_graphs": trainer.uses_cuda_graphs,
                "replays": loop.replays, "steps_per_epoch": loop.steps, "graph_launches": loop.graph_launches,
                "launches_per_epoch": loop.graph_launches if loop.replays else issued / epochs,
                "host_launches": issued,
                "gc_collections": [s["collections"] - b for s, b in zip(gc.get_stats(), gc_before)],
                "pending_deallocations": None if ctx is None else len(ctx.deallocations)}

    def torch_row(batch: int, graphs: bool) -> dict[str, Any]:
        if torch is None:
            return {"absent": device}
        if graphs and device != "cuda":
            return {"absent": "PyTorch CUDA graphs need a GPU"}
        peer = (TorchGraphTrainer if graphs else TorchTrainer)(torch, X, y, layers, batch, device, optimizer="adam")
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            peer.epoch()  # reads the loss: waits for the device
            times.append(time.perf_counter() - start)
        return {**_summary(times), "device": device, "torch": torch.__version__}

    for batch in (128, 1024):
        for name, row in (("mlp-graphs", lambda: mlp_row(batch, True)), ("mlp-eager", lambda: mlp_row(batch, False)),
                          ("torch-eager", lambda: torch_row(batch, False)),
                          ("torch-graphs", lambda: torch_row(batch, True))):
            key = f"{name}-b{batch}"
            if time.monotonic() > deadline:
                doc["rows"][key] = {"skipped": "out of time"}
            else:
                try:
                    doc["rows"][key] = row()
                except Exception as exc:  # one failed row must not lose the others
                    doc["rows"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(key, json.dumps(doc["rows"][key], default=str), flush=True)
            _write_json(work / "training.json", doc)
    return 0


def part_kernels(work: Path, **_: Any) -> int:
    """The kernel suite against cuBLAS(+epilogue) and the copy bandwidth: ``benchmark.json``.

    pytest-benchmark's raw output only (``collect`` writes the report, which
    needs the rest of the ``bench`` extra); interrupted, pytest still writes
    the benchmarks that finished.
    """
    import pytest

    from bench import __main__ as suites

    args = suites.build_parser().parse_args(["--suites", "kernels", "--skip-cpu"])
    return int(pytest.main(suites.pytest_args(args, work)))


def part_tune(work: Path, seconds: float = 300.0, **_: Any) -> int:
    """The per-shape tile table of this GPU (``bench/tune_gemm.py``) for as many shapes as ``seconds`` allow:
    ``tuning.json``, rewritten after every shape."""
    import numpy as np

    from bench import tune_gemm
    from mlp.kernels import _tuning
    from mlp.kernels._config import ON_SIMULATOR

    if ON_SIMULATOR:
        print("tuning needs a GPU: timings under the CUDA simulator mean nothing", file=sys.stderr)
        return 2
    try:
        import cupy  # noqa: F401
        have_cupy = True
    except ImportError:
        have_cupy = False
    deadline = time.monotonic() + seconds - 5
    device = _tuning.current_device_name()
    rng = np.random.default_rng(0)
    products = list(tune_gemm.products())
    measurements: list[dict] = []
    for done, product in enumerate(products):
        if time.monotonic() > deadline:
            print(f"out of time: {done} of {len(products)} products tuned", flush=True)
            break
        measurements += tune_gemm.measure(product, rng, device, have_cupy)
        _write_json(work / "tuning.json",
                    _tuning.document(device, tune_gemm.best_entries(measurements), measurements))
    print(f"the table's file name: kernels/tuning/{_tuning.device_kind(device)}.json", flush=True)
    return 0


def collect(folders: list[Path], into: Path) -> int:
    """Merge the parts' results into one record folder and write its report."""
    from bench import report

    into.mkdir(parents=True, exist_ok=True)
    merged = None
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.name == "benchmark.json":
                doc = json.loads(path.read_text())
                if merged is None:
                    merged = doc
                else:
                    merged["benchmarks"] += doc["benchmarks"]
            elif path.is_file() and path.suffix in (".json", ".xml", ".log", ".txt"):
                shutil.copy2(path, into / path.name)
    if merged is not None:
        (into / "benchmark.json").write_text(json.dumps(merged, indent=2))
        print(report.write_report(into))
    if (into / "training.json").is_file():
        (into / "training.md").write_text(training_table(json.loads((into / "training.json").read_text())))
        print(into / "training.md")
    if (into / "stacks.json").is_file():
        (into / "stacks.md").write_text(stacks_table(json.loads((into / "stacks.json").read_text())))
        print(into / "stacks.md")
    return 0


def training_table(doc: dict[str, Any]) -> str:
    """The training part's rows as Markdown: per batch, the median epoch of each path and how it drifted."""
    import pandas as pd

    from bench.fmt import fmt_int, fmt_num, fmt_time, fmt_x, markdown

    rows = []
    for key, row in doc["rows"].items():
        name, batch = key.rsplit("-b", 1)
        why = row.get("absent") or row.get("skipped") or row.get("error")
        rows.append({"batch": batch, "path": name, "median epoch": fmt_time(row.get("median_s")),
                     "last / first epoch": fmt_x(row.get("last_over_first")),
                     "launches per epoch": fmt_num(row.get("launches_per_epoch") or None),
                     "graph launches": fmt_int(row.get("graph_launches")), "replays": fmt_int(row.get("replays")),
                     "note": why or ""})
    head = (f"Epochs through `fit` and PyTorch's loop: {doc['layers']}, {doc['samples']} samples, "
            f"{doc['epochs']} epochs per row, {doc['optimizer']}, backend {doc['backend']}. The median leaves "
            "out the first epoch (compilation, and the eager epoch before a capture).\n\n")
    return head + markdown(pd.DataFrame(rows), align="rl" + "r" * 5 + "l") + "\n"


PARTS = {"info": part_info, "training": part_training, "stacks": part_stacks, "kernels": part_kernels,
         "tune": part_tune}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_session", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("all", *PARTS, "collect"),
                   help="all: the whole session; a part name: that part in this process; collect: make the record")
    p.add_argument("folders", nargs="*", type=Path, help="collect: the folders a session returned")
    p.add_argument("--out", type=Path, help="all: the (new or empty) folder the results go to")
    p.add_argument("--budget", type=float, default=500.0, help="all: seconds of wall time for the whole session")
    p.add_argument("--parts", type=lambda s: s.split(","), help="all: only these parts (comma-separated)")
    p.add_argument("--tests", nargs="+", help="all: the test files of the tests part (default: the device tests)")
    p.add_argument("--backend", default="cuda", help="the backend measured (numpy: a check of the session itself)")
    p.add_argument("--tiny", action="store_true", help="a tiny network and data set (a check of the session itself)")
    p.add_argument("--work", type=Path, help="a part: the folder it writes into")
    p.add_argument("--seconds", type=float, default=300.0, help="a part: the seconds it has")
    p.add_argument("--into", type=Path, help="collect: the record folder, e.g. bench/results/gpu-h100")
    args = p.parse_args(argv)
    if args.command == "collect":
        if not args.folders or args.into is None:
            p.error("collect needs the returned folders and --into")
        return collect(args.folders, args.into)
    if args.command == "all":
        if args.out is None:
            p.error("all needs --out")
        return _session(args)
    if args.work is None:
        p.error(f"{args.command} needs --work")
    args.work.mkdir(parents=True, exist_ok=True)
    return PARTS[args.command](args.work.resolve(), backend=args.backend, tiny=args.tiny, seconds=args.seconds)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
