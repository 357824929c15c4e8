"""Kernel benchmarks: the affine layer (forward, backward), softmax with cross-entropy, and their limits.

On the GPU every operation of the CUDA backend is timed next to the library
alternative built from CuPy: cuBLAS (``cupy.matmul``) followed by one
elementwise kernel for the epilogue (bias + ReLU forward; ReLU mask before,
and a column sum after, the products backward), and cuBLAS alone.  On the CPU
the NumPy backend is timed next to a bare ``numpy.matmul`` of the same shape.
Limits measured in the same run: cuBLAS SGEMM and a device-to-device copy on
the GPU; BLAS SGEMM and ``numpy.copyto`` on the CPU.

Before a CUDA kernel is timed its result is compared with the CuPy
alternative's (when CuPy is present), so a fast wrong answer fails instead of
being reported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest

from bench import _env
from bench._measure import measure, random_array, random_labels, sizes

# (in_features, out_features, ReLU?) of each layer of the reference network 784-512-256-10.
REFERENCE_LAYERS = ((784, 512, True), (512, 256, True), (256, 10, False))
BATCHES = (32, 128, 256, 512, 1024, 2048, 4096, 8192)
QUICK_BATCHES = (128, 256, 1024)
GPU_SQUARES, QUICK_GPU_SQUARES = (1024, 2048, 4096, 8192), (4096,)
CPU_SQUARES, QUICK_CPU_SQUARES = (1024, 2048, 4096), (1024,)
SOFTMAX_SIZES = ((128, 10), (1024, 10), (8192, 10), (131_072, 10), (1_000_000, 10),
                 (8192, 1000), (100_000, 100), (1_000_000, 100), (100_000, 1000), (1_000_000, 1000))
QUICK_SOFTMAX_SIZES = ((1024, 10), (1_000_000, 100))
GPU_COPY_BYTES = 1 << 30  # far beyond any GPU's L2 cache
CPU_COPY_BYTES = 1 << 28
CPU_SGEMM_SIZE = 2048
# Result checks: largest |mlp - CuPy| relative to the largest |CuPy| value.  Both
# accumulate in float32 in different orders over K <= 8192 terms, which moves
# results by ~1e-6 relative; 1e-3 still fails any wrong tile or mask.
CHECK_RTOL = 1e-3


@dataclass(frozen=True)
class Gemm:
    """One affine layer: x (m, k) @ W (k, n) + b; backward also gives dx when ``need_dx``."""

    m: int
    k: int
    n: int
    relu: bool
    need_dx: bool
    group: str  # "reference" (a layer of the reference network) or "square"

    @property
    def id(self) -> str:
        return f"sq{self.m}" if self.group == "square" else f"b{self.m}-{self.k}x{self.n}"

    def info(self, op: str) -> dict:
        products = 1 + (op == "backward" and self.need_dx)
        return {"m": self.m, "k": self.k, "n": self.n, "relu": self.relu, "need_dx": self.need_dx,
                "group": self.group, "flop": 2 * self.m * self.k * self.n * products}


def _gemm_cases(squares, quick_squares) -> list:
    cases = []
    for batch in BATCHES:
        for i, (k, n, relu) in enumerate(REFERENCE_LAYERS):
            g = Gemm(batch, k, n, relu, need_dx=i > 0, group="reference")
            cases.append(pytest.param(g, id=g.id, marks=() if batch in QUICK_BATCHES else (pytest.mark.full,)))
    for s in squares:
        g = Gemm(s, s, s, True, need_dx=True, group="square")
        cases.append(pytest.param(g, id=g.id, marks=() if s in quick_squares else (pytest.mark.full,)))
    return cases


GPU_GEMMS = _gemm_cases(GPU_SQUARES, QUICK_GPU_SQUARES)
CPU_GEMMS = _gemm_cases(CPU_SQUARES, QUICK_CPU_SQUARES)
SOFTMAX = sizes(SOFTMAX_SIZES, QUICK_SOFTMAX_SIZES, ids=[f"{r}x{c}" for r, c in SOFTMAX_SIZES])


class Layer:
    """Inputs and outputs of one affine layer on a backend, as the model lays them out."""

    def __init__(self, be, g: Gemm, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = random_array(be, (g.m, g.k), rng)
        self.W = random_array(be, (g.k, g.n), rng, scale=1.0 / np.sqrt(g.k))
        self.b = random_array(be, (g.n,), rng)
        self.out = be.empty((g.m, g.n), np.float32)
        self.dy = random_array(be, (g.m, g.n), rng)
        self.y = random_array(be, (g.m, g.n), rng) if g.relu else None  # about half positive: the ReLU mask
        self.dx = be.empty((g.m, g.k), np.float32) if g.need_dx else None
        self.dW = be.empty((g.k, g.n), np.float32)
        self.db = be.empty((g.n,), np.float32)


def _info(op: str, device: str, impl: str, **extra) -> dict:
    return {"suite": "kernels", "op": op, "device": device, "impl": impl, **extra}


# ------------------------------------------------------------- GPU: CuPy
@functools.lru_cache(maxsize=None)
def _cupy_kernels(cp):
    """The elementwise halves of the library alternative (one pass each, compiled once by CuPy)."""
    bias_relu = cp.ElementwiseKernel("T z, T b", "T y", "T v = z + b; y = v > (T)0 ? v : (T)0", "bench_bias_relu")
    relu_mask = cp.ElementwiseKernel("T dy, T y", "T g", "g = y > (T)0 ? dy : (T)0", "bench_relu_mask")
    return bias_relu, relu_mask


class CupyLayer:
    """The same arrays seen by CuPy (zero-copy), and the library alternative's forward and backward."""

    def __init__(self, cp, layer: Layer, g: Gemm) -> None:
        self.cp, self.g = cp, g
        for name in ("x", "W", "b", "out", "dy", "y", "dx", "dW", "db"):
            a = getattr(layer, name)
            setattr(self, name, None if a is None else cp.asarray(a))
        self.masked = cp.empty_like(self.dy) if g.relu else None
        self.bias_relu, self.relu_mask = _cupy_kernels(cp)

    def matmul_forward(self) -> None:
        self.cp.matmul(self.x, self.W, out=self.out)

    def forward(self) -> None:
        self.cp.matmul(self.x, self.W, out=self.out)
        if self.g.relu:
            self.bias_relu(self.out, self.b, self.out)
        else:
            self.cp.add(self.out, self.b, out=self.out)

    def matmul_backward(self) -> None:
        self.cp.matmul(self.x.T, self.dy, out=self.dW)
        if self.g.need_dx:
            self.cp.matmul(self.dy, self.W.T, out=self.dx)

    def backward(self) -> None:
        cp, g = self.cp, self.dy
        if self.g.relu:
            self.relu_mask(self.dy, self.y, self.masked)
            g = self.masked
        cp.matmul(self.x.T, g, out=self.dW)
        cp.sum(g, axis=0, out=self.db)
        if self.g.need_dx:
            cp.matmul(g, self.W.T, out=self.dx)


