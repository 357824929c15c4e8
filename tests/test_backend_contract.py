"""The public backend operations check what they are given, on every backend.

``mlp.get_backend(...)`` hands out the backend contract to anyone, so its
public operations never trust their inputs: out-of-range labels or row
indices, wrong dtypes and mismatched shapes raise a ``ValueError`` or
``TypeError`` naming the argument.  (The trainer's fast path, the underscored
methods, skips these checks after validating its data once.)
"""

from __future__ import annotations

import numpy as np
import pytest

import mlp

pytestmark = pytest.mark.gpu  # the CUDA half runs on a GPU or Numba's CUDA simulator

F32, I64 = np.float32, np.int64
NP_BACKEND = mlp.get_backend("numpy")


@pytest.fixture(params=["numpy", "cuda"])
def be(request):
    try:
        return mlp.get_backend(request.param)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _dev(be, a):
    return be.asarray(np.asarray(a))


@pytest.mark.parametrize("bad", [-1, 3, 10**6])
def test_softmax_cross_entropy_refuses_labels_out_of_range(be, bad):
    logits = _dev(be, np.zeros((4, 3), F32))
    labels = _dev(be, np.array([0, 1, bad, 2], I64))
    msg = rf"labels: expected class indices in \[0, 2\] \(logits has 3 columns\), got values in \[{min(bad, 0)}, {max(bad, 2)}\]"
    with pytest.raises(ValueError, match=msg):
        be.softmax_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match=msg):
        be.softmax_cross_entropy_into(logits, labels, None, be.new_stats())


