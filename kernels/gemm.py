"""Tiled matrix products with fused epilogues: the affine layer, forward and backward.

twin (forward):  mlp.backends.numpy_backend.NumpyBackend._affine_forward
                 (``np.matmul`` then ``_cpu_loops.bias_act_inplace``)
twin (backward): mlp.backends.numpy_backend.NumpyBackend._affine_backward
                 (``_cpu_loops.relu_mask_colsum`` / ``colsum`` then two ``np.matmul``)

One kernel factory, :func:`gemm_kernel`, builds every product the layer needs
from compile-time options::

    forward   out = relu?(x @ W + b)            A = x,   B = W
    dx        dx  = (dy * [y > 0]) @ W.T        A = dy (masked on load), B = W read transposed
    dW, db    dW  = x.T @ (dy * [y > 0])        A = x read transposed, B = dy (masked on load)
              db  = column sums of the masked dy, taken from the B tiles already in
                    shared memory by the blocks of the first row of output tiles

Design (per thread block of 256 threads, output tile BM x BN):

* The K loop walks BK-wide slices.  Each slice of A (BM x BK) and B (BK x BN)
  is staged in shared memory, both stored k-major so the inner product reads
  a column of A and a row of B as contiguous vectors.  Global loads are laid
  out so consecutive threads read consecutive addresses of whichever operand
  dimension is contiguous in memory; a k-contiguous operand is transposed on
  its way into shared memory, into rows padded to a stride of 4 modulo 32
  banks (conflict-free stores for BK = 8, two-way for BK = 16, and rows that
  stay 16-byte aligned).
* Two shared buffers and a register stage form a software pipeline: the
  global loads of slice t are issued before the products of slice t-1, and
  land in the other buffer afterwards, so one barrier per slice suffices.
* Each thread owns a TM x TN block of outputs in registers (local arrays of
  compile-time size indexed only by unrolled loop counters).  Its rows come
  in runs of four adjacent rows, the runs ``TY*4`` apart (likewise columns):
  a warp's A reads are broadcasts and its B reads one contiguous span, so no
  bank conflicts, and adjacent elements can be fetched as 16-byte vectors
  (shared arrays are 16-byte aligned; how many loads the compiler actually
  fuses varies by configuration, see the PTX).
* The epilogue adds the bias and applies the ReLU before the single store.
* Split-K (``gridDim.z > 1``) for outputs too small to fill the device: each
  split writes its partial tile to a workspace, and the last block to finish
  a tile (an atomic ticket per tile) sums the partials in split order, so the
  result does not depend on which block came last, then runs the epilogue.
  Tickets reset themselves, so one launch is all it takes.

The ReLU mask is applied while dy is loaded (``v if y > 0 else 0``, NaN in y
masks like the twin); no masked copy of dy is ever stored.

Launches: forward 1; backward 2 (dW with db, then dx) or 1 without dx;
split-K does not add any.

Tile configurations (``TILES``) are selectable by name so a benchmark can
time each; ``"auto"`` picks by output size against the SM count
(:func:`plan`).  ``naive`` (forward only) is the one-thread-per-output
baseline, kept for reading and comparison, never chosen automatically.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, int32, int64, void

from ._config import ON_SIMULATOR, check_float_dtype, kernel, sm_count
from ._launch import ceil_div, configured, placeholder


@dataclass(frozen=True)
class TileConfig:
    """A block tile of BM x BN outputs, K slices of BK, TM x TN outputs per thread."""

    name: str
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    #: if set, ask the compiler to fit this many blocks per SM (caps registers)
    min_blocks: int | None = None
    #: if set, the K slice of the forward product (the backward ones use ``bk``)
    forward_bk: int | None = None

    @property
    def tx(self) -> int:  # threads along N
        return self.bn // self.tn

    @property
    def ty(self) -> int:  # threads along M
        return self.bm // self.tm

    @property
    def threads(self) -> int:
        return self.tx * self.ty

    def _slice_depths(self) -> tuple[int, ...]:
        return (self.bk,) if self.forward_bk is None else (self.bk, self.forward_bk)

    def check(self) -> None:
        """Raise unless the kernel's index arithmetic holds for this shape."""
        t = self.threads
        rules = {
            "tiles split evenly over threads": self.bm % self.tm == 0 and self.bn % self.tn == 0,
            "slices split evenly over threads": all((self.bm * bk) % t == 0 and (bk * self.bn) % t == 0
                                                    for bk in self._slice_depths()),
            "BK divides 32": all(bk <= 32 and 32 % bk == 0 for bk in self._slice_depths()),
            "fragments in runs of min(4, TM/TN)": self.tm % min(4, self.tm) == 0 and self.tn % min(4, self.tn) == 0,
            "one thread per column for column sums": t >= self.bn,
            "at most 1024 threads": t <= 1024,
        }
        broken = [rule for rule, ok in rules.items() if not ok]
        if broken:
            raise ValueError(f"tile configuration {self}: {', '.join(broken)}")