def _assert_close(cp, got, ref, what: str) -> None:
    got, ref = cp.asnumpy(cp.asarray(got)), cp.asnumpy(ref)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - ref))) / scale
    assert err <= CHECK_RTOL, f"{what}: CUDA kernel differs from CuPy by {err:.2e} (relative to max |value|)"


def _gemm_plan(g: Gemm, op: str) -> str:
    from mlp.kernels import gemm

    def fmt(m, n, k):
        config, splits = gemm.plan(m, n, k)
        return f"{config}" + (f" split-K {splits}" if splits > 1 else "")

    if op == "forward":
        return fmt(g.m, g.n, g.k)
    text = f"dW {fmt(g.k, g.n, g.m)}"
    return text + (f"; dx {fmt(g.m, g.k, g.n)}" if g.need_dx else "")


# ------------------------------------------------------------ GPU: GEMMs
@pytest.mark.parametrize("g", GPU_GEMMS)
@pytest.mark.parametrize("impl", ["mlp", "cublas", "cublas+epilogue"])
def test_forward_gpu(benchmark, request, settings, cuda_backend, impl, g):
    be = cuda_backend
    layer = Layer(be, g)
    info = _info("forward", "gpu", impl, **g.info("forward"))
    if impl == "mlp":
        def op():
            be.affine_forward(layer.x, layer.W, layer.b, g.relu, out=layer.out)

        info["plan"] = _gemm_plan(g, "forward")
        if _cupy_present(request):
            cp = request.getfixturevalue("cupy")
            ref = CupyLayer(cp, layer, g)
            ref.out = cp.empty_like(ref.out)
            op()
            ref.forward()
            _assert_close(cp, layer.out, ref.out, f"forward {g.id}")
    else:
        alt = CupyLayer(request.getfixturevalue("cupy"), layer, g)
        op = alt.matmul_forward if impl == "cublas" else alt.forward
    measure(benchmark, op, budget=settings.gpu_kernel, sync=be.synchronize, info=info)


