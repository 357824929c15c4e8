"""``python -m bench``: run the benchmark suites this machine can run, then write the report.

Examples::

    python -m bench --quick                         # a short run (a few minutes on 2 cores)
    python -m bench                                 # the full run, into bench/results/<machine tag>/
    python -m bench --suites search coldstart       # some suites; -k selects benchmarks by name
    python -m bench --session --budget 500 --out OUT   # on a GPU machine: the whole session, in a budget
    python -m bench --collect OUT                   # back home: OUT as the committed record

The results folder gets ``report.md``, ``benchmark.json`` (pytest-benchmark's
raw output, with the machine description and what was absent and why) and
the plots (``*.png``, where matplotlib is installed).  Without pytest and
pytest-benchmark (and, for the report, pandas and tabulate) it prints one
line saying what to install and exits 2.  ``--session`` runs the suites as
the parts of one session in child processes, each killed at its time limit
(:mod:`bench.session`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    "stacks": "bench_stacks.py",
    "coldstart": "bench_coldstart.py",
    "predict": "bench_predict.py",
    "sparse": "bench_sparse.py",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run mlp's benchmark suites (pytest-benchmark) on whatever this machine has and write "
                    "a Markdown report with plots. Backends and peers that are missing are listed as absent.")
    p.add_argument("--quick", action="store_true", help="a short run: fewer sizes, rounds and samples")
    p.add_argument("--tiny", action="store_true",
                   help="tiny networks and data sets where a suite has them: a check of the harness, not a "
                        "measurement")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default: bench/results/<machine tag>, with '-quick' or '-tiny' appended "
                        "so a short run never overwrites committed results); with --session a new or empty folder "
                        "(required); with --collect the record folder (default: bench/results/gpu-<name>)")
    p.add_argument("--suites", nargs="+", choices=tuple(SUITES), default=list(SUITES), metavar="SUITE",
                   help=f"suites to run, of {', '.join(SUITES)} (default: all)")
    p.add_argument("--skip-cpu", action="store_true",
                   help="leave out CPU-only benchmarks (CPU kernels, CPU scaling, the CPU epoch ratio) and the "
                        "CPU peers; one NumPy epoch per batch size is still timed for the CUDA speedup")
    p.add_argument("--no-plots", action="store_true", help="write the report without PNG plots")
    p.add_argument("--no-report", action="store_true",
                   help="write benchmark.json only (the report needs pandas and tabulate: "
                        "python -m bench.report DIR writes it later)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="a benchmark that would start more than S seconds after the run began is skipped, "
                        "saying so")
    p.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                   help="only benchmarks whose names match this pytest -k expression")
    session = p.add_argument_group("one command for a GPU machine (bench/session.py)")
    session.add_argument("--session", action="store_true",
                         help="run the session: device info, the device tests, the training, stacks and kernel "
                              "suites, the report and the tile tuning, each in a child process killed at its time "
                              "limit, within --budget; at most 8 files in --out")
    session.add_argument("--budget", type=float, default=500.0, metavar="SECONDS",
                         help="wall-clock seconds for the whole session (default 500)")
    session.add_argument("--tests", nargs="+", default=None, metavar="TEST",
                         help="the test files (or node ids) of the session's tests part (default: the device tests)")
    session.add_argument("--parts", nargs="+", default=None, metavar="PART", help="only these parts of the session")
    session.add_argument("--collect", type=Path, default=None, metavar="DIR",
                         help="make the committed record from a folder a session returned: its files copied "
                              "into --out, and the report written there with its plots")
    return p


def default_out_dir(quick: bool, tiny: bool = False) -> Path:
    tag = _env.machine_tag(_env.probe())
    return BENCH_DIR / "results" / (tag + ("-tiny" if tiny else "-quick" if quick else ""))


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
    if getattr(args, "tiny", False):
        argv.append("--mlp-tiny")
    if args.skip_cpu:
        argv.append("--mlp-skip-cpu")
    if getattr(args, "seconds", None) is not None:
        argv += ["--mlp-deadline", f"{time.time() + args.seconds:.1f}"]
    if args.keyword:
        argv += ["-k", args.keyword]
    return argv


def _missing(args: argparse.Namespace) -> list[str]:
    """Distributions this command needs that are not installed."""
    if args.session:
        needed = ("pytest", "pytest_benchmark")
    elif args.collect is not None:
        needed = ("pandas", "tabulate")
    elif args.no_report:
        needed = ("pytest", "pytest_benchmark")
    else:
        needed = ("pytest", "pytest_benchmark", "pandas", "tabulate")
    return _env.missing_bench_extra(needed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suites and write the report (or run a session, or collect one).

    Returns 0; 1 when a benchmark failed (the report says which) or a part of
    a session failed; 2 when what the command needs is not installed (one line
    on stderr says what is missing) or its arguments are wrong.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # ``mlp bench -- --quick`` hands the separator on
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.session and args.collect is not None:
        parser.error("--session and --collect: expected one of them, got both")
    missing = _missing(args)
    if missing:
        print(_env.bench_extra_message(missing), file=sys.stderr)
        return 2
    if args.session:
        if args.out is None:
            parser.error("--session needs --out, a new or empty folder for what the session returns")
        from bench import session

        try:
            return session.session(args.out, args.budget, tiny=args.tiny, tests=args.tests, only=args.parts)
        except ValueError as exc:
            parser.error(str(exc))
    if args.collect is not None:
        from bench import session

        print(f"report written to {session.collect(args.collect, args.out, plots=not args.no_plots)}")
        return 0

    import pytest

    out = (args.out or default_out_dir(args.quick, args.tiny)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "benchmark.json"):  # never mix two runs in one folder
        (out / name).unlink(missing_ok=True)
    if not args.no_report:
        from bench import report

        report.clean(out)
    # started inside a worker of a parallel test run, the benchmarks still run alone in this process: the
    # worker's marker would make pytest-benchmark switch them off
    worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
    try:
        code = pytest.main(pytest_args(args, out))
    finally:
        if worker is not None:
            os.environ["PYTEST_XDIST_WORKER"] = worker
    if code == pytest.ExitCode.INTERRUPTED:
        print("interrupted; benchmark.json holds what finished; no report written", file=sys.stderr)
        return 130
    if not args.no_report:
        from bench import report

        path = report.write_report(out, plots=not args.no_plots)
        print(f"report written to {path}")
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        print(f"some benchmarks failed or errored (pytest exit code {int(code)}); see the report's "
              "'Absent, skipped and failed' section", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
