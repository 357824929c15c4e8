"""The tiled matrix-product kernel with fused epilogues behind the affine layer's launchers (``gemm``).

twin (forward):  mlp.backends.numpy_backend.NumpyBackend._affine_forward
                 (``np.matmul`` then ``_cpu_loops.bias_act_inplace``)
twin (backward): mlp.backends.numpy_backend.NumpyBackend._affine_backward
                 (``_cpu_loops.act_grad_colsum`` / ``colsum`` then two ``np.matmul``)

One kernel factory, :func:`gemm_kernel`, builds every product the layer needs
from compile-time options, the activation ``f`` among them (a code of
``activations.ACTIVATIONS``: identity, relu, tanh, logistic).  A layer of
``in`` inputs and ``out`` outputs over ``batch`` rows computes
``(batch, in) @ (in, out)``; the kernel computes the generic
``C (m x n) = A (m x k) @ B (k x n)``, and :func:`product_shape` says how
each product's ``m, n, k`` come from ``batch, in, out``::

    forward   y   = f(x @ W + b)                A = x,   B = W
    dx        dx  = (dy * f'(y)) @ W.T          A = dy (times f'(y) on load), B = W read transposed
    dW, db    dW  = x.T @ (dy * f'(y))          A = x read transposed, B = dy (times f'(y) on load)
              db  = column sums of dy * f'(y), taken from the B tiles already in
                    shared memory by the blocks of the first row of output tiles

where ``f'(y)`` is the derivative written in terms of the layer's output
(``activations.grad_from_output``: 1, ``[y > 0]``, ``1 - y*y``, ``y*(1 - y)``).

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
* The epilogue adds the bias and applies the activation before the single store.
* Split-K (``gridDim.z > 1``) for outputs too small to fill the device: each
  split writes its partial tile to a workspace, and the last block to finish
  a tile (an atomic ticket per tile) sums the partials in split order, so the
  result does not depend on which block came last, then runs the epilogue.
  Tickets reset themselves, so one launch is all it takes.

The derivative is applied while dy is loaded (for relu ``v if y > 0 else 0``,
NaN in y masks like the twin); no scaled copy of dy is ever stored.  The
activation is a compile-time constant of the kernel, like the operand
layouts: each kernel holds the code of one activation only and branches on
none at run time, so a relu kernel's registers and occupancy owe nothing to
tanh's or logistic's code; the price is four kernels per product to build
(and to warm up) instead of one.

A and B tiles are staged by one loader (:func:`_fetch_slice` /
:func:`_park_slice`, inlined): an operand is "k-contiguous or not", whichever
of A and B it is.

Tile configurations (``TILES``) are selectable by name so a benchmark can
time each; ``gemm_plan`` picks one per product.  The naive
one-thread-per-output baseline lives in ``bench/naive_gemm.py``.

Numba's disk cache keys each kernel by this file and its closure's values:
the code inlined from ``activations`` reaches the key through
``activations.SOURCE_DIGEST``, which every kernel's closure holds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, int32, int64, void

from ._config import ON_SIMULATOR, check_float_dtype, device_function, kernel
from .activations import ACTIVATIONS, IDENTITY, SOURCE_DIGEST, activate, grad_from_output


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

STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static shared memory a block may declare


@dataclass(frozen=True)
class Variant:
    """Compile-time shape of one product: operand layouts, where the derivative applies, epilogue."""

    trans_a: bool  # A stored as (k, m) instead of (m, k)
    trans_b: bool  # B stored as (n, k) instead of (k, n)
    mask_a: bool  # multiply A by the activation's derivative f'(mask) as it is loaded
    mask_b: bool  # multiply B by f'(mask) as it is loaded
    bias: bool  # add bias[col] in the epilogue
    colsum: bool  # also write the column sums of B (times f'(mask))
    activate: bool  # apply the activation in the epilogue


FORWARD = Variant(trans_a=False, trans_b=False, mask_a=False, mask_b=False, bias=True, colsum=False,
                  activate=True)
BACKWARD_DX = Variant(trans_a=False, trans_b=True, mask_a=True, mask_b=False, bias=False, colsum=False,
                      activate=False)
BACKWARD_DW = Variant(trans_a=True, trans_b=False, mask_a=False, mask_b=True, bias=False, colsum=True,
                      activate=False)
VARIANTS = {"forward": FORWARD, "dx": BACKWARD_DX, "dw": BACKWARD_DW}


def product_shape(variant: str, batch: int, n_in: int, n_out: int) -> tuple[int, int, int]:
    """``(m, n, k)`` of the product ``variant`` (a key of ``VARIANTS``) for a layer of ``n_in``
    inputs and ``n_out`` outputs over ``batch`` rows.

    The one place where a layer's dimensions become the generic product's
    ``C (m x n) = A (m x k) @ B (k x n)``::

        forward  y  (batch, out) = x   (batch, in)  @ W   (in, out)      m = batch  n = out  k = in
        dx       dx (batch, in)  = dy  (batch, out) @ W.T (out, in)      m = batch  n = in   k = out
        dw       dW (in, out)    = x.T (in, batch)  @ dy  (batch, out)   m = in     n = out  k = batch

    The kernel, the planner and the tuning tables speak of ``m, n, k`` only.
    """
    if variant == "forward":
        return batch, n_out, n_in
    if variant == "dx":
        return batch, n_in, n_out
    if variant == "dw":
        return n_in, n_out, batch
    raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")


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
def _fetch_slice(src, mk, stage, tid, outer0, outer_n, kt, k_end, act, zero, one,
                 count, nt, extent, bk, k_contig, masked):
    """Thread ``tid``'s ``count`` elements of one K slice of an operand, into registers ``stage``.

    The operand is (outer, K) when ``k_contig``, else (K, outer); elements
    outside ``[0, outer_n) x [kt, k_end)`` are zero, and with ``masked`` every
    element is multiplied by the derivative of activation ``act`` computed
    from the same element of ``mk`` (the layer's output).  The same code
    loads A (outer = M) and B (outer = N).
    """
    for l in range(count):
        oo, kk = _slice_coords(tid + l * nt, extent, bk, k_contig)
        go = outer0 + oo
        gk = kt + kk
        v = zero
        if go < outer_n and gk < k_end:
            r, q = (go, gk) if k_contig else (gk, go)
            v = src[_U(r), _U(q)]
            if masked:
                v = grad_from_output(v, mk[_U(r), _U(q)], act, zero, one)
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
def gemm_kernel(dtype: Any, config: str, variant: Variant, act: int):
    """The tiled product kernel for one dtype, tile configuration, variant and activation code.

    Signature (every variant the same; unused arrays get placeholders)::

        (a, b, mask, c, bias, colsum_out, ws, ws_colsum, tickets,
         m, n, k, k_chunk)

    computes ``c (m x n) = op(a) (m x k) @ op(b) (k x n)`` (see
    :func:`product_shape`) over the K range ``[z*k_chunk, (z+1)*k_chunk)``
    of split ``z = blockIdx.z``.  ``act``
    (an index of ``ACTIVATIONS``) is applied in the forward epilogue, or
    its derivative from ``mask`` on the operand the variant names; the
    identity needs no ``mask``.
    """
    if act not in range(len(ACTIVATIONS)):
        raise ValueError(f"act: expected an activation code in [0, {len(ACTIVATIONS) - 1}] "
                         f"(an index of {ACTIVATIONS}), got {act!r}")
    act = int(act)  # True and 1 name the same kernel (and the same cache entry)
    dt = check_float_dtype(dtype)
    cfg = TILES[config]
    DT = dt.type
    BM, BN, TM, TN = cfg.bm, cfg.bn, cfg.tm, cfg.tn
    BK = slice_depth(cfg, variant, dt)
    TX, TY, NT = cfg.tx, cfg.ty, cfg.threads
    LA = BM * BK // NT  # elements of each A slice one thread stages
    LB = BK * BN // NT
    TRANS_A, TRANS_B = variant.trans_a, variant.trans_b
    # The identity's derivative is 1: its backward kernels read no mask at all.
    MASK_A, MASK_B = variant.mask_a and act != IDENTITY, variant.mask_b and act != IDENTITY
    ACT = act
    EPILOGUE_ACT = act if variant.activate else IDENTITY
    ACT_SOURCE = SOURCE_DIGEST  # in the closure, so in the disk cache's key (see activations.SOURCE_DIGEST)
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

    def gemm(a, b, mk, c, bias, cs_out, ws, ws_cs, tickets, m, n, k, k_chunk):
        if ACT_SOURCE == 0:  # never (the digest is odd), folded away; it keys the cache
            return
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
        one = DT(1)

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
                _fetch_slice(a, mk, stage_a, tid, tile_m * BM, m, kt, k_end, ACT, zero, one,
                             LA, NT, BM, BK, not TRANS_A, MASK_A)
                _fetch_slice(b, mk, stage_b, tid, tile_n * BN, n, kt, k_end, ACT, zero, one,
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
                        c[r, col] = activate(v, EPILOGUE_ACT, zero, one)
        if do_colsum and cs_col < n:
            cs_out[cs_col] = colsum

    nb = from_dtype(dt)
    mat = nb[:, ::1]
    sig = void(mat, mat, mat, mat, nb[::1], nb[::1], nb[:, :, ::1], float64[:, ::1], int32[::1],
               int64, int64, int64, int64)
    bounds = NT if cfg.min_blocks is None else (NT, cfg.min_blocks)
    return kernel(sig, launch_bounds=bounds)(gemm)

