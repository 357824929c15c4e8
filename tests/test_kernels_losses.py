"""The output losses: CUDA kernels against their NumPy twins, and the twins against PyTorch and scikit-learn.

Kernels (``mlp.kernels.losses``, and the weighted variants of
``mlp.kernels.softmax``) run on a GPU or on Numba's CUDA simulator, at
awkward shapes: 1, 5 and 37 rows; 1, 3, 10 and 33 columns (one thread per
row, a partial group of lanes, a group of 16 with 6 idle, a full warp with
one column wrapping round).  Gradients are poisoned with NaN first, so an
element never written shows up.  Weights, when given, are random with some
exact zeros.

The twins (``mlp.backends._cpu_losses`` and ``_cpu_loops.softmax_xent``)
are checked in float64 against PyTorch's own functions, gradients through
autograd, and against scikit-learn's MLP loss functions and ``_backprop``'s
output-layer delta, which define the semantics.

Tolerances
----------
* Kernel against twin, float32: rtol 1e-5 (exponentials and logarithms on
  the GPU are within 2 ulp of the CPU's, about 1e-7 relative, and the loss
  sums are added in another order); float64: rtol 1e-12.  Gradients also
  get an absolute tolerance of rtol / N, their scale.
  The Poisson loss sum also gets an absolute ``rtol * 4 * N * C``: near
  its minimum it is a small difference of terms of a few units.
* Twin against PyTorch / scikit-learn, float64: rtol 1e-12 (the same
  formulas rounded in another order).
* Extreme logits (+-1e4): the stable float64 reference exactly where the
  result is 0 or an integer, else rtol 1e-6 (float32) / 1e-12 (float64).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _cases import matrix
from conftest import ON_SIMULATOR
from scipy.special import expit, xlogy

from mlp.backends import cuda_status
from mlp.backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM
from mlp.backends.numpy_backend import NumpyBackend

F32, F64 = np.float32, np.float64
RTOL = {F32: 1e-5, F64: 1e-12}
LOSSES = ("logistic", "squared_error", "poisson")
NP = NumpyBackend()
TWINS = {"logistic": NP._logistic_xent, "squared_error": NP._squared_error, "poisson": NP._poisson_loss}

_usable, _why = cuda_status()


def kernel_test(fn):
    """A test that launches kernels: marked ``gpu``, skipped (saying why) without the CUDA backend."""
    return pytest.mark.gpu(pytest.mark.skipif(not _usable, reason=f"CUDA backend unavailable: {_why}")(fn))


def empty_stats():
    return np.array([0.0, 0.0, math.inf])


def _inputs(rng, loss, n, c, dtype, scale=3.0):
    """Logits (or predictions) and targets the loss accepts: 0/1 labels with some soft ones, real values,
    or counts (with zeros, so that xlogy(0, 0) is exercised, and some halves)."""
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    if loss == "logistic":
        t = (rng.random((n, c)) < 0.5).astype(dtype)
        t[rng.random((n, c)) < 0.2] = 0.3
    elif loss == "squared_error":
        t = (rng.standard_normal((n, c)) * 2).astype(dtype)
    else:
        z = (z / 3).astype(dtype)  # exp(z) of a moderate size
        t = rng.poisson(2.0, (n, c)).astype(dtype)
        t[rng.random((n, c)) < 0.2] = 0.5  # non-integer rates are allowed
    return z, t


def _weights(rng, n, dtype):
    w = rng.random(n) * 2
    w[rng.random(n) < 0.3] = 0.0
    w[0] = 0.5  # a positive sum even for one row
    return w.astype(dtype)


def _twin(loss, z, t, weights=None, step=0, grad=True, stats=None, **options):
    dz = np.full_like(z, np.nan) if grad else None
    st = empty_stats() if stats is None else stats
    TWINS[loss](z, t, dz, st, step, weights, **options)
    return dz, st


# ------------------------------------------------------------ the kernels
def _kernel_run(loss, z, t, weights=None, step=0, grad=True, stats=None, **options):
    from numba import cuda

    from mlp.kernels import losses

    launch = {"logistic": losses.logistic_cross_entropy, "squared_error": losses.squared_error,
              "poisson": losses.poisson_loss}[loss]
    dz = cuda.to_device(np.full_like(z, np.nan)) if grad else None
    st = cuda.to_device(empty_stats() if stats is None else stats)
    w = None if weights is None else cuda.to_device(weights)
    assert launch(cuda.to_device(z), cuda.to_device(t), dz, st, step, w, **options) == 1
    return (dz.copy_to_host() if grad else None), st.copy_to_host()


def _assert_stats_close(got, ref, rtol, atol=0.0):
    assert got[STATS_LOSS_SUM] == pytest.approx(ref[STATS_LOSS_SUM], rel=rtol, abs=atol)
    assert got[STATS_CORRECT] == ref[STATS_CORRECT]
    assert got[STATS_FIRST_NONFINITE_STEP] == ref[STATS_FIRST_NONFINITE_STEP]


@kernel_test
@pytest.mark.parametrize("dtype,loss,n,c,weighted", matrix([F32, F64], LOSSES, [1, 5, 37], [1, 3, 10, 33],
                                                          [False, True]))
def test_loss_kernels_match_their_twins(rng, small_grids, dtype, loss, n, c, weighted):
    z, t = _inputs(rng, loss, n, c, dtype)
    w = _weights(rng, n, dtype) if weighted else None
    dz_ref, st_ref = _twin(loss, z, t, w, step=3)
    dz, st = _kernel_run(loss, z, t, w, step=3)
    assert np.isfinite(dz).all(), "some gradient elements were never written"
    np.testing.assert_allclose(dz, dz_ref, rtol=RTOL[dtype], atol=RTOL[dtype] / n)
    # A Poisson loss near its minimum is a small difference of terms of a few units (the weight
    # factors N w / S sum to N): its sum gets rtol times 4 per element, absolutely.
    _assert_stats_close(st, st_ref, RTOL[dtype], atol=RTOL[dtype] * 4 * n * c if loss == "poisson" else 0.0)


@kernel_test
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_kernels_without_a_gradient_only_accumulate(rng, loss):
    z, t = _inputs(rng, loss, 37, 10, F32)
    w = _weights(rng, 37, F32)
    _, st_ref = _twin(loss, z, t, w, grad=False, stats=np.array([1.0, 2.0, 9.0]))
    _, st = _kernel_run(loss, z, t, w, grad=False, stats=np.array([1.0, 2.0, 9.0]))
    assert st_ref[0] > 1.0 and st_ref[2] == 9.0
    _assert_stats_close(st, st_ref, RTOL[F32])


@kernel_test
@pytest.mark.parametrize("c", [3, 33])
def test_logistic_counts_a_row_right_only_when_every_column_is(c):
    """Rows: all right; wrong in column 0; wrong in the last column (another lane for C = 33);
    all right with z = 0 read as 'predicted 0'; all wrong.  Two of five rows are right."""
    z = np.full((5, c), 2.0, F32)
    t = np.ones((5, c), F32)
    z[1, 0] = -1.0
    z[2, c - 1] = -1.0
    z[3, :] = 0.0
    t[3, :] = 0.0
    z[4, :] = -2.0
    _, st_ref = _twin("logistic", z, t)
    _, st = _kernel_run("logistic", z, t)
    assert st_ref[STATS_CORRECT] == 2 == st[STATS_CORRECT]


@kernel_test
@pytest.mark.parametrize("loss", LOSSES)
def test_a_non_finite_row_poisons_its_gradient_and_records_the_first_bad_step(rng, loss):
    stats_ref, stats = empty_stats(), empty_stats()
    for step, poison in ((4, False), (9, True), (2, True), (7, False)):
        z, t = _inputs(rng, loss, 5, 3, F64)
        if poison:
            z[3, 1] = np.nan
        dz_ref, stats_ref = _twin(loss, z, t, step=step, stats=stats_ref)
        dz, stats = _kernel_run(loss, z, t, step=step, stats=stats)
        assert np.isnan(dz[3, 1]) == poison and np.isnan(dz_ref[3, 1]) == poison
        assert np.isfinite(dz[[0, 1, 2, 4]]).all()
    assert stats[STATS_FIRST_NONFINITE_STEP] == 2 == stats_ref[STATS_FIRST_NONFINITE_STEP]
    assert np.isnan(stats[STATS_LOSS_SUM]) and np.isnan(stats_ref[STATS_LOSS_SUM])


def _stable_reference(loss, z, t):
    """Per-row losses and the unweighted gradient, in float64, from SciPy's stable functions."""
    z, t = z.astype(F64), t.astype(F64)
    n = z.shape[0]
    if loss == "logistic":
        per_row = (np.logaddexp(0.0, z) - t * z).sum(axis=1)
        return per_row, (expit(z) - t) / n
    if loss == "squared_error":
        return 0.5 * ((z - t) ** 2).mean(axis=1), (z - t) / n
    return (xlogy(t, t) - t * z - t + np.exp(z)).sum(axis=1), (np.exp(z) - t) / n


