"""One command for a GPU machine: the suites as the parts of a session that keeps to a wall-clock budget.

``python -m bench --session --budget 500 --out OUT`` (from the repository
root; nothing to install beyond what the suites use: pytest and
pytest-benchmark, with pandas and tabulate for the report) runs, in priority
order, each part as a child process in a process group of its own with a
hard time limit (SIGINT, then SIGKILL after :data:`KILL_GRACE_S`, whether or
not it prints anything):

1. ``info``: device, driver, library versions, and which backends and peers
   are present here and why not (``info.json``);
2. ``tests``: the CUDA-graph, step, trainer, search and kernel tests on the
   device (``tests-junit.xml``; the console output goes to ``session.log``);
3. ``training``: ``python -m bench --suites training`` on the GPU rows (the
   loop's epoch replayed as a CUDA graph, epochs through ``fit`` with and
   without CUDA graphs, PyTorch eager and with CUDA graphs);
4. ``stacks``: ``python -m bench --suites stacks`` (the digits search on the
   GPU against scikit-learn's on every core, a stack of 64 reference
   networks against ``torch.func``, hidden sizes grouped against padded);
5. ``kernels``: ``python -m bench --suites kernels --skip-cpu``;
6. ``report``: ``report.md`` from what the parts measured (``bench/report.py``,
   without plots);
7. ``tune``: the per-shape tile table of this GPU with the time that is left
   (``python -m bench.tune_gemm``: ``tuning.json``, the table
   ``kernels/gemm_plan.py`` reads once it is committed as
   ``kernels/tuning/<device kind>.json``).

Every benchmark part is ``python -m bench`` itself with ``--seconds`` (a
benchmark that would start too late is skipped, saying so) and
``--no-report``; its ``benchmark.json`` is rewritten as each benchmark ends,
and merged into ``OUT/benchmark.json`` when the part ends, so a session cut
short keeps what it measured.  ``session.json`` says what each part did
(exit status, seconds, killed, or skipped and why).  What comes back is at
most :data:`MAX_FILES` files, each under :data:`MAX_FILE_BYTES`.  A part
that needs a GPU is skipped where ``info`` found none, with its reason.

Back home, ``python -m bench --collect OUT`` makes the committed record:
the files copied into ``bench/results/<gpu>/`` (or ``--out``), and the report
written again with its plots.

This module imports only the standard library at the top, so that the
session itself runs wherever Python does; the parts import what they need.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Sequence

ROOT = Path(__file__).resolve().parents[1]
#: the device tests in priority order: the graphs first, then the step and trainer, the stacked kernels and
#: searches, then the rest
GPU_TESTS = ["tests/test_cuda_graphs.py", "tests/test_graph_orchestration.py", "tests/test_trainer_cuda.py",
             "tests/test_device_scalars.py", "tests/test_cuda_backend.py", "tests/test_search.py",
             "tests/test_kernels_stacked.py", "tests/test_kernels_gemm_stacked.py", "tests/test_kernels.py",
             "tests/test_kernels_activations.py", "tests/test_kernels_losses.py", "tests/test_kernels_tuning.py",
             "tests/test_kernels_naive.py", "tests/test_backend_contract.py", "tests/test_backend_selection.py",
             "tests/test_sparse.py"]
#: the benchmarks of the training part, in the suite's order: the loop's epoch replayed as a CUDA graph (the
#: rows of the GPU epoch targets), epochs within whole fits with and without graphs, PyTorch eager and with
#: CUDA graphs (the CPU rows are a CPU run's: --skip-cpu, but in a --tiny rehearsal)
TRAINING_ROWS = "(epoch_loop and cuda-graphs and adam) or fit_epochs or (epoch_torch and cuda and adam)"
#: the benchmarks of the stacks part: all but the CPU's padding rows (a CPU run's; the CPU rows of the others
#: skip themselves outside a --tiny rehearsal, and scikit-learn's search on the cores is the GPU search's peer)
STACKS_ROWS = "not (padding and numpy)"
#: the limits on what a session returns
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
#: a log file stops growing here, whichever parts wrote to it (and says how much it left out)
LOG_LIMIT_BYTES = 8 * 2**20
#: after SIGINT, seconds a part's processes get to wind up before SIGKILL
KILL_GRACE_S = 10.0
#: seconds kept back at the end of a session: a last part's wind-up, and copying results
RESERVE_S = KILL_GRACE_S + 5.0
#: the session's own record, and the merged results of its benchmark parts
RECORD = "session.json"
LOG = "session.log"
BENCHMARK_JSON = "benchmark.json"


# --------------------------------------------------------------- the parts
@dataclass
class Part:
    """One child process of a session: its command, time cap and the result files it leaves in its folder.

    ``paced``: the command takes ``--seconds LIMIT`` and keeps to it.
    ``benchmarks``: it writes a pytest-benchmark JSON (merged into the
    session's ``benchmark.json``).  ``gpu``: it needs a GPU (skipped where
    ``info`` found none).  ``skip``: why it cannot run here, known before.
    """

    name: str
    command: list[str]
    cap_s: float
    min_s: float = 10.0
    results: tuple[str, ...] = ()
    paced: bool = False
    benchmarks: bool = False
    gpu: bool = False
    skip: str | None = None


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def plan(work: Path, out: Path, tiny: bool = False, tests: Sequence[str] = ()) -> list[Part]:
    """The parts of a session in priority order; each child writes into ``work/<part>``."""
    py = sys.executable
    tiny_opt = ["--tiny"] if tiny else []

    def suite(name: str, *args: str) -> list[str]:
        return [py, "-m", "bench", *args, "--out", str(work / name), "--no-report", *tiny_opt]

    junit = work / "tests" / "tests-junit.xml"
    # one process on the one device (the project's addopts spread tests over pytest-xdist workers, which a GPU
    # machine may not have)
    pytest_cmd = [py, "-m", "pytest", *tests, "-o", "addopts=", "-q", "-rfEs", "-p", "no:cacheprovider",
                  "-p", "no:xdist", "--benchmark-skip", "--continue-on-collection-errors", f"--junitxml={junit}"]
    if not _missing("pytest_timeout"):  # one hung test must not take the part
        pytest_cmd.append("--timeout=120")
    no_report = _missing("pandas", "tabulate")
    return [
        Part("info", [py, "-m", "bench.session", "info", "--work", str(work / "info")], cap_s=45,
             results=("info.json",)),
        Part("tests", pytest_cmd, cap_s=150, min_s=30, results=("tests-junit.xml",),
             skip=None if tests else "no test files given"),
        Part("training", suite("training", "--suites", "training", "-k", TRAINING_ROWS,
                               *([] if tiny else ["--skip-cpu"])), cap_s=120, min_s=30, paced=True, benchmarks=True),
        Part("stacks", suite("stacks", "--suites", "stacks", *([] if tiny else ["-k", STACKS_ROWS])), cap_s=120,
             min_s=30, paced=True, benchmarks=True),
        Part("kernels", suite("kernels", "--suites", "kernels", "--skip-cpu"), cap_s=60, min_s=30, paced=True,
             benchmarks=True, gpu=True),
        Part("report", [py, "-m", "bench.report", str(out), "--no-plots"], cap_s=60, min_s=5,
             skip=f"not installed: {', '.join(no_report)} (--collect writes the report)" if no_report else None),
        Part("tune", [py, "-m", "bench.tune_gemm", "--out", str(work / "tune" / "tuning.json")], cap_s=float("inf"),
             min_s=30, results=("tuning.json",), paced=True, gpu=True),
    ]


def returned_files(parts: Sequence[Part]) -> set[str]:
    """Every file a session of ``parts`` can return."""
    names = {RECORD, LOG} | {r for p in parts for r in p.results}
    if any(p.benchmarks for p in parts):
        names.add(BENCHMARK_JSON)
    if any(p.name == "report" for p in parts):
        names.add("report.md")
    return names


# ------------------------------------------------------------ the children
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                PYTHONUNBUFFERED="1")


def _tee(pipe: BinaryIO, log: BinaryIO, echo: bool) -> None:
    """Copy a child's output to the log (until the file holds LOG_LIMIT_BYTES) and to this console."""
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
    ``out/session.log``; returns its record (exit status, seconds, whether it was killed)."""
    start = time.monotonic()
    with open(out / LOG, "ab") as log:
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


def write_json(path: Path, doc: Any) -> None:
    """Replace ``path`` atomically, so that a process killed while writing leaves the previous version."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------- merging
