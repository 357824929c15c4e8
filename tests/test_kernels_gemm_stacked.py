"""The stacked affine products (``mlp.kernels.gemm_stacked``) against their twin, the NumPy backend's
single-model ``_affine_forward`` / ``_affine_backward`` applied model by model to each model's first rows.

Runs on a GPU or under Numba's CUDA simulator, at small awkward shapes: one
model with a single row, or three models of 9 rows of which one uses 6, one
is stopped and one uses all 9; layers of 1 x 7, 13 x 1, 33 x 13 and 7 x 33
(inputs x outputs), which cross the edges of the simulator's 8 x 8 tile and
of its 4-deep slices; every activation, float32 and float64, with and
without dx, with and without y (the output layer).  On a GPU every tile
configuration runs them, with a stack of 150-row batches and a 70 x 130
layer added, which span several of the large tiles.

The layer sits inside a parameter buffer between other values (its weights
at offset 5, its bias 3 further on past them): everything of ``params``
outside the layer is NaN, so a read there would show, and everything of
``grads`` outside the layer keeps its start value bitwise.  The inputs past
a model's rows, and all of a stopped model's, are NaN.  Outputs start as a
finite sentinel rather than NaN: an output written where it must not be
would be computed from those NaN inputs, and a NaN written over a NaN would
not show.  Every output a model owns is compared with the twin (one left
at the sentinel fails), every other one must keep its start bits.

Tolerances
----------
Each output element is a K-term dot product (K: in for the forward product,
out for dx, the model's rows for dW).  Computed in floating point in any
order, with or without fused multiply-adds, its error is at most
``gamma_K * (|a| . |b|)``, ``gamma_K = K*u / (1 - K*u)``, u the unit
roundoff (Higham's forward error bound for a dot product).  Per side the
test allows ``K * eps`` with ``eps = 2u`` (``np.finfo``), which covers
gamma_K with room to spare; the kernel and the twin each carry such an
error, so they may differ by twice that, elementwise.
Added to K: 16 for the other elementwise steps, whose error is relative
to the same magnitudes: the bias (one addition), and ``dy * f'(y)``, where
the GPU may fuse ``1 - y*y`` into one FMA (tanh): y is drawn as ``tanh(z)``
with ``|z| <= 2``, so ``1 - y*y >= 0.07`` and the rounding of ``y*y`` costs
at most 14 u relative to g.  The activation of the forward product is
1-Lipschitz (logistic 1/4), so the bound passes through it, plus 4 ulp of
the result for the device's tanh and exp.  db is a float64 sum of g on both
sides, within the same bound with K = the batch's rows.  The bound serves
float32 and float64 alike (for float64 about 1e-14 relative at these
sizes).  Under the simulator the arithmetic is the CPU's; on a GPU the
bound covers the other order of the sums and the fused multiply-adds.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cases import matrix
from conftest import ON_SIMULATOR

from mlp.backends import cuda_status
from mlp.backends.base import ACTIVATIONS
from mlp.backends.numpy_backend import NumpyBackend

_usable, _why = cuda_status()
if not _usable:
    pytest.skip(f"CUDA backend unavailable: {_why}", allow_module_level=True)

from numba import cuda  # noqa: E402

from mlp.kernels import gemm_stacked  # noqa: E402

pytestmark = pytest.mark.gpu

F32, F64 = np.float32, np.float64
IDENTITY, RELU, TANH, LOGISTIC = (ACTIVATIONS.index(a) for a in ("identity", "relu", "tanh", "logistic"))
#: (models, batch rows, rows each model uses, which models train)
STACKS = {"one model, one row": (1, 1, [1], [True]), "three models": (3, 9, [6, 4, 9], [True, False, True])}
#: (inputs, outputs) of the layer
LAYERS = [(1, 7), (13, 1), (33, 13), (7, 33)]
#: the tile configurations the products run with: the simulator's small one; on a GPU every one, with
#: a batch and a layer that span several of the large tiles too
TILE_NAMES = ["8x8"]
if not ON_SIMULATOR:
    STACKS["three models, long batches"] = (3, 150, [150, 97, 1], [True, False, True])
    LAYERS += [(70, 130)]
    TILE_NAMES = sorted(gemm_stacked.TILES)
SENTINEL = -7.75
W_OFF, GAP, TAIL = 5, 3, 4  # the layer's place in its parameter buffer
EXTRA_SLACK = 16  # ulp of the elementwise steps, see the module docstring
NP = NumpyBackend()


def _case_id(value):
    """Test ids: a layer as ``inxout``, other values as pytest names them."""
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else None


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def _host(d):
    return d.copy_to_host()


def _rows(stack):
    """The launchers' ``rows`` of a stack (-1 for a stopped model), and its models and batch rows."""
    m, b, counts, active = STACKS[stack]
    return np.where(active, counts, -1).astype(np.int64), m, b


