"""The benchmark report generator and a small real run of the suites.

The report is checked on a synthetic pytest-benchmark JSON whose numbers are
chosen so that each target lands on a known side of its threshold; the smoke
run times two tiny CPU benchmarks through ``python -m bench``'s entry point
(no GPU: under the CUDA simulator the CUDA backend must be reported absent).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import frame, report, targets
from bench.__main__ import build_parser, main, pytest_args
from bench._measure import Budget
from bench.fmt import markdown

REPO = Path(__file__).resolve().parent.parent
#: results in the format written before the machine description moved into benchmark.json
#: (the CPU record as committed at e621313: benchmark.json plus environment.json)
LEGACY = REPO / "tests" / "data" / "legacy-results"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------- fixtures
def _bench(name: str, median: float, rounds: int = 5, **info) -> dict:
    """One benchmark entry as pytest-benchmark writes it (only the fields the report reads, plus a few)."""
    info.setdefault("inner", 1)
    return {"group": None, "name": name, "fullname": f"bench/x.py::{name}", "params": None, "param": None,
            "extra_info": info, "options": {},
            "stats": {"min": median * 0.9, "max": median * 1.2, "mean": median, "stddev": 0.0, "rounds": rounds,
                      "median": median, "iqr": median * 0.05, "q1": median, "q3": median, "iterations": 1,
                      "data": [median] * rounds}}


def _gemm(op, device, impl, m, k, n, seconds, group="reference", inner=10):
    flop = 2 * m * k * n
    return _bench(f"test_{op}_{device}[{impl}-{m}x{k}x{n}]", seconds * inner, suite="kernels", op=op, device=device,
                  impl=impl, m=m, k=k, n=n, relu=True, need_dx=False, group=group, flop=flop, inner=inner)


def _epoch(name, median, impl, device, batch=128, samples=60_000, **extra):
    return _bench(name, median, suite="training", op="epoch", impl=impl, device=device, batch=batch,
                  samples=samples, optimizer=extra.pop("optimizer", "adam"), **extra)


def _synthetic_results() -> dict:
    sq = 4096
    cublas_sq = 2 * sq**3 / 40e12  # 40 TFLOP/s
    benches = [
        # limits
        _bench("test_limit_sgemm_cpu", 0.1, suite="kernels", op="limit_sgemm", device="cpu", impl="matmul",
               m=2048, k=2048, n=2048, flop=2 * 2048**3),
        _bench("test_limit_copy_cpu", 0.02, suite="kernels", op="limit_copy", device="cpu", impl="np.copyto",
               bytes=2 * 2**28),
        _bench("test_limit_copy_gpu", 1e-3, suite="kernels", op="limit_copy", device="gpu", impl="memcpy-dtod",
               bytes=2_000_000_000),  # 2000 GB/s
        _bench("test_limit_sgemm_gpu", 2 * 8192**3 / 50e12, suite="kernels", op="limit_sgemm", device="gpu",
               impl="cublas", m=8192, k=8192, n=8192, flop=2 * 8192**3),
        # GPU forward at 4096^3: the fused kernel at 70% of cuBLAS (target: >= 60%)
        _gemm("forward", "gpu", "mlp", sq, sq, sq, cublas_sq / 0.7, group="square", inner=1),
        _gemm("forward", "gpu", "cublas", sq, sq, sq, cublas_sq, group="square", inner=1),
        # reference shapes: faster than cuBLAS + epilogue at one shape, slower at the other
        _gemm("forward", "gpu", "mlp", 128, 784, 512, 10e-6),
        _gemm("forward", "gpu", "cublas+epilogue", 128, 784, 512, 15e-6),
        _gemm("forward", "gpu", "cublas", 128, 784, 512, 9e-6),
        _gemm("forward", "gpu", "mlp", 128, 256, 10, 8e-6),
        _gemm("forward", "gpu", "cublas+epilogue", 128, 256, 10, 6e-6),
        # the same reference shape on the CPU, for the CUDA speedup column
        _gemm("forward", "cpu", "mlp", 128, 784, 512, 500e-6),
        _gemm("forward", "cpu", "matmul", 128, 784, 512, 490e-6),
        # GPU softmax at 1e6 x 100 (381 MiB of logits, "large"): 808e6 bytes in 0.5 ms = 1616 GB/s
        _bench("test_softmax_xent_gpu[mlp-1000000x100]", 0.5e-3 * 20, suite="kernels", op="softmax_xent",
               device="gpu", impl="mlp", rows=1_000_000, classes=100, bytes=2 * 10**8 * 4 + 8 * 10**6, inner=20),
        # CPU epochs: products timed before each round
        _epoch("test_epoch_mlp[numpy-adam-b128]", 1.15, "mlp-numpy", "cpu", epoch_seconds=[1.2, 1.0, 1.1],
               products_seconds=[1.0, 0.9, 1.0], threads=2),
        _epoch("test_epoch_mlp[numpy-sgd-momentum-b128]", 1.05, "mlp-numpy", "cpu", optimizer="sgd-momentum",
               epoch_seconds=[1.0, 1.0, 1.0], products_seconds=[1.0, 0.95, 0.92], threads=2),
        _epoch("test_epoch_torch[cpu-b128]", 2.0, "torch-cpu", "cpu", threads=2),
        _epoch("test_epoch_sklearn[b128]", 1.0, "sklearn", "cpu", samples=10_000),  # 6 s per 60,000 samples
        # GPU epoch: mlp only (torch-cuda absent)
        _epoch("test_epoch_mlp[cuda-adam-b128]", 0.3, "mlp-cuda", "gpu", epoch_seconds=[0.2, 0.2, 0.2],
               launches_per_epoch=469 * 12, steps=469),
        # scaling
        _bench("test_scaling_numpy[batch32]", 4.0, suite="scaling", op="epoch", impl="mlp-numpy", device="cpu",
               sweep="batch", batch=32, width=512, samples=60_000, epoch_seconds=[4.0, 4.1]),
        _bench("test_scaling_cuda[batch32]", 0.5, suite="scaling", op="epoch", impl="mlp-cuda", device="gpu",
               sweep="batch", batch=32, width=512, samples=60_000, epoch_seconds=[0.5, 0.5]),
        _bench("test_scaling_numpy[width1024]", 5.0, suite="scaling", op="epoch", impl="mlp-numpy", device="cpu",
               sweep="width", batch=128, width=1024, samples=60_000, epoch_seconds=[5.0, 5.0]),
        # something without our extra_info is ignored
        {"name": "test_foreign", "stats": {"median": 1.0}, "extra_info": {}},
    ]
    extras = {  # what the suites add to pytest-benchmark's machine_info
        "cores": 2, "ram_bytes": 8 * 2**30,
        "gpu": {"name": "Test GPU", "compute_capability": [9, 0], "sm_count": 132, "driver_version": "12.4",
                "runtime_version": "12.4"},
        "versions": {"numpy": "2.0", "torch": None},
        "blas": [{"internal_api": "openblas", "version": "0.3", "num_threads": 2, "architecture": "Haswell",
                  "library": "libopenblas.so"}],
        "blas_threads": 2,
        "availability": {
            "numpy": {"present": True, "detail": "NumPy 2.0"},
            "cuda": {"present": True, "detail": "Test GPU"},
            "cupy": {"present": True, "detail": "CuPy 13"},
            "torch-cpu": {"present": True, "detail": "PyTorch 2"},
            "torch-cuda": {"present": False, "detail": "PyTorch 2 is a CPU-only build"},
            "sklearn": {"present": True, "detail": "scikit-learn 1.5"},
        },
    }
    machine_info = {"node": "box", "machine": "x86_64", "system": "Linux", "release": "6.1",
                    "python_version": "3.11.7", "python_implementation": "CPython", "python_compiler": "GCC 12",
                    "cpu": {"brand_raw": "Test CPU", "count": 4}, "mlp": extras}
    run = {"options": {"quick": False, "skip_cpu": False},
           "outcomes": {"suites": ["kernels", "scaling", "training"], "deselected": 0,
                        "skipped": [{"test": "t1", "reason": "torch-cuda absent: PyTorch 2 is a CPU-only build"},
                                    {"test": "t2", "reason": "torch-cuda absent: PyTorch 2 is a CPU-only build"}],
                        "failed": [{"test": "test_broken", "when": "call", "message": "AssertionError: boom"}]}}
    return {"machine_info": machine_info, "commit_info": {"id": "abc123", "dirty": True, "branch": "main"},
            "benchmarks": benches, "datetime": "2025-01-01T00:00:00+00:00", "version": "5.0", "mlp": run}


@pytest.fixture
def synthetic_folder(tmp_path) -> Path:
    (tmp_path / frame.BENCHMARK_JSON).write_text(json.dumps(_synthetic_results()))
    return tmp_path


def _outcomes(doc: dict) -> list[targets.Outcome]:
    return report.target_outcomes(frame.frame(doc), frame.run_record(doc))


def _find(outcomes: list[targets.Outcome], *words: str) -> targets.Outcome:
    found = [o for o in outcomes if all(w in f"{o.target.what} {targets.bound_text(o.target)}" for w in words)]
    assert len(found) == 1, f"expected one target matching {words}, got {[o.target.what for o in found]}"
    return found[0]


def _tables(markdown: str) -> list[list[str]]:
    """Blocks of consecutive lines that start with '|'."""
    blocks, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _cells(line: str) -> list[str]:
    assert line.startswith(("| ", "|:", "|-")), line
    assert line.endswith("|"), line
    return re.split(r"(?<!\\)\|", line.strip()[1:-1])


# ------------------------------------------------------------- the frame
def test_frame_has_per_operation_medians_and_extra_info_columns(synthetic_folder):
    df, env = frame.load(synthetic_folder)
    assert "test_foreign" not in set(df["name"])  # no extra_info of ours: left out
    assert {"suite", "op", "impl", "device", "batch", "optimizer", "median", "rounds"} <= set(df.columns)
    fwd = frame.first(df, op="forward", device="gpu", impl="mlp", m=128, k=784, n=512)
    assert fwd["seconds"] == pytest.approx(10e-6)  # round median / inner
    assert fwd["gflops"] == pytest.approx(2 * 128 * 784 * 512 / 10e-6 / 1e9)
    epoch = frame.first(df, op="epoch", impl="mlp-numpy", optimizer="adam")
    assert epoch["seconds"] == pytest.approx(1.1)  # the trainer's own epoch time, not the whole fit
    assert epoch["call_seconds"] == pytest.approx(1.15)
    assert epoch["products_ratio"] == pytest.approx(1.11, abs=0.005)  # median of 1.2, 1.11, 1.1
    assert frame.first(df, impl="sklearn")["epoch_60k"] == pytest.approx(6.0)  # 10,000 samples, scaled
    copy = frame.first(df, op="limit_copy", device="gpu")
    assert copy["seconds"] == pytest.approx(0.9e-3)  # a limit is a ceiling: its fastest round, not the median
    # the machine comes from pytest-benchmark's records, the rest from what the suites add to them
    assert env["machine_info"]["cpu"]["brand_raw"] == "Test CPU" and "mlp" not in env["machine_info"]
    assert env["availability"]["torch-cuda"]["present"] is False and env["options"]["quick"] is False


# ------------------------------------------------------------- targets
def test_target_table_queries_name_existing_columns():
    empty = frame.frame({"benchmarks": []})
    outcomes = targets.evaluate_all(empty, lambda t: "nothing measured")
    assert len(outcomes) == len(targets.TARGETS) >= 10
    assert all(o.status == "not measured" and o.note == "nothing measured" for o in outcomes)
    assert all(t.source and t.compare in ("<", "<=", ">=") for t in targets.TARGETS)


def test_cpu_epoch_ratio_targets():
    outcomes = _outcomes(_synthetic_results())
    # Adam: per-round ratios 1.2, 1.11, 1.1 -> median 1.11: over 1.10, under 1.25
    adam_110 = _find(outcomes, "Adam, batch 128", "matrix products", "1.10×")
    adam_125 = _find(outcomes, "Adam, batch 128", "matrix products", "1.25×")
    assert adam_110.status == "not met" and adam_125.status == "met"
    assert adam_110.measured.startswith("1.11×") and "3 paired rounds" in adam_110.note
    # SGD with momentum: ratios 1.0, 1.053, 1.087 -> 1.05, under both limits
    assert _find(outcomes, "SGD with momentum", "1.10×").status == "met"
    assert _find(outcomes, "SGD with momentum", "1.25×").status == "met"


def test_peer_and_gpu_targets():
    outcomes = _outcomes(_synthetic_results())
    assert _find(outcomes, "PyTorch CPU").status == "met"  # 1.1 s against 2.0 s
    sk = _find(outcomes, "scikit-learn")
    assert sk.status == "met" and "10,000 samples" in sk.note
    fused = _find(outcomes, "cuBLAS SGEMM")
    assert fused.status == "met" and fused.measured.startswith("70%")
    shapes = _find(outcomes, "separate bias/ReLU")
    assert shapes.status == "not met" and shapes.measured.startswith("1 of 2 within")
    assert "256→10" in shapes.measured  # the shape where it lost
    soft = _find(outcomes, "logits ≥ 256 MiB")
    # 1616 GB/s against the copy limit's fastest round (0.9 of its 1 ms median: 2222 GB/s) = 73%
    assert soft.status == "met" and soft.measured.startswith("73%")
    torch_gpu = _find(outcomes, "CUDA backend / PyTorch eager")
    assert torch_gpu.status == "not measured" and "CPU-only build" in torch_gpu.note


def test_gpu_targets_name_the_simulator_when_cuda_is_absent():
    doc = _synthetic_results()
    doc["benchmarks"] = [b for b in doc["benchmarks"] if (b.get("extra_info") or {}).get("device") != "gpu"]
    doc["machine_info"]["mlp"]["availability"]["cuda"] = {"present": False,
                                                         "detail": "simulator: timings meaningless"}
    gpu = [o for o in _outcomes(doc) if o.target.what.startswith("GPU")]
    assert len(gpu) == 10
    assert all(o.status == "not measured" and "simulator: timings meaningless" in o.note for o in gpu)


def _sparse_fits() -> dict:
    """bench_sparse rows: on tfidf mlp is 4x faster with 1.2x the memory; on scattered it takes 2.5x the memory."""
    rows = []
    for dataset, features, nnz, mine, theirs in (("tfidf", 100_000, 2_000_000, (5.0, 600), (20.0, 500)),
                                                 ("scattered", 20_000, 2_000, (4.0, 250), (15.0, 100))):
        for impl, (seconds, mib), score in (("mlp-numpy", mine, 0.8), ("sklearn", theirs, 0.79)):
            rows.append(_bench(f"test_fit_sparse[{impl}-{dataset}-float64]", seconds, rounds=3, suite="sparse",
                               op="fit", impl=impl, device="cpu", dataset=dataset, dtype="float64",
                               group=f"{dataset}-float64", rows=20_000, features=features, classes=20, nnz=nnz,
                               score=score, n_iter=5, peak_bytes=mib * 2**20, params={"solver": "adam"}))
    return {"benchmarks": rows}


def test_sparse_fit_targets_and_section(tmp_path):
    doc = _sparse_fits()
    outcomes = _outcomes(doc)
    assert _find(outcomes, "TF-IDF-like", "fit time").status == "met"
    memory = _find(outcomes, "TF-IDF-like", "peak memory")
    assert memory.status == "met" and memory.measured.startswith("1.20× (600 MiB vs 500 MiB)")
    assert _find(outcomes, "2,000 non-zeros", "fit time").status == "met"
    assert _find(outcomes, "2,000 non-zeros", "peak memory").status == "not met"
    (tmp_path / frame.BENCHMARK_JSON).write_text(json.dumps(doc))
    text = report.write_report(tmp_path, plots=False).read_text()
    section = text[text.index("## Sparse X: fit against scikit-learn"):]
    _assert_well_formed(section, 1)
    assert "| tfidf 20,000 × 100,000, 2,000,000 non-zeros | float64 |" in section
    assert re.search(r"\|\s+600 MiB \|\s+500 MiB \|\s+1\.20× \| 5 / 5\s+\| 0\.800 / 0\.790\s+\|", section)


# -------------------------------------------------------------- render
def _assert_well_formed(text: str, at_least: int) -> None:
    tables = _tables(text)
    assert len(tables) >= at_least
    for block in tables:
        width = len(_cells(block[0]))
        assert width >= 2
        assert all(re.fullmatch(r":?-{3,}:?", c.strip()) for c in _cells(block[1])), block[1]
        for line in block:
            assert len(_cells(line)) == width, f"ragged table row: {line}"


def test_report_tables_are_well_formed_and_absent_things_listed(synthetic_folder):
    text = report.write_report(synthetic_folder, plots=False).read_text()
    _assert_well_formed(text, 8)
    assert "# mlp benchmarks:" in text and "Test GPU" in text and "Test CPU" in text
    assert "2025-01-01 00:00 UTC" in text and "`abc123-dirty`" in text and "python 3.11.7" in text
    assert "**torch-cuda**" in text and "**absent**: PyTorch 2 is a CPU-only build" in text
    assert "2 × torch-cuda absent" in text  # skipped benchmarks grouped by reason
    assert "`test_broken`" in text and "AssertionError: boom" in text
    assert "## Targets" in text and "**not met**" in text and "**met**" in text
    assert "synthetic" in text.lower()  # the methodology says the data is synthetic
    assert "Not recorded" not in text


def test_results_of_the_older_format_still_render(tmp_path):
    for name in ("benchmark.json", "environment.json"):
        shutil.copy(LEGACY / name, tmp_path / name)
    text = report.write_report(tmp_path, plots=False).read_text()
    _assert_well_formed(text, 10)
    assert "AMD EPYC, 2 cores" in text and "torch 2.13.0+cpu" in text
    assert "**sklearn** (scikit-learn MLPClassifier): present" in text
    assert "Not recorded" not in text  # environment.json held all the older format lacks


def test_report_says_what_a_plain_pytest_benchmark_json_lacks(tmp_path):
    doc = _synthetic_results()
    del doc["machine_info"]["mlp"], doc["mlp"]
    (tmp_path / frame.BENCHMARK_JSON).write_text(json.dumps(doc))
    text = report.write_report(tmp_path, plots=False).read_text()
    lacking = next(line for line in text.splitlines() if line.startswith("- **Not recorded"))
    assert "which backends and peers were present" in lacking and "library versions" in lacking
    assert "Test CPU" in text  # pytest-benchmark's own records still describe the machine


def test_report_writes_plots_and_few_files(synthetic_folder):
    report.write_report(synthetic_folder, plots=True)
    files = sorted(p.name for p in synthetic_folder.iterdir())
    assert len(files) <= 6
    for name in report.PLOTS:
        assert name in files
        assert (synthetic_folder / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"]({name})" in (synthetic_folder / report.REPORT).read_text()


def test_markdown_escapes_pipes_and_drops_unmeasured_columns():
    table = pd.DataFrame({"a": ["1", "2"], "b": ["x|y", "z"], "c": ["—", None]})
    lines = markdown(table, "lrr").splitlines()
    assert [c.strip() for c in _cells(lines[0])] == ["a", "b"]  # "c" has nothing measured
    assert [c.strip() for c in _cells(lines[2])] == ["1", "x\\|y"]
    assert re.fullmatch(r"\|:-+\|-+:\|", lines[1])
    with pytest.raises(ValueError, match="expected 3 letters"):
        markdown(table, "lr")


def test_budget_plans_loops_for_short_operations():
    b = Budget(round_s=2e-3, total_s=0.2, min_rounds=10, max_rounds=60)
    assert b.plan(10e-6) == (200, 60)  # 200 launches make a 2 ms round; 100 rounds capped at 60
    assert b.plan(0.05) == (1, 10)  # long enough alone; 4 rounds raised to the minimum
    assert b.plan(0.01)[0] == 1


# --------------------------------------------------------------- CLI run
def test_cli_builds_a_pytest_run_that_enables_benchmarks(tmp_path):
    args = build_parser().parse_args(["--quick", "--suites", "kernels", "--skip-cpu", "--out", str(tmp_path)])
    argv = pytest_args(args, tmp_path)
    assert argv[0].endswith("bench_kernels.py") and not any(a.endswith("bench_training.py") for a in argv)
    assert argv[argv.index("-o") + 1] == "addopts="  # the project's addopts would skip every benchmark
    assert str(tmp_path / "benchmark.json") in argv
    assert "--mlp-quick" in argv and "--mlp-skip-cpu" in argv


@pytest.mark.parametrize("hidden", [("pandas",), ("pytest_benchmark", "tabulate")])
def test_a_missing_bench_extra_gives_one_line_not_a_traceback(tmp_path, hidden):
    """``python -m bench`` with modules of the extra hidden (``sys.modules[name] = None`` makes them unimportable)."""
    code = ("import runpy, sys\n"
            f"for name in {hidden!r}: sys.modules[name] = None\n"
            f"sys.argv = ['bench', '--quick', '--out', {str(tmp_path / 'out')!r}]\n"
            "runpy.run_module('bench', run_name='__main__', alter_sys=True)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    names = {"pandas": "pandas", "pytest_benchmark": "pytest-benchmark", "tabulate": "tabulate"}
    assert all(names[h] in lines[0] for h in hidden) and "pip install -e '.[bench]'" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was run


def test_smoke_run_writes_a_report(tmp_path):
    out = tmp_path / "results"
    code = main(["--quick", "--suites", "kernels", "--out", str(out),
                 "-k", "limit_copy_cpu or (softmax_xent_cpu and 1024x10)"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.json", "report.md", "softmax.png"]
    doc = json.loads((out / "benchmark.json").read_text())
    timed = {b["extra_info"]["op"] for b in doc["benchmarks"]}
    assert timed == {"limit_copy", "softmax_xent"}
    assert all(b["stats"]["median"] > 0 for b in doc["benchmarks"])
    extras = doc["machine_info"]["mlp"]  # added to pytest-benchmark's machine_info by bench/conftest.py
    assert extras["availability"]["numpy"]["present"] is True and extras["versions"]["numba"]
    assert doc["mlp"]["options"]["quick"] is True and doc["mlp"]["outcomes"]["suites"] == ["kernels"]
    text = (out / "report.md").read_text()
    assert "1,024 × 10" in text and "% of copy bandwidth" in text
    assert (out / "softmax.png").read_bytes()[:8] == PNG_SIGNATURE
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        assert extras["availability"]["cuda"]["present"] is False
        assert "simulator: timings meaningless" in text


def test_epoch_profile_times_every_operation_of_every_step(capsys):
    """Every timed operation runs in every step, no time is counted twice, and the timers see most of the epoch.

    ``the rest`` is the epoch (the trainer's own clock) minus the timed
    operations: it goes negative when one is counted twice (say, a public
    wrapper timed as well as the operation it calls), and swallows the epoch
    when an operation stops being timed or the model calls one the profiler
    does not wrap.  The trainer's own Python work is a few percent of an
    epoch; half is far above that and far below an operation's share.
    """
    from bench import profile_epoch
    from mlp.backends.numpy_backend import NumpyBackend

    (profile,) = profile_epoch.main(["--optimizer", "sgd", "--samples", "1024", "--batch", "128", "--epochs", "1"])
    assert profile.steps == 8
    every_step = ("_take_rows_stacked", "_affine_forward_stacked", "_affine_backward_stacked", "_loss_stacked",
                  "_sgd_step_stacked")
    for name in every_step:
        assert profile.calls.get(name, 0) >= profile.steps, f"{name} timed in fewer than every step"
    assert profile.calls.get("_adam_step_stacked", 0) == 0  # SGD run
    assert all(seconds >= 0 for seconds in profile.parts.values()), profile.parts
    assert profile.parts[profile_epoch.REST] <= 0.5 * profile.seconds, profile.parts
    assert "affine layers (BLAS products" in capsys.readouterr().out
    assert not hasattr(NumpyBackend._affine_forward_stacked, "__wrapped__")  # the timers are removed afterwards


def test_the_committed_cpu_record_renders(tmp_path):
    """The committed CPU record (one benchmark.json holding the machine description) rebuilds its report."""
    shutil.copy(REPO / "bench" / "results" / "cpu-amd-epyc-2c" / "benchmark.json", tmp_path / "benchmark.json")
    text = report.write_report(tmp_path, plots=False).read_text()
    _assert_well_formed(text, 10)
    assert "AMD EPYC, 2 cores" in text and "Not recorded" not in text
    assert "## Training" in text and "No training benchmark in this run." not in text


def test_gpu_session_kills_a_silent_part_on_time(tmp_path, monkeypatch):
    """A part that prints nothing and ignores SIGINT is killed at its limit, with the processes it started,
    not when it next prints; the parts after it still run."""
    from bench import gpu_session

    monkeypatch.setattr(gpu_session, "KILL_GRACE_S", 1.0)
    monkeypatch.setattr(gpu_session, "RESERVE_S", 0.0)
    pid_file = tmp_path / "grandchild.pid"
    quiet = ("import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
             "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
             f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)")
    parts = [gpu_session.Part("quiet", [sys.executable, "-c", quiet], cap_s=3, min_s=0),
             gpu_session.Part("next", [sys.executable, "-c", "print('ran')"], cap_s=60, min_s=0)]
    out = tmp_path / "out"
    record = gpu_session.run_session(parts, out, budget_s=120, work=tmp_path / "work", echo=False)
    quiet_record = record["parts"]["quiet"]
    assert quiet_record["killed"] and quiet_record["exit_status"] != 0
    assert quiet_record["seconds"] < 60  # a part left to its own sleep would take 600 s
    assert record["parts"]["next"]["exit_status"] == 0 and not record["parts"]["next"]["killed"]
    grandchild = int(pid_file.read_text())
    status = Path(f"/proc/{grandchild}/status")
    assert not status.exists() or "zombie" in status.read_text()  # killed with its part's process group
    log = (out / "session.log").read_text()
    assert "quiet killed after" in log and "ran" in log
    assert json.loads((out / "session.json").read_text()) == json.loads(json.dumps(record))


def test_gpu_session_all_on_numpy_with_a_tiny_network(tmp_path, monkeypatch):
    """The whole session through its command line, on the NumPy backend with a tiny network, where pooch,
    platformdirs and PyTorch cannot be imported (as on a GPU machine without them, whether or not this one
    has them): every part that can run here runs, and what comes back is at most 8 files, each under 16 MiB,
    the tests' output in the session's log beside the JUnit XML; the stacks part measures every row it can
    here, each PyTorch row is recorded absent with the reason, and ``collect`` tabulates them."""
    from bench import gpu_session

    blockers = tmp_path / "blockers"
    blockers.mkdir()
    for name in ("pooch", "platformdirs", "torch"):
        (blockers / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blockers))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:platformdirs")  # its pytest plugin, absent with it
    out = tmp_path / "OUT"
    code = gpu_session.main(["all", "--out", str(out), "--budget", "400", "--backend", "numpy", "--tiny",
                             "--tests", "tests/test_graph_orchestration.py::test_a_capture_runs_nothing_and_"
                                        "a_replay_runs_what_was_recorded"])
    record = json.loads((out / "session.json").read_text())
    assert code == 0, record
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= gpu_session.MAX_FILES and all(p.stat().st_size < gpu_session.MAX_FILE_BYTES for p in files)
    assert {p.name for p in files} == {"session.json", "session.log", "info.json", "tests-junit.xml",
                                       "training.json", "stacks.json"}
    assert [n for n, r in record["parts"].items() if "skipped" in r] == ["kernels", "tune"]
    assert all(r["exit_status"] == 0 for r in record["parts"].values() if "skipped" not in r)
    assert 'tests="1"' in (out / "tests-junit.xml").read_text() and "1 passed" in (out / "session.log").read_text()
    training = json.loads((out / "training.json").read_text())
    assert sorted(training["rows"]) == sorted(f"{name}-b{b}" for b in (128, 1024) for name in
                                              ("mlp-graphs", "mlp-eager", "torch-eager", "torch-graphs"))
    for key in ("mlp-graphs-b128", "mlp-eager-b1024"):
        row = training["rows"][key]
        assert len(row["epoch_seconds"]) == training["epochs"] and row["steps_per_epoch"] >= 1
    no_torch = "PyTorch is not installed (torch is not installed here)"
    assert {k: r for k, r in training["rows"].items() if k.startswith("torch")} == {
        f"torch-{kind}-b{b}": {"absent": no_torch} for kind in ("eager", "graphs") for b in (128, 1024)}
    assert json.loads((out / "info.json").read_text())["device"]["backend"] == "numpy"
    import numpy as np

    stacks = json.loads((out / "stacks.json").read_text())
    search = stacks["search"]
    assert search["mlp"]["seconds"] > 0 and search["sklearn"]["seconds"] > 0 and search["sklearn_over_mlp"] > 0
    assert search["mlp"]["n_iter"] == search["config"]["epochs"] == 2 and search["sklearn"]["n_jobs"] == -1
    assert 0 <= search["sklearn"]["best_agrees"] <= 1
    for row in (stacks["torch_func"]["mlp"], stacks["padding"]["padded"]):
        assert row["median_s"] > 0 and len(row["epoch_seconds"]) == 2 and np.isfinite(row["mean_loss_last_epoch"])
    assert stacks["torch_func"]["torch-func"] == {"absent": no_torch}
    assert stacks["torch_func"]["torch_func_over_mlp"] is None
    assert stacks["torch_func"]["torch-compile"] == {"skipped": "not in a tiny run"}
    grouped = stacks["padding"]["grouped"]
    assert [s["layers"][1] for s in grouped["stacks"]] == stacks["padding"]["config"]["hidden"]
    assert stacks["padding"]["padded"]["models"] == sum(s["models"] for s in grouped["stacks"])
    assert gpu_session.main(["collect", str(out), "--into", str(tmp_path / "record")]) == 0
    table = (tmp_path / "record" / "stacks.md").read_text()
    assert "mlp.GridSearchCV, backend numpy" in table and "not in a tiny run" in table
    assert re.search(r"\| torch\.func +\| +— \|.*\| " + re.escape(no_torch), table)
    training_table = (tmp_path / "record" / "training.md").read_text()
    assert len(re.findall(r"\| torch-(eager|graphs) +\| +— \|.*\| " + re.escape(no_torch), training_table)) == 4


def test_gpu_session_torch_rows_on_the_cpu(torch, tmp_path):
    """With PyTorch installed, the training part's PyTorch eager rows and the stacks part's ``torch.func`` row
    are measured on the CPU (run here in this process, on the NumPy backend, tiny); PyTorch's CUDA graphs are
    recorded absent for want of a GPU."""
    import numpy as np

    from bench import gpu_session, gpu_stacks

    assert gpu_session.part_training(tmp_path, backend="numpy", tiny=True) == 0
    training = json.loads((tmp_path / "training.json").read_text())
    for b in (128, 1024):
        row = training["rows"][f"torch-eager-b{b}"]
        assert row["median_s"] > 0 and len(row["epoch_seconds"]) == training["epochs"], row
        assert row["device"] == "cpu" and row["torch"] == torch.__version__
        assert training["rows"][f"torch-graphs-b{b}"] == {"absent": "PyTorch CUDA graphs need a GPU"}

    sizes = gpu_stacks.TINY_STACK
    rng = np.random.default_rng(0)
    X = rng.random((sizes.samples, sizes.layers[0]), dtype=np.float32)
    y = rng.integers(0, sizes.layers[-1], size=sizes.samples, dtype=np.int64)
    row = gpu_stacks.torch_func_epochs(sizes, X, y, "numpy", deadline=float("inf"))
    assert row["median_s"] > 0 and len(row["epoch_seconds"]) == sizes.epochs, row
    assert np.isfinite(row["mean_loss_last_epoch"]) and row["device"] == "cpu" and row["models"] == sizes.models


# bench_search's suite marks are registered by bench/conftest.py, which this run does not load
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_gpu_session_stacks_rows_say_why_they_did_not_run(tmp_path, monkeypatch):
    """The stacks part with no time left writes every row with its reason; a row that fails records its
    error and the next still runs; without PyTorch the torch rows say so."""
    import numpy as np

    from bench import gpu_stacks

    assert gpu_stacks.part_stacks(tmp_path, backend="numpy", tiny=True, seconds=5) == 0
    doc = json.loads((tmp_path / "stacks.json").read_text())
    rows = {f"{s}/{k}": r for s in ("search", "torch_func", "padding") for k, r in doc[s].items()
            if isinstance(r, dict) and k != "config"}
    assert sorted(rows) == ["padding/grouped", "padding/padded", "search/mlp", "search/sklearn", "torch_func/mlp",
                            "torch_func/torch-compile", "torch_func/torch-func"]
    assert all(r["skipped"].startswith("out of time") for k, r in rows.items() if k != "torch_func/torch-compile")
    assert doc["search"]["sklearn_over_mlp"] is None and doc["padding"]["padded_over_grouped"] is None

    book = gpu_stacks._Rows(tmp_path / "rows.json", {"a": {}}, deadline=float("inf"))
    book.run("a", "fails", lambda: 1 / 0)
    book.run("a", "runs", lambda: {"median_s": 1.0})
    assert json.loads((tmp_path / "rows.json").read_text())["a"] == {
        "fails": {"error": "ZeroDivisionError: division by zero"}, "runs": {"median_s": 1.0}}

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    absent = gpu_stacks.torch_func_epochs(gpu_stacks.TINY_STACK, np.zeros((4, 20), np.float32), np.zeros(4, np.int64),
                                          "numpy", deadline=float("inf"))
    assert absent["absent"].startswith("PyTorch is not installed")


def test_gpu_session_collect_tabulates_the_stacks_rows(tmp_path):
    from bench import gpu_session

    returned = tmp_path / "OUT"
    returned.mkdir()
    doc = {"backend": "cuda", "tiny": False, "cpu_count": 16,
           "search": {"config": {"candidates": 24, "folds": 5, "epochs": 100, "target": 50.0},
                      "mlp": {"seconds": 0.5, "best": "alpha=0.001", "best_score": 0.9794},
                      "sklearn": {"seconds": 26.0, "best": "alpha=0.001", "best_score": 0.9794, "best_agrees": 1.0},
                      "sklearn_over_mlp": 52.0},
           "torch_func": {"config": {"models": 64, "layers": [784, 512, 256, 10], "samples": 8192, "batch": 128},
                          "mlp": {"median_s": 0.02, "replays": 5},
                          "torch-func": {"median_s": 0.05}, "torch_func_over_mlp": 2.5,
                          "torch-compile": {"skipped": "out of time: 12 s left, it needs 30 s"}},
           "padding": {"config": {"hidden": [32, 64, 100], "per_size": 30, "rows": 1797, "batch": 200},
                       "grouped": {"median_s": 0.004, "replays": 24}, "padded": {"error": "ValueError: boom"}}}
    (returned / "stacks.json").write_text(json.dumps(doc))
    into = tmp_path / "record"
    assert gpu_session.main(["collect", str(returned), "--into", str(into)]) == 0
    text = re.sub(" +", " ", (into / "stacks.md").read_text())
    assert "| search (whole) | sklearn GridSearchCV, n_jobs=-1 (16 cores) | 26.00 s | 52.00× | — |" in text
    assert "100% of best params agree" in text
    assert "| one stack (epoch) | mlp StackedLoop, backend cuda | 20.00 ms | — | 5 |" in text
    assert "| one stack (epoch) | torch.func | 50.00 ms | 2.50× | — |" in text
    assert "out of time: 12 s left, it needs 30 s" in text and "ValueError: boom" in text


def test_gpu_session_returns_at_most_8_files_each_under_the_limit(tmp_path, monkeypatch):
    """Every file a session can return is named by its plan (at most 8 with the session's own two); a result
    over the size limit stays behind, named in the record; a log file stops growing at its limit, however
    many parts write to it."""
    from bench import gpu_session

    parts = gpu_session.plan(tmp_path, "cuda", False, ["tests/test_cuda_graphs.py"])
    names = {"session.json"} | {p.log for p in parts} | {r for p in parts for r in p.results}
    assert len(names) <= gpu_session.MAX_FILES
    assert [p.name for p in parts] == ["info", "tests", "training", "stacks", "kernels", "tune"]

    monkeypatch.setattr(gpu_session, "MAX_FILE_BYTES", 100)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "small.json").write_text("{}")
    (work / "big.json").write_text("x" * 100)
    kept = gpu_session._keep(work, out, ["small.json", "big.json", "missing.json"])
    assert kept == {"small.json": "2 bytes", "big.json": "left out: 100 bytes", "missing.json": "absent"}
    assert sorted(p.name for p in out.iterdir()) == ["small.json"]

    monkeypatch.setattr(gpu_session, "LOG_LIMIT_BYTES", 1000)
    loud = gpu_session.Part("loud", [sys.executable, "-c", "[print('x' * 99) for _ in range(100)]"], cap_s=60)
    for _ in range(2):
        result = gpu_session.run_part(loud, out, timeout=60, echo=False)
        assert result["exit_status"] == 0
    log = (out / "session.log").read_text()
    assert len(log) < 1000 + 2 * 200 and log.count("bytes of output left out of this log") == 2


def test_gpu_session_collect_merges_the_parts_into_one_record(tmp_path):
    from bench import gpu_session

    doc = _synthetic_results()
    half = len(doc["benchmarks"]) // 2
    parts = []
    for i, chunk in enumerate((doc["benchmarks"][:half], doc["benchmarks"][half:])):
        folder = tmp_path / "OUT" / f"part{i}"
        folder.mkdir(parents=True)
        (folder / "benchmark.json").write_text(json.dumps({**doc, "benchmarks": chunk}))
        (folder / f"part{i}.log").write_text("log")
        parts.append(folder)
    into = tmp_path / "record"
    assert gpu_session.main(["collect", *map(str, parts), "--into", str(into)]) == 0
    merged = json.loads((into / "benchmark.json").read_text())
    assert [b["name"] for b in merged["benchmarks"]] == [b["name"] for b in doc["benchmarks"]]
    assert (into / "report.md").is_file() and (into / "part0.log").is_file() and (into / "part1.log").is_file()


def test_gpu_session_collect_tabulates_the_training_rows(tmp_path):
    from bench import gpu_session

    returned = tmp_path / "OUT"
    returned.mkdir()
    doc = {"layers": [784, 512, 256, 10], "samples": 60000, "epochs": 6, "optimizer": "Adam(lr=1e-3)",
           "backend": "cuda", "rows": {
               "mlp-graphs-b128": {"median_s": 0.035, "last_over_first": 1.01, "launches_per_epoch": 100.0,
                                   "graph_launches": 5628, "replays": 5},
               "torch-graphs-b128": {"absent": "PyTorch CUDA graphs need a GPU"}}}
    (returned / "training.json").write_text(json.dumps(doc))
    (returned / "session.json").write_text("{}")
    into = tmp_path / "record"
    assert gpu_session.main(["collect", str(returned), "--into", str(into)]) == 0
    text = re.sub(" +", " ", (into / "training.md").read_text())
    assert "| 128 | mlp-graphs | 35.00 ms | 1.01× | 100 | 5628 | 5 |" in text
    assert "PyTorch CUDA graphs need a GPU" in text and (into / "session.json").is_file()


def test_the_prediction_section_pairs_each_row_with_its_baseline():
    def row(op, group, rows, seconds, ratio, **extra):
        return _bench(f"test_{op}[{group}-{rows}]", seconds, suite="predict", op=op, impl="mlp-numpy", device="cpu",
                      group=group, rows=rows, layers={"digits": "64-100-10"}.get(group, "784-512-256-10"),
                      dtype="float64" if group == "digits" else "float32", paired_ratio=ratio, **extra)

    doc = {"benchmarks": [
        row("mlp_predict_proba", "digits", 1, 30e-6, 1.04), row("mlp_predict_proba", "reference", 1, 120e-6, 0.97),
        row("estimator_predict_proba", "digits", 1, 300e-6, 1.05, kept="views"),
        row("estimator_predict_proba", "digits", 1, 350e-6, 1.31, kept="copies"),
        row("estimator_predict_proba", "reference", 1, 500e-6, 1.08, kept="views"),
        row("estimator_predict_proba", "reference", 1, 1.5e-3, 2.34, kept="copies")]}
    text = "\n".join(report._predict_section(frame.frame(doc)))
    digits = next(line for line in text.splitlines() if line.startswith("| 64-100-10 float64"))
    reference = next(line for line in text.splitlines() if line.startswith("| 784-512-256-10 float32"))
    assert [c.strip() for c in digits.split("|")[2:-1]] == ["1", "30.0 µs", "1.04×", "300.0 µs", "1.05×",
                                                              "350.0 µs", "1.31×"]
    assert reference.split("|")[-2].strip() == "2.34×" and "1.50 ms" in reference
    assert report._predict_section(frame.frame({"benchmarks": []})) == []