def merge_results(docs: Sequence[dict[str, Any]], parts: Sequence[str] | None = None) -> dict[str, Any]:
    """pytest-benchmark JSON documents of several runs on one machine as one: every benchmark, the first
    run's machine and commit, and the runs' options and outcomes (``mlp["parts"]`` keeps each run's own
    options under ``parts[i]``'s name; the merged outcomes list every skip and failure)."""
    docs = [d for d in docs if d]
    if not docs:
        return {}
    merged = {k: v for k, v in docs[0].items() if k not in ("benchmarks", "mlp")}
    merged["benchmarks"] = [b for d in docs for b in d.get("benchmarks", [])]
    names = list(parts) if parts is not None else [str(i) for i in range(len(docs))]
    outcomes: dict[str, Any] = {"suites": [], "skipped": [], "failed": [], "deselected": 0, "running": None}
    for doc in docs:
        found = (doc.get("mlp") or {}).get("outcomes") or {}
        outcomes["suites"] = sorted(set(outcomes["suites"]) | set(found.get("suites", [])))
        outcomes["skipped"] += found.get("skipped", [])
        outcomes["failed"] += found.get("failed", [])
        outcomes["deselected"] += found.get("deselected", 0)
        outcomes["running"] = outcomes["running"] or found.get("running")
    options = [(doc.get("mlp") or {}).get("options") or {} for doc in docs]
    merged["mlp"] = {"options": {"quick": any(o.get("quick") for o in options),
                                 "tiny": any(o.get("tiny") for o in options), "skip_cpu": False,
                                 "parts": dict(zip(names, options))},
                     "outcomes": outcomes}
    return merged