TILES: dict[str, TileConfig] = {
    # Few rows (small batches): twice the blocks of 64x64 along M, 8 outputs per thread.
    "32x64": TileConfig("32x64", 32, 64, 16, 2, 4),
    # Medium outputs: 16 outputs per thread; about 120 registers, two blocks per SM.
    "64x64": TileConfig("64x64", 64, 64, 16, 4, 4),
    # Large outputs: 64 outputs per thread, 16 fragment elements read per 64 FMAs;
    # about 170 registers (float32), one block per SM.  The forward product
    # takes K slices of 16, which halve the barriers per FMA (measured on an
    # H100 at 4096^3: 28.2 against 25.8 TFLOP/s with slices of 8; float64
    # falls back to 8, see slice_depth); the backward products keep 8.
    "128x128": TileConfig("128x128", 128, 128, 8, 8, 8, forward_bk=16),
}
for _cfg in TILES.values():
    _cfg.check()

#: Names accepted by the launchers' ``config`` argument.
CONFIG_NAMES = ("auto", "naive", *TILES)

MAX_SPLIT_K = 32
STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static shared memory a block may declare


@dataclass(frozen=True)
class Variant:
    """Compile-time shape of one product: operand layouts, where the mask applies, epilogue."""

    trans_a: bool  # A stored as (K, M) instead of (M, K)
    trans_b: bool  # B stored as (N, K) instead of (K, N)
    mask_a: bool  # multiply A by [mask > 0] as it is loaded
    mask_b: bool  # multiply B by [mask > 0] as it is loaded
    bias: bool  # add bias[col] in the epilogue
    colsum: bool  # also write the column sums of (masked) B


FORWARD = Variant(trans_a=False, trans_b=False, mask_a=False, mask_b=False, bias=True, colsum=False)
BACKWARD_DX = Variant(trans_a=False, trans_b=True, mask_a=True, mask_b=False, bias=False, colsum=False)
BACKWARD_DW = Variant(trans_a=True, trans_b=False, mask_a=False, mask_b=True, bias=False, colsum=True)
VARIANTS = {"forward": FORWARD, "dx": BACKWARD_DX, "dw": BACKWARD_DW}


def _pad(extent: int, k_contiguous: bool) -> int:
    """Row padding of a k-major shared tile.

    A k-contiguous operand is transposed on its way into shared memory: one
    warp stores BK rows x (32 / BK) columns.  A row stride of 4 modulo 32
    makes those stores conflict-free for BK = 8 (two-way for BK = 16) while
    keeping every row 16-byte aligned for vector loads in the product loop.
    """
    if not k_contiguous:
        return 0
    return (4 - extent) % 32


# Shared tiles are read four elements at a time; 16-byte alignment lets the
# compiler use vector loads (the simulator rejects the argument; None is the default).
_SMEM_ALIGN = None if ON_SIMULATOR else 16


def _shared_elements(cfg: TileConfig, variant: Variant, bk: int) -> int:
    sa = cfg.bm + _pad(cfg.bm, not variant.trans_a)
    sb = cfg.bn + _pad(cfg.bn, variant.trans_b)
    return 2 * bk * (sa + sb)  # two buffers of each operand


def slice_depth(cfg: TileConfig, variant: Variant, dtype: Any) -> int:
    """The K slice a kernel uses: the tile's BK (its ``forward_bk`` for the forward product),
    halved (down to 8) until the shared tiles fit.

    Any slice depth is correct for any K range (a partial last slice is
    zero-filled); split-K chunks are multiples of ``bk``.
    """
    bk = cfg.forward_bk if (variant == FORWARD and cfg.forward_bk) else cfg.bk
    while bk > 8 and _shared_elements(cfg, variant, bk) * np.dtype(dtype).itemsize > STATIC_SHARED_LIMIT:
        bk //= 2
    return bk


