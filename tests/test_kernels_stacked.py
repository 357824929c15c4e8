"""The stacked operations (``mlp.kernels.stacked``) through the CUDA backend, against the NumPy backend's (their twins).

A stack's arrays have a leading model axis; the CUDA backend runs each
operation as one launch whose grid's y index is the model.  Every test
runs the same call on both backends, on a GPU or under Numba's CUDA
simulator, at small awkward shapes: 1 or 3 models, batches of 5 or 9 rows
of which some models use fewer (a padded last batch), 1, 3, 10 or 33
output columns, 37 parameters.  Some models are stopped (inactive): their
arrays must come back bitwise as they went in.  Outputs are pre-filled with
NaN, and the padding of the inputs (logits, targets and weights past a
model's rows) is NaN too, so that a padded row read or an output never
written shows up; padded gradient rows must be exactly zero.

Tolerances
----------
* float64: rtol 1e-12 (the same arithmetic; on a GPU the exponentials and
  logarithms differ from the CPU's in the last bit or two, and a multiply
  and add may fuse into one FMA).
* float32: rtol 8 ulp (``8 * eps``): each element is a handful of float32
  operations, each within 2 ulp of the CPU's on a GPU.  Gradient elements
  get an absolute tolerance of rtol times the model's largest gradient
  element: ``out(z) - t`` cancels, so its error is a few ulp of its
  operands, not of itself.
* Loss sums are float64 sums of float64 terms in another order: rtol as
  above; the Poisson loss also gets ``rtol * 4 * rows * C`` absolutely (near
  its minimum it is a small difference of terms of a few units).  Hit counts
  and the first non-finite step are exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _cases import matrix

from mlp.backends import cuda_status
from mlp.backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM
from mlp.kernels.scalars import adam_scalars, rmsprop_scalars, sgd_scalars
from mlp.backends.numpy_backend import NumpyBackend

F32, F64 = np.float32, np.float64
RTOL = {F32: 8 * float(np.finfo(F32).eps), F64: 1e-12}
OUTPUTS = ("softmax", "logistic", "identity", "exp")
NP = NumpyBackend()
P = 37  # parameters per model
N_DECAY = 30  # the first 30 are "weights" (decayed, penalised)

_usable, _why = cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _usable, reason=f"CUDA backend unavailable: {_why}")]


#: (models, batch rows, rows each model uses, which models are active): one model with a single row;
#: three models, one with a short batch, one stopped, one full
STACKS = {"one model": (1, 5, [1], [True]), "three models": (3, 9, [6, 4, 9], [True, False, True])}


def _stack(name):
    m, b, counts, active = STACKS[name]
    return m, b, np.array(counts, np.int64), np.array(active, bool)


def _rows(counts, active):
    """The stacked operations' ``rows``: each model's row count, -1 for a stopped model."""
    return np.where(active, counts, -1)


def _run_both(cuda, op, *arrays, **kwargs):
    """``op`` (a stacked operation's name) on the NumPy backend and on the CUDA backend with copies of
    the host arrays among ``arrays`` (other arguments, and ``kwargs`` such as the host array ``active``,
    are passed as they are); the arguments after the call, (twin's, CUDA's), and the launches made."""
    host = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
    getattr(NP, op)(*host, **kwargs)
    dev = [cuda.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays]
    before = cuda.launch_count
    getattr(cuda, op)(*dev, **kwargs)
    launches = cuda.launch_count - before
    return host, [cuda.to_numpy(a) if cuda.is_array(a) else a for a in dev], launches


def _assert_untouched(got, start, active):
    """Stopped models' rows of ``got`` are bitwise those of ``start``."""
    stopped = ~active
    np.testing.assert_array_equal(got[stopped].view(np.uint8), start[stopped].view(np.uint8))


def _assert_stats(got, ref, active, start, rtol, atol=0.0):
    for m in np.flatnonzero(active):
        assert got[m, STATS_LOSS_SUM] == pytest.approx(ref[m, STATS_LOSS_SUM], rel=rtol, abs=atol)
        assert got[m, STATS_CORRECT] == ref[m, STATS_CORRECT]
        assert got[m, STATS_FIRST_NONFINITE_STEP] == ref[m, STATS_FIRST_NONFINITE_STEP]
    _assert_untouched(got, start, active)


def _start_stats(m):
    """Distinct non-empty statistics per model, so that accumulation (not overwriting) is checked."""
    return np.array([[1.5 + i, 2.0 + i, 9.0 + i] for i in range(m)])


# ---------------------------------------------------------------- gather
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_take_rows_stacked_gathers_every_models_rows(cuda, rng, stack):
    m, b, _, _ = _stack(stack)
    X = rng.standard_normal((11, 7)).astype(F32)
    labels = rng.integers(0, 10, 11).astype(np.int64)
    idx = rng.integers(0, 11, (m, b)).astype(np.int64)
    (_, _, ref), (_, _, got), launches = _run_both(cuda, "_take_rows_stacked", X, idx, np.full((m, b, 7), np.nan, F32))
    np.testing.assert_array_equal(got, ref)
    assert launches == 1
    (_, _, ref), (_, _, got), _ = _run_both(cuda, "_take_rows_stacked", labels, idx, np.full((m, b), -1, np.int64))
    np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------- stats reset
@pytest.mark.parametrize("models", [1, 3, 70])
def test_fill_stacked_stats_empties_every_row_in_one_launch(cuda, small_grids, models):
    (ref,), (got,), launches = _run_both(cuda, "_fill_stacked_stats", _start_stats(models))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, NP.to_numpy(NP.new_stacked_stats(models)))
    assert launches == 1