def _layer_buffer(rng, m, n_in, n_out, dtype):
    """params (M, P): the layer's weights at ``W_OFF`` and bias at ``b_off``, NaN around them; and b_off."""
    b_off = W_OFF + n_in * n_out + GAP
    params = np.full((m, b_off + n_out + TAIL), np.nan, dtype)
    params[:, W_OFF:W_OFF + n_in * n_out] = rng.standard_normal((m, n_in * n_out)) / np.sqrt(n_in)
    params[:, b_off:b_off + n_out] = rng.standard_normal((m, n_out))
    return params, b_off


def _layer(params, m, b_off, n_in, n_out):
    """Model m's (W, b): views of ``params``."""
    return params[m, W_OFF:W_OFF + n_in * n_out].reshape(n_in, n_out), params[m, b_off:b_off + n_out]


def _batch(rng, rows, shape, dtype, make=None):
    """(M, B, C) values (``make(z)`` of normal draws), NaN past each model's rows and for stopped models."""
    z = rng.standard_normal(shape)
    a = (z if make is None else make(np.clip(z, -2, 2))).astype(dtype)
    for i, r in enumerate(rows):
        a[i, max(r, 0):] = np.nan
    return a


def _outputs_of(act):
    """The layer outputs y as the forward product would give them (y = f(z))."""
    return {IDENTITY: lambda z: z, RELU: lambda z: np.maximum(z, 0), TANH: np.tanh,
            LOGISTIC: lambda z: 1 / (1 + np.exp(-z))}[act]


def _bound(k, magnitude, ref, dtype):
    """Twice the forward error bound of a k-term dot product of that ``magnitude`` (see the module docstring)."""
    eps = float(np.finfo(dtype).eps)
    return 2 * (k + EXTRA_SLACK) * eps * magnitude + 4 * eps * np.abs(ref.astype(F64))


def _assert_matches(got, ref, start, owned, tol, what):
    """``got`` within ``tol`` of ``ref`` where ``owned``, and bitwise ``start`` elsewhere."""
    err = np.abs(got.astype(F64) - ref.astype(F64))
    bad = owned & ~(err <= tol)
    assert not bad.any(), (f"{what}: {bad.sum()} of {owned.sum()} elements off; first at {np.argwhere(bad)[0]}: "
                           f"got {got[bad][0]}, twin {ref[bad][0]}, tolerance {tol[bad][0]}")
    np.testing.assert_array_equal(got[~owned].view(np.uint8), start[~owned].view(np.uint8),
                                  err_msg=f"{what}: elements outside the owned ones were written")


def _training(rows):
    """``(model, its rows)`` of each model that trains (``rows[m] >= 0``)."""
    return [(i, int(r)) for i, r in enumerate(rows) if r >= 0]


def _row_mask(rows, shape):
    """True on each training model's first rows of an (M, B, C) array."""
    owned = np.zeros(shape, bool)
    for i, r in _training(rows):
        owned[i, :r] = True
    return owned


def _forward_case(rng, stack, n_in, n_out, dtype):
    rows, m, b = _rows(stack)
    params, b_off = _layer_buffer(rng, m, n_in, n_out, dtype)
    x = _batch(rng, rows, (m, b, n_in), dtype)
    return rows, params, b_off, x