@pytest.mark.parametrize("g", GPU_GEMMS)
@pytest.mark.parametrize("impl", ["mlp", "cublas", "cublas+epilogue"])
def test_backward_gpu(benchmark, request, settings, cuda_backend, impl, g):
    be = cuda_backend
    layer = Layer(be, g)
    info = _info("backward", "gpu", impl, **g.info("backward"))
    if impl == "mlp":
        def op():
            be.affine_backward(layer.dy, layer.x, layer.W, y=layer.y, need_dx=g.need_dx, dx_out=layer.dx,
                               dW_out=layer.dW, db_out=layer.db)

        info["plan"] = _gemm_plan(g, "backward")
        if _cupy_present(request):
            cp = request.getfixturevalue("cupy")
            ref = CupyLayer(cp, layer, g)
            ref.dW, ref.db = cp.empty_like(ref.dW), cp.empty_like(ref.db)
            ref.dx = None if ref.dx is None else cp.empty_like(ref.dx)
            op()
            ref.backward()
            _assert_close(cp, layer.dW, ref.dW, f"backward dW {g.id}")
            _assert_close(cp, layer.db, ref.db, f"backward db {g.id}")
            if g.need_dx:
                _assert_close(cp, layer.dx, ref.dx, f"backward dx {g.id}")
    else:
        alt = CupyLayer(request.getfixturevalue("cupy"), layer, g)
        op = alt.matmul_backward if impl == "cublas" else alt.backward
    measure(benchmark, op, budget=settings.gpu_kernel, sync=be.synchronize, info=info)


def _cupy_present(request) -> bool:
    return bool(request.getfixturevalue("availability")["cupy"].present)


@pytest.mark.parametrize("g", GPU_GEMMS)
@pytest.mark.parametrize("impl", ["mlp", "cublas", "cublas+epilogue"])
@pytest.mark.parametrize("op", ["affine_dx", "affine_dw"])
def test_backward_product_gpu(benchmark, request, settings, cuda_backend, op, impl, g):
    """dx and dW (with db) timed apart: each is one product with its own tile plan."""
    from mlp.kernels import gemm

    if op == "affine_dx" and not g.need_dx:
        pytest.skip("the first layer needs no dx")
    be = cuda_backend
    layer = Layer(be, g)
    info = _info(op, "gpu", impl, **g.info("forward"))  # one product: the forward's flop count
    if impl == "mlp":
        if op == "affine_dx":
            def run():
                gemm.affine_backward_dx(layer.dy, layer.W, layer.y, layer.dx)
            info["plan"] = "dx " + " split-K ".join(map(str, gemm.plan(g.m, g.k, g.n, variant="dx")))
        else:
            def run():
                gemm.affine_backward_dw(layer.dy, layer.x, layer.y, layer.dW, layer.db)
            info["plan"] = "dW " + " split-K ".join(map(str, gemm.plan(g.k, g.n, g.m, variant="dw")))
    else:
        cp = request.getfixturevalue("cupy")
        alt = CupyLayer(cp, layer, g)
        g_in = alt.dy
        if impl == "cublas+epilogue" and g.relu:
            g_in = alt.masked

        def run():
            if impl == "cublas+epilogue" and g.relu:
                alt.relu_mask(alt.dy, alt.y, alt.masked)
            if op == "affine_dx":
                cp.matmul(g_in, alt.W.T, out=alt.dx)
            else:
                cp.matmul(alt.x.T, g_in, out=alt.dW)
                if impl == "cublas+epilogue":
                    cp.sum(g_in, axis=0, out=alt.db)
    measure(benchmark, run, budget=settings.gpu_kernel, sync=be.synchronize, info=info)


@pytest.mark.full
@pytest.mark.parametrize("config", ["32x64", "64x64", "128x128", "naive"])
def test_forward_tiles_gpu(benchmark, settings, cuda_backend, config):
    """The fused forward at 4096^3 with each tile configuration forced (``auto`` picks one of them),
    and the naive baseline of ``bench/naive_gemm.py``."""
    from bench import naive_gemm
    from mlp.kernels import gemm

    be = cuda_backend
    g = Gemm(4096, 4096, 4096, True, need_dx=False, group="square")
    layer = Layer(be, g)
    if config == "naive":
        def op():
            naive_gemm.affine_forward(layer.x, layer.W, layer.b, True, layer.out)
    else:
        def op():
            gemm.affine_forward(layer.x, layer.W, layer.b, True, layer.out, config=config)

    measure(benchmark, op, budget=settings.gpu_kernel, sync=be.synchronize,
            info=_info("forward_tiles", "gpu", "mlp", config=config, **g.info("forward")))


