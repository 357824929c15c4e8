"""Row-wise softmax, and softmax with cross-entropy in one pass over the logits.

twin (cross-entropy): mlp.backends.numpy_backend.NumpyBackend._softmax_xent
                      (``_cpu_loops.softmax_xent``)
twin (probabilities): mlp.backends.numpy_backend.NumpyBackend._softmax
                      (``_cpu_loops.softmax_rows``)

Per row: the maximum and its first index (NumPy's ``argmax`` tie-breaking),
the log-sum-exp, the loss ``lse - logit[label]``, and either the gradient
``(softmax - onehot) / N`` (cross-entropy) or the probabilities.  Sums of
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

Every launcher takes ``stream`` (0, the default stream, or a Numba stream)
and enqueues nothing else; :func:`prepare` builds a launch ahead of time,
before CUDA-graph capture.
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
from ._launch import capped_blocks, ceil_div, configured, placeholder, prepared

SMALL_MAX_CLASSES = 32
SMALL_ROWS = 128  # threads (= rows) per block of rows_small
SMALL_STRIDE = 33  # shared row stride of rows_small: odd, > SMALL_MAX_CLASSES
SMALL_LOAD_BATCH = 8  # global loads each rows_small thread keeps in flight
WIDE_ITEMS = (8, 32)  # row elements a rows_wide thread keeps in registers (two variants)
WIDE_FEW_ITEMS_MAX_CLASSES = 256  # up to here 8 per thread; wider float32 rows 32 per thread
WIDE_THREADS = 256  # target threads per block of rows_wide
WIDE_MAX_GROUP = 256  # at most WIDE_THREADS (one row per block)
BLOCK_THREADS_PER_SM = 2048  # resident-thread limit used to cap grid sizes


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
def _output(e, inv_s, j, lab, label_ok, inv_n, xent):
    """Element ``j`` of a row's output from its exponential ``e = exp(x_j - max)``.

    The probability ``e / s``; for cross-entropy the gradient
    ``(p - [j == label]) / N``, or NaN for the whole row when its label is out
    of range (nothing is read at the label then).
    """
    p = e * inv_s
    if xent:
        if j == lab:
            p -= 1.0
        p = p * inv_n if label_ok else math.nan
    return p


@device_function
def _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab):
    """A row's loss ``max + log(s) - x[label]`` (NaN when ``x_lab`` is), hit and
    non-finite flag added to a thread's running sums."""
    loss = np.float64(mx) + math.log(s) - x_lab
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


@functools.lru_cache(maxsize=None)
def rows_small_kernel(dtype: Any, xent: bool):
    """One thread per row (C <= 32); ``xent`` selects cross-entropy over probabilities.

    Signature: ``(logits, labels, out, stats, n, c, step, write_out, inv_n)``.
    """
    dt = check_float_dtype(dtype)
    DT = dt.type
    ROWS, STRIDE = SMALL_ROWS, SMALL_STRIDE
    TILE = ROWS * STRIDE
    BATCH = SMALL_LOAD_BATCH
    XENT = xent

    def rows_small(logits, labels, out, stats, n, c, step, write_out, inv_n):
        tile = cuda.shared.array(TILE, DT)
        vals = cuda.local.array(BATCH, DT)
        offs = cuda.local.array(BATCH, np.int64)
        red_loss = cuda.shared.array(ROWS, np.float64)
        red_count = cuda.shared.array(ROWS, np.int64)
        tid = cuda.threadIdx.x
        # Walking a tile's elements ROWS at a time without dividing by c
        # per element: (row, col) of element tid, and the step in both.
        r_first = tid // c
        j_first = tid - r_first * c
        dr = ROWS // c
        dj = ROWS - dr * c
        loss_sum = np.float64(0.0)
        hits = 0
        bad = 0

        for base in range(cuda.blockIdx.x * ROWS, n, cuda.gridDim.x * ROWS):
            rows = min(ROWS, n - base)
            # Coalesced load of the tile, BATCH elements per thread at a time:
            # all BATCH loads are issued before the first shared store waits.
            r = r_first
            j = j_first
            while r < rows:
                for u in range(BATCH):
                    offs[u] = -1
                    if r < rows:
                        offs[u] = r * STRIDE + j
                        vals[u] = logits[base + r, j]
                    r += dr
                    j += dj
                    if j >= c:
                        j -= c
                        r += 1
                for u in range(BATCH):
                    if offs[u] >= 0:
                        tile[offs[u]] = vals[u]
            cuda.syncthreads()

            if tid < rows:
                rb = tid * STRIDE
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
                if XENT:
                    lab = labels[base + tid]
                    label_ok = lab >= 0 and lab < c
                    if label_ok:
                        x_lab = np.float64(tile[rb + lab])
                s = np.float64(0.0)
                for j in range(c):
                    e = math.exp(tile[rb + j] - mx)
                    tile[rb + j] = e
                    s += e
                if XENT:
                    loss_sum, hits, bad = _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab)
                if write_out != 0:
                    inv_s = 1.0 / s
                    for j in range(c):
                        tile[rb + j] = _output(tile[rb + j], inv_s, j, lab, label_ok, inv_n, XENT)
            cuda.syncthreads()

            if write_out != 0:
                r = r_first
                j = j_first
                while r < rows:
                    out[base + r, j] = tile[r * STRIDE + j]
                    r += dr
                    j += dj
                    if j >= c:
                        j -= c
                        r += 1
            cuda.syncthreads()

        if XENT:
            _flush_stats(stats, step, loss_sum, hits, bad, tid, ROWS, red_loss, red_count)

    return kernel(_signature(dt), launch_bounds=ROWS)(rows_small)