def test_softmax_cross_entropy_refuses_wrong_dtypes_and_shapes(be):
    logits = _dev(be, np.zeros((4, 3), F32))
    with pytest.raises(TypeError, match=r"labels: expected dtype int64, got int32"):
        be.softmax_cross_entropy(logits, _dev(be, np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match=r"labels: expected 4 elements"):
        be.softmax_cross_entropy(logits, _dev(be, np.zeros(5, I64)))
    with pytest.raises(TypeError, match=r"logits: expected dtype float32 or float64, got int64"):
        be.softmax_cross_entropy(_dev(be, np.zeros((4, 3), I64)), _dev(be, np.zeros(4, I64)))
    with pytest.raises(ValueError, match=r"dlogits_out: expected a C-contiguous output of shape \(4, 3\)"):
        be.softmax_cross_entropy_into(logits, _dev(be, np.zeros(4, I64)), _dev(be, np.zeros((4, 4), F32)),
                                      be.new_stats())
    with pytest.raises(ValueError, match=r"stats: expected 3 elements"):
        be.softmax_cross_entropy_into(logits, _dev(be, np.zeros(4, I64)), None, _dev(be, np.zeros(2)))
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous output of shape \(4, 3\)"):
        be.softmax(logits, out=_dev(be, np.zeros((3, 4), F32)))


# The output losses besides softmax: (public operation, name of its first argument).
LOSS_OPS = [("logistic_cross_entropy_into", "logits"), ("squared_error_into", "pred"), ("poisson_loss_into", "logits")]


@pytest.mark.parametrize("op,z", LOSS_OPS)
def test_losses_refuse_mismatched_targets_outputs_and_stats(be, op, z):
    call = getattr(be, op)
    zs, t = _dev(be, np.zeros((4, 3), F32)), _dev(be, np.zeros((4, 3), F32))
    with pytest.raises(ValueError, match=r"targets: expected 3 columns, got array of shape \(4, 2\)"):
        call(zs, _dev(be, np.zeros((4, 2), F32)), None, be.new_stats())
    with pytest.raises(ValueError, match=r"targets: expected 4 rows"):
        call(zs, _dev(be, np.zeros((5, 3), F32)), None, be.new_stats())
    with pytest.raises(TypeError, match=rf"targets: expected dtype float32 \(the dtype of {z}\), got float64"):
        call(zs, _dev(be, np.zeros((4, 3))), None, be.new_stats())
    with pytest.raises(TypeError, match=rf"{z}: expected dtype float32 or float64, got int64"):
        call(_dev(be, np.zeros((4, 3), I64)), t, None, be.new_stats())
    with pytest.raises(ValueError, match=rf"{z}: expected at least one row and one column, got array of shape \(0, 3\)"):
        call(_dev(be, np.zeros((0, 3), F32)), _dev(be, np.zeros((0, 3), F32)), None, be.new_stats())
    with pytest.raises(ValueError, match=rf"d{z}_out: expected a C-contiguous output of shape \(4, 3\)"):
        call(zs, t, _dev(be, np.zeros((4, 3))), be.new_stats())
    with pytest.raises(ValueError, match=r"stats: expected 3 elements"):
        call(zs, t, None, _dev(be, np.zeros(2)))


@pytest.mark.parametrize("op,bad,expected", [
    ("logistic_cross_entropy_into", 1.5, r"targets: expected values in \[0.0, 1.0\], got values in \[0.0, 1.5\]"),
    ("logistic_cross_entropy_into", -0.5, r"targets: expected values in \[0.0, 1.0\], got values in \[-0.5, 0.0\]"),
    ("poisson_loss_into", -1.0, r"targets: expected values in \[0.0, inf\], got values in \[-1.0, 0.0\]"),
    ("squared_error_into", np.nan, r"targets: expected finite values, got NaN or inf"),
    ("poisson_loss_into", np.inf, r"targets: expected finite values, got NaN or inf"),
])
def test_losses_refuse_targets_outside_their_range(be, op, bad, expected):
    t = np.zeros((4, 3), F32)
    t[2, 1] = bad
    with pytest.raises(ValueError, match=expected):
        getattr(be, op)(_dev(be, np.zeros((4, 3), F32)), _dev(be, t), None, be.new_stats())


def _call_with_weights(be, op, weights):
    logits = _dev(be, np.zeros((4, 3), F32))
    if op == "softmax_cross_entropy_into":
        return be.softmax_cross_entropy_into(logits, _dev(be, np.zeros(4, I64)), None, be.new_stats(), 0, weights)
    return getattr(be, op)(logits, _dev(be, np.zeros((4, 3), F32)), None, be.new_stats(), 0, weights)


@pytest.mark.parametrize("op", ["softmax_cross_entropy_into"] + [op for op, _ in LOSS_OPS])
def test_loss_operations_refuse_bad_weights(be, op):
    cases = [
        (np.ones(5, F32), ValueError, r"weights: expected 4 elements, got array of shape \(5,\)"),
        (np.ones(4), TypeError, r"weights: expected dtype float32, got float64"),
        (np.ones((4, 1), F32), ValueError, r"weights: expected a 1-D array"),
        (np.array([1, 1, -1, 1], F32), ValueError, r"weights: expected values >= 0, got -1.0 at index 2"),
        (np.array([1, np.nan, 1, 1], F32), ValueError, r"weights: expected finite values, got nan at index 1"),
        (np.zeros(4, F32), ValueError, r"weights: expected a positive sum, got 0"),
    ]
    for weights, error, expected in cases:
        with pytest.raises(error, match=expected):
            _call_with_weights(be, op, _dev(be, weights))
    _call_with_weights(be, op, _dev(be, np.array([0, 1, 0, 2], F32)))  # zeros are fine when the sum is not


@pytest.mark.parametrize("op,z", LOSS_OPS)
def test_losses_give_the_reference_results_through_the_public_operations(be, op, z):
    """Each backend's public operation reaches its loss with the weights: the NumPy twin's numbers."""
    from mlp.backends.numpy_backend import NumpyBackend

    rng = np.random.default_rng(0)
    zs = rng.standard_normal((5, 3)).astype(F32)
    t = (rng.random((5, 3)) < 0.5).astype(F32)
    w = np.array([0.5, 0.0, 2.0, 1.0, 1.0], F32)
    ref_grad, ref_stats = np.empty_like(zs), NumpyBackend().new_stats()
    getattr(NumpyBackend(), op)(zs, t, ref_grad, ref_stats, 2, w)
    grad, stats = _dev(be, np.full((5, 3), np.nan, F32)), be.new_stats()
    getattr(be, op)(_dev(be, zs), _dev(be, t), grad, stats, 2, _dev(be, w))
    np.testing.assert_allclose(be.to_numpy(grad), ref_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(be.to_numpy(stats), ref_stats, rtol=1e-5)
    assert np.all(be.to_numpy(grad)[1] == 0)  # the zero-weight row


def test_weighted_softmax_cross_entropy_is_the_weighted_mean(be):
    x = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]], F32)
    labels = np.array([0, 2, 2], I64)
    w = np.array([1.0, 3.0, 0.0], F32)
    per_row = np.log(np.exp(x.astype(np.float64)).sum(axis=1)) - x[np.arange(3), labels]
    loss, grad = be.softmax_cross_entropy(_dev(be, x), _dev(be, labels), weights=_dev(be, w))
    assert loss == pytest.approx((w * per_row).sum() / w.sum(), rel=1e-6)
    assert np.all(be.to_numpy(grad)[2] == 0)