@kernel_test
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", [1, 10])
def test_extreme_logits_give_the_stable_result(rng, loss, dtype, c):
    """+-1e4 (Poisson: -1e4 and moderate values; exp(1e4) is past every float) against the float64 reference."""
    z = np.where(rng.random((6, c)) < 0.5, -1e4, 1e4).astype(dtype)
    t = (rng.random((6, c)) < 0.5).astype(dtype)
    if loss == "poisson":
        z = np.where(z > 0, 3.0, z).astype(dtype)
        t = t * 4
    per_row, grad = _stable_reference(loss, z, t)
    for dz, st in (_twin(loss, z, t), _kernel_run(loss, z, t)):
        assert np.isfinite(dz).all() and np.isfinite(st[STATS_LOSS_SUM])
        assert st[STATS_FIRST_NONFINITE_STEP] == math.inf
        tol = 1e-6 if dtype == F32 else 1e-12
        np.testing.assert_allclose(dz, grad, rtol=tol, atol=1e-300)
        assert st[STATS_LOSS_SUM] == pytest.approx(per_row.sum(), rel=tol)


@kernel_test
def test_poisson_overflow_is_reported_not_hidden():
    z = np.array([[1e4], [0.0]], F32)
    t = np.array([[1.0], [1.0]], F32)
    # The simulator's exp is Python's, which raises on overflow instead of giving inf.
    runs = [_twin("poisson", z, t, step=5)] + ([] if ON_SIMULATOR else [_kernel_run("poisson", z, t, step=5)])
    for _, st in runs:
        assert st[STATS_FIRST_NONFINITE_STEP] == 5


