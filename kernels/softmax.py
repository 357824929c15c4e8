"""Row-wise softmax, and softmax with cross-entropy in one pass over the logits.

twin (cross-entropy): mlp.backends.numpy_backend.NumpyBackend._softmax_xent
                      (``_cpu_loops.softmax_xent``)
twin (probabilities): mlp.backends.numpy_backend.NumpyBackend._softmax
                      (``_cpu_loops.softmax_rows``)

Per row: the maximum and its first index (NumPy's ``argmax`` tie-breaking),
the log-sum-exp, the loss ``lse - logit[label]``, and either the gradient
``(softmax - onehot) / N`` (cross-entropy) or the probabilities.

With per-sample weights ``w`` (cross-entropy only; a compile-time variant,
so the unweighted kernels are unchanged) and ``S = sum(w)`` over the batch,
row ``i``'s gradient is ``w[i] * (softmax - onehot) / S`` and it adds
``N * w[i] / S * loss_i`` to the loss sum, so that the sum divided by N is
the weighted mean.  Every block computes ``S`` itself, reading all N weights
in one fixed order (:func:`_batch_weight_sum`), so every block has the same
bits and a launch recorded in a CUDA graph stays right when the batch's
weights change between replays; the extra reads (N per block) hit L2.  Sums of
exponentials are accumulated in float64 as the twin does; exponentials are
taken in the input dtype.  Loss, hit count and "a loss was not finite" are
reduced within each block and added to ``stats`` with one atomic each per
block; blocks stride over rows, so the grid (and the atomic count) stays a
few blocks per SM whatever the batch size.

Two thread mappings, by the number of classes C:

* ``C <= 32`` (``rows_small``): one thread per row.  A block of 128 threads
  stages 128 consecutive rows (one contiguous span of memory) in shared
  memory with coalesced loads, each thread works on its own row there, and
  the results leave with coalesced stores.  The shared row stride is 33, odd,
  so the 32 threads of a warp reading "their" rows hit 32 distinct banks.
* ``C > 32`` (``rows_wide``): a group of TX threads per row, TY = 256 / TX
  rows per block.  Each thread keeps up to ITEMS of its row's elements in
  registers (elements ``tx + k*TX``: coalesced): ITEMS = 8 up to 256
  classes or in float64, else 32, and TX the smallest power of two from 32
  to 256 that holds the row.  So a float32 1000-class row is one warp with
  32 values per lane, eight rows per block; rows of up to 8192 (float64:
  2048) classes are read from memory once, wider rows read the elements
  past those twice.  Small
  groups keep the shared-memory reduction short (5 levels for a warp) and
  many rows' loads in flight.  A thread folds its elements into a running
  (max, argmax, sum of exp(x - max)) and the group merges those triples in a
  shared-memory tree, so max and sum take a single reduction.  On a real GPU
  a group of one warp merges with warp shuffles instead (no barrier per row;
  the simulator, which has no shuffles, runs the shared-memory form).

``stats`` (float64) holds the slots named in ``_config``:
``STATS_LOSS_SUM``, ``STATS_CORRECT`` and ``STATS_FIRST_NONFINITE_STEP``.
Rows whose logits contain NaN give a NaN loss (and so mark
``STATS_FIRST_NONFINITE_STEP``); their argmax is unspecified.  A label outside ``[0, C)`` is never read through: its row's
loss is NaN (so the step is marked too) and its gradient row is NaN.

Each cross-entropy kernel's body is a device function (``_rows_small``,
``_rows_wide``) that the stacked loss kernels (``stacked``) also run, once
per model of a stack.

Every launcher takes ``stream`` (0, the default stream, or a Numba stream)
and enqueues nothing else.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda
from numba.cuda.np.numpy_support import from_dtype
from numba.cuda.types import float64, int64, void

from ._config import (ON_SIMULATOR, STATS_CORRECT, STATS_FIRST_NONFINITE_STEP, STATS_LOSS_SUM,
                      check_float_dtype, device_function, kernel)
from ._launch import capped_blocks, ceil_div, configured, placeholder

SMALL_MAX_CLASSES = 32
SMALL_ROWS = 128  # threads (= rows) per block of rows_small
SMALL_STRIDE = 33  # shared row stride of rows_small: odd, > SMALL_MAX_CLASSES
SMALL_LOAD_BATCH = 8  # global loads each rows_small thread keeps in flight
WIDE_ITEMS = (8, 32)  # row elements a rows_wide thread keeps in registers (two variants)
WIDE_FEW_ITEMS_MAX_CLASSES = 256  # up to here 8 per thread; wider float32 rows 32 per thread
WIDE_THREADS = 256  # target threads per block of rows_wide
WIDE_MAX_GROUP = 256  # at most WIDE_THREADS (one row per block)
BLOCK_THREADS_PER_SM = 2048  # resident-thread limit used to cap grid sizes
FULL_MASK = 0xFFFFFFFF  # every lane of a warp, for the shuffles


@cuda.jit(device=True)
def _push(m, s, a, v, j):
    """Fold element ``v`` (index ``j``) into a running (max, sum exp(x - max), argmax).

    ``a < 0`` marks an empty state.  An element equal to the running max adds
    exactly 1, so a row of ``-inf`` gives a finite count rather than NaN here
    (its log-sum-exp is still ``-inf`` and its loss NaN, as in the twin).
    """
    if a < 0:
        return v, 1.0, j
    if v > m:
        return v, s * math.exp(m - v) + 1.0, j
    if v == m:
        return m, s + 1.0, a
    return m, s + math.exp(v - m), a  # NaN v (or max) propagates through exp


@cuda.jit(device=True)
def _merge(m1, s1, a1, m2, s2, a2):
    """Combine two running triples; ties on the max keep the smaller index."""
    if a2 < 0:
        return m1, s1, a1
    if a1 < 0:
        return m2, s2, a2
    if m2 > m1:
        return m2, s1 * math.exp(m1 - m2) + s2, a2
    if m1 > m2:
        return m1, s1 + s2 * math.exp(m2 - m1), a1
    if m1 == m2:
        return m1, s1 + s2, min(a1, a2)
    return m1, math.nan, a1  # a NaN max: the row's loss is NaN


@device_function
def _output(e, inv_s, j, lab, label_ok, scale, xent):
    """Element ``j`` of a row's output from its exponential ``e = exp(x_j - max)``.

    The probability ``e / s``; for cross-entropy the gradient
    ``(p - [j == label]) * scale`` (``scale`` is ``1 / N``, or ``w / S`` with
    weights), or NaN for the whole row when its label is out of range
    (nothing is read at the label then).
    """
    p = e * inv_s
    if xent:
        if j == lab:
            p -= 1.0
        p = p * scale if label_ok else math.nan
    return p


@device_function
def _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab, factor, clip_eps):
    """A row's loss ``max + log(s) - x[label]`` (NaN when ``x_lab`` is) times ``factor`` (1, or ``N * w / S``
    with weights), hit and non-finite flag added to a thread's running sums.  With ``clip_eps`` > 0 the loss
    is first held to scikit-learn's ``[-log(1 - eps), -log(eps)]`` (NaN stays NaN; the twin's
    ``_cpu_losses.log_loss_bounds``), computed here, per row, from the kernel's parameter: bounds kept from
    the kernel's start would hold two more registers through the row loop, and spill."""
    loss = np.float64(mx) + math.log(s) - x_lab
    if clip_eps > 0:
        low = -math.log(1.0 - clip_eps)
        high = -math.log(clip_eps)
        if loss < low:
            loss = low
        elif loss > high:
            loss = high
    loss = loss * factor
    if arg == lab:
        hits += 1
    if not math.isfinite(loss):
        bad = 1
    return loss_sum + loss, hits, bad


