"""The CUDA backend at the level of the backend contract (``mlp.backends.base.Backend``).

Kernel numerics are covered by ``test_kernels.py``; here: array handling
(round trips, zero-copy, conversions), the validation the base class does
before any kernel runs, launch counting, warm-up and device information.
Runs on a GPU or on Numba's CUDA simulator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ON_SIMULATOR

from mlp.backends import cuda_status, get_backend

_usable, _why = cuda_status()
if not _usable:
    pytest.skip(f"CUDA backend unavailable: {_why}", allow_module_level=True)

from numba import cuda  # noqa: E402

from mlp.backends.cuda_backend import CudaBackend  # noqa: E402
from mlp.backends.numpy_backend import NumpyBackend  # noqa: E402

pytestmark = pytest.mark.gpu

F32, F64 = np.float32, np.float64


@pytest.fixture
def be():
    return CudaBackend()


# ------------------------------------------------------------------- arrays
def test_asarray_to_numpy_round_trip_keeps_values_and_dtype(be):
    for a in (np.arange(12, dtype=F32).reshape(3, 4), np.linspace(0, 1, 5), np.arange(4, dtype=np.int64)):
        d = be.asarray(a)
        assert be.is_array(d) and not be.is_array(a)
        back = be.to_numpy(d)
        assert isinstance(back, np.ndarray) and back.dtype == a.dtype
        np.testing.assert_array_equal(back, a)


def test_asarray_converts_host_input(be):
    d = be.asarray([[1, 2], [3, 4]], dtype=F32)
    assert d.dtype == F32 and d.shape == (2, 2)
    strided = np.arange(20, dtype=F64).reshape(4, 5)[:, ::2]  # not contiguous on the host
    np.testing.assert_array_equal(be.to_numpy(be.asarray(strided)), strided)


def test_asarray_of_a_device_array_is_zero_copy(be):
    d = cuda.to_device(np.ones((3, 2), F32))
    assert be.asarray(d) is d
    assert be.asarray(d, dtype=F32) is d


def test_asarray_converts_device_dtype_on_the_device(be):
    a = np.random.default_rng(0).standard_normal((4, 5))
    d = be.asarray(cuda.to_device(a), dtype=F32)
    assert d.dtype == F32
    np.testing.assert_array_equal(be.to_numpy(d), a.astype(F32))
    assert be.launch_count == 1


def test_asarray_makes_strided_device_arrays_contiguous(be):
    a = np.arange(30, dtype=F32).reshape(5, 6)
    view = cuda.to_device(a)[:, ::2]
    d = be.asarray(view)
    assert d.is_c_contiguous()
    np.testing.assert_array_equal(be.to_numpy(d), a[:, ::2])


@pytest.mark.parametrize("bad", [object(), [[1, 2], [3]], "text", {"a": 1}])
def test_asarray_rejects_what_cannot_be_an_array(be, bad):
    with pytest.raises(TypeError):
        be.asarray(bad)


@pytest.mark.skipif(ON_SIMULATOR, reason="__cuda_array_interface__ objects need a real device")
def test_asarray_accepts_cuda_array_interface_without_copy(be):
    owner = cuda.to_device(np.arange(6, dtype=F32))

    class Foreign:  # what CuPy or PyTorch would hand over
        __cuda_array_interface__ = owner.__cuda_array_interface__

    d = be.asarray(Foreign())
    assert be.is_array(Foreign())
    assert d.__cuda_array_interface__["data"][0] == owner.__cuda_array_interface__["data"][0]
    np.testing.assert_array_equal(be.to_numpy(d), np.arange(6))


def test_empty_zeros_and_fill(be):
    e = be.empty((3, 4), F64)
    assert e.shape == (3, 4) and e.dtype == F64
    z = be.zeros(7, np.int64)
    np.testing.assert_array_equal(be.to_numpy(z), np.zeros(7))
    assert be.fill_(z, 3) is z
    np.testing.assert_array_equal(be.to_numpy(z), np.full(7, 3))
    flags = be.zeros((2, 2), np.bool_)  # no kernel for bool: a host fill
    assert not be.to_numpy(flags).any()


def test_copy_from_host_and_device_with_same_kind_casting(be):
    dst = be.zeros((2, 3), F32)
    be.copy_(dst, np.arange(6, dtype=F64).reshape(2, 3))
    np.testing.assert_array_equal(be.to_numpy(dst), np.arange(6).reshape(2, 3))
    be.copy_(dst, be.asarray(np.full((2, 3), 5, F32)))
    np.testing.assert_array_equal(be.to_numpy(dst), 5)
    be.copy_(dst, be.asarray(np.full((2, 3), 2.5, F64)))  # float64 -> float32 on the device
    np.testing.assert_array_equal(be.to_numpy(dst), 2.5)
    ints = be.zeros(3, np.int64)
    with pytest.raises(TypeError):
        be.copy_(ints, np.ones(3, F32))  # float into int is not same-kind
    with pytest.raises(ValueError):
        be.copy_(dst, np.ones((3, 2), F32))


def test_stats_lifecycle(be):
    stats = be.new_stats()
    assert stats.dtype == F64
    np.testing.assert_array_equal(be.to_numpy(stats), [0.0, 0.0, math.inf])
    be.fill_(stats, 1.0)
    be.reset_stats(stats)
    np.testing.assert_array_equal(be.to_numpy(stats), [0.0, 0.0, math.inf])


# --------------------------------------------------------------- validation
def test_base_class_rejects_bad_shapes_and_dtypes_before_launching(be):
    x, W, b = be.empty((4, 3), F32), be.empty((3, 2), F32), be.empty(2, F32)
    W64, x42, b3, out43 = be.empty((3, 2), F64), be.empty((4, 2), F32), be.empty(3, F32), be.empty((4, 3), F32)
    f3, f3_64, stats = be.empty(3, F32), be.empty(3, F64), be.new_stats()
    labels_f, empty_rows, empty_labels = be.empty(4, F32), be.empty((0, 2), F32), be.empty(0, np.int64)
    idx32 = be.empty(2, np.int32)
    with pytest.raises(ValueError, match="W"):
        be.affine_forward(x, x42, b, True)
    with pytest.raises(ValueError, match="b"):
        be.affine_forward(x, W, b3, True)
    with pytest.raises(TypeError, match="W"):
        be.affine_forward(x, W64, b, True)
    with pytest.raises(ValueError, match="out"):
        be.affine_forward(x, W, b, True, out=out43)
    with pytest.raises(ValueError, match="y"):
        be.affine_backward(x42, x, W, y=x)
    with pytest.raises(TypeError, match="labels"):
        be.softmax_cross_entropy_into(x42, labels_f, None, stats)
    with pytest.raises(ValueError, match="empty batch"):
        be.softmax_cross_entropy(empty_rows, empty_labels)
    with pytest.raises(TypeError, match="exp_avg"):
        be.adam_step(f3, f3, f3_64, f3, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, step=1, weight_decay=0.0,
                     decoupled=False, n_decay=3)
    with pytest.raises(ValueError, match="step"):
        be.adam_step(f3, f3, f3, f3, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, step=0, weight_decay=0.0,
                     decoupled=False, n_decay=3)
    with pytest.raises(TypeError, match="idx"):
        be.take_rows(x, idx32)
    assert be.launch_count == 0  # every error was raised before a kernel launch


def test_strided_device_inputs_are_refused_not_misread(be):
    x = cuda.to_device(np.ones((4, 6), F32))[:, ::2]  # (4, 3), not contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        be.affine_forward(x, be.zeros((3, 2), F32), be.zeros(2, F32), False)


def test_constructor_validates_gemm_options():
    with pytest.raises(ValueError, match="gemm_config"):
        CudaBackend(gemm_config="huge")
    with pytest.raises(ValueError, match="split_k"):
        CudaBackend(split_k=0)


# ------------------------------------------------------ ops through the API
def test_launch_count_counts_every_kernel(be):
    rng = np.random.default_rng(1)
    x = be.asarray(rng.standard_normal((6, 5)).astype(F32))
    W = be.asarray(rng.standard_normal((5, 4)).astype(F32))
    b = be.asarray(np.zeros(4, F32))
    labels = be.asarray(np.array([0, 1, 2, 3, 0, 1], dtype=np.int64))
    stats = be.new_stats()
    start = be.launch_count
    y = be.affine_forward(x, W, b, True)
    assert be.launch_count - start == 1
    dl = be.empty((6, 4), F32)
    be.softmax_cross_entropy_into(y, labels, dl, stats, step=1)
    assert be.launch_count - start == 2
    be.affine_backward(dl, x, W, y, need_dx=True)
    assert be.launch_count - start == 4
    be.affine_backward(dl, x, W, y, need_dx=False)
    assert be.launch_count - start == 5
    be.take_rows(x, be.asarray(np.array([5, 0], dtype=np.int64)))
    be.reset_stats(stats)
    be.sgd_step(be.zeros(3, F32), be.zeros(3, F32), None, lr=0.1, momentum=0.0, nesterov=False,
                weight_decay=0.0, n_decay=0)
    assert be.launch_count - start == 10  # take_rows, reset_stats, two zeros (fills), sgd


def test_outputs_passed_in_are_the_outputs_returned(be):
    x = be.zeros((3, 2), F32)
    W = be.zeros((2, 5), F32)
    b = be.zeros(5, F32)
    out = be.empty((3, 5), F32)
    assert be.affine_forward(x, W, b, False, out=out) is out
    probs = be.empty((3, 5), F32)
    assert be.softmax(out, out=probs) is probs
    np.testing.assert_allclose(be.to_numpy(probs), 0.2, rtol=1e-6)


def test_loss_api_matches_numpy_backend():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 3))
    labels = rng.integers(0, 3, 8)
    cb, nb = CudaBackend(), NumpyBackend()
    loss_c, grad_c = cb.softmax_cross_entropy(cb.asarray(logits), cb.asarray(labels))
    loss_n, grad_n = nb.softmax_cross_entropy(logits, labels)
    assert isinstance(loss_c, float)
    assert loss_c == pytest.approx(loss_n, rel=1e-12)
    np.testing.assert_allclose(cb.to_numpy(grad_c), grad_n, rtol=1e-12)


def test_an_allocation_that_does_not_fit_is_a_clear_memory_error(be):
    """Out of device memory: a MemoryError that says what was asked and what to try (under the
    simulator, where allocations are NumPy's, the failing allocation is a real one)."""
    huge = (1 << 40, 1 << 10)  # 4 PiB of float32
    with pytest.raises(MemoryError, match=r"GPU out of memory: an array of shape \(1099511627776, 1024\) and "
                                          r"dtype float32 needs 4194304\.00 GiB.*smaller batch_size.*"
                                          r"backend='numpy'"):
        be.empty(huge, np.float32)


def test_fit_that_does_not_fit_leaves_model_and_optimizer_untouched(be, monkeypatch):
    import mlp

    model = mlp.MLP((6, 5, 3), seed=1)
    opt = mlp.optim.Adam(lr=1e-2)
    before = model.get_weights()
    trainer = mlp.Trainer(model, opt, backend=be, batch_size=4)
    real_empty = type(be).empty

    def failing_empty(self, shape, dtype=np.float32):
        if np.prod(shape) >= 40 * 6:  # the training set on the device
            return real_empty(self, (1 << 40, 1 << 10), dtype)
        return real_empty(self, shape, dtype)

    monkeypatch.setattr(type(be), "empty", failing_empty)
    X = np.random.default_rng(0).random((40, 6), dtype=np.float32)
    with pytest.raises(MemoryError, match="GPU out of memory"):
        trainer.fit(X, np.arange(40) % 3, epochs=1, verbose=0)
    assert model.backend.name == "numpy" and opt.steps == 0 and opt.state_numpy() == {}
    for (W0, b0), (W1, b1) in zip(before, model.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


# ------------------------------------------------------------------ extras
@pytest.mark.parametrize("dtype", [F32, F64])
def test_warmup_builds_every_kernel_once(be, dtype):
    """Warm-up builds exactly what the launchers can pick, and a second warm-up builds nothing."""
    from mlp.kernels import _config, gemm, softmax

    dt = np.dtype(dtype)
    first = be.warmup(dtype)
    # The launchers' own choices over shapes that reach every branch of plan()
    # (few rows, medium, a full wave of 128x128 tiles), every variant, every
    # activation (the activation is compiled into the kernel).
    picked = {gemm.plan(m, n, k, "auto", None, dt)[0] for m in (1, 32, 100, 5000) for n in (1, 64, 5000)
              for k in (8, 1000)}
    expected_gemm = {f"gemm {c} {v} {a}" for c in picked for v in gemm.VARIANTS
                     for a in ("identity", "relu", "tanh", "logistic")}
    assert {name for name in first["names"] if name.startswith("gemm ")} == expected_gemm
    if dt == np.float64:
        assert not any("128x128" in name for name in first["names"])  # plan never picks it for float64
    # softmax: every kernel _plan picks for 1 to 9999 classes, with and without the loss
    expected_softmax = {id(softmax._plan(xent, 4, c, dt)[0]) for xent in (True, False) for c in range(1, 10_000)}
    assert {id(k) for k in softmax.selectable_kernels(dt).values()} == expected_softmax
    assert sum(name.startswith("softmax ") for name in first["names"]) == len(expected_softmax)
    assert first["kernels"] == len(first["names"])

    built = _config.kernels_built
    again = be.warmup(dtype)
    assert again["names"] == first["names"]
    assert _config.kernels_built == built  # nothing compiled (or loaded) twice
    with pytest.raises(TypeError):
        be.warmup(np.int32)


def test_device_info_describes_the_device(be):
    info = be.device_info()
    for key in ("name", "compute_capability", "sm_count", "driver_version", "runtime_version", "numba",
                "numba_cuda", "simulator"):
        assert key in info
    assert info["simulator"] == ON_SIMULATOR
    assert info["sm_count"] >= 1 and len(info["compute_capability"]) == 2
    if ON_SIMULATOR:
        assert "simulator" in info["name"].lower()
    else:
        assert info["driver_version"]


def test_get_backend_returns_the_cuda_backend():
    backend = get_backend("cuda")
    assert isinstance(backend, CudaBackend) and backend.name == "cuda"
