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

A and B tiles are staged by one loader (:func:`_fetch_slice` /
:func:`_park_slice`, inlined): an operand is "k-contiguous or not", whichever
of A and B it is.

Tile configurations (``TILES``) are selectable by name so a benchmark can
time each; ``"auto"`` takes the current device's measured tuning table entry
for the shape (``kernels/tuning/``, written by ``bench/tune_gemm.py``), else
picks by output size against the SM count (:func:`plan`).  The naive
one-thread-per-output baseline lives in ``bench/naive_gemm.py``.

Launchers take ``stream`` (0, the default stream, or a Numba stream) and
launch on it only.  Their per-shape state (configured launch, split-K
scratch) is kept in a :class:`GemmWorkspace` and never evicted, so captured
CUDA graphs stay valid; :func:`prepare` / :func:`prepare_affine` make it
ahead of time, since nothing may be allocated during graph capture.
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

from ._config import ON_SIMULATOR, check_float_dtype, device_function, kernel, sm_count
from . import _tuning
from ._launch import ceil_div, placeholder, prepared, stream_key


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
CONFIG_NAMES = ("auto", *TILES)

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


# Indices known to be in range are cast to unsigned: Numba then skips its
# negative-index wraparound, which costs instructions in the hot loop and
# hides from the compiler that adjacent shared elements are adjacent
# (blocking vector loads).
_U = np.uint64


@device_function
def _slice_coords(e, extent, bk, k_contig):
    """``(outer, k)`` of element ``e`` of one operand's K slice (``extent`` x ``bk``).

    Consecutive elements run along whichever dimension is contiguous in the
    operand's global layout (k when ``k_contig``), so a warp's loads coalesce.
    """
    if k_contig:
        return e // bk, e % bk
    return e % extent, e // extent


@device_function
def _fetch_slice(src, mk, stage, tid, outer0, outer_n, kt, k_end, use_mask, zero,
                 count, nt, extent, bk, k_contig, masked):
    """Thread ``tid``'s ``count`` elements of one K slice of an operand, into registers ``stage``.

    The operand is (outer, K) when ``k_contig``, else (K, outer); elements
    outside ``[0, outer_n) x [kt, k_end)`` are zero, and with ``masked`` (and
    ``use_mask``) so is every element whose ``mk`` entry is not > 0.  The same
    code loads A (outer = M) and B (outer = N).
    """
    for l in range(count):
        oo, kk = _slice_coords(tid + l * nt, extent, bk, k_contig)
        go = outer0 + oo
        gk = kt + kk
        v = zero
        if go < outer_n and gk < k_end:
            r, q = (go, gk) if k_contig else (gk, go)
            v = src[_U(r), _U(q)]
            if masked and use_mask != 0 and not (mk[_U(r), _U(q)] > zero):
                v = zero
        stage[l] = v


@device_function
def _park_slice(sh, stage, base, tid, count, nt, extent, bk, stride, k_contig):
    """Store a slice fetched by :func:`_fetch_slice` k-major into shared memory at ``base``.

    Row ``k`` of the slice starts at ``base + k * stride``; a k-contiguous
    operand is transposed on the way.
    """
    for l in range(count):
        oo, kk = _slice_coords(tid + l * nt, extent, bk, k_contig)
        sh[_U(base + kk * stride + oo)] = stage[l]


