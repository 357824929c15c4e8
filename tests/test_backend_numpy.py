"""The NumPy backend: every operation against plain formulas and finite differences (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlp.backends import get_backend
from mlp.backends.base import ACTIVATIONS, activation_code
from mlp.backends.numpy_backend import NumpyBackend

be = NumpyBackend()


def numeric_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of a (in place)."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_forward_matches_formula(relu, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 5)).astype(dtype)
    W = rng.standard_normal((5, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    out = be.affine_forward(x, W, b, relu)
    ref = x.astype(np.float64) @ W + b
    if relu:
        ref = np.maximum(ref, 0)
    assert out.dtype == dtype and out.shape == (7, 3)
    # float32: a 5-term dot product, error ~ a few ulp of the largest term
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("activation", [*ACTIVATIONS, True, False])
def test_affine_backward_gradcheck(activation):
    """dx, dW, db of L = sum(G * layer(x)) match central differences in float64, for every activation
    (and the bools that name relu and identity)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4))
    W = rng.standard_normal((4, 5))
    b = rng.standard_normal(5) * 0.1
    G = rng.standard_normal((6, 5))

    def loss() -> float:
        return float(np.sum(G * be.affine_forward(x, W, b, activation)))

    y = be.affine_forward(x, W, b, activation)
    dx, dW, db = be.affine_backward(G, x, W, y=y, activation=activation)
    # step 1e-6 in float64: truncation and rounding error ~1e-9 relative
    for got, wrt in ((dx, x), (dW, W), (db, b)):
        assert rel_err(got, numeric_grad(loss, wrt)) < 1e-7


# Twins against PyTorch: y = f(x @ W + b) and, by autograd, the gradients of
# sum(G * y).  float64: both sides are BLAS products (K <= 19 terms, summed in
# possibly different orders) followed by one elementwise function, so they
# agree to a few ulp of the largest term: rtol 1e-12 with atol 1e-13 for
# elements that cancel to near zero.  float32, the same argument with
# eps = 6e-8: relative Frobenius error < 1e-5.
TORCH_SHAPES = [(1, 5, 3), (7, 19, 17), (33, 5, 17), (33, 19, 3)]


