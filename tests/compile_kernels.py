"""Compile every kernel specialization the CUDA backend can launch to PTX through NVVM, with no GPU.

The test suite runs the kernels on Numba's CUDA simulator, which executes
them as Python: a kernel that Numba cannot type or lower for a real GPU, or
that NVVM rejects, passes there.  This script asks the real compiler.  It is
run by ``tests/test_kernels_compile.py`` in a child process, since the
simulator (which the test session switches on) has no compiler::

    NUMBA_ENABLE_CUDASIM=0 python tests/compile_kernels.py --cc 8.0 9.0 --jobs 2 --out result.json

What it compiles.  Each kernel factory of ``kernels/`` builds one kernel per
set of compile-time constants through ``kernels._config.kernel``, which
compiles at once for a single signature (that needs a GPU).  Here that call
only records the Python function, its signature and its options; the script
then calls the factories the way the backend's launchers do on a GPU (the
modules' own ``selectable_kernels`` where they have one, the launchers'
planning functions for the stacked losses, every tile, product, activation
and dtype of the matrix products, the stacked products' GPU tile, every
numeric dtype the fill, conversion and gather launchers accept) and hands
each recorded kernel to numba-cuda's ``compile_ptx`` for each compute
capability.  Split-K is no compile-time
constant (a launch with ``gridDim.z > 1``), so it adds no specialization.
Every function of ``kernels/`` that is passed to ``kernel(...)`` must have
been compiled at least once, or the run reports it under ``never_built``.

Where ``ptxas`` is found (the ``nvidia-cuda-nvcc`` wheel, a CUDA toolkit, or
``PATH``), each PTX is also assembled (``ptxas -arch=sm_XY -v``) and the
registers, stack frame and spill bytes it reports are recorded.

No GPU and no driver are needed.  numba-cuda compiles a device function
(``@cuda.jit(device=True)``) for the current device's compute capability when
a kernel first calls it, even under ``compile_ptx``; with no GPU there is no
current device, so each worker answers that question with the capability it
compiles for, and one worker never compiles for two capabilities (a device
function is compiled once per process).

Output: one JSON document (``--out``, else stdout).  Exit status 0 when every
kernel compiled (and assembled), 1 when one did not or a factory was never
built, 3 when the compiler itself is unusable here (no NVVM or NVRTC, or a
toolkit that does not know a requested capability): the document's
``toolchain_error`` says why.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
KERNEL_DIR = REPO / "kernels"

#: compute capabilities compiled for by default: A100 and H100
DEFAULT_CCS = ("8.0", "9.0")
#: streaming multiprocessors the launchers' grid arithmetic is told about (no kernel choice depends on it
#: once every tile is compiled; an H100 SXM's count)
SM_COUNT = 132
#: dtypes the fill, conversion and gather launchers accept besides float32/float64: the backend hands every
#: contiguous array of an integer, unsigned or float kind to the fill and conversion kernels, and any
#: dtype to the gather (booleans included)
NUMBER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                 "float64")
GATHER_DTYPES = ("bool", *NUMBER_DTYPES)


class Specialization:
    """What ``kernels._config.kernel`` was asked to compile: a Python function, a signature, options."""

    def __init__(self, pyfunc: Callable, signature: Any, options: dict[str, Any]) -> None:
        self.pyfunc, self.signature = pyfunc, signature
        # the on-disk cache is the dispatcher's business; every other option goes to the compiler as given
        self.options = {k: v for k, v in options.items() if k != "cache"}

    @property
    def qualname(self) -> str:
        return f"{self.pyfunc.__module__}.{self.pyfunc.__qualname__}"


class _FakeDevice:
    """Stands in for ``numba.cuda.get_current_device()``: the only facts asked of it here."""

    def __init__(self, cc: tuple[int, int]) -> None:
        self.compute_capability = cc
        self.MULTIPROCESSOR_COUNT = SM_COUNT
        self.name = b"compile-only (no device)"


_device = _FakeDevice((8, 0))


def _record_kernels() -> None:
    """Make ``kernels._config.kernel`` record each kernel instead of compiling it, before any kernel module
    imports it; device functions stay real (lazy) dispatchers, compiled when a kernel that calls them is."""
    import mlp.kernels._config as config  # also sets up NumPy aliases numba-cuda needs, before numba.cuda

    if config.ON_SIMULATOR:
        raise SystemExit("compile_kernels.py: set NUMBA_ENABLE_CUDASIM=0 (the simulator has no compiler)")
    # modules that hold no kernel (the compile-cache decorator, the scalars tables' columns, the scalar
    # arithmetic the CPU loops share with the kernels) may come first
    no_kernels = {"mlp.kernels._config", "mlp.kernels._compile_cache", "mlp.kernels.scalars", "mlp.kernels._scalar"}
    already = sorted(m for m in sys.modules if m.startswith("mlp.kernels.") and m not in no_kernels)
    if already:
        raise SystemExit(f"compile_kernels.py: kernel modules imported before recording could start: {already}")
    real = config.cuda

    class RecordingCuda(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def jit(*args: Any, **options: Any) -> Any:
            if options.get("device") or not args:
                return real.jit(*args, **options)
            return lambda fn: Specialization(fn, args[0], options)

        @staticmethod
        def get_current_device() -> _FakeDevice:
            return _device

    config.cuda = RecordingCuda("numba.cuda (recording)")

    import numba.cuda.dispatcher as dispatcher

    if not hasattr(dispatcher, "get_current_device"):
        raise SystemExit("compile_kernels.py: numba.cuda.dispatcher.get_current_device is gone; this numba-cuda "
                         "compiles device functions differently and the script needs updating")
    dispatcher.get_current_device = lambda: _device


def specializations() -> dict[str, Specialization]:
    """Every kernel the CUDA backend's launchers can pick, by a readable name (call after ``_record_kernels``)."""
    import numpy as np

    from mlp.kernels import fill, gather, gemm, gemm_stacked, losses, optim, softmax, sparse, stacked

    found: dict[str, Specialization] = {}
    seen: set[int] = set()

    def add(name: str, spec: Specialization) -> None:
        assert isinstance(spec, Specialization), (name, spec)
        if id(spec) not in seen:  # factories are cached: the same kernel reached twice is compiled once
            seen.add(id(spec))
            found[name] = spec

    for dt in map(np.dtype, ("float32", "float64")):
        d = dt.name
        # single-model products: every tile the launchers accept by name (``auto`` picks among these), each
        # product, each activation (the identity's backward is what a layer without y launches)
        for config in gemm.TILES:
            for tile, variant in sorted(gemm.selectable_kernels(dt, config)):
                for act, act_name in enumerate(gemm.ACTIVATIONS):
                    add(f"gemm {d} {tile} {variant} {act_name}",
                        gemm.gemm_kernel(dt, tile, gemm.VARIANTS[variant], act))
        # a stack's products: the tile the backend launches on a GPU (the launchers' default; the other tiles
        # are for benchmarks and the simulator), each product and activation
        tile = gemm_stacked.DEFAULT_TILE
        for product in gemm_stacked.PRODUCTS:
            for act, act_name in enumerate(gemm.ACTIVATIONS):
                add(f"stacked gemm {d} {tile} {product} {act_name}",
                    gemm_stacked.stacked_gemm_kernel(dt, product, act, tile))
        for name, kern in softmax.selectable_kernels(dt).items():
            add(f"softmax {d} {name}", kern)
        for name, kern in softmax.selectable_kernels(dt, weighted=True).items():
            add(f"softmax {d} {name}", kern)
        for name, kern in losses.selectable_kernels(dt).items():
            add(f"losses {d} {name}", kern)
        for name, factory in (("sgd", optim.sgd_kernel), ("rmsprop", optim.rmsprop_kernel),
                              ("adam", optim.adam_kernel)):
            add(f"optim {d} {name}", factory(dt))
        # a stack's losses, as its launcher plans them for every output and class count
        widest = softmax.WIDE_MAX_GROUP * max(softmax.WIDE_ITEMS) + 2
        for output in ("softmax", *stacked.REAL_OUTPUTS):
            for weighted in (False, True):
                for c in range(1, widest if output == "softmax" else 2):
                    kern = stacked._loss_plan(output, 1, c, dt, weighted)[0]
                    if output != "softmax":
                        shape = ""
                    elif c <= softmax.SMALL_MAX_CLASSES:
                        shape = " rows_small"
                    else:
                        items, warp = softmax.wide_variant(c, dt)
                        shape = f" rows_wide items={items} warp={warp}"
                    add(f"stacked loss {d} {output}{shape}{' weighted' if weighted else ''}", kern)
        add(f"stacked l2_penalty {d}", stacked.l2_penalty_kernel(dt))
        add(f"stacked sgd {d}", stacked.sgd_kernel(dt))
        add(f"stacked rmsprop {d}", stacked.rmsprop_kernel(dt))
        add(f"stacked adam {d}", stacked.adam_kernel(dt))
        add(f"sparse densify_rows {d}", sparse.densify_rows_kernel(dt))
    for d in GATHER_DTYPES:
        add(f"take_rows_1d {d}", gather.take_rows_1d_kernel(np.dtype(d)))
        add(f"take_rows_2d {d}", gather.take_rows_2d_kernel(np.dtype(d)))
    for d in NUMBER_DTYPES:
        add(f"fill {d}", fill.fill_kernel(np.dtype(d)))
        for to in NUMBER_DTYPES:
            if to != d:  # same dtype: a device-to-device copy, no kernel
                add(f"convert {d} -> {to}", fill.convert_kernel(np.dtype(d), np.dtype(to)))
    add("reset_stats", fill.reset_stats_kernel())
    add("stacked reset_stats", stacked.reset_stats_kernel())
    return found