# ---------------------------------------------------------------- losses
def _loss_inputs(rng, output, m, b, c, counts, dtype, weighted, scale=3.0):
    """Logits, targets and weights of a stack; everything past a model's rows is NaN (labels: out of range)."""
    z = (rng.standard_normal((m, b, c)) * scale).astype(dtype)
    if output == "softmax":
        t = rng.integers(0, c, (m, b)).astype(np.int64)
    elif output == "logistic":
        t = (rng.random((m, b, c)) < 0.5).astype(dtype)
        t[rng.random((m, b, c)) < 0.2] = 0.3
    elif output == "identity":
        t = (rng.standard_normal((m, b, c)) * 2).astype(dtype)
    else:
        z = (z / 3).astype(dtype)
        t = rng.poisson(2.0, (m, b, c)).astype(dtype)
        t[rng.random((m, b, c)) < 0.2] = 0.5
    w = None
    if weighted:
        w = (rng.random((m, b)) * 2).astype(dtype)
        w[rng.random((m, b)) < 0.3] = 0
        w[:, 0] = 0.5  # a positive sum, even for one row
    for i, r in enumerate(counts):
        z[i, r:] = np.nan
        if output == "softmax":
            t[i, r:] = c + 7
        else:
            t[i, r:] = np.nan
        if w is not None:
            w[i, r:] = np.nan
    return z, t, w


def _check_loss(cuda, rng, output, stack, c, dtype, weighted, grad=True, step=5, clip=False):
    m, b, counts, active = _stack(stack)
    # with clip, logits of 60 standard deviations: probabilities below eps and above 1 - eps abound
    z, t, w = _loss_inputs(rng, output, m, b, c, counts, dtype, weighted, scale=60.0 if clip else 3.0)
    dz0 = np.full((m, b, c), np.nan, dtype) if grad else None
    st0 = _start_stats(m)
    host = [dz0 if dz0 is None else dz0.copy(), st0.copy()]
    NP._loss_stacked(output, z, t, host[0], host[1], step, w, _rows(counts, active), clip)
    dev = [None if dz0 is None else cuda.asarray(dz0), cuda.asarray(st0)]
    before = cuda.launch_count
    cuda._loss_stacked(output, cuda.asarray(z), cuda.asarray(t), dev[0], dev[1], step,
                       None if w is None else cuda.asarray(w), _rows(counts, active), clip)
    assert cuda.launch_count - before == 1
    rtol = RTOL[dtype]
    st, st_ref = cuda.to_numpy(dev[1]), host[1]
    _assert_stats(st, st_ref, active, st0, rtol, atol=rtol * 4 * b * c if output == "exp" else 0.0)
    if not grad:
        return
    dz, dz_ref = cuda.to_numpy(dev[0]), host[0]
    for i in np.flatnonzero(active):
        r = counts[i]
        assert np.isfinite(dz[i, :r]).all(), f"model {i}: gradient elements never written"
        np.testing.assert_allclose(dz[i, :r], dz_ref[i, :r], rtol=rtol, atol=rtol * np.abs(dz_ref[i, :r]).max())
        assert (dz[i, r:] == 0).all() and (dz_ref[i, r:] == 0).all(), f"model {i}: padded gradient rows not zero"
    _assert_untouched(dz, dz0, active)