@functools.lru_cache(maxsize=None)
def rows_wide_kernel(dtype: Any, xent: bool, items: int, warp: bool = False):
    """TX threads per row (C > 32), launched with ``block = (TX, TY)``, ``items`` elements per thread
    kept in registers; see the module docstring.

    ``warp=True`` (real GPUs only, TX must be 32): each row's triple is
    merged with warp shuffles instead of the shared-memory tree, so no
    block-wide barrier is taken per row and every warp runs at its own pace.

    Signature: ``(logits, labels, out, stats, n, c, step, write_out, inv_n)``.
    """
    if warp and ON_SIMULATOR:
        raise ValueError("warp: the CUDA simulator has no warp shuffles")
    dt = check_float_dtype(dtype)
    DT = dt.type
    if items not in WIDE_ITEMS:
        raise ValueError(f"items: expected one of {WIDE_ITEMS}, got {items}")
    ITEMS = items
    MAXT = WIDE_THREADS
    XENT = xent
    WARP = warp
    FULL = 0xFFFFFFFF

    def rows_wide(logits, labels, out, stats, n, c, step, write_out, inv_n):
        red_m = cuda.shared.array(MAXT, DT)
        red_s = cuda.shared.array(MAXT, np.float64)
        red_a = cuda.shared.array(MAXT, np.int64)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        group = cuda.blockDim.x
        slot = ty * group + tx
        lead = ty * group  # slot of this row group's first thread
        xs = cuda.local.array(ITEMS, DT)
        loss_sum = np.float64(0.0)
        hits = 0
        bad = 0

        for base in range(cuda.blockIdx.x * cuda.blockDim.y, n, cuda.gridDim.x * cuda.blockDim.y):
            row = base + ty
            active = row < n
            m = DT(0)
            s = np.float64(0.0)
            a = -1
            if active:
                for k in range(ITEMS):  # all loads first, so they are in flight together
                    j = tx + k * group
                    if j < c:
                        xs[k] = logits[row, j]
                for k in range(ITEMS):
                    j = tx + k * group
                    if j < c:
                        m, s, a = _push(m, s, a, xs[k], j)
                for j in range(tx + ITEMS * group, c, group):
                    m, s, a = _push(m, s, a, logits[row, j], j)
            if WARP:
                # Butterfly: every lane ends with the whole row's triple (the
                # merge is symmetric and float additions commute), so nothing
                # is broadcast.  The warp shares one row: no lane is idle here.
                a32 = np.int32(a)
                off = 16
                while off > 0:
                    m2 = cuda.shfl_xor_sync(FULL, m, off)
                    s2 = cuda.shfl_xor_sync(FULL, s, off)
                    a2 = cuda.shfl_xor_sync(FULL, a32, off)
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
                if XENT:
                    lab = labels[row]
                    label_ok = lab >= 0 and lab < c
                if write_out != 0:
                    inv_s = 1.0 / s
                    for k in range(ITEMS):
                        j = tx + k * group
                        if j < c:
                            out[row, j] = _output(math.exp(xs[k] - mx), inv_s, j, lab, label_ok, inv_n, XENT)
                    for j in range(tx + ITEMS * group, c, group):
                        out[row, j] = _output(math.exp(logits[row, j] - mx), inv_s, j, lab, label_ok, inv_n, XENT)
                if XENT and tx == 0:
                    x_lab = np.float64(math.nan)
                    if label_ok:
                        x_lab = np.float64(logits[row, lab])
                    loss_sum, hits, bad = _add_row(loss_sum, hits, bad, mx, s, x_lab, arg, lab)
            if not WARP:
                cuda.syncthreads()  # the reduction slots are reused by the next rows

        if XENT:
            _flush_stats(stats, step, loss_sum, hits, bad, slot, group * cuda.blockDim.y, red_s, red_a)

    # 32 values per thread in registers: ask for room for two blocks per SM
    # (at most 128 registers) so that 16 rows' loads are in flight per SM.
    bounds = (WIDE_THREADS, 2) if items > 8 else WIDE_THREADS
    return kernel(_signature(dt), launch_bounds=bounds)(rows_wide)


