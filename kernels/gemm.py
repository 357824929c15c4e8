"""The affine layer's matrix products on the device: forward, dx, and dW with db.

twin (forward):  mlp.backends.numpy_backend.NumpyBackend._affine_forward
twin (backward): mlp.backends.numpy_backend.NumpyBackend._affine_backward

A layer of ``in`` inputs and ``out`` outputs applied to ``batch`` rows
computes ``(batch, in) @ (in, out)``; the launchers take its arrays in those
terms, one dtype (float32 or float64) throughout::

    affine_forward      out = f(x @ W + b)               x (batch, in), W (in, out), b (out,)
                                                         -> out (batch, out)
    affine_backward_dx  dx  = (dy * f'(y)) @ W.T         dy, y (batch, out), W (in, out)
                                                         -> dx (batch, in)
    affine_backward_dw  dW  = x.T @ (dy * f'(y)),        dy, y (batch, out), x (batch, in)
                        db  = column sums of dy * f'(y)  -> dW (in, out), db (out,)

``f`` is an activation code (an index of ``activations.ACTIVATIONS``), and
``f'(y)`` its derivative computed from the layer's output ``y``.  Launches:
forward 1; backward 2 (dW with db, then dx) or 1 without dx; split-K does not
add any.

The parts, re-exported here for the backend, the benchmarks and the tests:

* ``gemm_kernel``: the tiled kernel with its fused epilogues (``gemm_kernel``,
  ``TILES``, ``VARIANTS``) and ``product_shape``, where ``batch, in, out``
  become the generic product's ``m, n, k``;
* ``gemm_plan``: the tile configuration and K splits of each product
  (``plan``, from the device's tuning table or a heuristic) and every kernel
  the launchers can pick (``selectable_kernels``);
* ``gemm_scratch``: :class:`GemmWorkspace`, the split-K scratch and
  configured launches per shape.

Launchers take ``stream`` (0, the default stream, or a Numba stream) and
launch on it only.  Their per-shape state is kept in a :class:`GemmWorkspace`
(``workspace``, else this module's own) and never evicted, so captured CUDA
graphs stay valid; a first eager launch makes it, since nothing may be
allocated during graph capture.
"""

from __future__ import annotations

import numpy as np

from .activations import ACTIVATIONS, IDENTITY
from .gemm_kernel import (BACKWARD_DW, BACKWARD_DX, FORWARD, STATIC_SHARED_LIMIT, TILES, VARIANTS, TileConfig,
                          Variant, gemm_kernel, product_shape, slice_depth)
from .gemm_plan import AUTO_TILES, CONFIG_NAMES, MAX_SPLIT_K, plan, selectable_kernels
from .gemm_scratch import GemmWorkspace

# ``tuning_table`` and ``sm_count`` are not re-exported: ``plan`` looks them up
# in ``gemm_plan``, so a test replacing them must replace them there.
__all__ = [
    "ACTIVATIONS", "AUTO_TILES", "BACKWARD_DW", "BACKWARD_DX", "CONFIG_NAMES", "FORWARD", "GemmWorkspace",
    "MAX_SPLIT_K", "STATIC_SHARED_LIMIT", "TILES", "TileConfig", "VARIANTS", "Variant", "affine_backward_dw",
    "affine_backward_dx", "affine_forward", "gemm_kernel", "plan", "product_shape", "selectable_kernels",
    "slice_depth",
]

_default_workspace = GemmWorkspace()


def _skip(variant_name: str, m: int, n: int) -> bool:
    """An empty output: nothing to launch (dW's launch also writes db, so it runs while there are
    output columns, even with no input rows or an empty batch, and writes zeros)."""
    return n == 0 or (m == 0 and not VARIANTS[variant_name].colsum)


def _launch(variant_name, act, a, b, mask, c, bias, colsum_out, batch, n_in, n_out, config, split_k,
            workspace, stream) -> int:
    m, n, k = product_shape(variant_name, batch, n_in, n_out)
    if _skip(variant_name, m, n):
        return 0
    # act is used as given (True and 1 are one key); a new recipe checks it
    r = (workspace or _default_workspace).recipe(variant_name, act, np.dtype(c.dtype), m, n, k, config, split_k,
                                                 stream)
    r.launch(
        a, b, r.spare_2d if mask is None else mask, c, r.spare_1d if bias is None else bias,
        r.spare_1d if colsum_out is None else colsum_out, r.partial, r.partial_colsum, r.tickets,
        m, n, k, r.k_chunk,
    )
    return 1


def affine_forward(x, W, b, act: int, out, *, config: str = "auto", split_k: int | None = None,
                   workspace: GemmWorkspace | None = None, stream=0) -> int:
    """``out = f(x @ W + b)``.  x: (batch, in), W: (in, out), b: (out,), out: (batch, out), one dtype.

    ``act``: the code of ``f``, an index of ``ACTIVATIONS`` (a bool means
    relu or identity).  ``config``: a name of ``CONFIG_NAMES``; ``split_k``:
    the K splits, None to let :func:`plan` choose.  ``stream``: 0 (the
    default stream) or a Numba stream.  Returns the number of kernel launches
    (1, or 0 for an empty output).
    """
    batch, n_in = x.shape
    n_out = W.shape[1]
    return _launch("forward", act, x, W, None, out, b, None, batch, n_in, n_out, config, split_k, workspace,
                   stream)


def affine_backward_dx(dy, W, y, dx, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None, stream=0, act: int = 1) -> int:
    """``dx = (dy * f'(y)) @ W.T``, ``f'`` of activation code ``act`` computed from this layer's output y.

    No derivative when ``y`` is None (or ``act`` is the identity).  dy, y:
    (batch, out), W: (in, out), dx: (batch, in), one dtype.  Options as in
    :func:`affine_forward`.  Returns the number of launches.
    """
    batch, n_out = dy.shape
    n_in = W.shape[0]
    return _launch("dx", IDENTITY if y is None else act, dy, W, y, dx, None, None, batch, n_in, n_out, config,
                   split_k, workspace, stream)


def affine_backward_dw(dy, x, y, dW, db, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None, stream=0, act: int = 1) -> int:
    """``dW = x.T @ (dy * f'(y))`` and ``db`` = its column sums, in one launch.

    ``f'`` as in :func:`affine_backward_dx`.  dy, y: (batch, out), x: (batch,
    in), dW: (in, out), db: (out,), one dtype.  Options as in
    :func:`affine_forward`.  Returns the number of launches.
    """
    batch, n_in = x.shape
    n_out = dy.shape[1]
    return _launch("dw", IDENTITY if y is None else act, x, dy, y, dW, None, db, batch, n_in, n_out, config,
                   split_k, workspace, stream)