@pytest.mark.parametrize("bad", [-1, 5])
def test_take_rows_refuses_indices_out_of_range(be, bad):
    X = _dev(be, np.zeros((5, 2), F32))
    with pytest.raises(ValueError, match=r"idx: expected row indices in \[0, 4\] \(X has 5 rows\)"):
        be.take_rows(X, _dev(be, np.array([0, bad], I64)))
    with pytest.raises(TypeError, match=r"idx: expected dtype int64, got float64"):
        be.take_rows(X, _dev(be, np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous output of shape \(2, 2\)"):
        be.take_rows(X, _dev(be, np.array([0, 1], I64)), out=_dev(be, np.zeros((2, 3), F32)))


def test_affine_operations_refuse_mismatched_shapes_and_dtypes(be):
    x, W, b = _dev(be, np.zeros((4, 3), F32)), _dev(be, np.zeros((3, 2), F32)), _dev(be, np.zeros(2, F32))
    with pytest.raises(ValueError, match=r"W: expected 3 rows, got array of shape \(4, 2\)"):
        be.affine_forward(x, _dev(be, np.zeros((4, 2), F32)), b, True)
    with pytest.raises(ValueError, match=r"b: expected 2 elements"):
        be.affine_forward(x, W, _dev(be, np.zeros(3, F32)), True)
    with pytest.raises(TypeError, match=r"W: expected dtype float32 \(the dtype of x\), got float64"):
        be.affine_forward(x, _dev(be, np.zeros((3, 2))), b, True)
    dy = _dev(be, np.zeros((4, 2), F32))
    with pytest.raises(ValueError, match=r"x: expected 4 rows"):
        be.affine_backward(dy, _dev(be, np.zeros((5, 3), F32)), W)
    with pytest.raises(ValueError, match=r"y: expected 2 columns"):
        be.affine_backward(dy, x, W, y=_dev(be, np.zeros((4, 3), F32)))
    with pytest.raises(ValueError, match=r"dW_out: expected a C-contiguous output of shape \(3, 2\)"):
        be.affine_backward(dy, x, W, dW_out=_dev(be, np.zeros((2, 3), F32)))


def test_optimizer_operations_refuse_mismatched_buffers(be):
    p, g = _dev(be, np.zeros(6, F32)), _dev(be, np.zeros(6, F32))
    with pytest.raises(ValueError, match=r"grads: expected 6 elements"):
        be.sgd_step(p, _dev(be, np.zeros(5, F32)), None, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                    n_decay=6)
    with pytest.raises(ValueError, match=r"buf: a momentum buffer is required"):
        be.sgd_step(p, g, None, lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, n_decay=6)
    with pytest.raises(TypeError, match=r"square_avg: expected dtype float32, got float64"):
        be.rmsprop_step(p, g, _dev(be, np.zeros(6)), None, lr=0.1, alpha=0.9, eps=1e-8, momentum=0.0,
                        weight_decay=0.0, n_decay=6)
    with pytest.raises(ValueError, match=r"step: expected an integer >= 1, got 0"):
        be.adam_step(p, g, _dev(be, np.zeros(6, F32)), _dev(be, np.zeros(6, F32)), lr=0.1, beta1=0.9, beta2=0.99,
                     eps=1e-8, step=0, weight_decay=0.0, decoupled=False, n_decay=6)
    with pytest.raises(TypeError, match=r"params: expected dtype float32 or float64, got int64"):
        be.sgd_step(_dev(be, np.zeros(6, I64)), g, None, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                    n_decay=6)


def test_the_fast_path_never_reads_outside_the_logits_row(be):
    """Even unchecked, an out-of-range label gives a NaN loss for its row (recorded as a non-finite step)
    and a NaN gradient row, never a read outside the array."""
    from mlp.backends.base import STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM

    logits = _dev(be, np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], F32))
    labels = _dev(be, np.array([0, 7], I64))
    grad = _dev(be, np.zeros((2, 3), F32))
    stats = be.new_stats()
    be._softmax_xent(logits, labels, grad, stats, 4)
    st, g = be.to_numpy(stats), be.to_numpy(grad)
    assert np.isnan(st[STATS_LOSS_SUM]) and st[STATS_CORRECT] == 1 and st[STATS_FIRST_NONFINITE_STEP] == 4
    assert np.isfinite(g[0]).all() and np.isnan(g[1]).all()