# ------------------------------------------------------ weighted softmax
SOFTMAX_CASES = [
    (129, 10, F32),  # two row tiles of the thread-per-row kernel, the second holding one row
    (130, 32, F64),
    (5, 1, F32),
    (1, 3, F64),  # one row: S is its weight
    (9, 33, F32),  # a warp per row
    (4, 300, F64),
    (3, 300, F32),
    (2, 2100, F32),  # 128 threads per row
]


def _softmax_kernel_run(x, labels, weights, step=0, grad=True, **options):
    from numba import cuda

    from mlp.kernels import softmax

    dl = cuda.to_device(np.full_like(x, np.nan)) if grad else None
    st = cuda.to_device(empty_stats())
    w = None if weights is None else cuda.to_device(weights)
    assert softmax.softmax_cross_entropy(cuda.to_device(x), cuda.to_device(labels), dl, st, step, w, **options) == 1
    return (dl.copy_to_host() if grad else None), st.copy_to_host()


def _softmax_twin(x, labels, weights, step=0, **options):
    dl, st = np.full_like(x, np.nan), empty_stats()
    NP._softmax_xent(x, labels, dl, st, step, weights, **options)
    return dl, st


@kernel_test
@pytest.mark.parametrize("n,c,dtype", SOFTMAX_CASES)
def test_weighted_softmax_xent_matches_its_twin(rng, small_grids, n, c, dtype):
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    w = _weights(rng, n, dtype)
    dl_ref, st_ref = _softmax_twin(x, labels, w, step=3)
    dl, st = _softmax_kernel_run(x, labels, w, step=3)
    assert np.isfinite(dl).all()
    np.testing.assert_allclose(dl, dl_ref, rtol=RTOL[dtype], atol=RTOL[dtype] / n)
    np.testing.assert_array_equal(dl[w == 0], 0)  # a zero weight: no gradient at all
    _assert_stats_close(st, st_ref, RTOL[dtype])
    # unit weights: the unweighted result (n * (1/n) may differ from 1 in the last bit)
    dl_ones, st_ones = _softmax_kernel_run(x, labels, np.ones(n, dtype))
    dl_none, st_none = _softmax_kernel_run(x, labels, None)
    np.testing.assert_allclose(dl_ones, dl_none, rtol=1e-15, atol=0)
    assert st_ones[0] == pytest.approx(st_none[0], rel=1e-15) and st_ones[1] == st_none[1]


