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
import time
from pathlib import Path

import numpy as np
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
    sk = _find(outcomes, "NumPy backend / scikit-learn")
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
    assert len(gpu) == 11
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
    args = build_parser().parse_args(["--tiny", "--seconds", "60", "--suites", "stacks", "coldstart"])
    argv = pytest_args(args, tmp_path)
    assert "--mlp-tiny" in argv and argv[0].endswith("bench_stacks.py") and argv[1].endswith("bench_coldstart.py")
    deadline = float(argv[argv.index("--mlp-deadline") + 1])
    assert 50 < deadline - time.time() <= 61


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


@pytest.mark.parametrize("record", sorted(p.parent.name for p in (REPO / "bench" / "results").glob("*/benchmark.json")))
def test_every_committed_record_renders_with_todays_report(tmp_path, record):
    """A committed record's benchmark.json rebuilds its report with the current targets and sections, even
    where its rows lack what today's suites record (a note then shows the missing figure as nan)."""
    shutil.copy(REPO / "bench" / "results" / record / "benchmark.json", tmp_path / "benchmark.json")
    text = report.write_report(tmp_path, plots=False).read_text()
    _assert_well_formed(text, 2)
    assert "## Targets" in text and "## Absent, skipped and failed" in text and " nan " not in text.split("## ")[0]


def test_session_kills_a_silent_part_on_time(tmp_path, monkeypatch):
    """A part that prints nothing and ignores SIGINT is killed at its limit, with the processes it started,
    not when it next prints; the parts after it still run."""
    from bench import session

    monkeypatch.setattr(session, "KILL_GRACE_S", 1.0)
    monkeypatch.setattr(session, "RESERVE_S", 0.0)
    pid_file = tmp_path / "grandchild.pid"
    quiet = ("import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
             "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
             f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)")
    parts = [session.Part("quiet", [sys.executable, "-c", quiet], cap_s=3, min_s=0),
             session.Part("next", [sys.executable, "-c", "print('ran')"], cap_s=60, min_s=0)]
    out = tmp_path / "out"
    record = session.run_session(parts, out, budget_s=120, work=tmp_path / "work", echo=False)
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


def _rows(doc: dict, test: str) -> dict[str, dict]:
    """The extra_info of every benchmark of ``test`` in a pytest-benchmark document, by its parameters' id."""
    return {b["name"].split("[", 1)[1].rstrip("]"): b["extra_info"] for b in doc["benchmarks"]
            if b["name"].startswith(test + "[")}


