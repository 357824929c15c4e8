"""Every kernel the CUDA backend can launch compiles for real GPUs: NVVM's PTX for sm_80 and sm_90, assembled.

The simulator runs kernels as Python, so a kernel Numba cannot type or lower
for a GPU, or that NVVM rejects, passes every other kernel test.  Here
``tests/compile_kernels.py`` (see its docstring) compiles each specialization
(every dtype, tile, product, activation, output loss, stacked variant, and the
gather, fill, conversion, optimizer and statistics kernels) with numba-cuda's
``compile_ptx`` in a child process with the simulator off; no GPU or driver is
needed, only NVVM and NVRTC (the ``compiler`` extra, or the ``cuda12`` /
``cuda13`` extra).  Where ``ptxas`` is found too, each PTX is assembled and
the local memory ptxas gives a kernel is held to :data:`LOCAL_MEMORY_ALLOWANCE`.

Without the compiler these tests skip, each saying why; with
``MLP_REQUIRE_COMPILER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "compile_kernels.py"
#: A100 and H100, the GPUs the kernels are tuned for
CCS = ("8.0", "9.0")
#: worker processes, one per core (the check takes minutes of CPU, the matrix products most of it)
JOBS = max(1, min(os.cpu_count() or 1, 8))
REQUIRED = os.environ.get("MLP_REQUIRE_COMPILER", "") not in ("", "0")

#: Local memory per thread a kernel may use: ``(stack frame bytes, spill store bytes)`` as ``ptxas -v``
#: reports them on sm_80 or sm_90, by a regular expression on the kernel's name; every other kernel gets
#: none.  Each entry is what NVIDIA's compilers 13.0.88 (the ``compiler`` extra's) and 13.5.37 produced for
#: today's kernels, the largest over the family, both capabilities and both releases (they differ by a few
#: bytes in some loss kernels), so a kernel that starts to use local memory, or more of it, fails.  They are
#: costs to remove in ``kernels/``, not margins:
LOCAL_MEMORY_ALLOWANCE: dict[str, tuple[int, int]] = {
    # the 8x8 accumulators of the largest tile, 256 bytes in float32 (about 230 registers in use): ptxas
    # keeps them in local memory in the backward products, and in some forward ones on sm_80
    r"gemm float32 128x128 \w+ \w+": (256, 0),
    # the same 8x8 accumulators in float64, 512 bytes: never in registers; the planner never picks this
    # tile for float64 (gemm_plan.AUTO_TILES), only a named configuration reaches it
    r"gemm float64 128x128 \w+ \w+": (512, 0),
    # the float64 medium tile, the planner's choice for float64 past 32 rows, at 128 registers: every
    # product has a 128-160 byte stack frame and 8-28 bytes of spills
    r"gemm float64 64x64 \w+ \w+": (160, 28),
    r"gemm float64 32x64 \w+ \w+": (16, 16),
    # dx with an activation's derivative on load, sm_80 only (79 registers)
    r"gemm float32 64x64 dx \w+": (16, 16),
    # the stacked float64 dW with a derivative on load, at 128 registers
    r"stacked gemm float64 64x64 dw \w+": (8, 4),
    # plain softmax (no cross-entropy) of rows over 256 classes in float32, 32 values per thread: heavy
    # spills (the cross-entropy kernels of the same shape have none)
    r"softmax float32 rows_wide xent=False items=32 warp=\w+": (224, 396),
    r"softmax float64 .+": (16, 16),
    # scikit-learn's clipped log-loss (the estimators' clip_eps parameter, a branch with two logs per row)
    # costs the weighted float64 cross-entropy over more than 32 classes a few more spills on sm_80
    # (measured with the compiler extra's 13.0.88: 16 and 24 bytes)
    r"softmax float64 rows_wide xent=True items=8 warp=True weighted": (16, 24),
    r"losses float(32|64) \w+ weighted": (16, 20),
    r"stacked loss float32 .+": (40, 80),
    r"stacked loss float64 .+": (8, 16),
    r"stacked loss float64 softmax rows_wide items=8 warp=True weighted": (16, 24),
}


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (MLP_REQUIRE_COMPILER is set: the compile check must run here)")
    pytest.skip(reason)


#: What a compile check's result depends on: the kernels and their tuning tables, the launchers that pick
#: specializations, the script that enumerates them, and the compiler's versions (see :func:`_fingerprint`).
SOURCES = ("kernels", "mlp/backends", "tests/compile_kernels.py")
COMPILER_DISTRIBUTIONS = ("numba", "numba-cuda", "llvmlite", "nvidia-nvvm", "nvidia-cuda-nvrtc", "nvidia-cuda-nvcc",
                          "nvidia-cuda-runtime", "nvidia-cuda-crt")


def _fingerprint(root: Path = SCRIPT.parent.parent, sources: tuple[str, ...] = SOURCES) -> str:
    """A digest of everything a compile check's result depends on: the path and bytes of every file under
    ``sources`` (relative to ``root``; Python's bytecode caches left out) and the installed versions of
    :data:`COMPILER_DISTRIBUTIONS` (and Python's)."""
    import hashlib
    from importlib import metadata

    digest = hashlib.sha256(sys.version.encode())
    for dist in COMPILER_DISTRIBUTIONS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{dist}={version};".encode())
    for source in sources:
        path = root / source
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def _run_compile_check(out: Path) -> dict:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    run = subprocess.run([sys.executable, str(SCRIPT), "--cc", *CCS, "--jobs", str(JOBS), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if not out.exists():
        pytest.fail(f"compile_kernels.py wrote no result (exit status {run.returncode}):\n{run.stderr[-4000:]}")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, request) -> dict:
    """The document of one ``compile_kernels.py`` run over every specialization, for :data:`CCS`.

    A run in which everything compiled is kept in pytest's cache under the :func:`_fingerprint` of what it
    depends on, and a later session with the same fingerprint reads it instead of compiling again (minutes
    of CPU); any change to the kernels, the launchers, the script or the compiler's versions compiles
    afresh.  ``MLP_COMPILE_CHECK_FRESH=1`` always compiles; without pytest's cache (``-p
    no:cacheprovider``, a fresh checkout) nothing is kept."""
    cache = getattr(request.config, "cache", None)
    fresh = os.environ.get("MLP_COMPILE_CHECK_FRESH", "") not in ("", "0")
    key = f"mlp/compile_check/{'-'.join(CCS)}"
    fingerprint = _fingerprint()
    if cache is not None and not fresh:
        kept = cache.get(key, None)
        if isinstance(kept, dict) and kept.get("fingerprint") == fingerprint:
            return kept["document"]
    doc = _run_compile_check(tmp_path_factory.mktemp("ptx") / "kernels.json")
    if "toolchain_error" in doc:
        _skip_or_fail("no usable CUDA compiler (NVVM and NVRTC; pip install -e '.[compiler]'): "
                      + doc["toolchain_error"].splitlines()[0])
    if cache is not None and not doc.get("failed") and not doc.get("never_built"):
        cache.set(key, {"fingerprint": fingerprint, "document": doc})
    return doc


def _names(doc: dict) -> set[str]:
    return {row["kernel"] for row in doc["results"]}


def test_every_kernel_specialization_compiles_to_ptx(compiled):
    failed = {f"{r['kernel']} (sm_{r['cc'].replace('.', '')})": r["error"] for r in compiled["results"]
              if "error" in r}
    assert failed == {}
    assert compiled["never_built"] == [], "kernel factories the check never called: add them to specializations()"
    assert len(compiled["results"]) == compiled["specializations"] * len(CCS)
    assert all(r["target"] == f"sm_{r['cc'].replace('.', '')}" for r in compiled["results"])


def test_the_check_covers_every_product_configuration(compiled):
    """The matrix products' specializations come from the kernels' own tables: each is among those compiled."""
    from mlp.kernels import gemm, gemm_stacked

    names = _names(compiled)
    tile = compiled["stacked_tile"]  # the stacked products' tile on a GPU (the simulator's is smaller)
    assert tile in gemm_stacked.TILES
    for d in ("float32", "float64"):
        for act in gemm.ACTIVATIONS:
            single = {f"gemm {d} {t} {v} {act}" for t in gemm.TILES for v in gemm.VARIANTS}
            stacked = {f"stacked gemm {d} {tile} {p} {act}" for p in gemm_stacked.PRODUCTS}
            assert single | stacked <= names
    for family in ("softmax float32 rows_wide xent=True items=32 warp=True", "losses float64 poisson weighted",
                   "stacked loss float32 exp weighted", "optim float64 rmsprop", "convert int64 -> float32"):
        assert family in names


def test_no_kernel_uses_local_memory_beyond_its_allowance(compiled):
    """ptxas's stack frame (local arrays it could not keep in registers, and spills) per kernel and
    capability, against :data:`LOCAL_MEMORY_ALLOWANCE`."""
    if compiled["toolchain"].get("ptxas") is None:
        _skip_or_fail("ptxas not found (pip install -e '.[compiler]' brings it): PTX compiled, not assembled")
    ptxas_failed = {f"{r['kernel']} (sm_{r['cc'].replace('.', '')})": r["ptxas_error"]
                    for r in compiled["results"] if "ptxas_error" in r}
    assert ptxas_failed == {}
    over = {}
    for r in compiled["results"]:
        if "error" in r:  # did not compile: the first test's failure
            continue
        stack, spill = max((b for pattern, b in LOCAL_MEMORY_ALLOWANCE.items() if re.fullmatch(pattern, r["kernel"])),
                           default=(0, 0))
        if r["stack_bytes"] > stack or r["spill_store_bytes"] > spill:
            over[f"{r['kernel']} (sm_{r['cc'].replace('.', '')})"] = (
                f"{r['stack_bytes']} bytes stack frame, {r['spill_store_bytes']} bytes spill stores "
                f"({r['registers']} registers); allowed {stack} and {spill}")
    assert over == {}


def test_the_fingerprint_of_a_kept_result_follows_every_source_and_the_compiler(tmp_path, monkeypatch):
    """A kept compile check is read again only while nothing it depends on has changed."""
    from importlib import metadata

    (tmp_path / "kernels" / "tuning").mkdir(parents=True)
    kernel = tmp_path / "kernels" / "gemm.py"
    kernel.write_text("TILE = 64\n")
    (tmp_path / "kernels" / "tuning" / "h100.json").write_text("{}")
    (tmp_path / "script.py").write_text("pass\n")
    sources = ("kernels", "script.py")
    base = _fingerprint(tmp_path, sources)
    assert _fingerprint(tmp_path, sources) == base
    seen = {base}

    def changed(what: str) -> None:
        now = _fingerprint(tmp_path, sources)
        assert now not in seen, f"the fingerprint did not change when {what}"
        seen.add(now)

    kernel.write_text("TILE = 32\n")
    changed("a kernel's source changed")
    (tmp_path / "kernels" / "tuning" / "h100.json").write_text('{"tile": 1}')
    changed("a tuning table changed")
    (tmp_path / "kernels" / "new.py").write_text("")
    changed("a file was added")
    (tmp_path / "script.py").write_text("pass  # another specialization\n")
    changed("the enumerating script changed")
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "0.0" if d == "nvidia-nvvm" else real(d))
    changed("the NVVM version changed")
    cache = tmp_path / "kernels" / "__pycache__"
    cache.mkdir()
    (cache / "gemm.cpython-311.pyc").write_bytes(b"bytecode")
    assert _fingerprint(tmp_path, sources) in seen, "bytecode caches must not count"