@kernel_test
@pytest.mark.parametrize("n,c", [(300, 10), (40, 40)])  # 3 and 5 blocks when the grid is not capped
def test_every_block_computes_the_same_weight_sum(rng, monkeypatch, n, c):
    """S is summed by every block on its own: the gradients are bitwise the same on 1, 2 or many blocks."""
    from mlp.kernels import _launch

    x = rng.standard_normal((n, c)).astype(F32)
    labels = rng.integers(0, c, n).astype(np.int64)
    z, t = _inputs(rng, "logistic", n, 3, F32)
    w = (rng.random(n) * 1e3).astype(F32)  # large, varied weights: a different order of summation shows
    runs = []
    for blocks in (1, 2, None):
        monkeypatch.setattr(_launch, "MAX_GRID_BLOCKS", blocks)
        runs.append((_softmax_kernel_run(x, labels, w)[0], _kernel_run("logistic", z, t, w)[0]))
    for later in runs[1:]:
        np.testing.assert_array_equal(later[0], runs[0][0])
        np.testing.assert_array_equal(later[1], runs[0][1])


@kernel_test
@pytest.mark.parametrize("c", [10, 40])
def test_weighted_softmax_with_an_out_of_range_label_still_gives_a_nan_row(rng, c):
    x = rng.standard_normal((4, c))
    labels = np.array([0, c, -1, 1], dtype=np.int64)
    w = np.array([1.0, 0.0, 2.0, 1.0])  # a zero weight does not hide the bad label
    for dl, st in (_softmax_twin(x, labels, w, step=6), _softmax_kernel_run(x, labels, w, step=6)):
        assert np.isfinite(dl[[0, 3]]).all() and np.isnan(dl[[1, 2]]).all()
        assert np.isnan(st[STATS_LOSS_SUM]) and st[STATS_FIRST_NONFINITE_STEP] == 6


@kernel_test
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", [10, 40])
def test_weighted_softmax_at_plus_minus_1e4_is_finite_and_stable(rng, dtype, c):
    x = np.where(rng.random((6, c)) < 0.5, -1e4, 1e4).astype(dtype)
    labels = rng.integers(0, c, 6).astype(np.int64)
    w = _weights(rng, 6, dtype)
    w64 = w.astype(F64)
    p = np.exp(x - x.max(axis=1, keepdims=True)).astype(F64)
    p /= p.sum(axis=1, keepdims=True)
    grad = w64[:, None] * (p - np.eye(c)[labels]) / w64.sum()
    per_row = np.log(np.exp(x - x.max(axis=1, keepdims=True)).astype(F64).sum(axis=1)) + x.max(axis=1) \
        - x[np.arange(6), labels]
    for dl, st in (_softmax_twin(x, labels, w), _softmax_kernel_run(x, labels, w)):
        assert np.isfinite(dl).all() and np.isfinite(st[STATS_LOSS_SUM])
        np.testing.assert_allclose(dl, grad, rtol=1e-6, atol=1e-12)
        assert st[STATS_LOSS_SUM] == pytest.approx(6 * (w64 * per_row).sum() / w64.sum(), rel=1e-6)


@kernel_test
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator's NumPy scalars warn about 1 / 0
def test_weights_summing_to_zero_give_nan_on_the_fast_path(rng):
    """The public operations refuse such weights; unchecked, the batch is NaN and marked, never silently 0."""
    z, t = _inputs(rng, "squared_error", 3, 2, F64)
    for dz, st in (_twin("squared_error", z, t, np.zeros(3), step=1),
                   _kernel_run("squared_error", z, t, np.zeros(3), step=1)):
        assert np.isnan(dz).all() and st[STATS_FIRST_NONFINITE_STEP] == 1


# ------------------------------------------------------------ L2 penalty
@kernel_test
@pytest.mark.parametrize("size,n", [(1, 1), (7, 5), (1000, 999), (600, 0)])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_l2_penalty_matches_its_twin_and_reads_its_scale_from_the_device(rng, small_grids, size, n, dtype):
    from numba import cuda

    from mlp.kernels import losses

    params = rng.standard_normal(size).astype(dtype)
    params[n:] = 1e3  # past n: must not count
    scales = np.array([0.25, 3.0], dtype)
    st_ref = np.array([1.0, 0.0, math.inf])
    NP._l2_penalty(params, n, scales, 1, st_ref)
    assert st_ref[0] == pytest.approx(1.0 + 3.0 * (params[:n].astype(F64) ** 2).sum(), rel=1e-12)
    p_dev, s_dev, st = cuda.to_device(params), cuda.to_device(scales), cuda.to_device(np.array([1.0, 0.0, math.inf]))
    assert losses.l2_penalty(p_dev, n, s_dev, 1, st) == (1 if n else 0)
    got = st.copy_to_host()
    assert got[0] == pytest.approx(st_ref[0], rel=RTOL[dtype]) and got[1] == 0 and got[2] == math.inf
    s_dev.copy_to_device(np.array([0.25, 0.5], dtype))  # a new scale, same launch arguments
    losses.l2_penalty(p_dev, n, s_dev, 1, st)
    assert st.copy_to_host()[0] == pytest.approx(st_ref[0] + (st_ref[0] - 1.0) / 6, rel=RTOL[dtype])