def test_session_on_numpy_with_a_tiny_network(tmp_path, monkeypatch):
    """The whole session through ``python -m bench --session --tiny``, on a machine without a GPU, where
    pooch, platformdirs and PyTorch cannot be imported (as on a GPU machine without them, whether or not this
    one has them): every part that can run here runs, the GPU parts are skipped saying why, and what comes
    back is at most 8 files, each under 16 MiB: the session's record and log, the device description, the
    tests' JUnit XML, one benchmark.json of every benchmark part (PyTorch's rows absent with the reason) and
    the report; ``--collect`` makes the record from it."""
    from bench import session

    blockers = tmp_path / "blockers"
    blockers.mkdir()
    for name in ("pooch", "platformdirs", "torch"):
        (blockers / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blockers))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:platformdirs")  # its pytest plugin, absent with it
    out = tmp_path / "OUT"
    code = main(["--session", "--tiny", "--out", str(out), "--budget", "400", "--tests",
                 "tests/test_graph_orchestration.py::test_a_capture_runs_nothing_and_a_replay_runs_what_was_recorded"])
    record = json.loads((out / "session.json").read_text())
    assert code == 0, record
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= session.MAX_FILES and all(p.stat().st_size < session.MAX_FILE_BYTES for p in files)
    assert {p.name for p in files} == {"session.json", "session.log", "info.json", "tests-junit.xml",
                                       "benchmark.json", "report.md"}
    assert list(record["parts"]) == ["info", "tests", "training", "stacks", "kernels", "report", "tune"]
    skipped = {n: r["skipped"] for n, r in record["parts"].items() if "skipped" in r}
    assert sorted(skipped) == ["kernels", "tune"] and all(r.startswith("needs a GPU (") for r in skipped.values())
    assert all(r["exit_status"] == 0 and not r["killed"] for r in record["parts"].values() if "skipped" not in r)
    assert 'tests="1"' in (out / "tests-junit.xml").read_text() and "1 passed" in (out / "session.log").read_text()
    info = json.loads((out / "info.json").read_text())
    assert info["availability"]["torch-cpu"] == {"present": False, "detail": "not installed"}

    doc = json.loads((out / "benchmark.json").read_text())
    assert set(doc["mlp"]["options"]["parts"]) == {"training", "stacks"} and doc["mlp"]["options"]["tiny"]
    fits = _rows(doc, "test_fit_epochs")
    assert sorted(fits) == ["numpy-b1024", "numpy-b128"]
    for row in fits.values():
        assert row["epochs"] == 3 and len(row["epoch_seconds"]) == 2 * len(row["first_epoch_seconds"]) >= 2
        assert row["steps"] >= 1 and row["impl"] == "mlp-numpy-eager"
    search = _rows(doc, "test_stack_search")
    assert sorted(search) == ["mlp-search-numpy", "sklearn-search"]
    assert search["mlp-search-numpy"]["n_iter"] == search["sklearn-search"]["n_iter"] == 2
    assert search["sklearn-search"]["n_jobs"] == -1 and 0 <= search["sklearn-search"]["best_agrees"] <= 1
    stack = _rows(doc, "test_stack_epoch")
    assert list(stack) == ["mlp-numpy"] and len(stack["mlp-numpy"]["epoch_seconds"]) >= 5
    assert np.isfinite(stack["mlp-numpy"]["mean_loss_last_epoch"])
    padding = _rows(doc, "test_stack_padding")
    assert padding["numpy-padded"]["models"] == padding["numpy-grouped"]["models"] == 6
    assert padding["numpy-grouped"]["hidden"] == [4, 6, 8] and padding["numpy-padded"]["hidden"] == [8]
    reasons = {s["test"].split("::")[1]: s["reason"] for s in doc["mlp"]["outcomes"]["skipped"]}
    assert reasons["test_stack_epoch[torch-func-cpu]"] == "torch-cpu absent: not installed"
    assert reasons["test_epoch_torch[cuda-adam-b128]"] == "torch-cuda absent: not installed"
    assert reasons["test_stack_search[mlp-search-cuda]"].startswith("cuda absent: ")

    text = (out / "report.md").read_text()
    _assert_well_formed(text, 5)
    assert "## The session" in text and "## Many networks at once on a device" in text
    assert "### Epochs within one fit" in text and "1 × torch-cpu absent: not installed" in text
    record_dir = tmp_path / "record"
    assert main(["--collect", str(out), "--out", str(record_dir)]) == 0
    assert {p.name for p in record_dir.iterdir()} >= {p.name for p in files}
    collected = (record_dir / "report.md").read_text()
    assert "| tune     | skipped: needs a GPU" in collected  # the record holds every part, the report's own too


def test_session_torch_func_row_on_the_cpu(torch, tmp_path):
    """With PyTorch installed, the stacks suite's ``torch.func`` row is measured on the CPU in a tiny check."""
    out = tmp_path / "out"
    assert main(["--tiny", "--suites", "stacks", "-k", "torch-func-cpu", "--no-report", "--out", str(out)]) == 0
    row = _rows(json.loads((out / "benchmark.json").read_text()), "test_stack_epoch")["torch-func-cpu"]
    assert row["device"] == "cpu" and row["torch"] == torch.__version__ and row["models"] == 4
    assert len(row["epoch_seconds"]) >= 5 and np.isfinite(row["mean_loss_last_epoch"])
    assert not (out / "report.md").exists()  # --no-report


def test_benchmarks_that_would_start_too_late_are_skipped_saying_so(tmp_path):
    """``--seconds``: every benchmark that would start after the run's time is skipped with the reason (those
    that need longer say how long), and benchmark.json still records why."""
    out = tmp_path / "out"
    assert main(["--tiny", "--suites", "stacks", "--seconds", "0", "--no-report", "--out", str(out)]) == 0
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["benchmarks"] == []
    reasons = {s["test"].split("::")[1]: s["reason"] for s in doc["mlp"]["outcomes"]["skipped"]}
    assert len(reasons) == 12 and all(r.startswith("out of time: 0 s left of the run") for r in reasons.values())
    assert reasons["test_stack_search[sklearn-search]"].endswith(", it needs 30 s")


