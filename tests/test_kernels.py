"""Every CUDA kernel against its NumPy twin, at shapes chosen to hit every edge.

Runs on a GPU, or on Numba's CUDA simulator (``conftest.py`` picks).  The
simulator runs each thread as a Python thread, so the shapes here are few
and small but awkward: every dimension is either smaller than a tile or
spills into a partial tile (1, 7, 9, 17, 33, 65, 127, 129), for every tile
configuration, with and without split-K.  On a GPU larger shapes are added
(the reference network's layers, 1000x784x512, 4096 cubed).

Outputs are poisoned with NaN before each call, so an element a kernel fails
to write shows up as a mismatch.

Tolerances
----------
* Matrix products, float32: relative Frobenius error < 1e-5 against the
  NumPy backend (itself float32 BLAS).  Summing K products in float32 in
  different orders leaves a relative error of order sqrt(K) * 6e-8, about
  2e-6 for K = 1000; 1e-5 leaves room for both sides.  3e-5 for K = 4096.
* Matrix products, float64: 1e-12 (the same argument with eps = 1.1e-16).
  The same with each activation fused (see ``ACTIVATION_CASES``).
* Softmax / cross-entropy, float32: rtol 1e-5 elementwise (exp on the GPU
  is accurate to 2 ulp, the sum of exponentials is float64 on both sides but
  may be added in another order), float64: rtol 1e-12.
* Optimizer steps: rtol 2e-6 (float32) / 1e-13 (float64) after several
  steps; the GPU compiler may fuse a multiply-add the CPU rounds twice.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ON_SIMULATOR

from mlp.backends import cuda_status

_usable, _why = cuda_status()
if not _usable:
    pytest.skip(f"CUDA backend unavailable: {_why}", allow_module_level=True)

from numba import cuda  # noqa: E402

from mlp.kernels import _launch, fill, gather, gemm, gemm_plan, softmax, sparse  # noqa: E402
from mlp.kernels._config import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM  # noqa: E402
from mlp.backends import _cpu_sparse  # noqa: E402
from mlp.backends.base import ACTIVATIONS, activation_code  # noqa: E402
from mlp.backends.cuda_backend import CudaBackend  # noqa: E402
from mlp.backends.numpy_backend import NumpyBackend  # noqa: E402

pytestmark = pytest.mark.gpu

F32, F64 = np.float32, np.float64
GEMM_TOL = {F32: 1e-5, F64: 1e-12}
SOFTMAX_RTOL = {F32: 1e-5, F64: 1e-12}
OPTIM_RTOL = {F32: 2e-6, F64: 1e-13}

NP = NumpyBackend()


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def poisoned(shape, dtype):
    return cuda.to_device(np.full(shape, np.nan, dtype=dtype))


def rel_err(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return np.linalg.norm(np.asarray(got, dtype=np.float64) - ref) / max(np.linalg.norm(ref), 1e-300)


def gemm_tol(dtype, k):
    return GEMM_TOL[dtype] * (3 if k > 1024 else 1)


# ------------------------------------------------------------------- affine
FORWARD_CASES = [
    # config, batch, in, out, split_k, dtype, relu
    ("32x64", 33, 17, 65, 1, F32, True),  # 2x2 tiles, both partial; K = one full and one partial slice
    ("64x64", 65, 33, 7, 1, F64, True),  # 2x1 tiles, 7 of 64 columns; 3 K slices
    ("128x128", 7, 9, 129, 1, F32, False),  # 1x2 tiles; K = 9 over slices of 8; no ReLU
    ("64x64", 7, 127, 33, 3, F32, True),  # split-K: 3 splits, the last shorter
    ("32x64", 1, 65, 1, 2, F64, True),  # a single output, split in two
    ("128x128", 9, 1, 7, 1, F64, True),  # K = 1
]
if not ON_SIMULATOR:
    FORWARD_CASES += [
        (cfg, 1000, 784, 512, None, dt, True)
        for cfg in ("auto", "32x64", "64x64", "128x128")
        for dt in (F32, F64)
    ]
    FORWARD_CASES += [(cfg, 4096, 4096, 4096, None, F32, False) for cfg in ("auto", "64x64", "128x128")]
    FORWARD_CASES += [(cfg, 4096, 4096, 4096, 4, F32, True) for cfg in ("128x128",)]
    FORWARD_CASES += [
        ("auto", batch, k, m, None, F32, relu)
        for batch in (32, 1000, 8192)
        for (k, m, relu) in ((784, 512, True), (512, 256, True), (256, 10, False))
    ]


@pytest.mark.parametrize("config,batch,k,m,split_k,dtype,relu", FORWARD_CASES)
def test_affine_forward_matches_numpy(rng, config, batch, k, m, split_k, dtype, relu):
    x = rng.standard_normal((batch, k)).astype(dtype)
    W = (rng.standard_normal((k, m)) / math.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    ref = NP.affine_forward(x, W, b, relu)
    out = poisoned((batch, m), dtype)
    launches = gemm.affine_forward(dev(x), dev(W), dev(b), relu, out, config=config, split_k=split_k)
    got = out.copy_to_host()
    assert launches == 1
    assert np.isfinite(got).all(), "some outputs were never written"
    assert rel_err(got, ref) < gemm_tol(dtype, k)
    if relu:
        assert (got >= 0).all()


BACKWARD_CASES = [
    # config, batch, in, out, split_k, dtype, masked, need_dx
    ("64x64", 33, 7, 65, 1, F32, True, True),  # dW 1x2 tiles over 3 K slices; dx one partial tile
    ("32x64", 65, 33, 7, 1, F64, False, True),  # no mask (an output layer)
    ("128x128", 9, 129, 7, 2, F32, True, True),  # dW split in two: db summed from partials
    ("64x64", 127, 7, 33, 3, F64, True, False),  # dW split in three; dx not requested
]
if not ON_SIMULATOR:
    BACKWARD_CASES += [
        ("auto", 1000, 784, 512, None, F32, True, True),
        ("auto", 8192, 256, 10, None, F32, False, True),  # a tall-thin dW: split-K chosen
        ("auto", 32, 784, 512, None, F64, True, True),
        ("128x128", 4096, 1024, 1024, None, F32, True, True),
    ]


@pytest.mark.parametrize("config,batch,k,m,split_k,dtype,masked,need_dx", BACKWARD_CASES)
def test_affine_backward_matches_numpy(rng, config, batch, k, m, split_k, dtype, masked, need_dx):
    x = rng.standard_normal((batch, k)).astype(dtype)
    W = (rng.standard_normal((k, m)) / math.sqrt(k)).astype(dtype)
    dy = rng.standard_normal((batch, m)).astype(dtype)
    y = None
    if masked:
        y = np.maximum(rng.standard_normal((batch, m)), 0).astype(dtype)  # about half the mask is off
    dx_ref, dW_ref, db_ref = NP.affine_backward(dy, x, W, y, need_dx)

    be = CudaBackend(gemm_config=config, split_k=split_k)
    dx_out = poisoned((batch, k), dtype) if need_dx else None
    dW_out, db_out = poisoned((k, m), dtype), poisoned((m,), dtype)
    dy_dev = dev(dy)
    dx, dW, db = be.affine_backward(dy_dev, dev(x), dev(W), None if y is None else dev(y), need_dx,
                                    dx_out=dx_out, dW_out=dW_out, db_out=db_out)
    assert dW is dW_out and db is db_out and dx is dx_out
    assert be.launch_count == (2 if need_dx else 1)
    tol = gemm_tol(dtype, max(batch, m))
    for got, ref in ((dW, dW_ref), (db, db_ref)) + (((dx, dx_ref),) if need_dx else ()):
        got = got.copy_to_host()
        assert np.isfinite(got).all(), "some outputs were never written"
        assert rel_err(got, ref) < tol
    np.testing.assert_array_equal(dy_dev.copy_to_host(), dy)  # dy itself is never masked in place


def test_backward_with_empty_batch_gives_zero_gradients():
    be = CudaBackend()
    x, dy = np.zeros((0, 7), F32), np.zeros((0, 5), F32)
    W = np.ones((7, 5), F32)
    dx, dW, db = be.affine_backward(dev(dy), dev(x), dev(W), dev(dy))
    assert dx.shape == (0, 7)
    np.testing.assert_array_equal(dW.copy_to_host(), np.zeros((7, 5)))
    np.testing.assert_array_equal(db.copy_to_host(), np.zeros(5))


def test_split_k_tickets_are_reset_for_the_next_launch(rng):
    """The last block of each tile resets its ticket: a second split launch must be right too."""
    ws = gemm.GemmWorkspace()
    x = rng.standard_normal((5, 70)).astype(F32)
    W = rng.standard_normal((70, 9)).astype(F32)
    b = np.zeros(9, F32)
    for _ in range(2):
        out = poisoned((5, 9), F32)
        gemm.affine_forward(dev(x), dev(W), dev(b), False, out, config="32x64", split_k=4, workspace=ws)
        assert rel_err(out.copy_to_host(), x @ W) < GEMM_TOL[F32]
    tickets = ws.tickets(1).copy_to_host()
    assert not tickets.any()


def test_plan_picks_tiles_by_output_size(monkeypatch):
    monkeypatch.setattr(gemm_plan, "sm_count", lambda: 132)
    assert gemm.plan(4096, 4096, 4096) == ("128x128", 1)
    assert gemm.plan(4096, 4096, 4096, dtype=F64)[0] == "64x64"  # 64 float64 accumulators do not fit
    config, splits = gemm.plan(32, 512, 784)
    assert config == "32x64" and splits > 1  # 8 tiles cannot fill 132 SMs: split K
    config, splits = gemm.plan(256, 10, 8192)  # dW of a 256->10 layer
    assert config == "64x64" and splits == gemm.MAX_SPLIT_K
    assert gemm.plan(1000, 512, 784, config="64x64", split_k=1) == ("64x64", 1)
    assert gemm.plan(7, 7, 8, split_k=8)[1] == 1  # never more splits than K slices
    with pytest.raises(ValueError):
        gemm.plan(7, 7, 7, config="256x256")


# Every kernel the launchers can pick: each tile configuration, each variant, one
# split and several.  x: (35, 17), W: (17, 66): forward (35 x 66, K = 17), dx
# (35 x 17, K = 66) and dW (17 x 66, K = 35) all spill into partial tiles and
# have at least two K slices, so split_k = 3 really splits each of them.
EVERY_KERNEL = [(config, variant, split_k) for config in gemm.TILES for variant in gemm.VARIANTS
                for split_k in (1, 3)]
if ON_SIMULATOR:  # every tile with every variant, each tile and each variant with one split and several
    EVERY_KERNEL = [(config, variant, 3 if (c + v) % 2 else 1) for c, config in enumerate(gemm.TILES)
                    for v, variant in enumerate(gemm.VARIANTS)]


@pytest.mark.parametrize("config,variant,split_k", EVERY_KERNEL)
def test_every_pickable_gemm_kernel_matches_numpy(rng, config, variant, split_k):
    dtype = F32 if split_k == 1 else F64
    batch, k, m = 35, 17, 66
    x = rng.standard_normal((batch, k)).astype(dtype)
    W = (rng.standard_normal((k, m)) / math.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal((batch, m)).astype(dtype)
    y = np.maximum(rng.standard_normal((batch, m)), 0).astype(dtype)
    opts = dict(config=config, split_k=split_k, workspace=gemm.GemmWorkspace())
    if variant == "forward":
        out = poisoned((batch, m), dtype)
        gemm.affine_forward(dev(x), dev(W), dev(b), True, out, **opts)
        pairs = [(out, NP.affine_forward(x, W, b, True))]
    else:
        dx_ref, dW_ref, db_ref = NP.affine_backward(dy, x, W, y, True)
        if variant == "dx":
            dx = poisoned((batch, k), dtype)
            gemm.affine_backward_dx(dev(dy), dev(W), dev(y), dx, **opts)
            pairs = [(dx, dx_ref)]
        else:
            dW, db = poisoned((k, m), dtype), poisoned(m, dtype)
            gemm.affine_backward_dw(dev(dy), dev(x), dev(y), dW, db, **opts)
            pairs = [(dW, dW_ref), (db, db_ref)]
    assert gemm.plan(*{"forward": (batch, m, k), "dx": (batch, k, m), "dw": (k, m, batch)}[variant],
                     config, split_k, dtype)[1] > 1 or split_k == 1
    for got, ref in pairs:
        got = got.copy_to_host()
        assert np.isfinite(got).all(), "some outputs were never written"
        assert rel_err(got, ref) < GEMM_TOL[dtype]


# Every activation through each product at awkward shapes, on the 32x64 tile
# and on 64x64 with split-K (the full tile x variant x split-K matrix above
# runs with relu: the activation is independent of the tiling, applied in the
# epilogue after the split-K reduction and on load).  Tolerances: GEMM_TOL, as
# for the plain products; the activation adds a few ulp per element (tanhf and
# expf are accurate to 2 ulp on the GPU, one more rounding for the division)
# and, 1-Lipschitz, does not amplify the product's error; the derivative adds
# at most two roundings (possibly fused into an FMA by the GPU compiler).
ACTIVATION_CASES = [
    # config, batch, in, out, split_k, dtype
    ("32x64", 1, 5, 3, 1, F32),  # one row, every product inside one partial tile
    ("32x64", 7, 19, 17, 1, F32),  # forward K = 19: a full and a partial slice of 16
    ("32x64", 33, 5, 17, 1, F64),  # forward and dx spill into a second row of tiles
    ("64x64", 33, 19, 3, 3, F64),  # split-K: dW (K = 33) in three splits, forward (K = 19) in two
]


# On a GPU every activation meets every case; under the simulator (each GPU thread a Python thread) each
# activation meets one float32 and one float64 case, the split-K case twice: every product, activation and
# dtype is still checked, in half the time.
ACTIVATION_PAIRS = [(a, c) for a in ACTIVATIONS for c in ACTIVATION_CASES] if not ON_SIMULATOR else [
    (a, ACTIVATION_CASES[i]) for n, a in enumerate(ACTIVATIONS) for i in (n % 2, 2 + (n // 2) % 2)]


@pytest.mark.parametrize("activation,config,batch,k,m,split_k,dtype", [(a, *c) for a, c in ACTIVATION_PAIRS])
def test_every_product_with_every_activation_matches_numpy(rng, activation, config, batch, k, m, split_k, dtype):
    act = activation_code(activation)
    x = rng.standard_normal((batch, k)).astype(dtype)
    W = (rng.standard_normal((k, m)) * 2 / math.sqrt(k)).astype(dtype)  # pre-activations of order 1 to 2
    b = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal((batch, m)).astype(dtype)
    y = NP.affine_forward(x, W, b, activation)  # the layer's output, as training stores it
    dx_ref, dW_ref, db_ref = NP.affine_backward(dy, x, W, y, activation=activation)
    opts = dict(config=config, split_k=split_k, workspace=gemm.GemmWorkspace())

    out = poisoned((batch, m), dtype)
    assert gemm.affine_forward(dev(x), dev(W), dev(b), act, out, **opts) == 1
    dy_dev = dev(dy)
    dx = poisoned((batch, k), dtype)
    assert gemm.affine_backward_dx(dy_dev, dev(W), dev(y), dx, act=act, **opts) == 1
    dW, db = poisoned((k, m), dtype), poisoned(m, dtype)
    assert gemm.affine_backward_dw(dy_dev, dev(x), dev(y), dW, db, act=act, **opts) == 1

    for what, got, ref in (("forward", out, y), ("dx", dx, dx_ref), ("dW", dW, dW_ref), ("db", db, db_ref)):
        got = got.copy_to_host()
        assert np.isfinite(got).all(), f"{what}: some outputs were never written"
        assert rel_err(got, ref) < GEMM_TOL[dtype], what
    np.testing.assert_array_equal(dy_dev.copy_to_host(), dy)  # dy is scaled on load, never in place


def test_backward_without_y_or_with_the_identity_applies_no_derivative(rng):
    """``y`` None means no derivative whatever ``act`` says, and ``act`` identity ignores ``y``."""
    batch, k, m = 7, 5, 17
    x, W = rng.standard_normal((batch, k)), rng.standard_normal((k, m))
    dy, y = rng.standard_normal((batch, m)), rng.uniform(0.1, 0.9, (batch, m))  # f'(y) != 1 for every f
    dx_ref, dW_ref, db_ref = dy @ W.T, x.T @ dy, dy.sum(0)
    for y_arg, act in ((None, activation_code("tanh")), (y, activation_code("identity"))):
        y_dev = None if y_arg is None else dev(y_arg)
        dx, dW, db = poisoned((batch, k), F64), poisoned((k, m), F64), poisoned(m, F64)
        gemm.affine_backward_dx(dev(dy), dev(W), y_dev, dx, act=act)
        gemm.affine_backward_dw(dev(dy), dev(x), y_dev, dW, db, act=act)
        for got, ref in ((dx, dx_ref), (dW, dW_ref), (db, db_ref)):
            assert rel_err(got.copy_to_host(), ref) < GEMM_TOL[F64]


@pytest.mark.parametrize("dtype", [F32, F64])
def test_saturating_activations_stay_finite_at_extreme_inputs(dtype):
    """Pre-activations of +-1000 (exp overflows float32 beyond 88, float64 beyond 709): exact limits, no inf/NaN.

    x @ ones + 0 reproduces x exactly, so the limits are exact: logistic 1
    and 0, tanh +-1; the derivatives from those outputs are exactly 0.  (On
    the simulator an overflowing exp raises OverflowError.)
    """
    z = np.array([1000, -1000, 100, -100, 0, 20, -20], dtype=dtype)[:, None]
    W, b = np.ones((1, 3), dtype), np.zeros(3, dtype)
    for activation, (hi, lo) in (("logistic", (1, 0)), ("tanh", (1, -1))):
        act = activation_code(activation)
        out = poisoned((z.shape[0], 3), dtype)
        gemm.affine_forward(dev(z), dev(W), dev(b), act, out)
        got = out.copy_to_host()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, NP.affine_forward(z, W, b, activation), rtol=GEMM_TOL[dtype], atol=0)
        np.testing.assert_array_equal(got[:2], [[hi, hi, hi], [lo, lo, lo]])
        dx = poisoned(z.shape, dtype)
        gemm.affine_backward_dx(dev(np.ones_like(got)), dev(W), dev(got), dx, act=act)
        np.testing.assert_array_equal(dx.copy_to_host()[:2], 0)  # saturated: no gradient, and no NaN


def test_an_unknown_activation_code_is_refused():
    x = np.ones((2, 2), F32)
    with pytest.raises(ValueError, match=r"act: expected an activation code in \[0, 3\]"):
        gemm.affine_forward(dev(x), dev(x), dev(np.ones(2, F32)), 4, poisoned((2, 2), F32))


@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_the_cuda_backend_passes_the_activation_through(rng, activation):
    """The CUDA backend's public operations, the activation given by name, against the NumPy backend's."""
    be = CudaBackend()
    x, W, b = rng.standard_normal((9, 4)), rng.standard_normal((4, 6)), rng.standard_normal(6)
    dy = rng.standard_normal((9, 6))
    y = NP.affine_forward(x, W, b, activation)
    y_dev = be.affine_forward(be.asarray(x), be.asarray(W), be.asarray(b), activation)
    assert rel_err(be.to_numpy(y_dev), y) < GEMM_TOL[F64]
    got = be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(W), y_dev, activation=activation)
    for g, ref in zip(got, NP.affine_backward(dy, x, W, y, activation=activation)):
        assert rel_err(be.to_numpy(g), ref) < GEMM_TOL[F64]


@pytest.mark.skipif(ON_SIMULATOR, reason="the simulator neither caches launch configurations nor has streams")
def test_configured_launches_are_cached_per_stream():
    kern = fill.fill_kernel(np.dtype(F32))
    s1, s2 = cuda.stream(), cuda.stream()
    grid, block = (1, 1, 1), (256, 1, 1)
    a = _launch.configured(kern, grid, block, s1)
    assert _launch.configured(kern, grid, block, s1) is a
    b_ = _launch.configured(kern, grid, block, s2)
    assert b_ is not a and _launch.configured(kern, grid, block) not in (a, b_)
    assert int(a.stream.handle) == int(s1.handle) and int(b_.stream.handle) == int(s2.handle)


def _all_pickable_kernels(dtype):
    """Every kernel a launcher can pick for ``dtype`` on this device, with a name for messages."""
    dt = np.dtype(dtype)
    kernels = {f"gemm {c} {v} {name}": gemm.gemm_kernel(dt, c, gemm.VARIANTS[v], act)
               for c, v in gemm.selectable_kernels(dt, "auto") | {(c, v) for c in gemm.TILES for v in gemm.VARIANTS}
               for act, name in enumerate(gemm.ACTIVATIONS)}
    kernels.update({f"softmax {kind}": kern for kind, kern in softmax.selectable_kernels(dt).items()})
    kernels.update({"fill": fill.fill_kernel(dt), "take_rows_2d": gather.take_rows_2d_kernel(dt),
                    "take_rows_1d": gather.take_rows_1d_kernel(np.dtype(np.int64)),
                    "densify_rows": sparse.densify_rows_kernel(dt), "reset_stats": fill.reset_stats_kernel()})
    return kernels


@pytest.mark.skipif(ON_SIMULATOR, reason="local memory is a property of compiled GPU code; the simulator has none")
@pytest.mark.parametrize("dtype", [F32, F64])
def test_no_kernel_spills_to_local_memory(dtype):
    """Register arrays indexed by unrolled counters must stay in registers: zero local memory per thread."""
    spills = {name: kern.get_local_mem_per_thread() for name, kern in _all_pickable_kernels(dtype).items()}
    assert {name: b for name, b in spills.items() if b} == {}


# ------------------------------------------------------------------ softmax
SOFTMAX_CASES = [
    # rows, classes, dtype: C <= 32 is thread-per-row, C > 32 a thread group per row
    (129, 10, F32),  # two row tiles, the second holding one row
    (130, 32, F64),  # the widest thread-per-row case
    (5, 1, F32),  # one class: every probability is 1
    (9, 33, F32),  # narrowest group-per-row case: a warp per row, 8 values per thread
    (4, 300, F64),  # 64 threads per row (float64 keeps 8 values per thread)
    (3, 300, F32),  # a warp per row, 32 values per thread
    (2, 2100, F32),  # 128 threads per row
]
if not ON_SIMULATOR:
    SOFTMAX_CASES += [(100_000, 10, F32), (20_000, 1000, F32), (4096, 1000, F64), (1000, 5000, F32)]


def _logits(rng, n, c, dtype, scale=3.0):
    return (rng.standard_normal((n, c)) * scale).astype(dtype)


def _xent_ref(logits, labels, step=0, stats=None):
    dl = np.empty_like(logits)
    st = np.array([0.0, 0.0, math.inf]) if stats is None else stats
    NP.softmax_cross_entropy_into(logits, labels, dl, st, step)
    return dl, st


@pytest.mark.parametrize("n,c,dtype", SOFTMAX_CASES)
def test_softmax_xent_matches_numpy(rng, small_grids, n, c, dtype):
    x = _logits(rng, n, c, dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    dl_ref, st_ref = _xent_ref(x, labels)
    dl = poisoned((n, c), dtype)
    stats = dev(np.array([0.0, 0.0, math.inf]))
    assert softmax.softmax_cross_entropy(dev(x), dev(labels), dl, stats, step=3) == 1
    got, st = dl.copy_to_host(), stats.copy_to_host()
    rtol = SOFTMAX_RTOL[dtype]
    np.testing.assert_allclose(got, dl_ref, rtol=rtol, atol=rtol / n)
    np.testing.assert_allclose(got.sum(axis=1), 0, atol=1e-6 if dtype == F32 else 1e-14)
    assert st[0] == pytest.approx(st_ref[0], rel=rtol)
    assert st[1] == st_ref[1]
    assert st[2] == math.inf


@pytest.mark.parametrize("n,c,dtype", [(2, 1100, F32), (3, 300, F64)])
def test_rows_longer_than_the_registers_hold_are_read_twice(rng, monkeypatch, n, c, dtype):
    monkeypatch.setattr(softmax, "WIDE_MAX_GROUP", 32)  # one warp per row: 1024 (float64: 256) values held
    items, group, _ = softmax.wide_block(c, dtype)
    assert items * group < c
    x = _logits(rng, n, c, dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    dl_ref, st_ref = _xent_ref(x, labels)
    dl, stats = poisoned((n, c), dtype), dev(np.array([0.0, 0.0, math.inf]))
    softmax.softmax_cross_entropy(dev(x), dev(labels), dl, stats)
    rtol = SOFTMAX_RTOL[dtype]
    np.testing.assert_allclose(dl.copy_to_host(), dl_ref, rtol=rtol, atol=rtol / n)
    assert stats.copy_to_host()[0] == pytest.approx(st_ref[0], rel=rtol)


@pytest.mark.parametrize("n,c,dtype", SOFTMAX_CASES)
def test_softmax_probabilities_match_numpy(rng, small_grids, n, c, dtype):
    x = _logits(rng, n, c, dtype)
    out = poisoned((n, c), dtype)
    assert softmax.softmax(dev(x), out) == 1
    got = out.copy_to_host()
    np.testing.assert_allclose(got, NP.softmax(x), rtol=SOFTMAX_RTOL[dtype], atol=SOFTMAX_RTOL[dtype] / c)
    np.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-5 if dtype == F32 else 1e-13)


@pytest.mark.parametrize("c", [10, 40])
def test_softmax_xent_is_exact_and_finite_at_plus_minus_1e4(rng, c):
    x = np.where(rng.random((6, c)) < 0.5, -1e4, 1e4).astype(F32)
    x[0] = -1e4
    x[0, c - 1] = 1e4  # one clear winner
    labels = rng.integers(0, c, 6).astype(np.int64)
    dl_ref, st_ref = _xent_ref(x, labels)
    dl, stats = poisoned((6, c), F32), dev(np.array([0.0, 0.0, math.inf]))
    softmax.softmax_cross_entropy(dev(x), dev(labels), dl, stats, step=1)
    got, st = dl.copy_to_host(), stats.copy_to_host()
    assert np.isfinite(got).all() and np.isfinite(st[:2]).all()
    assert st[2] == math.inf
    np.testing.assert_allclose(got, dl_ref, rtol=1e-6, atol=1e-9)
    assert st[0] == pytest.approx(st_ref[0], rel=1e-9)  # losses are 0 or about 2e4: exact
    assert st[1] == st_ref[1]


@pytest.mark.parametrize("c", [10, 40])
def test_stats_accumulate_and_record_first_bad_step(rng, c):
    stats = dev(np.array([0.0, 0.0, math.inf]))
    st_ref = np.array([0.0, 0.0, math.inf])
    labels = rng.integers(0, c, 5).astype(np.int64)
    for step, poison in ((4, False), (9, True), (2, True), (7, False)):
        x = _logits(rng, 5, c, F64)
        if poison:
            x[3, 1] = np.nan
        dl = poisoned((5, c), F64)
        _xent_ref(x, labels, step, st_ref)
        softmax.softmax_cross_entropy(dev(x), dev(labels), dl, stats, step=step)
        assert np.isnan(dl.copy_to_host()[3]).all() == poison
    st = stats.copy_to_host()
    assert st[2] == 2 == st_ref[2]  # the smallest bad step, not the last
    assert np.isnan(st[0]) and np.isnan(st_ref[0])  # a NaN loss poisons the running sum, as in the twin
    assert st[1] == st_ref[1]  # NaN at column 1 is never a maximum, so every row's argmax is defined


@pytest.mark.parametrize("c", [10, 40])
def test_xent_without_gradient_only_accumulates(rng, c):
    x = _logits(rng, 20, c, F32)
    labels = rng.integers(0, c, 20).astype(np.int64)
    _, st_ref = _xent_ref(x, labels)
    stats = dev(np.array([1.0, 2.0, math.inf]))
    softmax.softmax_cross_entropy(dev(x), dev(labels), None, stats, step=0)
    st = stats.copy_to_host()
    assert st[0] == pytest.approx(1.0 + st_ref[0], rel=1e-5)
    assert st[1] == 2.0 + st_ref[1]


@pytest.mark.parametrize("c", [10, 40])
def test_argmax_ties_go_to_the_first_index(c):
    n = 4
    x = np.zeros((n, c), F32)
    x[:, 2] = x[:, 5] = x[:, 7] = 3.0  # a three-way tie for the maximum in every row
    labels = np.array([2, 5, 7, 2], dtype=np.int64)
    _, st_ref = _xent_ref(x, labels)
    stats = dev(np.array([0.0, 0.0, math.inf]))
    softmax.softmax_cross_entropy(dev(x), dev(labels), poisoned((n, c), F32), stats)
    assert st_ref[1] == 2
    assert stats.copy_to_host()[1] == 2


@pytest.mark.parametrize("c", [10, 40])
def test_label_out_of_range_gives_nan_loss_and_nan_gradient_row(rng, c):
    """Expected values stated explicitly: row 0 is ordinary, rows 1 and 2 have labels C and -1."""
    x = _logits(rng, 3, c, F64)
    labels = np.array([0, c, -1], dtype=np.int64)
    stats = dev(np.array([0.0, 0.0, math.inf]))
    dl = poisoned((3, c), F64)
    softmax.softmax_cross_entropy(dev(x), dev(labels), dl, stats, step=6)
    got, st = dl.copy_to_host(), stats.copy_to_host()
    p0 = np.exp(x[0] - x[0].max()) / np.exp(x[0] - x[0].max()).sum()
    np.testing.assert_allclose(got[0], (p0 - np.eye(c)[0]) / 3, rtol=1e-12, atol=1e-15)
    assert np.isnan(got[1:]).all()  # the whole row, not only the label's column
    assert np.isnan(st[STATS_LOSS_SUM])
    assert st[STATS_CORRECT] == float(np.argmax(x[0]) == 0)  # an invalid label is never a hit
    assert st[STATS_FIRST_NONFINITE_STEP] == 6


# --------------------------------------------------------------- optimizers
OPTIM_CASES = [
    ("sgd", dict(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("rmsprop", dict(lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=1e-2)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.0)),
    ("adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, decoupled=False)),
    ("adamw", dict(lr=1e-3, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=1e-1, decoupled=True)),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("kind,hyper", OPTIM_CASES)
def test_optimizer_steps_match_numpy(rng, small_grids, kind, hyper, dtype):
    size, n_decay = 700, 533  # two blocks of 256 threads stride twice; decay stops mid-block
    be = CudaBackend()
    p = rng.standard_normal(size).astype(dtype)
    state_names = {"sgd": ["buf"], "rmsprop": ["square_avg", "buf"], "adam": ["exp_avg", "exp_avg_sq"]}
    names = state_names["adam" if kind == "adamw" else kind]
    host = {"params": p.copy(), **{s: np.zeros(size, dtype) for s in names}}
    devs = {k: dev(v) for k, v in host.items()}
    if hyper.get("momentum", 1) == 0:  # the momentum buffer is optional then
        host["buf"] = devs["buf"] = None
    for step in range(1, 4):
        g = rng.standard_normal(size).astype(dtype)
        for backend, arrays, grads in ((NP, host, g), (be, devs, dev(g))):
            if kind == "sgd":
                backend.sgd_step(arrays["params"], grads, arrays["buf"], n_decay=n_decay, **hyper)
            elif kind == "rmsprop":
                backend.rmsprop_step(arrays["params"], grads, arrays["square_avg"], arrays["buf"],
                                     n_decay=n_decay, **hyper)
            else:
                backend.adam_step(arrays["params"], grads, arrays["exp_avg"], arrays["exp_avg_sq"],
                                  step=step, n_decay=n_decay, **hyper)
    assert be.launch_count == 3
    for name, ref in host.items():
        if ref is not None:
            # The GPU contracts a*b + c into one fused multiply-add, NumPy rounds
            # twice: a difference of an ulp of the *terms*, which for a result
            # that cancels (momentum*buf + d close to 0) exceeds any relative
            # bound on the result.  So the absolute part scales with the terms
            # (O(1) standard-normal data here, bounded by the largest value).
            np.testing.assert_allclose(devs[name].copy_to_host(), ref, rtol=OPTIM_RTOL[dtype],
                                       atol=OPTIM_RTOL[dtype] * float(np.abs(ref).max()), err_msg=name)


def test_weight_decay_stops_at_n_decay():
    """With zero gradients only decay moves parameters: exactly the first n_decay."""
    be = CudaBackend()
    p = dev(np.ones(300, F32))
    be.sgd_step(p, dev(np.zeros(300, F32)), None, lr=0.5, momentum=0.0, nesterov=False, weight_decay=0.2,
                n_decay=257)
    got = p.copy_to_host()
    np.testing.assert_array_equal(got[:257], np.float32(1) - np.float32(0.5) * np.float32(0.2))
    np.testing.assert_array_equal(got[257:], 1)


def test_sgd_with_momentum_requires_a_buffer():
    be = CudaBackend()
    with pytest.raises(ValueError, match="buf"):
        be.sgd_step(dev(np.ones(4, F32)), dev(np.ones(4, F32)), None, lr=0.1, momentum=0.9, nesterov=False,
                    weight_decay=0.0, n_decay=4)


# ---------------------------------------------------------------- gather/fill
@pytest.mark.parametrize("dtype,width", [(F32, 129), (F64, 7), (np.uint8, 33), (np.int64, None)])
def test_take_rows_matches_numpy(rng, small_grids, dtype, width):
    shape = (65,) if width is None else (65, width)
    X = (rng.standard_normal(shape) * 50).astype(dtype)
    idx = np.array([64, 0, 3, 3, 17, -1, 64, 5, 0, -65], dtype=np.int64)  # repeats, order, negatives
    out = cuda.to_device(np.full((len(idx),) + shape[1:], 7, dtype=dtype))
    assert gather.take_rows(dev(X), dev(idx), out) == 1
    # the twin's operation itself: the contract (base.py) refuses negative indices before it runs
    np.testing.assert_array_equal(out.copy_to_host(), np.take(X, idx, axis=0))


def test_take_rows_out_of_range_gives_zero_rows():
    X = np.arange(12, dtype=F32).reshape(4, 3) + 1
    out = poisoned((3, 3), F32)
    gather.take_rows(dev(X), dev(np.array([1, 4, -5], dtype=np.int64)), out)
    np.testing.assert_array_equal(out.copy_to_host(), [[4, 5, 6], [0, 0, 0], [0, 0, 0]])


def _csr_arrays(dense):
    """``(indptr, indices, data)`` of a dense host matrix, canonical (row-major order of the non-zeros)."""
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(dense, axis=1))]).astype(np.int64)
    return indptr, cols.astype(np.int64), np.ascontiguousarray(dense[rows, cols])


# rows of X per batch: a batch of one, repeats (each its own output row), rows without non-zeros (0, 5 and
# 22), negatives counting from the end, and indices still out of range (zero rows, as the twin gives)
DENSIFY_BATCHES = [[7], [22, 0, 5, 5, 3, 3, 21, -1, -23], [23, -24, 4]]


@pytest.mark.parametrize("dtype,cols", [(F32, 129), (F64, 7), (F64, 1), (F32, 300)])
def test_densify_rows_matches_its_twin(rng, small_grids, dtype, cols):
    """Rows wider and narrower than a block's 128 threads; two blocks for up to 11 rows: each block loops."""
    dense = (rng.standard_normal((23, cols)) * (rng.random((23, cols)) < 0.3)).astype(dtype)
    dense[[0, 5, 22]] = 0
    arrays = _csr_arrays(dense)
    for rows in DENSIFY_BATCHES:
        idx = np.array(rows, dtype=np.int64)
        out = poisoned((len(idx), cols), dtype)  # every element must be written: the zeros too
        assert sparse.take_rows_dense(*map(dev, arrays), dev(idx), out) == 1
        twin = np.full((len(idx), cols), np.nan, dtype=dtype)
        _cpu_sparse.densify_rows(*arrays, idx, twin)
        np.testing.assert_array_equal(out.copy_to_host(), twin)  # one value per element: exact
        expected = np.zeros_like(twin)  # the twin itself: X's rows (NumPy's negative indices), zeros outside
        inside = (idx >= -23) & (idx < 23)
        expected[inside] = dense[idx[inside]]
        np.testing.assert_array_equal(twin, expected)