def kernel_functions() -> set[str]:
    """Qualified names of every function in ``kernels/`` handed to ``kernel(...)``: what must be compiled."""
    names = set()
    for path in sorted(KERNEL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module = f"mlp.kernels.{path.stem}"
        for outer in ast.walk(tree):
            if not isinstance(outer, ast.FunctionDef):
                continue
            for node in ast.walk(outer):
                # kernel(signature, ...)(fn)
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
                        and isinstance(node.func.func, ast.Name) and node.func.func.id == "kernel"
                        and len(node.args) == 1 and isinstance(node.args[0], ast.Name)):
                    names.add(f"{module}.{outer.name}.<locals>.{node.args[0].id}")
    return names


# ------------------------------------------------------------------ compiling
_PTXAS_LINES = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
}


def find_ptxas() -> str | None:
    """``ptxas`` from NVIDIA's wheels or a CUDA toolkit (cuda-pathfinder's search), else from PATH."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
    except ImportError:  # an older cuda-pathfinder
        find_nvidia_binary_utility = None
    if find_nvidia_binary_utility is not None:
        found = find_nvidia_binary_utility("ptxas")
        if found:
            return found
    import shutil

    return shutil.which("ptxas")


def assemble(ptx: str, cc: tuple[int, int], ptxas: str) -> dict[str, Any]:
    """``ptxas -arch=sm_XY -v`` on one PTX: registers, stack frame and spills, or the assembler's error."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        run = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", f.name, "-o", os.devnull],
                             capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    if run.returncode != 0:
        return {"ptxas_error": (run.stderr or run.stdout).strip()[-2000:]}
    report = run.stderr + run.stdout
    stats = {}
    for key, pattern in _PTXAS_LINES.items():
        match = pattern.search(report)
        stats[key] = int(match.group(1)) if match else None
    if stats["registers"] is None:
        return {"ptxas_error": f"no register count in ptxas's report: {report.strip()[-500:]}"}
    return stats