def test_a_run_killed_on_the_way_keeps_what_it_measured(tmp_path):
    """benchmark.json is rewritten as each benchmark starts and ends: a run killed with SIGKILL (no chance
    to write anything) leaves a valid file with the benchmarks that finished and the one that was running."""
    import signal
    import time

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--tiny", "--suites", "stacks", "--no-report",
                             "-k", "numpy and (padding or stack_epoch)", "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path, doc = out / "benchmark.json", None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                found = None
            if found and found["benchmarks"] and found["mlp"]["outcomes"]["running"]:
                os.killpg(proc.pid, signal.SIGKILL)
                doc = found
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert doc is not None, "the run ended before a benchmark finished while another was running"
    kept = json.loads(path.read_text())  # the file as the killed run left it
    assert len(kept["benchmarks"]) >= len(doc["benchmarks"]) >= 1
    assert all(b["stats"]["median"] > 0 for b in kept["benchmarks"])
    running = kept["mlp"]["outcomes"]["running"]
    assert running and running.startswith("bench/bench_stacks.py::test_stack_")
    assert running.split("::")[1] not in {b["name"] for b in kept["benchmarks"]}


def test_session_returns_at_most_8_files_each_under_the_limit(tmp_path, monkeypatch):
    """Every file a session can return is named by its plan (at most 8); a result over the size limit stays
    behind, named in the record; a log file stops growing at its limit, however many parts write to it."""
    from bench import session

    parts = session.plan(tmp_path, tmp_path / "out", tests=["tests/test_cuda_graphs.py"])
    assert len(session.returned_files(parts)) <= session.MAX_FILES
    assert [p.name for p in parts] == ["info", "tests", "training", "stacks", "kernels", "report", "tune"]
    assert [p.name for p in parts if p.gpu] == ["kernels", "tune"]
    # on a GPU machine the CPU's rows are a CPU run's; a tiny rehearsal on a CPU runs them instead
    training = {p.name: p.command for p in parts}["training"]
    assert "--skip-cpu" in training and "--tiny" not in training
    rehearsal = {p.name: p.command for p in session.plan(tmp_path, tmp_path / "out", tiny=True)}
    assert "--skip-cpu" not in rehearsal["training"] and "--tiny" in rehearsal["stacks"]
    assert {p.name: p.skip for p in session.plan(tmp_path, tmp_path / "out")}["tests"] == "no test files given"

    monkeypatch.setattr(session, "MAX_FILE_BYTES", 100)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "small.json").write_text("{}")
    (work / "big.json").write_text("x" * 100)
    kept = session._keep(work, out, ["small.json", "big.json", "missing.json"])
    assert kept == {"small.json": "2 bytes", "big.json": "left out: 100 bytes", "missing.json": "absent"}
    assert sorted(p.name for p in out.iterdir()) == ["small.json"]

    monkeypatch.setattr(session, "LOG_LIMIT_BYTES", 1000)
    loud = session.Part("loud", [sys.executable, "-c", "[print('x' * 99) for _ in range(100)]"], cap_s=60)
    for _ in range(2):
        result = session.run_part(loud, out, timeout=60, echo=False)
        assert result["exit_status"] == 0
    log = (out / "session.log").read_text()
    assert len(log) < 1000 + 2 * 200 and log.count("bytes of output left out of this log") == 2