# ---------------------------------------------------------- GPU: softmax
@pytest.mark.parametrize("shape", SOFTMAX)
@pytest.mark.parametrize("impl", ["mlp", "cupy"])
def test_softmax_xent_gpu(benchmark, request, settings, cuda_backend, gpu_memory, impl, shape):
    rows, classes = shape
    be = cuda_backend
    need = 3 * rows * classes * 4  # logits, gradient, and CuPy's or the check's second gradient
    if need > 0.8 * gpu_memory:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of device memory, {gpu_memory / 2**30:.1f} GiB free")
    rng = np.random.default_rng(0)
    logits = random_array(be, (rows, classes), rng, scale=3.0)
    labels = random_labels(be, rows, classes, rng)
    dlogits = be.empty((rows, classes), np.float32)
    stats = be.new_stats()

    def mlp_op():
        be.softmax_cross_entropy_into(logits, labels, dlogits, stats)

    cupy_op = None
    if impl == "cupy" or _cupy_present(request):
        cupy_op, cupy_grad, cupy_stats = _cupy_softmax_xent(request.getfixturevalue("cupy"), logits, labels)
    if impl == "mlp" and cupy_op is not None:
        cp = request.getfixturevalue("cupy")
        be.reset_stats(stats)
        cupy_stats[...] = 0
        mlp_op()
        cupy_op()
        _assert_close(cp, dlogits, cupy_grad, f"softmax gradient {rows}x{classes}")
        loss, ref_loss = float(be.to_numpy(stats)[0]), float(cupy_stats[0].get())
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss), f"loss {loss} differs from CuPy's {ref_loss}"
    op = mlp_op if impl == "mlp" else cupy_op
    info = _info("softmax_xent", "gpu", impl, rows=rows, classes=classes,
                 bytes=2 * rows * classes * 4 + rows * 8)
    measure(benchmark, op, budget=settings.gpu_kernel, sync=be.synchronize, info=info)


def _cupy_softmax_xent(cp, logits, labels):
    """Softmax cross-entropy (loss, hits, gradient) composed from CuPy's reductions and elementwise ops."""
    x, lab = cp.asarray(logits), cp.asarray(labels)
    n = x.shape[0]
    rows = cp.arange(n)
    grad = cp.empty_like(x)
    stats = cp.zeros(2, dtype=cp.float64)
    inv_n = np.float32(1.0 / n)

    def op():
        mx = x.max(axis=1, keepdims=True)
        cp.subtract(x, mx, out=grad)
        cp.exp(grad, out=grad)
        s = grad.sum(axis=1, keepdims=True)
        cp.divide(grad, s, out=grad)
        stats[0] += (cp.log(s[:, 0]) + mx[:, 0] - x[rows, lab]).sum()
        stats[1] += cp.count_nonzero(x.argmax(axis=1) == lab)
        grad[rows, lab] -= 1
        cp.multiply(grad, inv_n, out=grad)

    return op, grad, stats


# ------------------------------------------------------------ GPU limits
def test_limit_sgemm_gpu(benchmark, settings, cuda_backend, cupy):
    """cuBLAS SGEMM (FP32, TF32 off) at the largest square size of this run."""
    size = max(QUICK_GPU_SQUARES if settings.quick else GPU_SQUARES)
    rng = np.random.default_rng(0)
    a = cupy.asarray(random_array(cuda_backend, (size, size), rng))
    b = cupy.asarray(random_array(cuda_backend, (size, size), rng, scale=1.0 / np.sqrt(size)))
    c = cupy.empty_like(a)
    measure(benchmark, lambda: cupy.matmul(a, b, out=c), budget=settings.gpu_kernel, sync=cuda_backend.synchronize,
            info=_info("limit_sgemm", "gpu", "cublas", m=size, k=size, n=size, flop=2 * size**3))