def _torch_layer(torch, activation, x, W, b, G):
    """``y = f(x @ W + b)`` and the gradients of ``sum(G * y)`` with respect to x, W, b, by PyTorch."""
    f = {"identity": lambda z: z, "relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid}[activation]
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    y = f(xt @ Wt + bt)
    (y * torch.tensor(G)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("shape", TORCH_SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_affine_twins_match_torch_float64(torch, activation, shape):
    batch, k, m = shape
    rng = np.random.default_rng(k * 100 + m)
    x, W, b, G = (rng.standard_normal(s) for s in ((batch, k), (k, m), (m,), (batch, m)))
    y_ref, dx_ref, dW_ref, db_ref = _torch_layer(torch, activation, x, W, b, G)
    y = be.affine_forward(x, W, b, activation, out=np.full((batch, m), np.nan))
    dx, dW, db = be.affine_backward(G, x, W, y, activation=activation, dx_out=np.full((batch, k), np.nan),
                                    dW_out=np.full((k, m), np.nan), db_out=np.full(m, np.nan))
    for got, ref in ((y, y_ref), (dx, dx_ref), (dW, dW_ref), (db, db_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_affine_twins_match_torch_float32(torch, activation):
    rng = np.random.default_rng(7)
    x, W, b, G = (rng.standard_normal(s).astype(np.float32) for s in ((33, 19), (19, 17), (17,), (33, 17)))
    refs = _torch_layer(torch, activation, x, W, b, G)
    y = be.affine_forward(x, W, b, activation)
    got = (y, *be.affine_backward(G, x, W, y, activation=activation))
    for g, ref in zip(got, refs):
        assert g.dtype == np.float32
        assert rel_err(g.astype(np.float64), ref.astype(np.float64)) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturating_twins_stay_finite_and_exact_at_extreme_inputs(dtype):
    """Pre-activations of +-1000 (exp overflows float32 beyond 88, float64 beyond 709): the outputs are the
    exact limits, the derivatives exactly 0, nothing is inf or NaN."""
    z = np.array([1000, -1000, 100, -100, 0, 20, -20], dtype=dtype)[:, None]
    W, b = np.ones((1, 2), dtype), np.zeros(2, dtype)  # x @ W + b reproduces z exactly
    limits = {"logistic": (1, 0), "tanh": (1, -1)}
    for activation, (hi, lo) in limits.items():
        y = be.affine_forward(z, W, b, activation)
        assert np.isfinite(y).all()
        np.testing.assert_array_equal(y[:2], [[hi, hi], [lo, lo]])
        dx, _, db = be.affine_backward(np.ones_like(y), z, W, y, activation=activation)
        assert np.isfinite(dx).all() and np.isfinite(db).all()
        np.testing.assert_array_equal(dx[:2], 0)


def test_saturating_twins_match_pytorch_at_extreme_inputs(torch):
    """The pre-activations above, in float64, through the logistic and tanh twins and PyTorch's functions."""
    z = np.array([1000, -1000, 100, -100, 0, 20, -20], dtype=np.float64)[:, None]
    W, b = np.ones((1, 1)), np.zeros(1)  # x @ W + b reproduces z exactly
    for activation, f in (("logistic", torch.sigmoid), ("tanh", torch.tanh)):
        y = be.affine_forward(z, W, b, activation)
        # a few ulp: exp and tanh are not correctly rounded, on either side
        np.testing.assert_allclose(y[:, 0], f(torch.tensor(z[:, 0])).numpy(), rtol=1e-14, atol=0)


def test_activation_code_names_bools_and_errors():
    assert [activation_code(a) for a in ACTIVATIONS] == [0, 1, 2, 3]
    assert activation_code(True) == activation_code(np.bool_(True)) == ACTIVATIONS.index("relu")
    assert activation_code(False) == ACTIVATIONS.index("identity")
    with pytest.raises(ValueError, match=r"activation: expected one of \('identity', 'relu', 'tanh', 'logistic'\)"
                                         r" \(or a bool\), got 'sigmoid'"):
        activation_code("sigmoid")
    with pytest.raises(TypeError, match=r"hidden: expected one of .* got int 2"):
        activation_code(2, "hidden")


def test_affine_backward_activation_and_y():
    """None means relu with y and identity without; the identity ignores y; the others need it."""
    rng = np.random.default_rng(8)
    dy, x, W = rng.standard_normal((4, 3)), rng.standard_normal((4, 2)), rng.standard_normal((2, 3))
    y = rng.uniform(-1, 1, (4, 3))  # f'(y) differs from 1 (and from [y > 0]) for every f
    _, _, db = be.affine_backward(dy, x, W, y)
    np.testing.assert_allclose(db, (dy * (y > 0)).sum(0), rtol=1e-12)
    _, _, db = be.affine_backward(dy, x, W)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-12)
    _, _, db = be.affine_backward(dy, x, W, y, activation="identity")
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-12)
    _, _, db = be.affine_backward(dy, x, W, y, activation="tanh")
    np.testing.assert_allclose(db, (dy * (1 - y * y)).sum(0), rtol=1e-12)
    for activation in ("relu", "tanh", "logistic", True):
        with pytest.raises(ValueError, match=r"y: activation '\w+' needs this layer's output y"):
            be.affine_backward(dy, x, W, activation=activation)
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        be.affine_backward(dy, x, W, y, activation="softmax")
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        be.affine_forward(x, W, np.zeros(3), "softplus")
    with pytest.raises(TypeError, match=r"activation: expected one of"):
        be.affine_forward(x, W, np.zeros(3), None)


def test_affine_backward_does_not_modify_dy_and_skips_dx():
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((4, 3))
    y = np.maximum(rng.standard_normal((4, 3)), 0)
    dy_before = dy.copy()
    dx, dW, db = be.affine_backward(dy, rng.standard_normal((4, 2)), rng.standard_normal((2, 3)), y=y,
                                    need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dy, dy_before)
    np.testing.assert_allclose(db, (dy * (y > 0)).sum(0), rtol=1e-12)


def test_affine_backward_writes_into_given_outputs():
    rng = np.random.default_rng(4)
    dy, x, W = rng.standard_normal((3, 2)), rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    dx_out, dW_out, db_out = np.full((3, 4), np.nan), np.full((4, 2), np.nan), np.full(2, np.nan)
    dx, dW, db = be.affine_backward(dy, x, W, dx_out=dx_out, dW_out=dW_out, db_out=db_out)
    assert dx is dx_out and dW is dW_out and db is db_out
    np.testing.assert_allclose(dW_out, x.T @ dy, rtol=1e-12)
    np.testing.assert_allclose(dx_out, dy @ W.T, rtol=1e-12)


def test_softmax_cross_entropy_gradcheck():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2], dtype=np.int64)
    loss, dlogits = be.softmax_cross_entropy(logits, labels)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(5), labels].mean(), rel=1e-12)
    num = numeric_grad(lambda: be.softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_err(dlogits, num) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_at_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 1], dtype=np.int64)
    loss, d = be.softmax_cross_entropy(logits, labels)
    # Row losses: 0, 2e4 and log(2) exactly (in exact arithmetic).
    assert math.isfinite(loss)
    assert loss == pytest.approx((0 + 2e4 + math.log(2)) / 3, rel=1e-6)
    assert np.isfinite(d).all()
    expected = np.array([[0, 0, 0], [-1, 0, 1], [0.5, -0.5, 0]]) / 3
    np.testing.assert_allclose(d, expected, atol=1e-7)
    p = be.softmax(logits)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    assert np.isfinite(p).all()