@device_function
def _flush_stats(stats, step, loss_sum, hits, bad, slot, nt, red_loss, red_count):
    """Reduce every thread's (loss sum, hits, non-finite flag) over the block and add
    them to ``stats`` with one atomic per slot.

    ``nt`` threads (a power of two) take part, thread ``slot`` of them;
    ``red_loss`` (float64) and ``red_count`` (int64) are shared arrays of at
    least ``nt`` elements, free for reuse.  The hit count and the flag share
    one integer: ``hits * 2 + flag``.
    """
    red_loss[slot] = loss_sum
    red_count[slot] = hits * 2 + bad
    cuda.syncthreads()
    half = nt // 2
    while half > 0:
        if slot < half:
            red_loss[slot] += red_loss[slot + half]
            mine = red_count[slot]
            other = red_count[slot + half]
            red_count[slot] = ((mine >> 1) + (other >> 1)) * 2 + ((mine | other) & 1)
        cuda.syncthreads()
        half //= 2
    if slot == 0:
        cuda.atomic.add(stats, STATS_LOSS_SUM, red_loss[0])
        cuda.atomic.add(stats, STATS_CORRECT, np.float64(red_count[0] >> 1))
        if (red_count[0] & 1) != 0:
            cuda.atomic.min(stats, STATS_FIRST_NONFINITE_STEP, step)