def test_limit_copy_gpu(benchmark, settings, cuda_backend, gpu_memory):
    """Device-to-device copy (cuMemcpyDtoD) of 1 GiB; bandwidth counts bytes read plus bytes written."""
    from numba import cuda

    if 2 * GPU_COPY_BYTES > 0.8 * gpu_memory:
        pytest.skip(f"needs {2 * GPU_COPY_BYTES / 2**30:.0f} GiB of device memory")
    src = cuda.device_array(GPU_COPY_BYTES // 4, dtype=np.float32)
    dst = cuda.device_array(GPU_COPY_BYTES // 4, dtype=np.float32)
    cuda_backend.fill_(src, 1.0)
    measure(benchmark, lambda: dst.copy_to_device(src), budget=settings.gpu_kernel,
            sync=cuda_backend.synchronize,
            info=_info("limit_copy", "gpu", "memcpy-dtod", bytes=2 * GPU_COPY_BYTES))


# ------------------------------------------------------------------- CPU
@pytest.mark.cpu_heavy
@pytest.mark.parametrize("g", CPU_GEMMS)
@pytest.mark.parametrize("impl", ["mlp", "matmul"])
def test_forward_cpu(benchmark, settings, numpy_backend, impl, g):
    be = numpy_backend
    layer = Layer(be, g)
    if impl == "mlp":
        def op():
            be.affine_forward(layer.x, layer.W, layer.b, g.relu, out=layer.out)
    else:
        def op():
            np.matmul(layer.x, layer.W, out=layer.out)
    measure(benchmark, op, budget=settings.cpu_kernel, info=_info("forward", "cpu", impl, **g.info("forward")))


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("g", CPU_GEMMS)
@pytest.mark.parametrize("impl", ["mlp", "matmul"])
def test_backward_cpu(benchmark, settings, numpy_backend, impl, g):
    be = numpy_backend
    layer = Layer(be, g)
    if impl == "mlp":
        def op():
            be.affine_backward(layer.dy, layer.x, layer.W, y=layer.y, need_dx=g.need_dx, dx_out=layer.dx,
                               dW_out=layer.dW, db_out=layer.db)
    else:
        def op():  # the same two products, on the unmasked gradient
            np.matmul(layer.x.T, layer.dy, out=layer.dW)
            if g.need_dx:
                np.matmul(layer.dy, layer.W.T, out=layer.dx)
    measure(benchmark, op, budget=settings.cpu_kernel, info=_info("backward", "cpu", impl, **g.info("backward")))


@pytest.mark.cpu_heavy
@pytest.mark.parametrize("shape", SOFTMAX)
def test_softmax_xent_cpu(benchmark, settings, numpy_backend, shape):
    rows, classes = shape
    need = 2 * rows * classes * 4
    free = _env.ram_bytes(available=True) or 0
    if need > 0.6 * free:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of memory, {free / 2**30:.1f} GiB available")
    be = numpy_backend
    rng = np.random.default_rng(0)
    logits = random_array(be, (rows, classes), rng, scale=3.0)
    labels = random_labels(be, rows, classes, rng)
    dlogits = be.empty((rows, classes), np.float32)
    stats = be.new_stats()
    measure(benchmark, lambda: be.softmax_cross_entropy_into(logits, labels, dlogits, stats),
            budget=settings.cpu_kernel,
            info=_info("softmax_xent", "cpu", "mlp", rows=rows, classes=classes,
                       bytes=2 * rows * classes * 4 + rows * 8))


@pytest.mark.cpu_heavy
def test_limit_sgemm_cpu(benchmark, settings, numpy_backend):
    """BLAS SGEMM through ``numpy.matmul`` at 2048^3, with BLAS's own thread count."""
    size = CPU_SGEMM_SIZE
    rng = np.random.default_rng(0)
    a = random_array(numpy_backend, (size, size), rng)
    b = random_array(numpy_backend, (size, size), rng, scale=1.0 / np.sqrt(size))
    c = np.empty_like(a)
    measure(benchmark, lambda: np.matmul(a, b, out=c), budget=settings.cpu_kernel,
            info=_info("limit_sgemm", "cpu", "matmul", m=size, k=size, n=size, flop=2 * size**3))


@pytest.mark.cpu_heavy
def test_limit_copy_cpu(benchmark, settings):
    """``numpy.copyto`` of 256 MiB (one thread); bandwidth counts bytes read plus bytes written."""
    src = np.ones(CPU_COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    measure(benchmark, lambda: np.copyto(dst, src), budget=settings.cpu_kernel,
            info=_info("limit_copy", "cpu", "np.copyto", bytes=2 * CPU_COPY_BYTES))
