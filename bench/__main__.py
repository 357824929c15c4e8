"""``python -m bench``: run the benchmark suites this machine can run, then write the report.

Examples::

    python -m bench --quick                         # a short run (a few minutes on 2 cores)
    python -m bench                                 # the full run, into bench/results/<machine tag>/
    python -m bench --suites kernels training --skip-cpu --out /tmp/h100   # on a GPU machine

The results folder gets ``report.md``, ``benchmark.json`` (pytest-benchmark's
raw output, with the machine description and what was absent and why) and the
plots (``*.png``).  Without the ``bench`` extra (pytest-benchmark, pandas,
tabulate, matplotlib) it prints one line saying what to install and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from bench import _env

BENCH_DIR = Path(__file__).resolve().parent
SUITES = {
    "kernels": "bench_kernels.py",
    "training": "bench_training.py",
    "scaling": "bench_scaling.py",
    "launch": "bench_launch.py",
    "sklearn": "bench_sklearn.py",
    "search": "bench_search.py",
    "predict": "bench_predict.py",
    "sparse": "bench_sparse.py",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run mlp's benchmark suites (pytest-benchmark) on whatever this machine has and write "
                    "a Markdown report with plots. Backends and peers that are missing are listed as absent.")
    p.add_argument("--quick", action="store_true", help="a short run: fewer sizes, rounds and samples")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default: bench/results/<machine tag>, with '-quick' appended "
                        "for --quick so a short run never overwrites committed results)")
    p.add_argument("--suites", nargs="+", choices=tuple(SUITES), default=list(SUITES), metavar="SUITE",
                   help=f"suites to run, of {', '.join(SUITES)} (default: all)")
    p.add_argument("--skip-cpu", action="store_true",
                   help="leave out CPU-only benchmarks (CPU kernels, CPU scaling, the CPU epoch ratio) and the "
                        "CPU peers; one NumPy epoch per batch size is still timed for the CUDA speedup")
    p.add_argument("--no-plots", action="store_true", help="write the report without PNG plots")
    p.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                   help="only benchmarks whose names match this pytest -k expression")
    return p


def default_out_dir(quick: bool) -> Path:
    tag = _env.machine_tag(_env.probe())
    return BENCH_DIR / "results" / (tag + ("-quick" if quick else ""))


def pytest_args(args: argparse.Namespace, out: Path) -> list[str]:
    argv = [str(BENCH_DIR / SUITES[s]) for s in args.suites]
    argv += [
        "--rootdir", str(BENCH_DIR.parent),
        "-o", "addopts=",  # the project's addopts skip benchmarks (--benchmark-skip)
        "-o", "python_files=bench_*.py",
        "-p", "no:cacheprovider",
        "-p", "no:xdist",  # one process, timed alone (also when started from a parallel test run)
        "-q", "-rfE",
        "--benchmark-enable",
        "--benchmark-disable-gc",
        "--benchmark-json", str(out / "benchmark.json"),
        "--benchmark-columns", "median,iqr,rounds,iterations",
    ]
    if args.quick:
        argv.append("--mlp-quick")
    if args.skip_cpu:
        argv.append("--mlp-skip-cpu")
    if args.keyword:
        argv += ["-k", args.keyword]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suites and write the report.

    Returns 0; 1 when a benchmark failed (the report says which); 2 when the
    ``bench`` extra is not installed (one line on stderr says what is missing).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # ``mlp bench -- --quick`` hands the separator on
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    missing = _env.missing_bench_extra()
    if missing:
        print(_env.bench_extra_message(missing), file=sys.stderr)
        return 2

    import pytest

    from bench import report

    out = (args.out or default_out_dir(args.quick)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report.clean(out)  # never mix two runs in one folder
    # started inside a worker of a parallel test run, the benchmarks still run alone in this process: the
    # worker's marker would make pytest-benchmark switch them off
    worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
    try:
        code = pytest.main(pytest_args(args, out))
    finally:
        if worker is not None:
            os.environ["PYTEST_XDIST_WORKER"] = worker
    if code == pytest.ExitCode.INTERRUPTED:
        print("interrupted; no report written", file=sys.stderr)
        return 130
    path = report.write_report(out, plots=not args.no_plots)
    print(f"report written to {path}")
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        print(f"some benchmarks failed or errored (pytest exit code {int(code)}); see the report's "
              "'Absent, skipped and failed' section", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