@device_function
def _block_sum(value, slot, nt, red):
    """The sum of ``value`` over the ``nt`` threads (a power of two) of a block, returned to every thread.

    A fixed tree over ``red`` (float64 shared, at least ``nt`` elements, free
    for reuse again on return): the same inputs give the same bits in every block.
    """
    red[slot] = value
    cuda.syncthreads()
    half = nt // 2
    while half > 0:
        if slot < half:
            red[slot] += red[slot + half]
        cuda.syncthreads()
        half //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@device_function
def _batch_weight_sum(weights, n, slot, nt, red):
    """``S = sum(weights[:n])`` in float64, computed whole by every block, bitwise alike in all of them.

    Thread ``slot`` of ``nt`` adds elements ``slot, slot + nt, ...`` in order,
    then :func:`_block_sum` combines the threads; nothing depends on the
    block's index.
    """
    acc = np.float64(0.0)
    for i in range(slot, n, nt):
        acc += weights[i]
    return _block_sum(acc, slot, nt, red)


def rows_small_kernel(dtype: Any, xent: bool, weighted: bool = False):
    """One thread per row (C <= 32); ``xent`` selects cross-entropy over probabilities,
    ``weighted`` (with ``xent``) per-sample weights.

    Signature: ``(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps)``: ``clip_eps``
    > 0 bounds each row's loss (see :func:`softmax_cross_entropy`).
    """
    return _rows_small_kernel(check_float_dtype(dtype), bool(xent), bool(xent and weighted))