def test_a_trainer_fit_rejects_bad_labels_before_touching_the_device(be):
    model = mlp.MLP((3, 4, 2), seed=0)
    trainer = mlp.Trainer(model, mlp.optim.SGD(lr=0.1), backend=be, batch_size=2)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 1\] \(the model has 2 outputs\), "
                                         r"got values in \[0, 2\]"):
        trainer.fit(np.zeros((4, 3), F32), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert model.backend.name == "numpy"


# ------------------------------------------------------------------ sparse input
def _csr(be, dense):
    import scipy.sparse as sp

    return be.csr_asarray(sp.csr_matrix(dense))


def _sparse_rows(rng, rows, cols, dtype):
    """A (rows, cols) matrix with about 30% non-zeros; row 1 and the last row have none."""
    X = rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) < 0.3)
    X[1] = X[-1] = 0
    return X.astype(dtype)


def test_csr_operations_refuse_bad_input(be):
    sp = pytest.importorskip("scipy.sparse", reason="sparse input needs SciPy")
    from mlp.backends.base import CSRMatrix

    with pytest.raises(TypeError, match=r"X: expected a scipy.sparse matrix or a CSRMatrix, got array of shape"):
        be.csr_asarray(np.zeros((3, 2), F32))
    bad = sp.csr_matrix(np.eye(3, dtype=F32))
    bad.data[1] = np.inf
    with pytest.raises(ValueError, match=r"X: expected finite values, got 1 NaN or infinite entries"):
        be.csr_asarray(bad)
    with pytest.raises(TypeError, match=r"dtype: expected one of \('float32', 'float64'\), got int64"):
        be.csr_asarray(sp.csr_matrix(np.eye(3)), dtype=I64)
    X = _csr(be, np.eye(5, 3, dtype=F32))
    with pytest.raises(ValueError, match=r"idx: expected row indices in \[0, 4\] \(X has 5 rows\), got values in "
                                         r"\[0, 5\]"):
        be.take_rows_csr(X, _dev(be, np.array([0, 5], I64)))
    with pytest.raises(TypeError, match=r"idx: expected dtype int64, got int32"):
        be.take_rows_csr(X, _dev(be, np.array([0, 1], np.int32)))
    with pytest.raises(TypeError, match=r"X: expected a CSRMatrix of the '\w+' backend \(see csr_asarray\), got "
                                        r"array of shape \(5, 3\)"):
        be.take_rows_csr(_dev(be, np.zeros((5, 3), F32)), _dev(be, np.array([0], I64)))
    malformed = CSRMatrix(X.data, X.indices, _dev(be, np.array([0, 1, 0, 2, 3, 3], I64)), X.shape)
    with pytest.raises(ValueError, match=r"X.indptr: expected 0, then non-decreasing offsets"):
        be.take_rows_csr(malformed, _dev(be, np.array([0], I64)))
    out_of_range = CSRMatrix(X.data, _dev(be, np.array([0, 1, 3], I64)), X.indptr, X.shape)
    with pytest.raises(ValueError, match=r"X.indices: expected column indices in \[0, 2\] \(X has 3 columns\), "
                                         r"got values in \[0, 3\]"):
        be.take_rows_csr(out_of_range, _dev(be, np.array([0], I64)))
    with pytest.raises(ValueError, match=r"rows: expected an integer >= 0, got -1"):
        be.new_csr_batch(X, -1)
    idx = _dev(be, np.array([0, 2], I64))
    xb = be.take_rows_csr(X, idx)
    W, b = _dev(be, np.zeros((3, 2), F32)), _dev(be, np.zeros(2, F32))
    with pytest.raises(ValueError, match=r"W: expected 3 rows, got array of shape \(4, 2\)"):
        be.csr_affine_forward(xb, _dev(be, np.zeros((4, 2), F32)), b)
    with pytest.raises(TypeError, match=r"W: expected dtype float32 \(the dtype of x\), got float64"):
        be.csr_affine_forward(xb, _dev(be, np.zeros((3, 2))), b)
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous output of shape \(2, 2\)"):
        be.csr_affine_forward(xb, W, b, out=_dev(be, np.zeros((2, 3), F32)))
    dy = _dev(be, np.zeros((2, 2), F32))
    with pytest.raises(ValueError, match=r"x: expected a batch of 3 rows, got 2"):
        be.csr_affine_backward(_dev(be, np.zeros((3, 2), F32)), xb)
    with pytest.raises(ValueError, match=r"dW_out: expected a C-contiguous output of shape \(3, 2\)"):
        be.csr_affine_backward(dy, xb, dW_out=_dev(be, np.zeros((2, 3), F32)))
    with pytest.raises(ValueError, match=r"y: activation 'tanh' needs this layer's output y"):
        be.csr_affine_backward(dy, xb, activation="tanh")
    # a batch is in the backend's own layout: a CSR batch on the host, the rows densified on a device
    if be.csr_batch_layout == "csr":
        with pytest.raises(TypeError, match=r"x: expected a CSRMatrix of the 'numpy' backend"):
            be.csr_affine_forward(np.zeros((2, 3), F32), W, b)
        small = be.new_csr_batch(X, 2)  # room for the two longest rows (one non-zero each)
        with pytest.raises(ValueError, match=r"out: expected room for 3 non-zeros, got a buffer of 2"):
            be.take_rows_csr(X, _dev(be, np.array([0, 1, 2], I64)), out=small)
        with pytest.raises(ValueError, match=r"out: expected a CSR batch of shape \(2, 3\) and dtype float32"):
            be.take_rows_csr(X, idx, out=be.new_csr_batch(X, 3))
    else:
        with pytest.raises(TypeError, match=r"x: expected a CSR batch of the 'cuda' backend \(its rows densified"):
            be.csr_affine_forward(X, W, b)
        with pytest.raises(ValueError, match=r"out: expected a C-contiguous output of shape \(2, 3\)"):
            be.take_rows_csr(X, idx, out=_dev(be, np.zeros((2, 4), F32)))