@kernel_test
@pytest.mark.skipif(ON_SIMULATOR, reason="local memory is a property of compiled GPU code; the simulator has none")
@pytest.mark.parametrize("dtype", [F32, F64])
def test_no_loss_kernel_spills_to_local_memory(dtype):
    from mlp.kernels import losses, softmax

    kernels = {**losses.selectable_kernels(dtype), **softmax.selectable_kernels(dtype, weighted=True)}
    spills = {name: kern.get_local_mem_per_thread() for name, kern in kernels.items()}
    assert {name: b for name, b in spills.items() if b} == {}


# ----------------------------------------------- the twins against PyTorch
def _torch_weighted_mean(per_row, w):
    return (per_row * w).sum() / w.sum()


def _torch_loss(torch, loss, z, t):
    """Per-row losses from PyTorch's functions."""
    F = torch.nn.functional
    if loss == "logistic":
        return F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(dim=1)
    if loss == "squared_error":
        return 0.5 * F.mse_loss(z, t, reduction="none").mean(dim=1)
    return (F.poisson_nll_loss(z, t, log_input=True, full=False, reduction="none")
            + torch.xlogy(t, t) - t).sum(dim=1)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("c", [1, 3, 10])
@pytest.mark.parametrize("loss", LOSSES)
def test_twins_match_pytorch(torch, rng, loss, c, weighted):
    n = 37
    z, t = _inputs(rng, loss, n, c, F64)
    w = _weights(rng, n, F64) if weighted else np.ones(n)
    dz, st = _twin(loss, z, t, w if weighted else None)
    zt = torch.tensor(z, requires_grad=True)
    mean = _torch_weighted_mean(_torch_loss(torch, loss, zt, torch.tensor(t)), torch.tensor(w))
    mean.backward()
    grad = zt.grad.numpy()
    if loss == "squared_error":
        # scikit-learn's delta for the squared error is w (z - t) / S: the gradient of its loss
        # (a mean over the C outputs) times C.  The twin follows scikit-learn.
        grad = grad * c
    assert st[STATS_LOSS_SUM] / n == pytest.approx(mean.item(), rel=1e-12)
    np.testing.assert_allclose(dz, grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("c", [1, 3, 10])
def test_softmax_twin_matches_pytorch(torch, rng, c, weighted):
    n = 37
    x = rng.standard_normal((n, c)) * 3
    labels = rng.integers(0, c, n).astype(np.int64)
    w = _weights(rng, n, F64) if weighted else np.ones(n)
    dl, st = _softmax_twin(x, labels, w if weighted else None)
    xt = torch.tensor(x, requires_grad=True)
    per_row = torch.nn.functional.cross_entropy(xt, torch.tensor(labels), reduction="none")
    mean = _torch_weighted_mean(per_row, torch.tensor(w))
    mean.backward()
    assert st[STATS_LOSS_SUM] / n == pytest.approx(mean.item(), rel=1e-12)
    assert st[STATS_CORRECT] == (x.argmax(axis=1) == labels).sum()
    np.testing.assert_allclose(dl, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


# -------------------------------- the twins against scikit-learn's MLP losses
@pytest.mark.parametrize("loss", ["log_loss", "binary_log_loss", "squared_error", "poisson"])
@pytest.mark.parametrize("weighted", [False, True])
def test_twins_reproduce_scikit_learns_loss_and_output_delta(rng, loss, weighted):
    """The batch loss scikit-learn's ``_backprop`` computes (before the L2 term) and its output delta
    ``w (out - y) / S``, for moderate logits (its probability clipping plays no part)."""
    from sklearn.neural_network._base import LOSS_FUNCTIONS, inplace_softmax

    n, c = 37, 3
    w = _weights(rng, n, F64) if weighted else None
    sw = np.ones(n) if w is None else w
    if loss == "log_loss":
        z = rng.standard_normal((n, c)) * 2
        labels = rng.integers(0, c, n).astype(np.int64)
        y, out = np.eye(c)[labels], z.copy()
        inplace_softmax(out)
        dz, st = _softmax_twin(z, labels, w)
    else:
        twin = {"binary_log_loss": "logistic", "squared_error": "squared_error", "poisson": "poisson"}[loss]
        z, y = _inputs(rng, twin, n, c, F64)
        out = {"logistic": expit, "squared_error": np.asarray, "poisson": np.exp}[twin](z)
        dz, st = _twin(twin, z, y, w)
    expected = LOSS_FUNCTIONS[loss](y, out, w)
    assert st[STATS_LOSS_SUM] / n == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(dz, sw[:, None] * (out - y) / sw.sum(), rtol=1e-12, atol=1e-15)


# ------------------------- scikit-learn's clipped log-losses (the estimators')
def _extreme(rng, loss, n, c, dtype):
    """Logits of 60 standard deviations, so that many probabilities fall below eps or above 1 - eps, with
    targets (labels for a softmax) the loss takes."""
    if loss == "softmax":
        return (rng.standard_normal((n, c)) * 60).astype(dtype), rng.integers(0, c, n).astype(np.int64)
    z, t = _inputs(rng, "logistic", n, c, dtype, scale=60.0)
    return z, t


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss", ["log_loss", "binary_log_loss"])
def test_clipped_twins_are_scikit_learns_log_losses_at_extreme_logits(rng, loss, weighted, dtype):
    """With ``clip`` the batch loss is the one scikit-learn's ``_backprop`` computes (its probabilities
    clipped to [eps, 1 - eps], in the data's dtype) wherever the logits are; the gradient is bit for bit the
    unclipped one.  Without, the exact loss is far larger on these logits."""
    from sklearn.neural_network._base import LOSS_FUNCTIONS, inplace_softmax

    n, c = 53, 3
    w = _weights(rng, n, dtype) if weighted else None
    if loss == "log_loss":
        z, labels = _extreme(rng, "softmax", n, c, dtype)
        y, out = np.eye(c, dtype=dtype)[labels], z.copy()
        inplace_softmax(out)
        dz, st = _softmax_twin(z, labels, w, clip=True)
        dz_exact, st_exact = _softmax_twin(z, labels, w)
    else:
        z, y = _extreme(rng, "logistic", n, c, dtype)
        out = expit(z)
        dz, st = _twin("logistic", z, y, w, clip=True)
        dz_exact, st_exact = _twin("logistic", z, y, w)
    assert out.dtype == dtype
    expected = float(LOSS_FUNCTIONS[loss](y, out, w))
    assert st[STATS_LOSS_SUM] / n == pytest.approx(expected, rel=1e-12 if dtype == F64 else 2e-6)
    assert st_exact[STATS_LOSS_SUM] > 1.5 * st[STATS_LOSS_SUM]  # the clip acted on these logits
    np.testing.assert_array_equal(dz, dz_exact)
    assert st[STATS_CORRECT] == st_exact[STATS_CORRECT]


@kernel_test
# the simulator's NumPy scalars warn where a float32 exp overflows to inf (as it does, silently, on a GPU)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss,c", [("softmax", 10), ("softmax", 40), ("logistic", 1), ("logistic", 33)])
def test_clipped_loss_kernels_match_their_twins(rng, small_grids, loss, c, weighted, dtype):
    n = 37
    z, t = _extreme(rng, loss, n, c, dtype)
    w = _weights(rng, n, dtype) if weighted else None
    eps = float(np.finfo(dtype).eps)
    if loss == "softmax":
        dz_ref, st_ref = _softmax_twin(z, t, w, step=2, clip=True)
        dz, st = _softmax_kernel_run(z, t, w, step=2, clip_eps=eps)
        dz_exact, st_exact = _softmax_kernel_run(z, t, w, step=2)
    else:
        dz_ref, st_ref = _twin(loss, z, t, w, step=2, clip=True)
        dz, st = _kernel_run(loss, z, t, w, step=2, clip_eps=eps)
        dz_exact, st_exact = _kernel_run(loss, z, t, w, step=2)
    np.testing.assert_allclose(dz, dz_ref, rtol=RTOL[dtype], atol=RTOL[dtype] / n)
    np.testing.assert_array_equal(dz, dz_exact)  # the gradient is never clipped
    _assert_stats_close(st, st_ref, RTOL[dtype])
    assert st_exact[STATS_LOSS_SUM] > 1.5 * st[STATS_LOSS_SUM]