def test_stats_accumulate_loss_correct_and_first_bad_step():
    stats = be.new_stats()
    np.testing.assert_array_equal(stats, [0, 0, np.inf])
    logits = np.array([[2.0, 1.0], [0.0, 3.0]])
    labels = np.array([0, 0], dtype=np.int64)
    be.softmax_cross_entropy_into(logits, labels, None, stats, step=0)
    be.softmax_cross_entropy_into(logits, labels, None, stats, step=1)
    per_row = [math.log(1 + math.exp(-1)), 3 + math.log(1 + math.exp(-3))]
    assert stats[0] == pytest.approx(2 * sum(per_row), rel=1e-12)
    assert stats[1] == 2  # the first row is right in each call
    assert stats[2] == np.inf
    nan_logits = np.array([[np.nan, 0.0], [0.0, 1.0]])
    be.softmax_cross_entropy_into(nan_logits, labels, None, stats, step=7)
    be.softmax_cross_entropy_into(nan_logits, labels, None, stats, step=9)
    assert stats[2] == 7
    be.reset_stats(stats)
    np.testing.assert_array_equal(stats, [0, 0, np.inf])


def test_argmax_ties_take_the_first_index():
    stats = be.new_stats()
    be.softmax_cross_entropy_into(np.zeros((2, 3)), np.array([0, 1], dtype=np.int64), None, stats)
    assert stats[1] == 1


def test_take_rows_gathers_repeated_and_unordered_indices():
    X = np.arange(20, dtype=np.float32).reshape(5, 4)
    idx = np.array([4, 0, 4, 2], dtype=np.int64)
    np.testing.assert_array_equal(be.take_rows(X, idx), X[idx])
    y = np.arange(5, dtype=np.int64) * 10
    np.testing.assert_array_equal(be.take_rows(y, idx), y[idx])