@pytest.mark.parametrize("dtype,output,c,stack,weighted", matrix([F32, F64], OUTPUTS, [1, 3, 10], sorted(STACKS),
                                                               [False, True]))
def test_loss_stacked_matches_its_twin(cuda, rng, small_grids, dtype, output, c, stack, weighted):
    _check_loss(cuda, rng, output, stack, c, dtype, weighted)


# the simulator's NumPy scalars warn where a float32 exp overflows to inf (as it does, silently, on a GPU)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype,output,c,stack,weighted", matrix([F32, F64], ["softmax", "logistic"], [1, 10, 40],
                                                               sorted(STACKS), [False, True]))
def test_clipped_loss_stacked_matches_its_twin(cuda, rng, small_grids, dtype, output, c, stack, weighted):
    """scikit-learn's log-losses (the estimators' stacks), at logits where its clipping acts."""
    _check_loss(cuda, rng, output, stack, c, dtype, weighted, clip=True)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_loss_stacked_with_a_row_wider_than_a_warp(cuda, rng, dtype, output):
    """33 columns: softmax's TX-threads-per-row mapping, and a full warp per row with one column wrapping."""
    _check_loss(cuda, rng, output, "three models", 33, dtype, True)


@pytest.mark.parametrize("output", OUTPUTS)
def test_loss_stacked_without_a_gradient_only_accumulates(cuda, rng, output):
    _check_loss(cuda, rng, output, "three models", 3, F64, True, grad=False)


@pytest.mark.parametrize("output", ["softmax", "logistic"])
def test_an_active_model_without_rows_gets_a_zero_gradient_and_no_statistics(cuda, rng, output):
    counts, active = np.array([0, 4], np.int64), np.array([True, True])
    z, t, _ = _loss_inputs(rng, output, 2, 5, 3, counts, F64, False)
    dz, stats = cuda.asarray(np.full((2, 5, 3), np.nan)), cuda.asarray(_start_stats(2))
    cuda._loss_stacked(output, cuda.asarray(z), cuda.asarray(t), dz, stats, 1, None, _rows(counts, active))
    assert (cuda.to_numpy(dz)[0] == 0).all() and np.isfinite(cuda.to_numpy(dz)[1]).all()
    np.testing.assert_array_equal(cuda.to_numpy(stats)[0], _start_stats(2)[0])


def test_a_non_finite_loss_marks_only_its_own_model(cuda):
    """Model 0's row 1 has a NaN logit: its statistics record the step, model 2's do not."""
    m, b, counts, active = _stack("three models")
    z = np.zeros((m, b, 3))
    z[0, 1, 2] = np.nan
    labels = np.zeros((m, b), np.int64)
    stats = cuda.asarray(_start_stats(m))
    cuda._loss_stacked("softmax", cuda.asarray(z), cuda.asarray(labels), None, stats, 4, None, _rows(counts, active))
    got = cuda.to_numpy(stats)
    assert got[0, STATS_FIRST_NONFINITE_STEP] == 4 and math.isnan(got[0, STATS_LOSS_SUM])
    assert got[2, STATS_FIRST_NONFINITE_STEP] == _start_stats(m)[2, STATS_FIRST_NONFINITE_STEP]
    assert np.isfinite(got[2, STATS_LOSS_SUM])


# ------------------------------------------------- L2 penalty, optimizers
def _params(rng, m, dtype):
    return rng.standard_normal((m, P)).astype(dtype)


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_l2_penalty_stacked_matches_its_twin(cuda, rng, small_grids, dtype, stack):
    m, _, counts, active = _stack(stack)
    scales = rng.random((m, 4)).astype(dtype)
    st0 = _start_stats(m)
    (*_, ref), (*_, got), launches = _run_both(
        cuda, "_l2_penalty_stacked", _params(rng, m, dtype), N_DECAY, scales, 2, st0, rows=_rows(counts, active))
    _assert_stats(got, ref, active, st0, RTOL[dtype])
    assert launches == 1
    assert (got[active, STATS_LOSS_SUM] > st0[active, STATS_LOSS_SUM]).all()