@device_function
def _rows_small(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps, xent, weighted, tile,
                vals):
    """The body of :func:`rows_small_kernel`, whose arguments it takes: this block's rows of one batch
    (blocks stride over the rows, block ``blockIdx.x`` of ``gridDim.x``; ``SMALL_ROWS`` threads).

    ``xent`` and ``weighted`` are the calling kernel's compile-time
    constants; ``tile`` (shared, ``SMALL_ROWS * SMALL_STRIDE``) and ``vals``
    (local, ``SMALL_LOAD_BATCH``) are arrays of the logits' dtype that it
    allocates.
    """
    offs = cuda.local.array(SMALL_LOAD_BATCH, np.int64)
    red_loss = cuda.shared.array(SMALL_ROWS, np.float64)
    red_count = cuda.shared.array(SMALL_ROWS, np.int64)
    tid = cuda.threadIdx.x
    # Walking a tile's elements SMALL_ROWS at a time without dividing by c
    # per element: (row, col) of element tid, and the step in both.
    r_first = tid // c
    j_first = tid - r_first * c
    dr = SMALL_ROWS // c
    dj = SMALL_ROWS - dr * c
    loss_sum = np.float64(0.0)
    hits = 0
    bad = 0
    grad_unit = inv_n  # a row's gradient scale per unit weight
    loss_unit = 1.0  # and its loss factor
    if weighted:
        grad_unit = 1.0 / _batch_weight_sum(weights, n, tid, SMALL_ROWS, red_loss)
        loss_unit = n * grad_unit

    for base in range(cuda.blockIdx.x * SMALL_ROWS, n, cuda.gridDim.x * SMALL_ROWS):
        rows = min(SMALL_ROWS, n - base)
        # Coalesced load of the tile, SMALL_LOAD_BATCH elements per thread at a time:
        # all SMALL_LOAD_BATCH loads are issued before the first shared store waits.
        r = r_first
        j = j_first
        while r < rows:
            for u in range(SMALL_LOAD_BATCH):
                offs[u] = -1
                if r < rows:
                    offs[u] = r * SMALL_STRIDE + j
                    vals[u] = logits[base + r, j]
                r += dr
                j += dj
                if j >= c:
                    j -= c
                    r += 1
            for u in range(SMALL_LOAD_BATCH):
                if offs[u] >= 0:
                    tile[offs[u]] = vals[u]
        cuda.syncthreads()

        if tid < rows:
            rb = tid * SMALL_STRIDE
            mx = tile[rb]
            arg = 0
            for j in range(1, c):
                v = tile[rb + j]
                if v > mx:
                    mx = v
                    arg = j
            lab = 0
            label_ok = True
            x_lab = np.float64(math.nan)
            scale = grad_unit
            factor = loss_unit
            if xent:
                lab = labels[base + tid]
                label_ok = lab >= 0 and lab < c
                if label_ok:
                    x_lab = np.float64(tile[rb + lab])
                if weighted:
                    w = np.float64(weights[base + tid])
                    scale = w * grad_unit
                    factor = w * loss_unit
            s = np.float64(0.0)
            for j in range(c):
                e = math.exp(tile[rb + j] - mx)
                tile[rb + j] = e
                s += e
            if xent:
                loss_sum, hits, bad = _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab, factor, clip_eps)
            if write_out != 0:
                inv_s = 1.0 / s
                for j in range(c):
                    tile[rb + j] = _output(tile[rb + j], inv_s, j, lab, label_ok, scale, xent)
        cuda.syncthreads()

        if write_out != 0:
            r = r_first
            j = j_first
            while r < rows:
                out[base + r, j] = tile[r * SMALL_STRIDE + j]
                r += dr
                j += dj
                if j >= c:
                    j -= c
                    r += 1
        cuda.syncthreads()

    if xent:
        _flush_stats(stats, step, loss_sum, hits, bad, tid, SMALL_ROWS, red_loss, red_count)


@functools.lru_cache(maxsize=None)
def _rows_small_kernel(dt: np.dtype, xent: bool, weighted: bool):
    DT = dt.type
    TILE = SMALL_ROWS * SMALL_STRIDE
    BATCH = SMALL_LOAD_BATCH
    XENT = xent
    WEIGHTED = weighted

    def rows_small(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps):
        tile = cuda.shared.array(TILE, DT)
        vals = cuda.local.array(BATCH, DT)
        _rows_small(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps, XENT, WEIGHTED,
                    tile, vals)

    return kernel(_signature(dt), launch_bounds=SMALL_ROWS)(rows_small)


def rows_wide_kernel(dtype: Any, xent: bool, items: int, warp: bool = False, weighted: bool = False):
    """TX threads per row (C > 32), launched with ``block = (TX, TY)``, ``items`` elements per thread
    kept in registers; see the module docstring.

    ``warp=True`` (real GPUs only, TX must be 32): each row's triple is
    merged with warp shuffles instead of the shared-memory tree, so no
    block-wide barrier is taken per row and every warp runs at its own pace.
    ``weighted`` (with ``xent``): per-sample weights.

    Signature: ``(logits, labels, weights, out, stats, n, c, step, write_out, inv_n)``.
    """
    if warp and ON_SIMULATOR:
        raise ValueError("warp: the CUDA simulator has no warp shuffles")
    if items not in WIDE_ITEMS:
        raise ValueError(f"items: expected one of {WIDE_ITEMS}, got {items}")
    return _rows_wide_kernel(check_float_dtype(dtype), bool(xent), int(items), bool(warp), bool(xent and weighted))