# ------------------------------------------------------------------ bad input
def test_shape_and_dtype_errors_name_the_argument():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"W: expected 4 rows"):
        be.affine_forward(x, np.zeros((5, 2), np.float32), np.zeros(2, np.float32), True)
    with pytest.raises(ValueError, match=r"b: expected 2 elements"):
        be.affine_forward(x, np.zeros((4, 2), np.float32), np.zeros(3, np.float32), True)
    with pytest.raises(TypeError, match=r"W: expected dtype float32 \(the dtype of x\), got float64"):
        be.affine_forward(x, np.zeros((4, 2)), np.zeros(2, np.float32), True)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        be.affine_forward(np.zeros((3, 4), np.int64), np.zeros((4, 2)), np.zeros(2), True)
    with pytest.raises(ValueError, match=r"x: expected a 2-D array"):
        be.affine_forward(np.zeros(4, np.float32), np.zeros((4, 2), np.float32), np.zeros(2, np.float32), True)
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous output of shape \(3, 2\)"):
        be.affine_forward(x, np.zeros((4, 2), np.float32), np.zeros(2, np.float32), True,
                          out=np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match=r"labels: expected dtype int64"):
        be.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1], dtype=np.int32))
    with pytest.raises(ValueError, match=r"logits: expected at least one row"):
        be.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"step: expected an integer >= 1"):
        p = np.zeros(3)
        be.adam_step(p, p, p, p, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, step=0, weight_decay=0,
                     decoupled=False, n_decay=3)


def test_get_backend_names():
    assert get_backend("numpy").name == "numpy"
    assert get_backend(" NumPy ") is get_backend("numpy")
    with pytest.raises(ValueError, match=r"backend: expected one of \('numpy', 'cuda', 'auto'\), got 'tpu'"):
        get_backend("tpu")
    with pytest.raises(TypeError, match=r"backend: expected one of"):
        get_backend(3)
    be2 = NumpyBackend()
    assert get_backend(be2) is be2


def test_csr_batches_hold_the_rows_non_zeros_with_room_for_the_longest_rows():
    sp = pytest.importorskip("scipy.sparse", reason="sparse input needs SciPy")
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((8, 6)) * (rng.random((8, 6)) < 0.4)
    dense[2] = 0
    dense[5] = 1.0  # the longest row: 6 non-zeros
    X = be.csr_asarray(sp.csr_matrix(dense))
    lengths = np.sort(np.count_nonzero(dense, axis=1))[::-1]
    batch = be.new_csr_batch(X, 3)
    assert batch.data.shape == batch.indices.shape == (lengths[:3].sum(),)
    idx = np.array([5, 2, 5], dtype=np.int64)  # the longest row twice and an empty one: the most they can hold
    be.take_rows_csr(X, idx, batch)
    ref = sp.csr_matrix(dense)[idx]
    np.testing.assert_array_equal(batch.indptr, ref.indptr)
    nnz = ref.indptr[-1]
    np.testing.assert_array_equal(batch.indices[:nnz], ref.indices)
    np.testing.assert_array_equal(batch.data[:nnz], ref.data)
    assert be.new_csr_batch(X, 20).data.shape == (np.count_nonzero(dense),)  # more rows than X: all of them
    assert be.new_csr_batch(X, 0).indptr.tolist() == [0]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_csr_affine_backward_gradcheck(activation):
    sp = pytest.importorskip("scipy.sparse", reason="sparse input needs SciPy")
    rng = np.random.default_rng(2)
    dense = rng.standard_normal((6, 5)) * (rng.random((6, 5)) < 0.5)
    dense[0] = 0
    x = be.csr_asarray(sp.csr_matrix(dense))
    W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    G = rng.standard_normal((6, 3))  # loss = sum(G * f(x @ W + b))

    def loss() -> float:
        return float((G * be.csr_affine_forward(x, W, b, activation)).sum())

    y = be.csr_affine_forward(x, W, b, activation)
    dW, db = be.csr_affine_backward(G, x, y, activation=activation)
    assert rel_err(dW, numeric_grad(loss, W)) < 1e-7
    assert rel_err(db, numeric_grad(loss, b)) < 1e-7