def _forward_twin(rows, params, b_off, x, act, out0):
    n_in, n_out = x.shape[2], out0.shape[2]
    ref = out0.copy()
    magnitude = np.zeros(out0.shape)
    for i, r in _training(rows):
        W, b = _layer(params, i, b_off, n_in, n_out)
        NP._affine_forward(x[i, :r], W, b, act, ref[i, :r])
        magnitude[i, :r] = np.abs(x[i, :r].astype(F64)) @ np.abs(W.astype(F64)) + np.abs(b.astype(F64))
    return ref, magnitude


def _check_forward(rng, stack, n_in, n_out, dtype, act, tile=None, rows_on_device=True):
    rows, params, b_off, x = _forward_case(rng, stack, n_in, n_out, dtype)
    out0 = np.full(x.shape[:2] + (n_out,), SENTINEL, dtype)
    ref, magnitude = _forward_twin(rows, params, b_off, x, act, out0)
    out = _dev(out0)
    launches = gemm_stacked.affine_forward(_dev(x), _dev(params), W_OFF, b_off, act, out,
                                           _dev(rows) if rows_on_device else rows, tile=tile)
    assert launches == 1
    _assert_matches(_host(out), ref, out0, _row_mask(rows, out0.shape), _bound(n_in, magnitude, ref, dtype),
                    "forward")


def _backward_case(rng, stack, n_in, n_out, dtype, act, with_y):
    rows, params, b_off, x = _forward_case(rng, stack, n_in, n_out, dtype)
    m, b = x.shape[:2]
    dy = _batch(rng, rows, (m, b, n_out), dtype)
    y = _batch(rng, rows, (m, b, n_out), dtype, _outputs_of(act)) if with_y else None
    return rows, params, b_off, x, dy, y


def _derivative(act, y):
    y = y.astype(F64)
    return {IDENTITY: np.ones_like(y), RELU: (y > 0).astype(F64), TANH: 1 - y * y, LOGISTIC: y * (1 - y)}[act]


def _backward_twin(rows, params, b_off, x, dy, y, act, grads0, dx0):
    """The twin's grads and dx, and the magnitudes of their dot products (dW, db, dx)."""
    n_in, n_out = x.shape[2], dy.shape[2]
    grads, dx = grads0.copy(), None if dx0 is None else dx0.copy()
    mag_grads, mag_dx = np.zeros(grads0.shape), np.zeros(x.shape)
    for i, r in _training(rows):
        W, _ = _layer(params, i, b_off, n_in, n_out)
        dW, db = _layer(grads, i, b_off, n_in, n_out)
        NP._affine_backward(dy[i, :r], x[i, :r], W, None if y is None else y[i, :r], None if dx is None else dx[i, :r],
                            dW, db, act)
        g = np.abs(dy[i, :r].astype(F64)) * (1.0 if y is None else np.abs(_derivative(act, y[i, :r])))
        mdW, mdb = _layer(mag_grads, i, b_off, n_in, n_out)
        mdW[...] = np.abs(x[i, :r].astype(F64)).T @ g
        mdb[...] = g.sum(axis=0)
        mag_dx[i, :r] = g @ np.abs(W.astype(F64)).T
    return grads, dx, mag_grads, mag_dx


def _grads_mask(rows, shape, b_off, n_in, n_out):
    """True on the layer's weights and bias of each training model."""
    owned = np.zeros(shape, bool)
    for i, _ in _training(rows):
        owned[i, W_OFF:W_OFF + n_in * n_out] = True
        owned[i, b_off:b_off + n_out] = True
    return owned


