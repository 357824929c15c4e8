"""A stack's affine products (M networks of one shape): one launch per product, the model index a grid dimension.

twin (forward):  mlp.backends.numpy_backend.NumpyBackend._affine_forward, applied model by model
                 to each model's first ``rows[m]`` rows
twin (backward): mlp.backends.numpy_backend.NumpyBackend._affine_backward, likewise

Layout.  Every array has a leading model axis: ``x`` (M, B, in), ``out``,
``dy`` and ``y`` (M, B, out), ``dx`` (M, B, in), and the flat parameter
buffers ``params`` and ``grads`` (M, P), one float dtype (float32 or
float64) throughout, all C-contiguous.  Model m's weights are
``params[m, w_off : w_off + in*out]`` read as a row-major (in, out) matrix,
its bias ``params[m, b_off : b_off + out]``; its gradients sit at the same
offsets of ``grads``.  So the layer of every model of a stack is one pair of
offsets into one buffer, whatever M is, and nothing is copied out of it.

What is computed, for model m with ``r = rows[m]`` (its batch is its first
r rows; ``rows[m] == -1``: stopped, nothing of it is read or written)::

    forward    out[m, :r] = f(x[m, :r] @ W_m + b_m)
    backward   g          = dy[m, :r] * f'(y[m, :r])     (g = dy[m, :r] when y is None)
               dW_m       = x[m, :r].T @ g               (overwritten, not accumulated)
               db_m       = column sums of g             (float64 sums, as the twin's)
               dx[m, :r]  = g @ W_m.T                    (when dx is not None)

``f`` is an activation code (an index of ``activations.ACTIVATIONS``) and
``f'(y)`` its derivative from the output (``activations.grad_from_output``),
applied as dy is loaded; no scaled copy of dy is stored.  Rows past r are
neither read nor written, and r = 0 gives dW = 0 and db = 0.

Kernels.  One factory, :func:`stacked_gemm_kernel`, builds each product per
(dtype, product, activation, tile).  A block computes one BM x BN tile of
one model's output: the grid is ``(row tiles, M, column tiles)``, the model
index ``blockIdx.y`` as in ``stacked``.  The reduction (in for the forward
product, out for dx, the batch rows below r for dW) walks BK-deep slices
staged in two shared buffers (fetch the next slice into registers, multiply
the current one, park the next: one barrier per slice), each thread holding
TM x TN outputs in registers, in the arrangement of the single-model kernel
(``gemm_kernel``: ``TileConfig``, ``slice_depth``, the slice and fragment
index helpers are shared with it).  There is no split-K: the models give
the grid its breadth (a stack of one or two models with long batches and a
small layer leaves the device part idle in dW, whose reduction runs over
the batch).  Blocks whose row tile lies past a model's r leave at once.
db is summed by the threads of the first row of dW tiles from the g tiles
already in shared memory, in float64.

Launches: forward 1; backward 1 (dW with db), 2 with dx; 0 for an empty
output.  ``rows`` is an int64 (M,) device array (a stack's step table row,
so the launches can be captured into a CUDA graph) or a host array, copied
into a per-(stream, M) device buffer (``stacked.model_flags``; such a launch
cannot be captured).  After the first call of a shape nothing is allocated:
configured launches and placeholders are cached (``_launch``).

Limits: at most 65 535 models (the grid's y extent; ``ValueError`` naming
``models``); ``rows[m] <= B`` is trusted (a larger count is clamped to B).
Tile configurations (``TILES``) are selectable by name; ``DEFAULT_TILE``
is 64x64 on a GPU, and the 8x8 tile of 16 threads under the simulator,
whose Python threads make a 256-thread block slow.

Numba's disk cache keys a kernel by this file and its closure's values; the
code inlined from ``activations`` and ``gemm_kernel`` reaches the key
through their digests, which every kernel's closure holds.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import int64, void

from . import gemm_kernel as _gemm
from ._config import ON_SIMULATOR, check_float_dtype, device_function, kernel
from ._launch import ceil_div, configured, placeholder
from .activations import ACTIVATIONS, IDENTITY, SOURCE_DIGEST, activate, grad_from_output
from .gemm_kernel import (_U, BACKWARD_DW, BACKWARD_DX, FORWARD, TileConfig, _frag_index, _pad, _park_slice,
                          _slice_coords, slice_depth)
from .stacked import _check_models, device_rows

#: the products, by name: operand layouts and epilogues as the single-model kernel's ``VARIANTS``
PRODUCTS = {"forward": FORWARD, "dx": BACKWARD_DX, "dw": BACKWARD_DW}

TILES: dict[str, TileConfig] = {
    # A real GPU: 256 threads, 16 outputs each (the single-model kernel's medium tile).
    "64x64": TileConfig("64x64", 64, 64, 16, 4, 4),
    # Few rows per model: twice the row tiles of 64x64, 8 outputs per thread.
    "32x64": TileConfig("32x64", 32, 64, 16, 2, 4),
    # The simulator: 16 threads, so that most shapes span several tiles and slices.
    "8x8": TileConfig("8x8", 8, 8, 4, 2, 2),
}
for _cfg in TILES.values():
    _cfg.check()

DEFAULT_TILE = "8x8" if ON_SIMULATOR else "64x64"

#: a digest of ``gemm_kernel.py``, whose device functions the kernels inline (see the module docstring)
GEMM_SOURCE_DIGEST = int(hashlib.sha256(Path(_gemm.__file__).read_bytes()).hexdigest()[:15], 16) | 1

# where an operand's elements come from
_X, _W, _G = 0, 1, 2  # the layer's input x; the weights in params; dy (times f'(y) when masked)


@device_function
def _fetch(stage, tid, count, nt, extent, bk, k_contig, outer0, outer_n, kt, k_end, source, x, dy, y, params,
           model, w_off, n_out, masked, act, zero, one):
    """Thread ``tid``'s ``count`` elements of one K slice of an operand of model ``model``, into ``stage``.

    The operand is (outer, K) when ``k_contig``, else (K, outer), read from
    ``source``: ``x[model]`` or ``dy[model]`` (times the derivative of
    ``act`` from ``y[model]`` when ``masked``), or the row-major (in, out)
    weights at ``params[model, w_off:]``.  Elements outside
    ``[0, outer_n) x [kt, k_end)`` are zero.
    """
    for l in range(count):
        oo, kk = _slice_coords(tid + l * nt, extent, bk, k_contig)
        go = outer0 + oo
        gk = kt + kk
        v = zero
        if go < outer_n and gk < k_end:
            r, q = (go, gk) if k_contig else (gk, go)
            if source == _W:
                v = params[model, _U(w_off + r * n_out + q)]
            elif source == _X:
                v = x[model, _U(r), _U(q)]
            else:
                v = dy[model, _U(r), _U(q)]
                if masked:
                    v = grad_from_output(v, y[model, _U(r), _U(q)], act, zero, one)
        stage[l] = v


def stacked_gemm_kernel(dtype: Any, product: str, act: int, tile: str = DEFAULT_TILE):
    """The stacked kernel of ``product`` (a key of ``PRODUCTS``) for one dtype, activation code and tile.

    Signature (every product the same; unused arrays get placeholders)::

        (x, dy, y, params, out, grads, rows, w_off, b_off, n_in, n_out)

    launched with grid ``(row tiles, M, column tiles)`` and ``TILES[tile].threads``
    threads.  forward: ``out = f(x @ W + b)``; dx: ``out = (dy * f'(y)) @ W.T``;
    dw: ``grads[:, w_off:]`` = ``x.T @ (dy * f'(y))``, ``grads[:, b_off:]`` = its
    column sums.  ``act`` is applied by the forward product, its derivative
    (from ``y``) by the backward ones; the identity reads no ``y``.
    """
    if product not in PRODUCTS:
        raise ValueError(f"product: expected one of {tuple(PRODUCTS)}, got {product!r}")
    if tile not in TILES:
        raise ValueError(f"tile: expected one of {tuple(TILES)}, got {tile!r}")
    if act not in range(len(ACTIVATIONS)):
        raise ValueError(f"act: expected an activation code in [0, {len(ACTIVATIONS) - 1}] "
                         f"(an index of {ACTIVATIONS}), got {act!r}")
    return _stacked_gemm_kernel(check_float_dtype(dtype), product, int(act), tile)


@functools.lru_cache(maxsize=None)
def _stacked_gemm_kernel(dt: np.dtype, product: str, act: int, tile: str):
    variant = PRODUCTS[product]
    cfg = TILES[tile]
    DT = dt.type
    BM, BN, TM, TN = cfg.bm, cfg.bn, cfg.tm, cfg.tn
    BK = slice_depth(cfg, variant, dt)
    TX, NT = cfg.tx, cfg.threads
    LA = BM * BK // NT  # elements of each A slice one thread stages
    LB = BK * BN // NT
    K_A, K_B = not variant.trans_a, variant.trans_b  # is the operand k-contiguous
    FWD, DX = product == "forward", product == "dx"
    SRC_A = _G if DX else _X  # forward x, dx g, dw x.T
    SRC_B = _W if (FWD or DX) else _G  # forward W, dx W.T, dw g
    MASKED = (not FWD) and act != IDENTITY
    ACT = act
    EPILOGUE_ACT = act if FWD else IDENTITY
    DIGESTS = SOURCE_DIGEST + GEMM_SOURCE_DIGEST  # in the closure: keys the disk cache
    SA = BM + _pad(BM, K_A)  # shared row strides
    SB = BN + _pad(BN, K_B)
    A_SLICE, B_SLICE = BK * SA, BK * SB
    A_SMEM, B_SMEM = 2 * A_SLICE, 2 * B_SLICE  # two buffers each
    GA, GB = min(4, TM), min(4, TN)  # a thread's rows come in runs of GA, ROW_STEP apart (columns likewise)
    ROW_STEP = cfg.ty * GA
    COL_STEP = TX * GB
    ALIGN = _gemm._SMEM_ALIGN

    def stacked_gemm(x, dy, y, params, out, grads, rows, w_off, b_off, n_in, n_out):
        if DIGESTS == 0:  # never (both digests are positive), folded away
            return
        a_sh = cuda.shared.array(A_SMEM, DT, alignment=ALIGN)
        b_sh = cuda.shared.array(B_SMEM, DT, alignment=ALIGN)
        model = cuda.blockIdx.y
        r = rows[model]
        if r < 0:
            return  # a stopped model: the whole block leaves together
        batch = dy.shape[1] if DX else x.shape[1]
        r = min(r, batch)
        if FWD:
            m, n, k = r, n_out, n_in
        elif DX:
            m, n, k = r, n_in, n_out
        else:
            m, n, k = n_in, n_out, r
        tile_m = cuda.blockIdx.x
        tile_n = cuda.blockIdx.z
        if tile_m * BM >= m and (FWD or DX):
            return  # past this model's rows (dW's first row of tiles also sums db, even with no rows)

        tid = cuda.threadIdx.x
        tx = tid % TX
        ty = tid // TX
        row0 = tile_m * BM + ty * GA
        col0 = tile_n * BN + tx * GB
        n_slices = (k + BK - 1) // BK
        zero = DT(0)
        one = DT(1)
        acc = cuda.local.array((TM, TN), DT)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        stage_a = cuda.local.array(LA, DT)
        stage_b = cuda.local.array(LB, DT)
        frag_a = cuda.local.array(TM, DT)
        frag_b = cuda.local.array(TN, DT)
        do_colsum = (not FWD) and (not DX) and tile_m == 0 and tid < BN
        colsum = np.float64(0.0)

        # Step t: fetch slice t into registers, multiply slice t-1 from shared
        # memory, park slice t in the other buffer.
        for t in range(n_slices + 1):
            if t < n_slices:
                kt = t * BK
                _fetch(stage_a, tid, LA, NT, BM, BK, K_A, tile_m * BM, m, kt, k, SRC_A, x, dy, y, params,
                       model, w_off, n_out, MASKED, ACT, zero, one)
                _fetch(stage_b, tid, LB, NT, BN, BK, K_B, tile_n * BN, n, kt, k, SRC_B, x, dy, y, params,
                       model, w_off, n_out, MASKED, ACT, zero, one)
            if t > 0:
                a_base = ((t - 1) & 1) * A_SLICE + ty * GA
                b_base = ((t - 1) & 1) * B_SLICE + tx * GB
                for kk in range(BK):
                    for i in range(TM):
                        frag_a[i] = a_sh[_U(_frag_index(a_base + kk * SA, i, GA, ROW_STEP))]
                    for j in range(TN):
                        frag_b[j] = b_sh[_U(_frag_index(b_base + kk * SB, j, GB, COL_STEP))]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] = cuda.fma(frag_a[i], frag_b[j], acc[i, j])
                if do_colsum:
                    cs_base = ((t - 1) & 1) * B_SLICE + tid
                    for kk in range(BK):
                        colsum += b_sh[_U(cs_base + kk * SB)]
            if t < n_slices:
                _park_slice(a_sh, stage_a, (t & 1) * A_SLICE, tid, LA, NT, BM, BK, SA, K_A)
                _park_slice(b_sh, stage_b, (t & 1) * B_SLICE, tid, LB, NT, BN, BK, SB, K_B)
            cuda.syncthreads()

        if FWD:
            for j in range(TN):
                col = _frag_index(col0, j, GB, COL_STEP)
                frag_b[j] = params[model, _U(b_off + col)] if col < n else zero
        for i in range(TM):
            row = _frag_index(row0, i, GA, ROW_STEP)
            if row < m:
                for j in range(TN):
                    col = _frag_index(col0, j, GB, COL_STEP)
                    if col < n:
                        if FWD:
                            out[model, _U(row), _U(col)] = activate(acc[i, j] + frag_b[j], EPILOGUE_ACT, zero, one)
                        elif DX:
                            out[model, _U(row), _U(col)] = acc[i, j]
                        else:
                            grads[model, _U(w_off + row * n_out + col)] = acc[i, j]
        cs_col = tile_n * BN + tid
        if do_colsum and cs_col < n:
            grads[model, _U(b_off + cs_col)] = DT(colsum)

    nb = from_dtype(dt)
    arr3, arr2 = nb[:, :, ::1], nb[:, ::1]
    signature = void(arr3, arr3, arr3, arr2, arr3, arr2, int64[::1], int64, int64, int64, int64)
    return kernel(signature, launch_bounds=NT)(stacked_gemm)


def check_models(models: int) -> None:
    """Raise ``ValueError`` (naming ``models``) when a stack launch cannot hold ``models`` models."""
    _check_models(models)


def _run(product, act, tile, x, dy, y, params, out, grads, rows, w_off, b_off, n_in, n_out, outer, inner,
         stream) -> int:
    """One launch of ``product`` over the ``outer`` x ``inner`` output tiles of every model."""
    dt = np.dtype((x if x is not None else dy).dtype)
    cfg = TILES[tile]
    kern = stacked_gemm_kernel(dt, product, act, tile)
    models = rows.shape[0]
    grid = (ceil_div(outer, cfg.bm), models, ceil_div(inner, cfg.bn))
    ph2, ph3 = placeholder(dt, 2), placeholder(dt, 3)
    configured(kern, grid, (cfg.threads, 1, 1), stream)(
        ph3 if x is None else x, ph3 if dy is None else dy, ph3 if y is None else y,
        ph2 if params is None else params, ph3 if out is None else out, ph2 if grads is None else grads,
        rows, int(w_off), int(b_off), int(n_in), int(n_out))
    return 1


def affine_forward(x, params, w_off: int, b_off: int, act: int, out, rows, *, stream=0,
                   tile: str | None = None) -> int:
    """``out[m, :r] = f(x[m, :r] @ W_m + b_m)`` for every model m that trains, ``r = rows[m]``.

    x (M, B, in), out (M, B, out), params (M, P), one float dtype;
    ``W_m = params[m, w_off : w_off + in*out]`` row-major (in, out), ``b_m =
    params[m, b_off : b_off + out]``.  act: activation code (an index of
    ``ACTIVATIONS``).  rows: (M,) int64, device or host; -1 marks a stopped
    model, untouched, and rows of out past r are left as they are.
    ``stream``: 0 or a Numba stream; ``tile``: a key of ``TILES``
    (``DEFAULT_TILE`` when None).  Returns launches: 1, or 0 for an empty
    output (M, B or out is 0; in = 0 gives ``f(b)``).
    """
    models, batch, n_in = x.shape
    n_out = out.shape[2]
    check_models(models)
    if models == 0 or batch == 0 or n_out == 0:
        return 0
    return _run("forward", act, tile or DEFAULT_TILE, x, None, None, params, out, None,
                device_rows(rows, stream), w_off, b_off, n_in, n_out, batch, n_out, stream)


def affine_backward(dy, x, params, y, dx, grads, w_off: int, b_off: int, act: int, rows, *, stream=0,
                    tile: str | None = None) -> int:
    """The layer's backward products for every model m that trains, over its first ``r = rows[m]`` rows.

    ``g = dy * f'(y)`` (f of activation code ``act``, its derivative from the
    layer's output y; ``g = dy`` when y is None); then
    ``grads[m, w_off : w_off + in*out]`` (row-major (in, out)) ``= x[m, :r].T @ g``,
    ``grads[m, b_off : b_off + out]`` = column sums of g (both overwritten;
    zero when r is 0) and, when dx is not None, ``dx[m, :r] = g @ W_m.T``.
    dy, y (M, B, out), x and dx (M, B, in), params and grads (M, P), one float
    dtype.  rows, stream, tile as in :func:`affine_forward`.  Returns launches:
    1 (dW and db), 2 with dx; 0 for an empty stack or a layer without outputs.
    """
    models, batch, n_out = dy.shape
    n_in = x.shape[2]
    check_models(models)
    if models == 0 or n_out == 0:
        return 0
    tile = tile or DEFAULT_TILE
    act = IDENTITY if y is None else act
    rows = device_rows(rows, stream)
    launches = _run("dw", act, tile, x, dy, y, None, None, grads, rows, w_off, b_off, n_in, n_out,
                    max(n_in, 1), n_out, stream)
    if dx is not None and batch > 0 and n_in > 0:
        launches += _run("dx", act, tile, None, dy, y, params, dx, None, rows, w_off, b_off, n_in, n_out,
                         batch, n_in, stream)
    return launches