@pytest.mark.parametrize("dtype", [F32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_csr_operations_give_the_dense_operations_results(be, rng, dtype, activation):
    """A batch gathered from sparse rows (repeated rows, rows without non-zeros, a batch of one) goes through
    the first layer as the same rows dense do; the products add the same terms in another order."""
    pytest.importorskip("scipy.sparse", reason="sparse input needs SciPy")
    tol = 2e-6 if dtype == F32 else 1e-13
    dense = _sparse_rows(rng, 9, 13, dtype)
    X = _csr(be, dense)
    W = (rng.standard_normal((13, 5)) / 3).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    for rows in ([3, 1, 3, 8, 0], [8]):
        idx = np.array(rows, I64)
        xb = be.take_rows_csr(X, _dev(be, idx))
        y = be.csr_affine_forward(xb, _dev(be, W), _dev(be, b), activation)
        y_ref = NP_BACKEND.affine_forward(dense[idx], W, b, activation)
        np.testing.assert_allclose(be.to_numpy(y), y_ref, rtol=tol, atol=tol)
        dy = rng.standard_normal((len(rows), 5)).astype(dtype)
        dW, db = be.csr_affine_backward(_dev(be, dy), xb, y, activation=activation)
        _, dW_ref, db_ref = NP_BACKEND.affine_backward(dy, dense[idx], W, y_ref, need_dx=False, activation=activation)
        np.testing.assert_allclose(be.to_numpy(dW), dW_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(be.to_numpy(db), db_ref, rtol=tol, atol=tol)


# the simulator's NumPy scalars warn where a float32 exp overflows to inf (as it does, silently, on a GPU)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", [F32, np.float64])
def test_clip_gives_scikit_learns_log_losses_and_the_same_gradient(be, dtype):
    """``clip=True`` (the estimators'): a softmax row's loss, and each logistic output's, as scikit-learn's
    clipped log-losses compute them, at logits where the clip acts; the gradient as without."""
    pytest.importorskip("sklearn", reason="the reference losses are scikit-learn's")
    from scipy.special import expit
    from sklearn.neural_network._base import binary_log_loss, log_loss

    rng = np.random.default_rng(3)
    z = (rng.standard_normal((40, 3)) * 60).astype(dtype)
    labels = rng.integers(0, 3, 40).astype(I64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss, grad = be.softmax_cross_entropy(_dev(be, z), _dev(be, labels), clip=True)
    exact, grad_exact = be.softmax_cross_entropy(_dev(be, z), _dev(be, labels))
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    assert loss == pytest.approx(log_loss(np.eye(3, dtype=dtype)[labels], p), rel=rtol)
    assert exact > 1.5 * loss
    np.testing.assert_array_equal(be.to_numpy(grad), be.to_numpy(grad_exact))
    t = (rng.random((40, 2)) < 0.5).astype(dtype)
    stats, stats_exact = be.new_stats(), be.new_stats()
    be.logistic_cross_entropy_into(_dev(be, z[:, :2].copy()), _dev(be, t), None, stats, clip=True)
    be.logistic_cross_entropy_into(_dev(be, z[:, :2].copy()), _dev(be, t), None, stats_exact)
    got = be.to_numpy(stats)[0] / 40
    assert got == pytest.approx(binary_log_loss(t, expit(z[:, :2])), rel=rtol)
    assert be.to_numpy(stats_exact)[0] / 40 > 1.5 * got