def _check_backward(rng, stack, n_in, n_out, dtype, act, with_dx, with_y, tile=None, rows_on_device=True):
    rows, params, b_off, x, dy, y = _backward_case(rng, stack, n_in, n_out, dtype, act, with_y)
    grads0 = (rng.standard_normal(params.shape) * 100).astype(dtype)  # distinct start values, bitwise checked
    dx0 = np.full(x.shape, SENTINEL, dtype) if with_dx else None
    ref_grads, ref_dx, mag_grads, mag_dx = _backward_twin(rows, params, b_off, x, dy, y, act, grads0, dx0)
    grads, dx = _dev(grads0), None if dx0 is None else _dev(dx0)
    launches = gemm_stacked.affine_backward(_dev(dy), _dev(x), _dev(params), None if y is None else _dev(y), dx,
                                            grads, W_OFF, b_off, act, _dev(rows) if rows_on_device else rows,
                                            tile=tile)
    assert launches == (2 if with_dx else 1)
    k_grads = max(dy.shape[1], 1)  # dW and db sum over at most the batch's rows
    _assert_matches(_host(grads), ref_grads, grads0, _grads_mask(rows, grads0.shape, b_off, n_in, n_out),
                    _bound(k_grads, mag_grads, ref_grads, dtype), "dW, db")
    if with_dx:
        _assert_matches(_host(dx), ref_dx, dx0, _row_mask(rows, dx0.shape), _bound(n_out, mag_dx, ref_dx, dtype),
                        "dx")


# ------------------------------------------------------------------ against the twin
@pytest.mark.parametrize("dtype,activation,stack,layer,tile",
                         matrix([F32, F64], ACTIVATIONS, sorted(STACKS), LAYERS, TILE_NAMES), ids=_case_id)
def test_forward_matches_its_twin(rng, dtype, activation, stack, layer, tile):
    _check_forward(rng, stack, *layer, dtype, ACTIVATIONS.index(activation), tile=tile)


@pytest.mark.parametrize("dtype,activation,stack,layer,with_dx,with_y,tile",
                         matrix([F32, F64], ACTIVATIONS, sorted(STACKS), LAYERS, [True, False], [True, False],
                                TILE_NAMES), ids=_case_id)
def test_backward_matches_its_twin(rng, dtype, activation, stack, layer, with_dx, with_y, tile):
    _check_backward(rng, stack, *layer, dtype, ACTIVATIONS.index(activation), with_dx, with_y, tile=tile)


@pytest.mark.parametrize("tile", ["64x64", "32x64"])
def test_the_gpu_tiles_match_the_twin(rng, tile):
    """The 256-thread tiles (a real GPU's): one partial tile per model, a reduction of several slices."""
    _check_forward(rng, "three models", 33, 13, F32, TANH, tile=tile)
    _check_backward(rng, "three models", 33, 13, F64, RELU, True, True, tile=tile)


def test_rows_from_the_host_give_the_same_result(rng):
    """``rows`` as a host array is copied to the device; the results are those of a device ``rows``."""
    _check_forward(rng, "three models", 7, 13, F64, LOGISTIC, rows_on_device=False)
    _check_backward(rng, "three models", 13, 7, F32, TANH, True, True, rows_on_device=False)


def test_a_repeated_call_allocates_nothing(rng, monkeypatch):
    """After the first call of a shape the launchers allocate no device memory (a CUDA graph could capture
    them); with host ``rows`` they reuse one device buffer per (stream, M)."""
    rows, params, b_off, x, dy, y = _backward_case(rng, "three models", 7, 13, F32, TANH, True)
    args = [_dev(a) for a in (x, params, dy, y, np.zeros(x.shape[:2] + (13,), F32), np.zeros(x.shape, F32),
                              np.zeros(params.shape, F32))]
    d_x, d_params, d_dy, d_y, d_out, d_dx, d_grads = args

    def both(rows_arg):
        gemm_stacked.affine_forward(d_x, d_params, W_OFF, b_off, TANH, d_out, rows_arg)
        gemm_stacked.affine_backward(d_dy, d_x, d_params, d_y, d_dx, d_grads, W_OFF, b_off, TANH, rows_arg)

    d_rows = _dev(rows)
    both(d_rows)
    both(rows)

    allocations = []

    def record(name):
        real = getattr(cuda, name)

        def allocate(*args, **kwargs):
            allocations.append(name)
            return real(*args, **kwargs)
        return allocate

    for name in ("device_array", "to_device", "device_array_like", "pinned_array", "mapped_array"):
        monkeypatch.setattr(cuda, name, record(name))
    both(d_rows)
    both(rows)
    assert allocations == [], f"device memory allocated by a repeated launch: {allocations}"