def test_densify_rows_adds_repeated_columns_like_its_twin():
    # a non-canonical row: column 2 three times (exact halves and quarters, so any order of the adds agrees)
    indptr = np.array([0, 4, 4], dtype=np.int64)
    indices = np.array([2, 0, 2, 2], dtype=np.int64)
    data = np.array([0.5, 1.0, 0.25, 0.125], dtype=F32)
    idx = np.array([0, 1, 0], dtype=np.int64)
    out = poisoned((3, 4), F32)
    sparse.take_rows_dense(dev(indptr), dev(indices), dev(data), dev(idx), out)
    twin = np.empty((3, 4), dtype=F32)
    _cpu_sparse.densify_rows(indptr, indices, data, idx, twin)
    np.testing.assert_array_equal(out.copy_to_host(), twin)
    np.testing.assert_array_equal(twin, [[1, 0, 0.875, 0], [0, 0, 0, 0], [1, 0, 0.875, 0]])


def test_densify_rows_launches_nothing_for_an_empty_batch():
    indptr, indices, data = (dev(np.zeros(2, np.int64)), dev(np.zeros(1, np.int64)), dev(np.zeros(1, F32)))
    assert sparse.take_rows_dense(indptr, indices, data, dev(np.zeros(0, np.int64)), poisoned((0, 3), F32)) == 0


@pytest.mark.parametrize("dtype,value", [(F32, 2.5), (F64, -math.inf), (np.int64, 7), (np.uint8, 255)])
def test_fill_sets_every_element(small_grids, dtype, value):
    a = cuda.to_device(np.zeros(1000, dtype=dtype))
    assert fill.fill(a, value) == 1
    np.testing.assert_array_equal(a.copy_to_host(), np.full(1000, value, dtype=dtype))


def test_convert_matches_numpy_astype(rng):
    src = rng.standard_normal(333) * 1e3
    dst = poisoned(333, F32)
    fill.convert(dev(src), dst)
    np.testing.assert_array_equal(dst.copy_to_host(), src.astype(F32))


def test_reset_stats():
    stats = dev(np.array([5.0, 3.0, 1.0]))
    assert fill.reset_stats(stats) == 1
    np.testing.assert_array_equal(stats.copy_to_host(), [0.0, 0.0, math.inf])