@device_function
def _rows_wide(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps, xent, weighted, warp,
               items, zero, red_m, xs):
    """The body of :func:`rows_wide_kernel`, whose arguments it takes: this block's rows of one batch
    (blocks stride over the rows, block ``blockIdx.x`` of ``gridDim.x``; ``block = (TX, TY)``).

    ``xent``, ``weighted``, ``warp`` and ``items`` are the calling kernel's
    compile-time constants, ``zero`` is 0 in the logits' dtype; ``red_m``
    (shared, ``WIDE_THREADS``) and ``xs`` (local, ``items``) are arrays of
    that dtype which it allocates.
    """
    red_s = cuda.shared.array(WIDE_THREADS, np.float64)
    red_a = cuda.shared.array(WIDE_THREADS, np.int64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    group = cuda.blockDim.x
    slot = ty * group + tx
    lead = ty * group  # slot of this row group's first thread
    loss_sum = np.float64(0.0)
    hits = 0
    bad = 0
    grad_unit = inv_n  # a row's gradient scale per unit weight
    loss_unit = 1.0  # and its loss factor
    if weighted:
        grad_unit = 1.0 / _batch_weight_sum(weights, n, slot, group * cuda.blockDim.y, red_s)
        loss_unit = n * grad_unit

    for base in range(cuda.blockIdx.x * cuda.blockDim.y, n, cuda.gridDim.x * cuda.blockDim.y):
        row = base + ty
        active = row < n
        m = zero
        s = np.float64(0.0)
        a = -1
        if active:
            for k in range(items):  # all loads first, so they are in flight together
                j = tx + k * group
                if j < c:
                    xs[k] = logits[row, j]
            for k in range(items):
                j = tx + k * group
                if j < c:
                    m, s, a = _push(m, s, a, xs[k], j)
            for j in range(tx + items * group, c, group):
                m, s, a = _push(m, s, a, logits[row, j], j)
        if warp:
            # Butterfly: every lane ends with the whole row's triple (the
            # merge is symmetric and float additions commute), so nothing
            # is broadcast.  The warp shares one row: no lane is idle here.
            a32 = np.int32(a)
            off = 16
            while off > 0:
                m2 = cuda.shfl_xor_sync(FULL_MASK, m, off)
                s2 = cuda.shfl_xor_sync(FULL_MASK, s, off)
                a2 = cuda.shfl_xor_sync(FULL_MASK, a32, off)
                m, s, a32 = _merge(m, s, a32, m2, s2, a2)
                off //= 2
            mx = m
            arg = a32
        else:
            red_m[slot] = m
            red_s[slot] = s
            red_a[slot] = a
            cuda.syncthreads()
            half = group // 2
            while half > 0:
                if tx < half:
                    m, s, a = _merge(red_m[slot], red_s[slot], red_a[slot],
                                     red_m[slot + half], red_s[slot + half], red_a[slot + half])
                    red_m[slot] = m
                    red_s[slot] = s
                    red_a[slot] = a
                cuda.syncthreads()
                half //= 2
            mx = red_m[lead]
            s = red_s[lead]
            arg = red_a[lead]

        if active:
            lab = 0
            label_ok = True
            scale = grad_unit
            factor = loss_unit
            if xent:
                lab = labels[row]
                label_ok = lab >= 0 and lab < c
                if weighted:
                    w = np.float64(weights[row])
                    scale = w * grad_unit
                    factor = w * loss_unit
            if write_out != 0:
                inv_s = 1.0 / s
                for k in range(items):
                    j = tx + k * group
                    if j < c:
                        out[row, j] = _output(math.exp(xs[k] - mx), inv_s, j, lab, label_ok, scale, xent)
                for j in range(tx + items * group, c, group):
                    out[row, j] = _output(math.exp(logits[row, j] - mx), inv_s, j, lab, label_ok, scale, xent)
            if xent and tx == 0:
                x_lab = np.float64(math.nan)
                if label_ok:
                    x_lab = np.float64(logits[row, lab])
                loss_sum, hits, bad = _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab, factor, clip_eps)
        if not warp:
            cuda.syncthreads()  # the reduction slots are reused by the next rows

    if xent:
        _flush_stats(stats, step, loss_sum, hits, bad, slot, group * cuda.blockDim.y, red_s, red_a)