@device_function
def _frag_index(first, i, run, step):
    """Output row (or column) of fragment element ``i``: runs of ``run`` adjacent
    indices, ``step`` apart, from ``first``."""
    return first + (i // run) * step + i % run


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
                _fetch_slice(a, mk, stage_a, tid, tile_m * BM, m, kt, k_end, use_mask, zero,
                             LA, NT, BM, BK, not TRANS_A, MASK_A)
                _fetch_slice(b, mk, stage_b, tid, tile_n * BN, n, kt, k_end, use_mask, zero,
                             LB, NT, BN, BK, TRANS_B, MASK_B)

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
                _park_slice(a_sh, stage_a, (t & 1) * A_SLICE, tid, LA, NT, BM, BK, SA, not TRANS_A)
                _park_slice(b_sh, stage_b, (t & 1) * B_SLICE, tid, LB, NT, BN, BK, SB, TRANS_B)
            cuda.syncthreads()

        if n_split > 1:
            # Publish this split's partial tile, then take a ticket; the
            # block drawing the last ticket reduces all partials.
            for i in range(TM):
                r = _frag_index(row0, i, GA, ROW_STEP)
                if r < m:
                    for j in range(TN):
                        col = _frag_index(col0, j, GB, COL_STEP)
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
                r = _frag_index(row0, i, GA, ROW_STEP)
                for j in range(TN):
                    col = _frag_index(col0, j, GB, COL_STEP)
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
                col = _frag_index(col0, j, GB, COL_STEP)
                frag_b[j] = bias[col] if col < n else zero
        for i in range(TM):
            r = _frag_index(row0, i, GA, ROW_STEP)
            if r < m:
                for j in range(TN):
                    col = _frag_index(col0, j, GB, COL_STEP)
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


# ------------------------------------------------------------------ planning
#: Tiles the heuristic of :func:`plan` picks from, by dtype: float64 never
#: takes 128x128 (64 float64 accumulators per thread exhaust the registers).
AUTO_TILES: dict[str, tuple[str, ...]] = {
    "float32": ("32x64", "64x64", "128x128"),
    "float64": ("32x64", "64x64"),
}
_LARGE, _FEW_ROWS, _MEDIUM = "128x128", "32x64", "64x64"
_FEW_ROWS_MAX = 32


@functools.lru_cache(maxsize=None)
def tuning_table() -> dict:
    """The measured table for the current device (``kernels/tuning/``), empty if none or on the simulator."""
    name = _tuning.current_device_name()
    if name is None:
        return {}
    return _tuning.load_table(_tuning.table_path(name), TILES)


def plan(m: int, n: int, k: int, config: str = "auto", split_k: int | None = None,
         dtype: Any = np.float32, variant: str | None = None) -> tuple[str, int]:
    """``(tile configuration, K splits)`` for an (m x k) @ (k x n) product.

    ``auto`` with ``split_k=None``: the current device's tuning table entry
    for ``(variant, dtype, m, n, k)`` when there is one, else the heuristic:
    the 128x128 tile when it alone yields a full wave of blocks (float32
    only, see ``AUTO_TILES``), 32x64 for at most 32 rows, else 64x64; K is
    split only when the tiles cannot fill the device: up to two blocks per
    SM, at least four K slices per split, at most ``MAX_SPLIT_K``.
    """
    if config not in TILES and config != "auto":
        raise ValueError(f"config: expected one of {CONFIG_NAMES}, got {config!r}")
    dt = check_float_dtype(dtype)
    if config == "auto" and split_k is None and variant is not None:
        config, split_k = tuning_table().get(_tuning.key(variant, dt, m, n, k), ("auto", None))
    sms = sm_count()

    def tiles(cfg: TileConfig) -> int:
        return max(1, ceil_div(m, cfg.bm)) * ceil_div(n, cfg.bn)

    if config == "auto":
        if _LARGE in AUTO_TILES[dt.name] and tiles(TILES[_LARGE]) >= sms:
            config = _LARGE
        elif m <= _FEW_ROWS_MAX:
            config = _FEW_ROWS
        else:
            config = _MEDIUM
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


def selectable_kernels(dtype: Any, config: str = "auto") -> set[tuple[str, str]]:
    """Every ``(tile configuration, variant)`` the launchers can pick for ``dtype`` and ``config``.

    ``auto``: the heuristic's ``AUTO_TILES`` and the current device's tuning
    table entries for the dtype; a named configuration: that one alone.
    """
    dt = check_float_dtype(dtype)
    if config != "auto":
        plan(1, 1, 1, config, 1, dt)  # validates the name
        return {(config, v) for v in VARIANTS}
    picks = {(c, v) for c in AUTO_TILES[dt.name] for v in VARIANTS}
    picks |= {(c, key[0]) for key, (c, _) in tuning_table().items() if key[1] == dt.name}
    return picks


@dataclass(frozen=True)
class _Recipe:
    """Everything about a launch that depends only on the shapes, options and stream."""

    launch: Any  # the configured kernel
    k_chunk: int
    partial: Any  # split-K partial tiles, or a placeholder
    partial_colsum: Any
    tickets: Any
    spare_2d: Any  # placeholders for an absent mask
    spare_1d: Any  # ... and an absent bias or column-sum output


class GemmWorkspace:
    """Split-K scratch and launch recipes for the products of one owner (a backend, say).

    Partial tiles are kept per (dtype, splits, m, n), tickets as one int32
    per output tile (zero between launches: the reducing block resets its
    own), recipes per (variant, dtype, shapes, options, stream).  Nothing is
    ever evicted: captured CUDA graphs point at these buffers, so they live
    as long as the workspace.  A network needs a few entries per layer and
    batch size (three products each), so the workspace stays small.

    The scratch is shared by every product launched through the workspace:
    launch them on one stream (or serialise the streams), never concurrently.
    ``reserve`` and ``prepare`` allocate everything up front, so that
    launches afterwards (during graph capture, for one) allocate nothing.
    """

    def __init__(self) -> None:
        self._partials: dict = {}
        self._tickets = None
        self._recipes: dict = {}
        self._lock = threading.Lock()

    def partials(self, dtype, splits: int, m: int, n: int):
        """``(partial tiles (splits, m, n), partial column sums (splits, n) float64)``, allocated once."""
        key = (np.dtype(dtype), splits, m, n)
        bufs = self._partials.get(key)
        if bufs is None:
            with self._lock:
                bufs = self._partials.get(key)
                if bufs is None:
                    bufs = self._partials[key] = (
                        cuda.device_array((splits, max(m, 1), n), dtype=key[0]),
                        cuda.device_array((splits, n), dtype=np.float64),
                    )
        return bufs

    def tickets(self, count: int, stream=0):
        """At least ``count`` zeroed int32 tickets (grown, never shrunk; zeroed on ``stream``).

        A grown array replaces the old one for new recipes; recipes made
        earlier keep (and keep alive) the array they were made with.
        """
        t = self._tickets
        if t is None or t.shape[0] < count:
            with self._lock:
                t = self._tickets
                if t is None or t.shape[0] < count:
                    t = self._tickets = cuda.to_device(np.zeros(max(count, 1024), dtype=np.int32), stream=stream)
        return t

    def reserve(self, dtype, splits: int, m: int, n: int, tiles: int, stream=0) -> None:
        """Allocate the scratch of a split-K product of ``m x n`` outputs in ``tiles`` tiles now."""
        if splits > 1:
            self.partials(dtype, splits, m, n)
            self.tickets(tiles, stream)

    def recipe(self, variant_name: str, dt: np.dtype, m: int, n: int, k: int, config: str,
               split_k: int | None, stream=0) -> _Recipe:
        key = (variant_name, dt, m, n, k, config, split_k, stream_key(stream))
        r = self._recipes.get(key)
        if r is None:
            r = _make_recipe(self, variant_name, dt, m, n, k, config, split_k, stream)
            with self._lock:
                # the stream object is kept with the recipe so that its id in the key stays its own
                r = self._recipes.setdefault(key, (r, stream))[0]
            return r
        return r[0]


def _make_recipe(ws: GemmWorkspace, variant_name, dt, m, n, k, config, split_k, stream) -> _Recipe:
    config, splits = plan(m, n, k, config, split_k, dt, variant_name)
    cfg = TILES[config]
    grid_m = max(1, ceil_div(m, cfg.bm))
    grid_n = ceil_div(n, cfg.bn)
    if splits > 1:
        k_chunk = ceil_div(ceil_div(k, cfg.bk), splits) * cfg.bk
        splits = ceil_div(k, k_chunk)
    else:
        k_chunk = k
    if splits > 1:
        ws.reserve(dt, splits, m, n, grid_m * grid_n, stream)
        partial, partial_cs = ws.partials(dt, splits, m, n)
        tickets = ws.tickets(grid_m * grid_n, stream)
    else:
        partial, partial_cs = placeholder(dt, 3), placeholder(np.float64, 2)
        tickets = placeholder(np.int32, 1)
    launch = prepared(gemm_kernel(dt, config, VARIANTS[variant_name]), (grid_m, grid_n, splits),
                      (cfg.threads, 1, 1), stream)
    return _Recipe(launch, k_chunk, partial, partial_cs, tickets, placeholder(dt, 2), placeholder(dt, 1))


_default_workspace = GemmWorkspace()


def _skip(variant_name: str, m: int, n: int) -> bool:
    """An empty output: nothing to launch (dW with an empty batch still writes zeros)."""
    return n == 0 or (m == 0 and not VARIANTS[variant_name].colsum)


def _launch(variant_name, a, b, mask, c, bias, colsum_out, m, n, k, relu, config, split_k, workspace,
            stream) -> int:
    if _skip(variant_name, m, n):
        return 0
    r = (workspace or _default_workspace).recipe(variant_name, np.dtype(c.dtype), m, n, k, config, split_k,
                                                 stream)
    r.launch(
        a, b, r.spare_2d if mask is None else mask, c, r.spare_1d if bias is None else bias,
        r.spare_1d if colsum_out is None else colsum_out, r.partial, r.partial_colsum, r.tickets,
        m, n, k, r.k_chunk, 1 if relu else 0, 0 if mask is None else 1,
    )
    return 1


def prepare(variant: str, m: int, n: int, k: int, dtype: Any, *, config: str = "auto",
            split_k: int | None = None, workspace: GemmWorkspace | None = None, stream=0) -> None:
    """Make the recipe of one product (``m x k`` by ``k x n``) without launching it.

    Compiles and loads its kernel, configures the launch for ``stream`` and
    allocates its split-K scratch and placeholders, so that the first launch
    of that shape through ``workspace`` on ``stream`` allocates nothing (as
    CUDA-graph capture requires).  ``variant``: ``"forward"``, ``"dx"`` or
    ``"dw"``; the dimensions are the product's, see :func:`prepare_affine`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    if not _skip(variant, m, n):
        (workspace or _default_workspace).recipe(variant, check_float_dtype(dtype), m, n, k, config, split_k,
                                                 stream)


def prepare_affine(batch: int, in_features: int, out_features: int, dtype: Any, *, need_dx: bool = True,
                   config: str = "auto", split_k: int | None = None, workspace: GemmWorkspace | None = None,
                   stream=0) -> None:
    """:func:`prepare` the products of one affine layer: forward, dW (with db) and, if ``need_dx``, dx.

    The shapes are those :func:`affine_forward`, :func:`affine_backward_dw`
    and :func:`affine_backward_dx` launch for x: (batch, in_features),
    W: (in_features, out_features).
    """
    opts = dict(config=config, split_k=split_k, workspace=workspace, stream=stream)
    prepare("forward", batch, out_features, in_features, dtype, **opts)
    prepare("dw", in_features, out_features, batch, dtype, **opts)
    if need_dx:
        prepare("dx", batch, in_features, out_features, dtype, **opts)


# ------------------------------------------------------------------ launchers
def affine_forward(x, W, b, relu: bool, out, *, config: str = "auto", split_k: int | None = None,
                   workspace: GemmWorkspace | None = None, stream=0) -> int:
    """``out = relu?(x @ W + b)``.  x: (N, K), W: (K, M), b: (M,), out: (N, M), one dtype.

    ``stream``: 0 (the default stream) or a Numba stream.  Returns the number
    of kernel launches (1, or 0 for an empty output).
    """
    m, k = x.shape
    n = W.shape[1]
    return _launch("forward", x, W, None, out, b, None, m, n, k, relu, config, split_k, workspace, stream)


def affine_backward_dx(dy, W, y, dx, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None, stream=0) -> int:
    """``dx = (dy * [y > 0]) @ W.T`` (no mask when ``y`` is None).

    dy, y: (N, M), W: (K, M), dx: (N, K).  Returns the number of launches.
    """
    m, k = dy.shape
    n = W.shape[0]
    return _launch("dx", dy, W, y, dx, None, None, m, n, k, False, config, split_k, workspace, stream)


def affine_backward_dw(dy, x, y, dW, db, *, config: str = "auto", split_k: int | None = None,
                       workspace: GemmWorkspace | None = None, stream=0) -> int:
    """``dW = x.T @ (dy * [y > 0])`` and ``db`` = its column sums, in one launch.

    dy, y: (N, M), x: (N, K), dW: (K, M), db: (M,).  Returns the number of launches.
    """
    k, m = x.shape  # the batch is this product's K
    n = dy.shape[1]
    return _launch("dw", x, dy, y, dW, None, db, m, n, k, False, config, split_k, workspace, stream)
