"""Everything only a GPU can show, in parts that each fit one command of a few minutes.

On a machine with an NVIDIA GPU, from the repository root (no install needed:
``PYTHONPATH=.`` runs the source tree; the kernels resolve as ``mlp.kernels``)::

    PYTHONPATH=. python -m bench.gpu_session info     --out OUT   # device, driver, versions
    PYTHONPATH=. python -m bench.gpu_session tests    --out OUT   # GPU tests: kernels, backend, graphs, trainer
    PYTHONPATH=. python -m bench.gpu_session suite    --out OUT   # the rest of the test suite, on the GPU
    PYTHONPATH=. python -m bench.gpu_session training --out OUT   # epoch rows (graphs, eager, PyTorch) and launch costs
    PYTHONPATH=. python -m bench.gpu_session kernels  --out OUT   # kernel benchmarks against cuBLAS and the copy limit
    PYTHONPATH=. python -m bench.gpu_session tune     --out OUT   # per-shape tile table (bench/tune_gemm.py)
    PYTHONPATH=. python -m bench.gpu_session drift    --out OUT   # epoch times within one fit, and mlp train --backend cuda

Each part writes a handful of files under ``OUT/<part>/`` and never needs
another part's output, so a part that ran out of time is simply run again.
Back on any machine, the parts' folders become one committed record::

    python -m bench.gpu_session collect FOLDER... --into bench/results/gpu-h100

which merges the benchmark JSON files into ``benchmark.json``, writes
``report.md`` and its plots (``bench/report.py``) and copies the rest (test
logs and JUnit files, ``info.json``, ``drift.json``, the tuning table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ["tests/test_kernels.py", "tests/test_kernels_naive.py", "tests/test_kernels_tuning.py",
             "tests/test_cuda_backend.py", "tests/test_cuda_graphs.py", "tests/test_trainer_cuda.py",
             "tests/test_device_scalars.py", "tests/test_backend_contract.py", "tests/test_backend_selection.py"]


def _run(cmd: Sequence[str], log: Path, timeout: float) -> int:
    """Run ``cmd`` from the repository root with its output teed into ``log``; returns the exit status."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        start = time.monotonic()
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
            if time.monotonic() - start > timeout:
                proc.kill()
                f.write(f"\n[stopped after {timeout:.0f} s]\n")
                break
        return proc.wait()


def part_info(out: Path) -> int:
    import numba
    import numpy as np

    import mlp

    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "mlp": mlp.__version__, "backends": mlp.available_backends()}
    for name in ("numba_cuda", "cupy", "torch", "sklearn", "cuda.core", "cuda.bindings"):
        try:
            module = __import__(name, fromlist=["_"])
            info[name] = getattr(module, "__version__", "?")
        except Exception as exc:  # recorded, not fatal: the record says what was missing
            info[name] = f"absent ({type(exc).__name__})"
    be = mlp.get_backend("cuda")
    info["device"] = be.device_info()
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                             "--format=csv"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable ({exc})"
    (out / "info.json").write_text(json.dumps(info, indent=2, default=str))
    print(json.dumps(info, indent=2, default=str))
    return 0


def _pytest(out: Path, paths: list[str], name: str, extra: Sequence[str] = ()) -> int:
    cmd = [sys.executable, "-m", "pytest", *paths, "-q", "-rfEs", "-p", "no:cacheprovider",
           f"--junitxml={out / (name + '-junit.xml')}", *extra]
    return _run(cmd, out / f"{name}.log", timeout=540)


def part_tests(out: Path) -> int:
    return _pytest(out, [p for p in GPU_TESTS if (ROOT / p).exists()], "tests-gpu")


def part_suite(out: Path) -> int:
    others = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                    if str(p.relative_to(ROOT)) not in GPU_TESTS)
    return _pytest(out, others, "tests-rest")


def _bench(out: Path, suites: list[str], name: str) -> int:
    cmd = [sys.executable, "-m", "bench", "--suites", *suites, "--skip-cpu", "--no-plots", "--out", str(out)]
    return _run(cmd, out / f"{name}.log", timeout=560)


def part_training(out: Path) -> int:
    return _bench(out, ["training", "launch"], "training")


def part_kernels(out: Path) -> int:
    return _bench(out, ["kernels"], "kernels")


def part_tune(out: Path) -> int:
    return _run([sys.executable, "-m", "bench.tune_gemm", "--out", str(out / "tuning.json")], out / "tune.log",
                timeout=560)


def part_drift(out: Path, backend: str = "cuda", epochs: int = 8) -> int:
    """Epoch times within one fit (eager and graphs), with what could make them grow, and one CLI run."""
    import numpy as np

    import mlp
    from bench._measure import REFERENCE_LAYERS, fashion_like

    X, y = fashion_like()
    be = mlp.get_backend(backend)
    ctx = None
    if backend == "cuda":
        from numba import cuda

        ctx = cuda.current_context()
    record = {}
    for graphs in (False, True):
        for batch in (128, 1024):
            model = mlp.MLP(REFERENCE_LAYERS, seed=0)
            trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-3), backend=be, batch_size=batch,
                                  cuda_graphs=graphs)
            gc_before = [s["collections"] for s in gc.get_stats()]
            launches = be.launch_count
            history = trainer.fit(X, y, epochs=epochs, verbose=0)
            key = f"{'graphs' if graphs else 'eager'}-b{batch}"
            record[key] = {
                "epoch_seconds": history["seconds"],
                "gc_collections": [s["collections"] - b for s, b in zip(gc.get_stats(), gc_before)],
                "pending_deallocations": None if ctx is None else len(ctx.deallocations),
                "launches": be.launch_count - launches,
                "replays": trainer.loop.replays,
            }
            print(key, " ".join(f"{s:.3f}" for s in history["seconds"]), flush=True)
    (out / "drift.json").write_text(json.dumps(record, indent=2))
    data = out / "data.npz"
    np.savez(data, X_train=X[:20_000], y_train=y[:20_000], X_test=X[-5_000:], y_test=y[-5_000:])
    code = _run([sys.executable, "-m", "mlp", "train", "--data", str(data), "--backend", backend, "--epochs", "3",
                 "-o", str(out / "cli.npz")], out / "cli-train.log", timeout=300)
    data.unlink()
    (out / "cli.npz").unlink(missing_ok=True)
    return code


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
    return 0


PARTS = {"info": part_info, "tests": part_tests, "suite": part_suite, "training": part_training,
         "kernels": part_kernels, "tune": part_tune, "drift": part_drift}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_session", description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=(*PARTS, "collect"))
    p.add_argument("folders", nargs="*", type=Path, help="collect: the parts' output folders")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-session")),
                   help="where the part writes (OUT/<part>/; default: $OUT)")
    p.add_argument("--into", type=Path, help="collect: the record folder, e.g. bench/results/gpu-h100")
    args = p.parse_args(argv)
    if args.part == "collect":
        if not args.folders or args.into is None:
            p.error("collect needs the parts' folders and --into")
        return collect(args.folders, args.into)
    out = (args.out / args.part).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return PARTS[args.part](out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