def _signature(dt: np.dtype):
    nb = from_dtype(dt)
    return void(nb[:, ::1], int64[::1], nb[:, ::1], float64[::1], int64, int64, float64, int64, float64)


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


def wide_kernel_for(c: int, dtype: Any, xent: bool):
    """The rows_wide kernel used for C classes: warp shuffles when a row is one warp on a real GPU."""
    items, group, _ = wide_block(c, dtype)
    return rows_wide_kernel(np.dtype(dtype), xent, items, group == 32 and not ON_SIMULATOR)


def selectable_kernels(dtype: Any) -> dict:
    """Every kernel :func:`softmax` and :func:`softmax_cross_entropy` can pick for ``dtype``, by name.

    Found by asking the launchers' own choice (:func:`_plan`) for every class
    count up to the widest distinct one (past ``WIDE_MAX_GROUP`` times the
    most items per thread nothing changes).
    """
    dt = check_float_dtype(dtype)
    picks = {}
    for xent in (True, False):
        for c in range(1, WIDE_MAX_GROUP * max(WIDE_ITEMS) + 2):
            kern = _plan(xent, 1, c, dt)[0]
            if c <= SMALL_MAX_CLASSES:
                name = f"rows_small xent={xent}"
            else:
                items, group, _ = wide_block(c, dt)
                name = f"rows_wide xent={xent} items={items} warp={group == 32 and not ON_SIMULATOR}"
            picks[name] = kern
    return picks


def _plan(xent: bool, n: int, c: int, dt: np.dtype):
    """``(kernel, grid, block)`` for N rows of C classes."""
    if c <= SMALL_MAX_CLASSES:
        blocks = capped_blocks(ceil_div(n, SMALL_ROWS), BLOCK_THREADS_PER_SM // SMALL_ROWS)
        return rows_small_kernel(dt, xent), (blocks, 1, 1), (SMALL_ROWS, 1, 1)
    items, group, rows = wide_block(c, dt)
    blocks = capped_blocks(ceil_div(n, rows), BLOCK_THREADS_PER_SM // (group * rows))
    return wide_kernel_for(c, dt, xent), (blocks, 1, 1), (group, rows, 1)


def _placeholders(dt: np.dtype):
    """Stand-ins for an absent output, labels and stats."""
    return placeholder(dt, 2), placeholder(np.int64, 1), placeholder(np.float64, 1)


def _launch(xent: bool, logits, labels, out, stats, step: int, stream) -> int:
    n, c = logits.shape
    if n == 0 or (c == 0 and not xent):
        return 0
    if c == 0:
        raise ValueError("logits: expected at least one class, got 0 columns")
    dt = np.dtype(logits.dtype)
    write_out = out is not None
    spare_out, spare_labels, spare_stats = _placeholders(dt)
    args = (logits, spare_labels if labels is None else labels, spare_out if out is None else out,
            spare_stats if stats is None else stats, n, c, float(step), int(write_out), 1.0 / n)
    configured(*_plan(xent, n, c, dt), stream)(*args)
    return 1


def softmax_cross_entropy(logits, labels, dlogits, stats, step: int = 0, *, stream=0) -> int:
    """Loss statistics into ``stats`` and, unless ``dlogits`` is None, the gradient.

    logits: (N, C) float32/float64, labels: (N,) int64, dlogits: (N, C) or
    None, stats: float64 (``STATS_SIZE``,) accumulated slot by slot: loss sum
    (``STATS_LOSS_SUM``), hits (``STATS_CORRECT``), smallest step with a
    non-finite loss (``STATS_FIRST_NONFINITE_STEP``).  A label outside
    ``[0, C)`` gives that row a NaN loss and a NaN gradient row.  ``stream``: 0 or a
    Numba stream.  Returns the number of kernel launches (1).
    """
    return _launch(True, logits, labels, dlogits, stats, step, stream)


def softmax(logits, out, *, stream=0) -> int:
    """Row-wise softmax probabilities of ``logits`` (N, C) into ``out``.  Returns launches."""
    return _launch(False, logits, None, out, None, 0, stream)


def prepare(n: int, c: int, dtype: Any, *, xent: bool = True, stream=0) -> None:
    """Build the launch for N rows of C classes (and the placeholders) without launching.

    After this, the first :func:`softmax_cross_entropy` (``xent=True``) or
    :func:`softmax` of that shape on ``stream`` allocates and builds nothing.
    """
    if n == 0 or c == 0:
        return
    dt = check_float_dtype(dtype)
    _placeholders(dt)
    prepared(*_plan(xent, n, c, dt), stream)