def _merge_part(out: Path, work: Path, name: str, merged: dict[str, Any]) -> str:
    """Merge ``work/benchmark.json`` (the part ``name``'s) into the session's ``benchmark.json``."""
    path = work / BENCHMARK_JSON
    if not path.is_file():
        return "absent"
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:  # cut off mid-write would leave the previous version: this is something else
        return f"unreadable ({exc})"
    merged["docs"].append(doc)
    merged["names"].append(name)
    write_json(out / BENCHMARK_JSON, merge_results(merged["docs"], merged["names"]))
    return f"{len(doc.get('benchmarks', []))} benchmarks"


def _no_gpu(out: Path) -> str | None:
    """Why this machine has no usable GPU, from ``info.json`` (None: it has one, or ``info`` did not say)."""
    try:
        cuda = json.loads((out / "info.json").read_text())["availability"]["cuda"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if cuda.get("present") else f"needs a GPU ({cuda.get('detail')})"


# ------------------------------------------------------------- the session
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
    merged: dict[str, list] = {"docs": [], "names": []}
    write_json(out / RECORD, record)
    for i, part in enumerate(parts):
        left = deadline - time.monotonic() - RESERVE_S
        limit = left if i == len(parts) - 1 else min(part.cap_s, left)
        skip = part.skip or (_no_gpu(out) if part.gpu else None)
        if skip or limit < part.min_s:
            reason = skip or f"{max(left, 0):.0f} s left of the budget, it needs {part.min_s:.0f} s"
            record["parts"][part.name] = {"skipped": reason}
            print(f"--- {part.name}: skipped ({reason})", flush=True)
        else:
            folder = work / part.name
            folder.mkdir(parents=True, exist_ok=True)
            print(f"--- {part.name}: up to {limit:.0f} s", flush=True)
            paced = replace(part, command=[*part.command, "--seconds", f"{limit:.0f}"]) if part.paced else part
            result = run_part(paced, out, limit, echo)
            result["files"] = _keep(folder, out, part.results)
            if part.benchmarks:
                result["files"][BENCHMARK_JSON] = _merge_part(out, folder, part.name, merged)
            record["parts"][part.name] = result
            print(f"--- {part.name}: {result}", flush=True)
        write_json(out / RECORD, record)
    return record


def session(out: Path, budget_s: float, tiny: bool = False, tests: Sequence[str] | None = None,
            only: Sequence[str] | None = None, echo: bool = True) -> int:
    """``python -m bench --session``: returns 0, or 1 when a part that ran failed or was killed."""
    import tempfile

    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: expected an empty or new folder, got {out} (it holds files)")
    with tempfile.TemporaryDirectory(prefix="mlp-bench-session-") as tmp:
        found = [p for p in GPU_TESTS if (ROOT / p.split("::")[0]).exists()] if tests is None else list(tests)
        parts = plan(Path(tmp), out, tiny, found)
        if only:
            unknown = set(only) - {p.name for p in parts}
            if unknown:
                raise ValueError(f"--parts: expected names among {[p.name for p in parts]}, got {sorted(unknown)}")
            parts = [p for p in parts if p.name in only]
        record = run_session(parts, out, budget_s, Path(tmp), echo)
    failed = [n for n, r in record["parts"].items() if r.get("killed") or r.get("exit_status") not in (None, 0)]
    return 1 if failed else 0


# ------------------------------------------------------------------ info
def part_info(work: Path) -> int:
    """Device, driver and the versions of everything the measurements use, and which backends and peers are
    present (and why not): ``info.json``."""
    import platform

    import mlp
    from bench import _env

    status = _env.probe()
    info: dict[str, Any] = {"python": platform.python_version(), "mlp": mlp.__version__,
                            **_env.machine_extras(status)}
    for name in ("pytest", "pytest_benchmark", "pytest_timeout", "pandas", "tabulate", "matplotlib", "pooch"):
        info["versions"].setdefault(name, "installed" if importlib.util.find_spec(name) else None)
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"],
            capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable ({exc})"
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "info.json", info)
    print(json.dumps(info, indent=1, default=str))
    return 0