@functools.lru_cache(maxsize=None)
def _rows_wide_kernel(dt: np.dtype, xent: bool, items: int, warp: bool, weighted: bool):
    DT = dt.type
    ITEMS = items
    XENT = xent
    WARP = warp
    WEIGHTED = weighted

    def rows_wide(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps):
        red_m = cuda.shared.array(WIDE_THREADS, DT)
        xs = cuda.local.array(ITEMS, DT)
        _rows_wide(logits, labels, weights, out, stats, n, c, step, write_out, inv_n, clip_eps, XENT, WEIGHTED, WARP,
                   ITEMS, DT(0), red_m, xs)

    # 32 values per thread in registers: ask for room for two blocks per SM
    # (at most 128 registers) so that 16 rows' loads are in flight per SM.
    bounds = (WIDE_THREADS, 2) if items > 8 else WIDE_THREADS
    return kernel(_signature(dt), launch_bounds=bounds)(rows_wide)


def _signature(dt: np.dtype):
    nb = from_dtype(dt)
    return void(nb[:, ::1], int64[::1], nb[::1], nb[:, ::1], float64[::1], int64, int64, float64, int64, float64,
                float64)


def wide_block(c: int, dtype: Any = np.float32) -> tuple[int, int, int]:
    """``(items, TX, TY)`` of rows_wide for C classes.

    8 elements per thread up to 256 classes (and always for float64, whose
    32 values would not fit in registers), else 32; TX the smallest power of
    two from 32 to ``WIDE_MAX_GROUP`` holding the row; 256 threads a block.
    """
    few = c <= WIDE_FEW_ITEMS_MAX_CLASSES or np.dtype(dtype) == np.float64
    items = WIDE_ITEMS[0] if few else WIDE_ITEMS[1]
    group = 32
    while group < WIDE_MAX_GROUP and group * items < c:
        group *= 2
    return items, group, max(1, WIDE_THREADS // group)


def wide_variant(c: int, dtype: Any) -> tuple[int, bool]:
    """``(items, warp)`` of the rows_wide kernel used for C classes: warp shuffles when a row is one warp
    on a real GPU."""
    items, group, _ = wide_block(c, dtype)
    return items, group == 32 and not ON_SIMULATOR


def wide_kernel_for(c: int, dtype: Any, xent: bool, weighted: bool = False):
    """The rows_wide kernel used for C classes (:func:`wide_variant`)."""
    return rows_wide_kernel(np.dtype(dtype), xent, *wide_variant(c, dtype), weighted)


def selectable_kernels(dtype: Any, *, weighted: bool = False) -> dict:
    """Every kernel :func:`softmax` and :func:`softmax_cross_entropy` can pick for ``dtype``, by name.

    Found by asking the launchers' own choice (:func:`_plan`) for every class
    count up to the widest distinct one (past ``WIDE_MAX_GROUP`` times the
    most items per thread nothing changes).  ``weighted=True``: instead, the
    cross-entropy kernels taking per-sample weights.
    """
    dt = check_float_dtype(dtype)
    picks = {}
    for xent in (True,) if weighted else (True, False):
        for c in range(1, WIDE_MAX_GROUP * max(WIDE_ITEMS) + 2):
            kern = _plan(xent, 1, c, dt, weighted)[0]
            if c <= SMALL_MAX_CLASSES:
                name = f"rows_small xent={xent}"
            else:
                items, group, _ = wide_block(c, dt)
                name = f"rows_wide xent={xent} items={items} warp={group == 32 and not ON_SIMULATOR}"
            picks[name + (" weighted" if weighted else "")] = kern
    return picks


def _grid(n: int, c: int, dt: np.dtype) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(grid, block)`` for N rows of C classes: rows_small's up to ``SMALL_MAX_CLASSES``, else rows_wide's."""
    if c <= SMALL_MAX_CLASSES:
        blocks = capped_blocks(ceil_div(n, SMALL_ROWS), BLOCK_THREADS_PER_SM // SMALL_ROWS)
        return (blocks, 1, 1), (SMALL_ROWS, 1, 1)
    _, group, rows = wide_block(c, dt)
    blocks = capped_blocks(ceil_div(n, rows), BLOCK_THREADS_PER_SM // (group * rows))
    return (blocks, 1, 1), (group, rows, 1)


def _plan(xent: bool, n: int, c: int, dt: np.dtype, weighted: bool = False):
    """``(kernel, grid, block)`` for N rows of C classes."""
    kern = rows_small_kernel(dt, xent, weighted) if c <= SMALL_MAX_CLASSES else wide_kernel_for(c, dt, xent, weighted)
    return (kern, *_grid(n, c, dt))


def _placeholders(dt: np.dtype):
    """Stand-ins for an absent output, labels, weights and stats."""
    return placeholder(dt, 2), placeholder(np.int64, 1), placeholder(dt, 1), placeholder(np.float64, 1)


def _launch(xent: bool, logits, labels, weights, out, stats, step: int, stream, clip_eps: float = 0.0) -> int:
    n, c = logits.shape
    if n == 0 or (c == 0 and not xent):
        return 0
    if c == 0:
        raise ValueError("logits: expected at least one class, got 0 columns")
    dt = np.dtype(logits.dtype)
    write_out = out is not None
    weighted = weights is not None
    spare_out, spare_labels, spare_weights, spare_stats = _placeholders(dt)
    args = (logits, spare_labels if labels is None else labels, weights if weighted else spare_weights,
            spare_out if out is None else out, spare_stats if stats is None else stats, n, c, float(step),
            int(write_out), 1.0 / n, float(clip_eps))
    configured(*_plan(xent, n, c, dt, weighted), stream)(*args)
    return 1


def softmax_cross_entropy(logits, labels, dlogits, stats, step: int = 0, weights=None, *, clip_eps: float = 0.0,
                          stream=0) -> int:
    """Loss statistics into ``stats`` and, unless ``dlogits`` is None, the gradient.

    logits: (N, C) float32/float64, labels: (N,) int64, dlogits: (N, C) or
    None, stats: float64 (``STATS_SIZE``,) accumulated slot by slot: loss sum
    (``STATS_LOSS_SUM``), hits (``STATS_CORRECT``), smallest step with a
    non-finite loss (``STATS_FIRST_NONFINITE_STEP``).  A label outside
    ``[0, C)`` gives that row a NaN loss and a NaN gradient row.  weights:
    None or (N,) of the logits' dtype, per-sample weights (see the module
    docstring; weights summing to 0 give NaN).  ``clip_eps`` > 0: each row's
    loss held to ``[-log(1 - eps), -log(eps)]`` before it is weighted, as
    scikit-learn's log-loss clips the probabilities to ``[eps, 1 - eps]``
    (NaN stays NaN; the gradient is never bounded); 0 bounds nothing.
    ``stream``: 0 or a Numba stream.  Returns the number of kernel launches (1).
    """
    return _launch(True, logits, labels, weights, dlogits, stats, step, stream, clip_eps)


def softmax(logits, out, *, stream=0) -> int:
    """Row-wise softmax probabilities of ``logits`` (N, C) into ``out``.  Returns launches."""
    return _launch(False, logits, None, None, out, None, 0, stream)