def test_a_training_model_without_rows_gets_zero_gradients(rng):
    """rows 0 (a model that trains on no row): dW = 0 and db = 0, no output row written."""
    rows = np.array([0, 3], np.int64)
    n_in, n_out = 7, 9
    params, b_off = _layer_buffer(rng, 2, n_in, n_out, F64)
    x = _batch(rng, rows, (2, 4, n_in), F64)
    dy = _batch(rng, rows, (2, 4, n_out), F64)
    grads0 = rng.standard_normal(params.shape)
    dx0 = np.full(x.shape, SENTINEL)
    ref_grads, ref_dx, mag_grads, mag_dx = _backward_twin(rows, params, b_off, x, dy, None, IDENTITY, grads0, dx0)
    grads, dx = _dev(grads0), _dev(dx0)
    gemm_stacked.affine_backward(_dev(dy), _dev(x), _dev(params), None, dx, grads, W_OFF, b_off, RELU, _dev(rows))
    got = _host(grads)
    dW0, db0 = _layer(got, 0, b_off, n_in, n_out)
    assert (dW0 == 0).all() and (db0 == 0).all()
    _assert_matches(got, ref_grads, grads0, _grads_mask(rows, got.shape, b_off, n_in, n_out),
                    _bound(4, mag_grads, ref_grads, F64), "dW, db")
    _assert_matches(_host(dx), ref_dx, dx0, _row_mask(rows, dx0.shape), _bound(n_out, mag_dx, ref_dx, F64), "dx")


def test_a_layer_without_inputs_outputs_its_activated_bias(rng):
    """in = 0: ``x @ W`` is empty, so out = f(b), as the twin gives."""
    rows = np.array([2, -1], np.int64)
    params, b_off = _layer_buffer(rng, 2, 0, 5, F64)
    x = np.zeros((2, 3, 0))
    out0 = np.full((2, 3, 5), SENTINEL)
    ref, magnitude = _forward_twin(rows, params, b_off, x, TANH, out0)
    out = _dev(out0)
    assert gemm_stacked.affine_forward(_dev(x), _dev(params), W_OFF, b_off, TANH, out, _dev(rows)) == 1
    _assert_matches(_host(out), ref, out0, _row_mask(rows, out0.shape), _bound(0, magnitude, ref, F64), "forward")


# ------------------------------------------------------------------ limits and launches
def test_empty_outputs_launch_nothing():
    rows = _dev(np.zeros(2, np.int64))
    params = _dev(np.zeros((2, 20)))
    no_batch, no_outputs = _dev(np.zeros((2, 0, 3))), _dev(np.zeros((2, 4, 0)))
    x = _dev(np.zeros((2, 4, 3)))
    assert gemm_stacked.affine_forward(no_batch, params, 0, 9, RELU, _dev(np.zeros((2, 0, 4))), rows) == 0
    assert gemm_stacked.affine_forward(x, params, 0, 9, RELU, no_outputs, rows) == 0
    assert gemm_stacked.affine_backward(no_outputs, x, params, None, x, params, 0, 9, RELU, rows) == 0


def test_more_models_than_the_grid_holds_raise_before_launching():
    with pytest.raises(ValueError, match="models.*65535.*65536"):
        gemm_stacked.check_models(65536)
    gemm_stacked.check_models(65535)
    many = np.zeros((65536, 1, 1))  # host arrays: the check must come before any launch or copy
    params, rows = np.zeros((65536, 2)), np.ones(65536, np.int64)
    with pytest.raises(ValueError, match="models"):
        gemm_stacked.affine_forward(many, params, 0, 1, RELU, many, rows)
    with pytest.raises(ValueError, match="models"):
        gemm_stacked.affine_backward(many, many, params, None, None, params, 0, 1, RELU, rows)


@pytest.mark.parametrize("args,match", [((F64, "dw", 4, "8x8"), "act"), ((F64, "dz", 1, "8x8"), "product"),
                                        ((F64, "dx", 1, "9x9"), "tile")])
def test_the_kernel_factory_names_a_bad_argument(args, match):
    with pytest.raises(ValueError, match=match):
        gemm_stacked.stacked_gemm_kernel(*args)
    with pytest.raises(TypeError, match="float32 or float64"):
        gemm_stacked.stacked_gemm_kernel(np.int32, "dx", 1, "8x8")
