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
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import build_parser, main, pytest_args
from bench._measure import Budget

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
    env = {
        "date": "2025-01-01 00:00 UTC", "git_commit": "abc123",
        "cpu": {"model": "Test CPU", "cores": 2, "ram_bytes": 8 * 2**30},
        "gpu": {"name": "Test GPU", "compute_capability": [9, 0], "sm_count": 132, "driver_version": "12.4",
                "runtime_version": "12.4"},
        "versions": {"python": "3.11", "numpy": "2.0", "torch": None},
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
        "options": {"quick": False, "skip_cpu": False},
        "outcomes": {"suites": ["kernels", "scaling", "training"], "deselected": 0,
                     "skipped": [{"test": "t1", "reason": "torch-cuda absent: PyTorch 2 is a CPU-only build"},
                                 {"test": "t2", "reason": "torch-cuda absent: PyTorch 2 is a CPU-only build"}],
                     "failed": [{"test": "test_broken", "when": "call", "message": "AssertionError: boom"}]},
    }
    return {"benchmarks": benches, "mlp": env, "version": "5.0"}


@pytest.fixture
def synthetic_folder(tmp_path) -> Path:
    doc = _synthetic_results()
    (tmp_path / report.BENCHMARK_JSON).write_text(json.dumps(doc))
    (tmp_path / report.ENVIRONMENT_JSON).write_text(json.dumps(doc["mlp"]))
    return tmp_path


def _targets(folder: Path) -> dict[str, report.Target]:
    results, env = report.load(folder)
    return {t.name: t for t in report.compute_targets(results, env)}


def _find(targets: dict[str, report.Target], *words: str) -> report.Target:
    found = [t for name, t in targets.items() if all(w in name for w in words)]
    assert len(found) == 1, f"expected one target matching {words}, got {[t.name for t in found]}"
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


# ------------------------------------------------------------- targets
def test_results_are_per_operation_medians(synthetic_folder):
    results, _ = report.load(synthetic_folder)
    names = {r.name for r in results}
    assert "test_foreign" not in names  # no extra_info of ours: ignored
    fwd = report.one(results, op="forward", device="gpu", impl="mlp", m=128, k=784, n=512)
    assert fwd.seconds == pytest.approx(10e-6)  # round median / inner
    assert fwd.gflops == pytest.approx(2 * 128 * 784 * 512 / 10e-6 / 1e9)
    epoch = report.one(results, op="epoch", impl="mlp-numpy", optimizer="adam")
    assert epoch.seconds == pytest.approx(1.1)  # the trainer's own epoch time, not the whole fit
    assert epoch.call_seconds == pytest.approx(1.15)
    sk = report.one(results, impl="sklearn")
    assert sk.epoch_60k == pytest.approx(6.0)  # 10,000 samples timed, scaled to 60,000
    copy = report.one(results, op="limit_copy", device="gpu")
    assert copy.seconds == pytest.approx(0.9e-3)  # a limit is a ceiling: its fastest round, not the median


def test_cpu_epoch_ratio_targets(synthetic_folder):
    targets = _targets(synthetic_folder)
    # Adam: per-round ratios 1.2, 1.11, 1.1 -> median 1.11: over 1.10, under 1.25
    adam_110 = _find(targets, "Adam, batch 128", "1.10×")
    adam_125 = _find(targets, "Adam, batch 128", "1.25×")
    assert adam_110.status == "not met" and adam_125.status == "met"
    assert adam_110.measured.startswith("1.11×")
    # SGD with momentum: ratios 1.0, 1.053, 1.087 -> 1.05, under both limits
    assert _find(targets, "SGD with momentum", "1.10×").status == "met"
    assert _find(targets, "SGD with momentum", "1.25×").status == "met"


def test_peer_and_gpu_targets(synthetic_folder):
    targets = _targets(synthetic_folder)
    assert _find(targets, "PyTorch CPU").status == "met"  # 1.1 s against 2.0 s
    sk = _find(targets, "scikit-learn")
    assert sk.status == "met" and "10,000 samples" in sk.note
    fused = _find(targets, "60% of cuBLAS")
    assert fused.status == "met" and fused.measured.startswith("70%")
    shapes = _find(targets, "separate bias/ReLU")
    assert shapes.status == "not met" and "faster at 1 of 2 shapes" in shapes.measured
    assert "256→10" in shapes.measured  # the shape where it lost
    soft = _find(targets, "softmax-with-loss")
    # 1616 GB/s against the copy limit's fastest round (0.9 of its 1 ms median: 2222 GB/s) = 73%
    assert soft.status == "met" and soft.measured.startswith("lowest 73%")
    torch_gpu = _find(targets, "PyTorch eager")
    assert torch_gpu.status == "not measured" and "CPU-only build" in torch_gpu.note