def _tables(rng, m, rows, make, dtype):
    """(M, rows, columns): every model its own hyperparameters, every row its own step."""
    return np.array([[make(rng, step) for step in range(1, rows + 1)] for _ in range(m)]).astype(dtype)


def _check_update(cuda, op, arrays, table, active, dtype, **kwargs):
    """Run an update on both backends; parameters and state must agree, stopped models untouched.  Model m
    trains when ``active[m]`` (its rows are not read by an update: 1 here)."""
    start = [a.copy() for a in arrays if a is not None]
    ref, got, launches = _run_both(cuda, op, *arrays, table, 1, **kwargs, n_decay=N_DECAY,
                                   rows=_rows(np.ones(len(active), np.int64), active))
    assert launches == 1
    for a0, r, g in zip(start, [a for a in ref if a is not None], [a for a in got if a is not None]):
        np.testing.assert_allclose(g[active], r[active], rtol=RTOL[dtype], atol=RTOL[dtype])
        _assert_untouched(g, a0, active)
    assert not np.array_equal(ref[0][active], start[0][active])  # the parameters moved


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_sgd_step_stacked_matches_its_twin(cuda, rng, small_grids, dtype, stack, nesterov, momentum):
    m, _, _, active = _stack(stack)
    table = _tables(rng, m, 3, lambda r, s: sgd_scalars(r.uniform(0.01, 0.2), r.uniform(0.5, 0.95) * momentum,
                                                        r.uniform(0, 0.1), r.uniform(0.5, 0.95)), dtype)
    buf = _params(rng, m, dtype) if momentum else None
    _check_update(cuda, "_sgd_step_stacked", [_params(rng, m, dtype), _params(rng, m, dtype), buf], table, active,
                  dtype, nesterov=nesterov)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_adam_step_stacked_matches_its_twin(cuda, rng, small_grids, dtype, stack, decoupled):
    m, _, _, active = _stack(stack)
    table = _tables(rng, m, 3, lambda r, s: adam_scalars(r.uniform(1e-3, 1e-1), r.uniform(0.8, 0.95),
                                                         r.uniform(0.99, 0.999), 1e-8, s, r.uniform(0, 0.1)), dtype)
    exp_avg = _params(rng, m, dtype) * 0.1
    exp_avg_sq = np.abs(_params(rng, m, dtype)) * 0.01
    _check_update(cuda, "_adam_step_stacked", [_params(rng, m, dtype), _params(rng, m, dtype), exp_avg, exp_avg_sq],
                  table, active, dtype, decoupled=decoupled)


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_rmsprop_step_stacked_matches_its_twin(cuda, rng, small_grids, dtype, stack, momentum):
    m, _, _, active = _stack(stack)
    table = _tables(rng, m, 3, lambda r, s: rmsprop_scalars(r.uniform(1e-3, 1e-1), r.uniform(0.8, 0.99), 1e-8,
                                                            r.uniform(0.5, 0.95) * momentum, r.uniform(0, 0.1)), dtype)
    square_avg = np.abs(_params(rng, m, dtype)) * 0.01
    buf = _params(rng, m, dtype) if momentum else None
    _check_update(cuda, "_rmsprop_step_stacked", [_params(rng, m, dtype), _params(rng, m, dtype), square_avg, buf],
                  table, active, dtype)


def test_rows_on_the_device_are_read_there(cuda, rng):
    """A stack passes each step's row of its device ``rows`` table (what a captured epoch reads): the same
    update as with the host array, and a model marked -1 there is left alone."""
    m, _, counts, active = _stack("three models")
    table = _tables(rng, m, 3, lambda r, s: sgd_scalars(0.1, 0.9, 0.01, 0.0), F64)
    p0, g = _params(rng, m, F64), _params(rng, m, F64)
    got = {}
    for where in ("host", "device"):
        rows = _rows(counts, active)
        p = cuda.asarray(p0)
        cuda._sgd_step_stacked(p, cuda.asarray(g), None, cuda.asarray(table), 1, False, N_DECAY,
                               cuda.asarray(rows) if where == "device" else rows)
        got[where] = cuda.to_numpy(p)
    np.testing.assert_array_equal(got["device"], got["host"])
    _assert_untouched(got["device"], p0, active)
    assert not np.array_equal(got["device"][active], p0[active])