def _ptx_target(ptx: str) -> str | None:
    match = re.search(r"^\s*\.target\s+(sm_\w+)", ptx, re.MULTILINE)
    return match.group(1) if match else None


def _cpu() -> float:
    """CPU seconds of this process and its finished children (ptxas)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def compile_one(spec: Specialization, cc: tuple[int, int], ptxas: str | None) -> dict[str, Any]:
    from numba import cuda

    start = _cpu()
    try:
        ptx, _ = cuda.compile_ptx(spec.pyfunc, spec.signature, cc=cc, **spec.options)
    except Exception as exc:  # the finding itself: reported, and the next kernel still compiles
        message = str(exc).strip()
        return {"ok": False, "error": f"{type(exc).__name__}: {message[:3000]}",
                "cpu_s": round(_cpu() - start, 3)}
    result: dict[str, Any] = {"ok": True, "ptx_bytes": len(ptx), "target": _ptx_target(ptx)}
    if result["target"] != f"sm_{cc[0]}{cc[1]}":
        result.update(ok=False, error=f"asked for sm_{cc[0]}{cc[1]}, NVVM wrote .target {result['target']}")
    elif ptxas:
        result.update(assemble(ptx, cc, ptxas))
        result["ok"] = "ptxas_error" not in result
    result["cpu_s"] = round(_cpu() - start, 3)
    return result


def _worker(task: tuple[tuple[int, int], list[str], str | None]) -> list[dict[str, Any]]:
    """Compile the named kernels for one capability (in a fresh process: see the module docstring)."""
    cc, names, ptxas = task
    global _device
    _device = _FakeDevice(cc)
    out = []
    for name in names:
        row = {"kernel": name, "cc": f"{cc[0]}.{cc[1]}"}
        row.update(compile_one(_SPECS[name], cc, ptxas))
        out.append(row)
    return out


_SPECS: dict[str, Specialization] = {}


def probe_toolchain(cc: tuple[int, int]) -> str | None:
    """Why NVVM (and NVRTC, which numba-cuda asks for the capabilities it supports) cannot compile a trivial
    kernel for ``cc`` here, or None when it can."""
    from numba import cuda

    def probe(a):
        a[0] = 1.0

    try:
        from numba.cuda.types import float32

        ptx, _ = cuda.compile_ptx(probe, (float32[::1],), cc=cc)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:1500]}"
    target = _ptx_target(ptx)
    if target != f"sm_{cc[0]}{cc[1]}":
        return f"this CUDA toolkit cannot compile for sm_{cc[0]}{cc[1]} (NVVM wrote .target {target})"
    return None


def toolchain_versions(ptxas: str | None) -> dict[str, Any]:
    import numba
    import numba_cuda

    info: dict[str, Any] = {"numba": numba.__version__, "numba_cuda": numba_cuda.__version__}
    try:
        from numba.cuda.cudadrv.nvvm import NVVM

        info["nvvm"] = ".".join(map(str, NVVM().get_version()))
    except Exception as exc:
        info["nvvm"] = f"unknown ({type(exc).__name__})"
    info["ptxas"] = ptxas
    if ptxas:
        run = subprocess.run([ptxas, "--version"], capture_output=True, text=True)
        info["ptxas_version"] = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", nargs="+", default=list(DEFAULT_CCS), help="compute capabilities, e.g. 8.0 9.0")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--no-ptxas", action="store_true", help="compile to PTX only")
    parser.add_argument("-k", dest="select", default=None, help="only kernels whose name matches this regex")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON document here (default: stdout)")
    args = parser.parse_args(argv)
    ccs = [tuple(int(p) for p in cc.split(".")) for cc in args.cc]
    wall = time.perf_counter()

    _record_kernels()
    _SPECS.update(specializations())
    built = {spec.qualname for spec in _SPECS.values()}
    from mlp.kernels import gemm_stacked

    doc: dict[str, Any] = {"specializations": len(_SPECS), "ccs": [f"{a}.{b}" for a, b in ccs],
                           "stacked_tile": gemm_stacked.DEFAULT_TILE,
                           "never_built": sorted(kernel_functions() - built)}
    ptxas = None if args.no_ptxas else find_ptxas()
    doc["toolchain"] = toolchain_versions(ptxas)
    if not args.no_ptxas and ptxas is None:
        doc["toolchain"]["ptxas_missing"] = ("no ptxas in NVIDIA's wheels (pip install nvidia-cuda-nvcc), a CUDA "
                                             "toolkit or PATH")
    for cc in ccs:
        why = probe_toolchain(cc)
        if why:
            doc["toolchain_error"] = why
            return _finish(doc, args.out, 3)

    names = sorted(n for n in _SPECS if args.select is None or re.search(args.select, n))
    per_cc = max(1, args.jobs // len(ccs))
    # shards in round robin over the names, so that each holds its share of the large products
    tasks = [(cc, names[i::per_cc], ptxas) for cc in ccs for i in range(per_cc)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes=min(args.jobs, len(tasks)), maxtasksperchild=1) as pool:
        rows = [row for part in pool.map(_worker, tasks, chunksize=1) for row in part]
    rows.sort(key=lambda r: (r["kernel"], r["cc"]))
    doc.update(results=rows, compiled=sum(r["ok"] for r in rows), failed=sum(not r["ok"] for r in rows),
               cpu_seconds=round(sum(r["cpu_s"] for r in rows), 1), wall_seconds=round(time.perf_counter() - wall, 1),
               jobs=args.jobs)
    return _finish(doc, args.out, 0 if not doc["failed"] and not doc["never_built"] else 1)


def _finish(doc: dict[str, Any], out: Path | None, status: int) -> int:
    doc["exit_status"] = status
    text = json.dumps(doc, indent=1)
    if out is None:
        print(text)
    else:
        out.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