@functools.lru_cache(maxsize=None)
def gemm_kernel(dtype: Any, config: str, variant: Variant):
    """The tiled product kernel for one dtype, tile configuration and variant.

    Signature (every variant the same; unused arrays get placeholders)::

        (a, b, mask, c, bias, colsum_out, ws, ws_colsum, tickets,
         m, n, k, k_chunk, relu, use_mask)

    computes ``c[m, n] = op(a) @ op(b)`` over the K range
    ``[z*k_chunk, (z+1)*k_chunk)`` of split ``z = blockIdx.z``.
    """
    dt = check_float_dtype(dtype)
    cfg = TILES[config]
    DT = dt.type
    BM, BN, TM, TN = cfg.bm, cfg.bn, cfg.tm, cfg.tn
    BK = slice_depth(cfg, variant, dt)
    TX, TY, NT = cfg.tx, cfg.ty, cfg.threads
    LA = BM * BK // NT  # elements of each A slice one thread stages
    LB = BK * BN // NT
    TRANS_A, TRANS_B = variant.trans_a, variant.trans_b
    MASK_A, MASK_B = variant.mask_a, variant.mask_b
    HAS_BIAS, COLSUM = variant.bias, variant.colsum
    SA = BM + _pad(BM, not TRANS_A)  # shared row strides
    SB = BN + _pad(BN, TRANS_B)
    A_SLICE = BK * SA
    B_SLICE = BK * SB
    A_SMEM = 2 * A_SLICE  # two buffers each
    B_SMEM = 2 * B_SLICE
    if (A_SMEM + B_SMEM) * dt.itemsize > STATIC_SHARED_LIMIT:
        raise ValueError(f"tile {config} needs {(A_SMEM + B_SMEM) * dt.itemsize} bytes of shared memory "
                         f"for {dt}; static shared arrays are limited to {STATIC_SHARED_LIMIT}")
    # A thread's TM rows come in groups of GA adjacent rows (one vector load
    # per group), the groups TY*GA rows apart; likewise its TN columns.
    GA = min(4, TM)
    GB = min(4, TN)
    ROW_STEP = TY * GA
    COL_STEP = TX * GB
    ALIGN = _SMEM_ALIGN
    # Indices known to be in range are cast to unsigned: Numba then skips its
    # negative-index wraparound, which costs instructions in the hot loop and
    # hides from the compiler that adjacent shared elements are adjacent
    # (blocking vector loads).
    U = np.uint64

    def gemm(a, b, mk, c, bias, cs_out, ws, ws_cs, tickets, m, n, k, k_chunk, relu, use_mask):
        a_sh = cuda.shared.array(A_SMEM, DT, alignment=ALIGN)
        b_sh = cuda.shared.array(B_SMEM, DT, alignment=ALIGN)
        is_last = cuda.shared.array(1, np.int32)

        tid = cuda.threadIdx.x
        tx = tid % TX
        ty = tid // TX
        tile_m = cuda.blockIdx.x
        tile_n = cuda.blockIdx.y
        row0 = tile_m * BM + ty * GA  # this thread's first output row and column
        col0 = tile_n * BN + tx * GB
        split = cuda.blockIdx.z
        n_split = cuda.gridDim.z
        k_begin = split * k_chunk
        k_end = min(k, k_begin + k_chunk)
        n_slices = (k_end - k_begin + BK - 1) // BK
        zero = DT(0)

        acc = cuda.local.array((TM, TN), DT)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        stage_a = cuda.local.array(LA, DT)
        stage_b = cuda.local.array(LB, DT)
        frag_a = cuda.local.array(TM, DT)
        frag_b = cuda.local.array(TN, DT)
        cs_col = tile_n * BN + tid  # column whose sum this thread keeps (if any)
        do_colsum = COLSUM and tile_m == 0 and tid < BN
        colsum = np.float64(0.0)

        # Pipeline step t: fetch slice t into registers, multiply slice t-1
        # from shared memory, then park slice t in the other shared buffer.
        for t in range(n_slices + 1):
            if t < n_slices:
                kt = k_begin + t * BK
                for l in range(LA):
                    e = tid + l * NT
                    if TRANS_A:
                        kk = e // BM
                        mm = e % BM
                    else:
                        mm = e // BK
                        kk = e % BK
                    gr = tile_m * BM + mm
                    gk = kt + kk
                    v = zero
                    if gr < m and gk < k_end:
                        if TRANS_A:
                            v = a[U(gk), U(gr)]
                            if MASK_A and use_mask != 0 and not (mk[U(gk), U(gr)] > zero):
                                v = zero
                        else:
                            v = a[U(gr), U(gk)]
                            if MASK_A and use_mask != 0 and not (mk[U(gr), U(gk)] > zero):
                                v = zero
                    stage_a[l] = v
                for l in range(LB):
                    e = tid + l * NT
                    if TRANS_B:
                        nn = e // BK
                        kk = e % BK
                    else:
                        kk = e // BN
                        nn = e % BN
                    gc = tile_n * BN + nn
                    gk = kt + kk
                    v = zero
                    if gc < n and gk < k_end:
                        if TRANS_B:
                            v = b[U(gc), U(gk)]
                            if MASK_B and use_mask != 0 and not (mk[U(gc), U(gk)] > zero):
                                v = zero
                        else:
                            v = b[U(gk), U(gc)]
                            if MASK_B and use_mask != 0 and not (mk[U(gk), U(gc)] > zero):
                                v = zero
                    stage_b[l] = v

            if t > 0:
                a_base = ((t - 1) & 1) * A_SLICE + ty * GA
                b_base = ((t - 1) & 1) * B_SLICE + tx * GB
                for kk in range(BK):
                    for i in range(TM):
                        frag_a[i] = a_sh[U(a_base + kk * SA + (i // GA) * ROW_STEP + i % GA)]
                    for j in range(TN):
                        frag_b[j] = b_sh[U(b_base + kk * SB + (j // GB) * COL_STEP + j % GB)]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] = cuda.fma(frag_a[i], frag_b[j], acc[i, j])
                if do_colsum:
                    cs_base = ((t - 1) & 1) * B_SLICE + tid
                    for kk in range(BK):
                        colsum += b_sh[U(cs_base + kk * SB)]

            if t < n_slices:
                a_base = (t & 1) * A_SLICE
                b_base = (t & 1) * B_SLICE
                for l in range(LA):
                    e = tid + l * NT
                    if TRANS_A:
                        a_sh[U(a_base + (e // BM) * SA + e % BM)] = stage_a[l]
                    else:
                        a_sh[U(a_base + (e % BK) * SA + e // BK)] = stage_a[l]
                for l in range(LB):
                    e = tid + l * NT
                    if TRANS_B:
                        b_sh[U(b_base + (e % BK) * SB + e // BK)] = stage_b[l]
                    else:
                        b_sh[U(b_base + (e // BN) * SB + e % BN)] = stage_b[l]
            cuda.syncthreads()

        if n_split > 1:
            # Publish this split's partial tile, then take a ticket; the
            # block drawing the last ticket reduces all partials.
            for i in range(TM):
                r = row0 + (i // GA) * ROW_STEP + i % GA
                if r < m:
                    for j in range(TN):
                        col = col0 + (j // GB) * COL_STEP + j % GB
                        if col < n:
                            ws[split, r, col] = acc[i, j]
            if do_colsum and cs_col < n:
                ws_cs[split, cs_col] = colsum
            cuda.threadfence()
            cuda.syncthreads()
            tile_id = tile_n * cuda.gridDim.x + tile_m
            if tid == 0:
                ticket = cuda.atomic.add(tickets, tile_id, 1)
                is_last[0] = 1 if ticket == n_split - 1 else 0
            cuda.syncthreads()
            if is_last[0] == 0:
                return
            cuda.threadfence()
            for i in range(TM):
                r = row0 + (i // GA) * ROW_STEP + i % GA
                for j in range(TN):
                    col = col0 + (j // GB) * COL_STEP + j % GB
                    if r < m and col < n:
                        total = zero
                        for s in range(n_split):
                            if s == split:
                                total += acc[i, j]
                            else:
                                total += ws[s, r, col]
                        acc[i, j] = total
            if do_colsum and cs_col < n:
                total64 = np.float64(0.0)
                for s in range(n_split):
                    if s == split:
                        total64 += colsum
                    else:
                        total64 += ws_cs[s, cs_col]
                colsum = total64
            if tid == 0:
                tickets[tile_id] = 0

        if HAS_BIAS:
            for j in range(TN):
                col = col0 + (j // GB) * COL_STEP + j % GB
                frag_b[j] = bias[col] if col < n else zero
        for i in range(TM):
            r = row0 + (i // GA) * ROW_STEP + i % GA
            if r < m:
                for j in range(TN):
                    col = col0 + (j // GB) * COL_STEP + j % GB
                    if col < n:
                        v = acc[i, j]
                        if HAS_BIAS:
                            v = v + frag_b[j]
                        if relu != 0:
                            v = v if v > zero else zero
                        c[r, col] = v
        if do_colsum and cs_col < n:
            cs_out[cs_col] = colsum

    nb = from_dtype(dt)
    mat = nb[:, ::1]
    sig = void(mat, mat, mat, mat, nb[::1], nb[::1], nb[:, :, ::1], float64[:, ::1], int32[::1],
               int64, int64, int64, int64, int64, int64)
    bounds = NT if cfg.min_blocks is None else (NT, cfg.min_blocks)
    return kernel(sig, launch_bounds=bounds)(gemm)


@functools.lru_cache(maxsize=None)
def naive_kernel(dtype: Any):
    """One thread per output of ``relu?(x @ W + b)``: the readable baseline, not a default."""
    dt = check_float_dtype(dtype)
    DT = dt.type

    def affine_naive(x, w, bias, out, m, n, k, relu):
        col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        if row < m and col < n:
            s = DT(0)
            for kk in range(k):
                s = cuda.fma(x[row, kk], w[kk, col], s)
            v = s + bias[col]
            if relu != 0:
                v = v if v > DT(0) else DT(0)
            out[row, col] = v

    nb = from_dtype(dt)
    sig = void(nb[:, ::1], nb[:, ::1], nb[::1], nb[:, ::1], int64, int64, int64, int64)
    return kernel(sig)(affine_naive)


# ------------------------------------------------------------------ planning
def plan(m: int, n: int, k: int, config: str = "auto", split_k: int | None = None,
         dtype: Any = np.float32) -> tuple[str, int]:
    """``(tile configuration, K splits)`` for an (m x k) @ (k x n) product.

    ``auto``: the 128x128 tile when it alone yields a full wave of blocks
    (float32 only: 64 float64 accumulators exhaust the registers), 32x64 for
    at most 32 rows, else 64x64.  ``split_k=None`` splits K only
    when the tiles cannot fill the device: up to two blocks per SM, at least
    four K slices per split, at most ``MAX_SPLIT_K``.
    """
    if config not in TILES and config != "auto":
        raise ValueError(f"config: expected one of {CONFIG_NAMES}, got {config!r}")
    sms = sm_count()

    def tiles(cfg: TileConfig) -> int:
        return max(1, ceil_div(m, cfg.bm)) * ceil_div(n, cfg.bn)

    if config == "auto":
        if np.dtype(dtype) == np.float32 and tiles(TILES["128x128"]) >= sms:
            config = "128x128"
        elif m <= 32:
            config = "32x64"
        else:
            config = "64x64"
    cfg = TILES[config]
    k_slices = ceil_div(k, cfg.bk)
    if split_k is None:
        blocks = tiles(cfg)
        split_k = 1
        if blocks < sms:
            split_k = max(1, min(ceil_div(2 * sms, blocks), k_slices // 4, MAX_SPLIT_K))
    split_k = int(split_k)
    if split_k < 1:
        raise ValueError(f"split_k: expected an integer >= 1, got {split_k}")
    return config, min(split_k, MAX_SPLIT_K, max(1, k_slices))


class GemmWorkspace:
    """Split-K scratch, reused across launches on one stream.

    Partial tiles are kept per (dtype, splits, m, n) (a few shapes per
    network); tickets are one int32 per output tile, zero between launches
    because the reducing block resets its own.
    """

    _MAX_PARTIALS = 32

    def __init__(self) -> None:
        self._partials: dict = {}
        self._tickets = None
        self._lock = threading.Lock()

    def partials(self, dtype, splits: int, m: int, n: int):
        key = (np.dtype(dtype), splits, m, n)
        bufs = self._partials.get(key)
        if bufs is None:
            with self._lock:
                if len(self._partials) >= self._MAX_PARTIALS:
                    self._partials.clear()
                bufs = self._partials[key] = (
                    cuda.device_array((splits, max(m, 1), n), dtype=key[0]),
                    cuda.device_array((splits, n), dtype=np.float64),
                )
        return bufs

    def tickets(self, count: int):
        t = self._tickets
        if t is None or t.shape[0] < count:
            with self._lock:
                t = self._tickets
                if t is None or t.shape[0] < count:
                    t = self._tickets = cuda.to_device(np.zeros(max(count, 1024), dtype=np.int32))
        return t


_default_workspace = GemmWorkspace()


# Everything about a launch that depends only on the shapes and options
# (configured kernel, K chunk, scratch), built once per shape: the per-call
# host work is then one dictionary lookup and the launch itself.
_recipes: dict = {}
_MAX_RECIPES = 512


def _recipe(variant_name, dt, m, n, k, config, split_k, workspace):
    variant = VARIANTS[variant_name]
    config, splits = plan(m, n, k, config, split_k, dt)
    cfg = TILES[config]
    grid_m = max(1, ceil_div(m, cfg.bm))
    grid_n = ceil_div(n, cfg.bn)
    if splits > 1:
        k_chunk = ceil_div(ceil_div(k, cfg.bk), splits) * cfg.bk
        splits = ceil_div(k, k_chunk)
    else:
        k_chunk = k
    if splits > 1:
        ws = workspace or _default_workspace
        partial, partial_cs = ws.partials(dt, splits, m, n)
        tickets = ws.tickets(grid_m * grid_n)
    else:
        partial, partial_cs = placeholder(dt, 3), placeholder(np.float64, 2)
        tickets = placeholder(np.int32, 1)
    launch = configured(gemm_kernel(dt, config, variant), (grid_m, grid_n, splits), (cfg.threads, 1, 1))
    return launch, k_chunk, partial, partial_cs, tickets, placeholder(dt, 2), placeholder(dt, 1)


def _launch(variant_name, a, b, mask, c, bias, colsum_out, m, n, k, relu, config, split_k, workspace) -> int:
    if n == 0 or (m == 0 and not VARIANTS[variant_name].colsum):
        return 0
    dt = c.dtype
    key = (variant_name, dt, m, n, k, config, split_k, id(workspace))
    recipe = _recipes.get(key)
    if recipe is None:
        recipe = _recipe(variant_name, np.dtype(dt), m, n, k, config, split_k, workspace)
        if len(_recipes) >= _MAX_RECIPES:
            _recipes.clear()
        _recipes[key] = recipe
    launch, k_chunk, partial, partial_cs, tickets, spare_2d, spare_1d = recipe
    launch(
        a, b, spare_2d if mask is None else mask, c, spare_1d if bias is None else bias,
        spare_1d if colsum_out is None else colsum_out, partial, partial_cs, tickets,
        m, n, k, k_chunk, 1 if relu else 0, 0 if mask is None else 1,
    )
    return 1


# ------------------------------------------------------------------ launchers
def affine_forward(x, W, b, relu: bool, out, *, config: str = "auto", split_k: int | None = None,
                   workspace: GemmWorkspace | None = None) -> int:
    """``out = relu?(x @ W + b)``.  x: (N, K), W: (K, M), b: (M,), out: (N, M), one dtype.

    Returns the number of kernel launches (1, or 0 for an empty output).
    """
    m, k = x.shape
    n = W.shape[1]
    if config == "naive":
        if m == 0 or n == 0:
            return 0
        block = (32, 8, 1)
        grid = (ceil_div(n, 32), ceil_div(m, 8), 1)
        configured(naive_kernel(np.dtype(x.dtype)), grid, block)(x, W, b, out, m, n, k, int(bool(relu)))
        return 1
    return _launch("forward", x, W, None, out, b, None, m, n, k, relu, config, split_k, workspace)


def affine_backward_dx(dy, W, y, dx, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None) -> int:
    """``dx = (dy * [y > 0]) @ W.T`` (no mask when ``y`` is None).

    dy, y: (N, M), W: (K, M), dx: (N, K).  Returns the number of launches.
    """
    m, k = dy.shape
    n = W.shape[0]
    return _launch("dx", dy, W, y, dx, None, None, m, n, k, False, config, split_k, workspace)


def affine_backward_dw(dy, x, y, dW, db, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None) -> int:
    """``dW = x.T @ (dy * [y > 0])`` and ``db`` = its column sums, in one launch.

    dy, y: (N, M), x: (N, K), dW: (K, M), db: (M,).  Returns the number of launches.
    """
    k, m = x.shape  # the batch is this product's K
    n = dy.shape[1]
    return _launch("dw", x, dy, y, dW, None, db, m, n, k, False, config, split_k, workspace)