def test_session_merges_its_parts_and_collect_makes_the_record(tmp_path):
    """The benchmark parts' JSON documents merge into one (every benchmark, every skip, each part's
    options); ``--collect`` copies a returned folder into the record folder named after its GPU and writes the
    report with the session's parts and the device tests' totals."""
    from bench import session

    doc = _synthetic_results()
    half = len(doc["benchmarks"]) // 2
    first = {**doc, "benchmarks": doc["benchmarks"][:half],
             "mlp": {"options": {"quick": False, "skip_cpu": False},
                     "outcomes": {"suites": ["training"], "skipped": [{"test": "a", "reason": "r1"}], "failed": [],
                                  "deselected": 1, "running": None}}}
    second = {**doc, "benchmarks": doc["benchmarks"][half:],
              "mlp": {"options": {"quick": False, "skip_cpu": True},
                      "outcomes": {"suites": ["kernels"], "skipped": [{"test": "b", "reason": "r2"}], "failed": [],
                                   "deselected": 2, "running": "bench/bench_kernels.py::test_x"}}}
    merged = session.merge_results([first, second], ["training", "kernels"])
    assert [b["name"] for b in merged["benchmarks"]] == [b["name"] for b in doc["benchmarks"]]
    assert merged["machine_info"] == doc["machine_info"]
    outcomes = merged["mlp"]["outcomes"]
    assert outcomes["suites"] == ["kernels", "training"] and outcomes["deselected"] == 3
    assert [s["reason"] for s in outcomes["skipped"]] == ["r1", "r2"]
    assert outcomes["running"] == "bench/bench_kernels.py::test_x"
    assert merged["mlp"]["options"]["parts"]["kernels"]["skip_cpu"] is True

    returned = tmp_path / "OUT"
    returned.mkdir()
    (returned / "benchmark.json").write_text(json.dumps(merged))
    (returned / "info.json").write_text(json.dumps({"gpu": {"name": "NVIDIA H100 80GB HBM3"}}))
    (returned / "session.json").write_text(json.dumps({"budget_s": 500, "started": "2026-01-01T00:00:00Z", "parts": {
        "info": {"exit_status": 0, "seconds": 3.2, "killed": False, "files": {"info.json": "900 bytes"}},
        "training": {"exit_status": 130, "seconds": 120.0, "killed": True, "files": {"benchmark.json": "4 benchmarks"}},
        "tune": {"skipped": "12 s left of the budget, it needs 30 s"}}}))
    (returned / "tests-junit.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2" time="12.5"/></testsuites>')
    assert session.record_dir(returned) == REPO / "bench" / "results" / "gpu-nvidia-h100-80gb-hbm3"
    into = tmp_path / "record"
    assert main(["--collect", str(returned), "--out", str(into), "--no-plots"]) == 0
    assert sorted(p.name for p in into.iterdir()) == ["benchmark.json", "info.json", "report.md", "session.json",
                                                      "tests-junit.xml"]
    text = re.sub(" +", " ", (into / "report.md").read_text())
    assert "| training | killed at its limit | 120 | benchmark.json (4 benchmarks) |" in text
    assert "| tune | skipped: 12 s left of the budget, it needs 30 s | — | |" in text
    assert "Device tests (`tests-junit.xml`): 10 run, 1 failed, 0 errors, 2 skipped, in 12.50 s." in text
    assert "**Still running when the run was stopped** (no timing reported): `bench/bench_kernels.py::test_x`" in text
    assert "a session of 2 benchmark parts (training, kernels)" in text


def _stack_rows() -> list[dict]:
    search = dict(suite="stacks", op="search", dtype="float32", group="digits-float32", candidates=24, folds=5,
                  epochs=40, rows=1797, classes=10, cores=16)
    stack = dict(suite="stacks", op="stack_epoch", models=64, layers=[784, 512, 256, 10], samples=8192, batch=128,
                 device="gpu", group="stack-gpu")
    return [
        _bench("test_stack_search[mlp-search-cuda]", 0.5, rounds=1, impl="mlp-search-cuda", device="gpu",
               best="alpha=0.001", best_score=0.9794, **search),
        _bench("test_stack_search[sklearn-search]", 26.0, rounds=1, impl="sklearn-search", device="cpu",
               best="alpha=0.001", best_score=0.9794, best_agrees=1.0, **search),
        _bench("test_stack_epoch[mlp-cuda]", 0.02, impl="mlp-cuda", epoch_seconds=[0.02, 0.02, 0.021],
               warmup_epoch_seconds=[1.5, 0.1], replays=7, mean_loss_last_epoch=2.2, **stack),
        _bench("test_stack_epoch[torch-func-cuda]", 0.05, impl="torch-func-cuda", epoch_seconds=[0.05, 0.05],
               warmup_epoch_seconds=[0.3, 0.05], mean_loss_last_epoch=2.2, **stack),
        _bench("test_stack_padding[cuda-grouped]", 0.004, impl="mlp-cuda", layout="grouped", group="padding-cuda",
               op="padding_epoch", suite="stacks", device="gpu", rows=1797, batch=200, hidden=[32, 64, 100],
               models_per_stack=30, epoch_seconds=[0.004] * 3),
        _bench("test_stack_padding[cuda-padded]", 0.006, impl="mlp-cuda", layout="padded", group="padding-cuda",
               op="padding_epoch", suite="stacks", device="gpu", rows=1797, batch=200, hidden=[100],
               models_per_stack=90, epoch_seconds=[0.006] * 3),
    ]


def test_the_stacks_section_and_the_gpu_search_target():
    doc = {"benchmarks": _stack_rows()}
    gpu_search = _find(_outcomes(doc), "on the GPU")
    assert gpu_search.status == "met" and gpu_search.measured.startswith("52.00× (26.00 s vs 500.00 ms)")
    assert gpu_search.note.startswith("16 CPU cores")
    text = re.sub(" +", " ", "\n".join(report._stacks_section(frame.frame(doc))))
    _assert_well_formed(text, 3)
    assert "| mlp.GridSearchCV, backend cuda | 16 | 500.00 ms | 52.00× | alpha=0.001 | 0.979 |" in text
    assert "| torch.func vmap, GPU (eager) | 50.00 ms | 2.50× | 300.00 ms |" in text
    assert "| mlp TrainingLoop, CUDA backend | 20.00 ms | 1.00× | 1.50 s | 7 | 2.200 |" in text
    assert "| cuda | 4.00 ms | 6.00 ms | 1.50× |" in text
    assert report._stacks_section(frame.frame({"benchmarks": []})) == []


def test_the_fit_epochs_section():
    row = _bench("test_fit_epochs[cuda-graphs-b128]", 0.3, suite="training", op="fit_epochs", impl="mlp-cuda-graphs",
                 device="gpu", batch=128, samples=60000, epochs=6, layers=[784, 512, 256, 10],
                 epoch_seconds=[0.035, 0.036, 0.035, 0.035, 0.0353], first_epoch_seconds=[0.6],
                 last_over_first=1.01, host_launches_per_epoch=1200.0, graph_launches=5628, replays=5,
                 gc_collections=[3, 0, 0])
    text = re.sub(" +", " ", "\n".join(report._fit_epochs_section(frame.frame({"benchmarks": [row]}))))
    assert "| mlp-cuda-graphs | 128 | 35.00 ms | 600.00 ms | 1.01× | 1,200 | 5628 | 5 | 3 |" in text
    assert "`Trainer.fit(X, y, epochs=6)` of [784, 512, 256, 10]" in text


def _cold(impl: str, process: float, imported: float, fit: float) -> dict:
    return _bench(f"test_coldstart[{impl}]", process, suite="coldstart", op="process", impl=impl, device="cpu",
                  params="max_iter=20, random_state=0", import_median=imported, data_median=0.05, fit_median=fit)


def test_cold_start_targets_and_section():
    doc = {"benchmarks": [_cold("mlp-warm", 2.4, 1.2, 0.5), _cold("mlp-empty", 12.0, 1.3, 9.5),
                          _cold("sklearn", 2.0, 0.9, 0.6)]}
    outcomes = _outcomes(doc)
    warm = _find(outcomes, "Numba cache filled")
    assert warm.status == "met" and warm.measured.startswith("1.20× (2.40 s vs 2.00 s)")
    assert "first fit 0.50 s vs 0.60 s" in warm.note
    empty = _find(outcomes, "empty Numba cache")
    assert empty.status == "not met" and empty.measured == "9.50 s"
    text = re.sub(" +", " ", "\n".join(report._coldstart_section(frame.frame(doc))))
    assert "| mlp, Numba cache empty | 12.00 s | 6.00× | 1.30 s | 50.00 ms | 9.50 s | 5 |" in text


# bench_coldstart's suite mark is registered by bench/conftest.py, which this run does not load
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_the_cold_start_script_reports_its_import_data_and_fit():
    """The script each cold-start round runs in a new process (scikit-learn's side: no compilation, seconds)."""
    from bench import bench_coldstart

    times = bench_coldstart.run_script("sklearn", None)
    assert set(times) == {"import", "data", "fit"} and all(t > 0 for t in times.values())
    with pytest.raises(ValueError, match="library: expected 'mlp' or 'sklearn', got 'torch'"):
        bench_coldstart.run_script("torch", None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_the_cold_start_processes_may_write_bytecode(monkeypatch):
    """An installed package has its .pyc files: a round never compiles the library's sources for want of them
    (PYTHONDONTWRITEBYTECODE=1 in the caller's environment is not passed on)."""
    import subprocess

    from bench import bench_coldstart

    seen: dict = {}

    def fake_run(cmd, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(cmd, 0, stdout='{"import": 1.0, "data": 0.1, "fit": 0.2}\n', stderr="")

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(bench_coldstart.subprocess, "run", fake_run)
    assert bench_coldstart.run_script("mlp", "/cache")["fit"] == 0.2
    assert "PYTHONDONTWRITEBYTECODE" not in seen and seen["NUMBA_CACHE_DIR"] == "/cache"


def _search_row(impl: str, seconds: float, group: str = "digits-float64", **extra) -> dict:
    return _bench(f"test_search[{impl}]", seconds, rounds=1, suite="search", op=extra.pop("op", "search"),
                  impl=impl, device="cpu", dtype="float64", group=group, candidates=24, folds=5, epochs=40,
                  rows=1797, classes=10, cores=2, best="alpha=0.001", best_score=0.97,
                  grid={"alpha": [1e-5, 1e-4]}, **extra)


def test_the_search_targets_and_section():
    doc = {"benchmarks": [
        _search_row("mlp-search", 4.0), _search_row("mlp-search-1-thread", 6.0, best_agrees=1.0, score_gap=0.0),
        _search_row("mlp-search-all-cores", 3.0, best_agrees=1.0, n_jobs=-1),
        _search_row("sklearn-search-mlp", 4.0, best_agrees=1.0, n_jobs=-1),
        _search_row("sklearn-search", 15.0, best_agrees=0.5, n_jobs=-1),
        _search_row("stack-products", 2.0, op="products", stack_threads=2, products=1000),
        _search_row("mlp-search-pipeline", 2.0, group="digits-pipeline-float64", n_jobs=-1),
        _search_row("sklearn-search-pipeline", 7.0, group="digits-pipeline-float64", best_agrees=1.0, n_jobs=-1)]}
    outcomes = _outcomes(doc)
    assert _find(outcomes, "GridSearchCV(mlp.MLPClassifier, n_jobs=-1)").status == "not met"  # 1.33× < 1.5×
    assert _find(outcomes, "sklearn MLPClassifier, n_jobs=-1) / mlp", "4.00×").status == "met"  # 5×
    assert _find(outcomes, "sklearn MLPClassifier, n_jobs=-1) / mlp", "10.00×").status == "not met"
    assert _find(outcomes, "Pipeline").measured.startswith("3.50×")
    products = _find(outcomes, "stacked matrix products alone")
    assert products.status == "not met" and "1,000 products in 2 threads" in products.note  # 2.0× > 1.5×
    text = re.sub(" +", " ", "\n".join(report._search_section(frame.frame(doc))))
    _assert_well_formed(text, 2)
    assert "| mlp.GridSearchCV (stacked), one thread (MLP_STACK_THREADS=1) | float64 | one | 24 × 5 | 6.00 s " \
           "| 1.50× |" in text
    assert "| scikit-learn GridSearchCV(Pipeline(StandardScaler(), sklearn MLPClassifier)) | float64 | n_jobs=-1: " \
           "one per core | 24 × 5 | 7.00 s | 3.50× |" in text
    assert "| float64 | 6.00 s | 2 | 4.00 s | 1.50× |" in text  # one process over its cores


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


@pytest.mark.parametrize("threads", [1, 2])
def test_the_search_s_products_alone_multiply_what_the_stack_multiplies(threads):
    """``StackProducts`` (the search suite's limit) computes each model's products on its own rows, its shorter
    last batch included: forward ``x @ W``, backward ``x.T @ dy`` and ``dy @ W.T`` (not for the first layer)."""
    from bench.stack_products import Stack, StackProducts

    stack = Stack(layers=(5, 4, 3), batch=4, steps=2, rows=(7, 6, 8))  # last batches of 3, 2 and 4 rows
    products = StackProducts([stack], epochs=1, dtype="float64", exact=True, threads=threads)
    flat, grads, layers, acts, dy, dx, counts, _ = products.arrays[0]
    products.search()
    assert counts[-1].tolist() == [3, 2, 4]
    (off0, k0, n0), (off1, k1, n1) = layers
    for m, r in enumerate(counts[-1]):  # what the last step left
        W0 = flat[m, off0:off0 + k0 * n0].reshape(k0, n0)
        W1 = flat[m, off1:off1 + k1 * n1].reshape(k1, n1)
        np.testing.assert_allclose(acts[1][m, :r], acts[0][m, :r] @ W0, rtol=1e-12)
        np.testing.assert_allclose(acts[2][m, :r], acts[1][m, :r] @ W1, rtol=1e-12)
        np.testing.assert_allclose(grads[m, off1:off1 + k1 * n1].reshape(k1, n1), acts[1][m, :r].T @ dy[1][m, :r],
                                   rtol=1e-12)
        np.testing.assert_allclose(grads[m, off0:off0 + k0 * n0].reshape(k0, n0), acts[0][m, :r].T @ dy[0][m, :r],
                                   rtol=1e-12)
        np.testing.assert_allclose(dx[0][m, :r], dy[1][m, :r] @ W1.T, rtol=1e-12)
    assert products.products == 2 * 3 * 5  # steps x models x (forward 2 + backward 3)
