"""The naive GEMM baseline of ``bench/naive_gemm.py`` against its NumPy twin (forward product).

Outputs are poisoned with NaN first; tolerance as for the tiled products
(``test_kernels.py``): relative Frobenius error 1e-5 in float32, 1e-12 in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlp.backends import cuda_status

_usable, _why = cuda_status()
if not _usable:
    pytest.skip(f"CUDA backend unavailable: {_why}", allow_module_level=True)

from numba import cuda  # noqa: E402

from bench import naive_gemm  # noqa: E402
from mlp.backends.numpy_backend import NumpyBackend  # noqa: E402

pytestmark = pytest.mark.gpu
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("batch,k,m,dtype,relu", [(7, 33, 13, np.float32, True), (9, 5, 33, np.float64, False)])
def test_naive_forward_matches_numpy(batch, k, m, dtype, relu):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, k)).astype(dtype)
    W = rng.standard_normal((k, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    ref = NumpyBackend().affine_forward(x, W, b, relu)
    out = cuda.to_device(np.full((batch, m), np.nan, dtype))
    assert naive_gemm.affine_forward(cuda.to_device(x), cuda.to_device(W), cuda.to_device(b), relu, out) == 1
    got = out.copy_to_host()
    assert np.isfinite(got).all()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < TOL[dtype]