# --------------------------------------------------------------- collect
def record_dir(returned: Path) -> Path:
    """Where the record of a returned session goes by default: ``bench/results/gpu-<name>`` (from its
    ``info.json``), else ``bench/results/<the folder's name>``."""
    from bench._env import slug

    try:
        gpu = json.loads((returned / "info.json").read_text()).get("gpu") or {}
    except (OSError, ValueError):
        gpu = {}
    name = gpu.get("name") if isinstance(gpu, dict) else None
    return ROOT / "bench" / "results" / (f"gpu-{slug(name)}" if name else returned.name)


def collect(returned: Path, into: Path | None = None, plots: bool = True) -> Path:
    """Copy what a session returned into a record folder and write its report there (with plots)."""
    from bench import report

    returned = returned.resolve()
    into = (into or record_dir(returned)).resolve()
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(returned.iterdir()):
        if path.is_file() and path.name != report.REPORT and path.resolve() != (into / path.name).resolve():
            shutil.copy2(path, into / path.name)
    written = report.write_report(into, plots=plots)
    tuning = into / "tuning.json"
    if tuning.is_file():
        kind = json.loads(tuning.read_text()).get("kind", "<device kind>")
        print(f"the tile table: cp {tuning} kernels/tuning/{kind}.json (kernels/gemm_plan.py reads it there)")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.session info --work DIR``: the session's ``info`` part in this process."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.session", description=main.__doc__)
    p.add_argument("part", choices=("info",))
    p.add_argument("--work", type=Path, required=True, help="the folder it writes into")
    args = p.parse_args(argv)
    return part_info(args.work)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