def test_gpu_targets_name_the_simulator_when_cuda_is_absent(synthetic_folder):
    doc = _synthetic_results()
    doc["benchmarks"] = [b for b in doc["benchmarks"] if (b.get("extra_info") or {}).get("device") != "gpu"]
    env = doc["mlp"]
    env["availability"]["cuda"] = {"present": False, "detail": "simulator: timings meaningless"}
    results = report.results_from_json(doc)
    gpu = [t for t in report.compute_targets(results, env) if t.name.startswith("GPU")]
    assert len(gpu) == 4
    assert all(t.status == "not measured" and "simulator: timings meaningless" in t.note for t in gpu)


# -------------------------------------------------------------- render
def test_report_tables_are_well_formed_and_absent_things_listed(synthetic_folder):
    path = report.write_report(synthetic_folder, plots=False)
    text = path.read_text()
    tables = _tables(text)
    assert len(tables) >= 8
    for block in tables:
        width = len(_cells(block[0]))
        assert width >= 2
        assert all(re.fullmatch(r":?-{3,}:?", c.strip()) for c in _cells(block[1])), block[1]
        for line in block:
            assert len(_cells(line)) == width, f"ragged table row: {line}"
    assert "# mlp benchmarks:" in text and "Test GPU" in text and "Test CPU" in text
    assert "**torch-cuda**" in text and "**absent**: PyTorch 2 is a CPU-only build" in text
    assert "2 × torch-cuda absent" in text  # skipped benchmarks grouped by reason
    assert "`test_broken`" in text and "AssertionError: boom" in text
    assert "## Targets" in text and "**not met**" in text and "**met**" in text
    assert "synthetic" in text.lower()  # the methodology says the data is synthetic


def test_report_writes_plots_and_few_files(synthetic_folder):
    report.write_report(synthetic_folder, plots=True)
    files = sorted(p.name for p in synthetic_folder.iterdir())
    assert len(files) <= 8
    for name in report.PLOTS:
        assert name in files
        assert (synthetic_folder / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"]({name})" in (synthetic_folder / report.REPORT).read_text()


def test_table_rejects_ragged_rows():
    assert report.table(["a", "b"], [["1", "x|y"]]).splitlines()[2] == "| 1 | x\\|y |"
    with pytest.raises(ValueError, match="expected 2 cells"):
        report.table(["a", "b"], [["1"]])


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


def test_smoke_run_writes_a_report(tmp_path):
    out = tmp_path / "results"
    code = main(["--quick", "--suites", "kernels", "--out", str(out),
                 "-k", "limit_copy_cpu or (softmax_xent_cpu and 1024x10)"])
    assert code == 0
    doc = json.loads((out / "benchmark.json").read_text())
    timed = {b["extra_info"]["op"] for b in doc["benchmarks"]}
    assert timed == {"limit_copy", "softmax_xent"}
    assert all(b["stats"]["median"] > 0 for b in doc["benchmarks"])
    env = json.loads((out / "environment.json").read_text())
    assert env["availability"]["numpy"]["present"] is True
    assert env["options"]["quick"] is True and env["outcomes"]["suites"] == ["kernels"]
    text = (out / "report.md").read_text()
    assert "1,024 × 10" in text and "% of copy bandwidth" in text
    assert (out / "softmax.png").read_bytes()[:8] == PNG_SIGNATURE
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        assert env["availability"]["cuda"]["present"] is False
        assert "simulator: timings meaningless" in text


def test_epoch_profile_accounts_for_the_whole_epoch(capsys):
    from bench import profile_epoch

    rows = profile_epoch.main(["--optimizer", "sgd", "--samples", "600", "--batch", "128", "--epochs", "1"])
    (row,) = rows
    parts = {k: v for k, v in row.items() if k != "epoch"}
    assert sum(parts.values()) == pytest.approx(row["epoch"], rel=1e-9)
    assert parts["matrix products (BLAS)"] > 0 and parts["optimizer update"] > 0
    assert parts["batch gather (take_rows)"] > 0
    assert "matrix products (BLAS)" in capsys.readouterr().out
    # the timers are removed afterwards
    from mlp.backends.numpy_backend import NumpyBackend
    assert not hasattr(NumpyBackend._affine_forward, "__wrapped__")
