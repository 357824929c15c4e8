"""The CUDA backend: Numba device arrays and the hand-written kernels of ``kernels/``.

Arrays are Numba device arrays (``numba.cuda.cudadrv.devicearray``); anything
exposing ``__cuda_array_interface__`` (a CuPy array, for instance) is used in
place when its dtype and layout already fit.  Every operation is a kernel
launch or a copy on the backend's own stream (:attr:`CudaBackend.stream`,
never the legacy default stream, so that it can be captured into a CUDA
graph): none synchronises the host and none allocates device memory when the
caller passes its outputs (split-K scratch, when a product needs it, is
allocated once per shape and kept).  Reading a result on the host
(:meth:`to_numpy`) waits for the stream.

An allocation that does not fit raises ``MemoryError`` saying how much was
asked, how much is free and what to try.

``launch_count`` counts kernel launches, so a benchmark can report launches
per training step; ``warmup(dtype)`` compiles every kernel for a dtype before
the first step (Numba's on-disk cache makes later processes fast);
``device_info()`` describes the device (or the simulator).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda
from numba.cuda.cudadrv import devicearray

from mlp.kernels import fill as fill_kernels
from mlp.kernels import gather, gemm, gemm_stacked, losses, optim, softmax, sparse
from mlp.kernels import stacked as stacked_kernels
from mlp.kernels._config import ON_SIMULATOR, sm_count

from . import _cuda_graph
from .base import Backend, BackendStatus, CSRMatrix, StackedLayer, is_c_contiguous
from .names import log_loss_eps

# Element kinds the fill and conversion kernels handle; anything else (bool,
# complex, ...) takes a round trip through host memory instead.
_KERNEL_KINDS = "iuf"
# Element kinds a device array may hold: booleans and numbers.
_ARRAY_KINDS = "biufc"


def _is_device_array(a: Any) -> bool:
    return bool(devicearray.is_cuda_ndarray(a)) or hasattr(a, "__cuda_array_interface__")


def _flat(a: Any) -> Any:
    """A 1-D view of a contiguous device array."""
    return a if a.ndim == 1 else a.reshape(a.size)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):  # the simulator allocates with NumPy
        return True
    return "OUT_OF_MEMORY" in str(getattr(exc, "code", "")) or "OUT_OF_MEMORY" in str(exc)


def _free_bytes() -> int | None:
    try:
        return int(cuda.current_context().get_memory_info().free)
    except Exception:  # the simulator has no memory to report
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


class CudaBackend(Backend):
    """Numba device arrays and Numba CUDA kernels.

    Parameters
    ----------
    gemm_config:
        Tile configuration of the matrix products: ``"auto"`` (chosen per
        shape, or from the device's tuning table), or one of
        ``mlp.kernels.gemm.TILES`` (``"32x64"``, ``"64x64"``, ``"128x128"``).
    split_k:
        K splits of the matrix products; ``None`` chooses per shape.
    """

    name = "cuda"
    auto_priority = 10

    @classmethod
    def status(cls) -> BackendStatus:
        """Usable on a real GPU (chosen by ``auto``) and under the simulator (never chosen by ``auto``)."""
        hint = (", or set NUMBA_ENABLE_CUDASIM=1 before importing numba to run the kernels on Numba's "
                "CUDA simulator")
        if ON_SIMULATOR:
            return BackendStatus(True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)", auto_eligible=False,
                                 hint=hint)
        if not cuda.is_available():
            try:
                cuda.detect()  # raises with the driver's reason when there is one
            except Exception as exc:
                return BackendStatus(False, " ".join(str(exc).split()) or type(exc).__name__, hint=hint)
            return BackendStatus(False, "no CUDA driver or no CUDA device found", hint=hint)
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        cc = ".".join(map(str, dev.compute_capability))
        return BackendStatus(True, f"{name} (compute capability {cc})")

    @classmethod
    def owns(cls, a: Any) -> bool:
        return not isinstance(a, np.ndarray) and _is_device_array(a)

    #: whether :meth:`capture` works here (not under the simulator)
    supports_graphs = not ON_SIMULATOR

    def __init__(self, gemm_config: str = "auto", split_k: int | None = None) -> None:
        if gemm_config not in gemm.CONFIG_NAMES:  # "auto" or a tile name; the naive baseline is bench/'s
            raise ValueError(f"gemm_config: expected one of {gemm.CONFIG_NAMES}, got {gemm_config!r}")
        if split_k is not None and int(split_k) < 1:
            raise ValueError(f"split_k: expected None or an integer >= 1, got {split_k!r}")
        self.gemm_config = gemm_config
        self.split_k = None if split_k is None else int(split_k)
        #: kernel launches made so far by this backend (reset it freely)
        self.launch_count = 0
        self._workspace = gemm.GemmWorkspace()
        #: every launch and copy of this backend goes to this stream
        self.stream = cuda.stream()

    # ------------------------------------------------------------------ arrays
    def _device_view(self, a: Any) -> Any:
        """``a`` as a Numba device array without copying."""
        if devicearray.is_cuda_ndarray(a):
            return a
        if ON_SIMULATOR:
            raise TypeError(f"a: {type(a).__name__} exposes __cuda_array_interface__, which the simulator cannot use")
        return cuda.as_cuda_array(a)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        want = None if dtype is None else np.dtype(dtype)
        if _is_device_array(a):
            dev = self._device_view(a)
            have = np.dtype(dev.dtype)
            target = have if want is None else want
            if target == have and is_c_contiguous(dev):
                return dev
            if is_c_contiguous(dev) and have.kind in _KERNEL_KINDS and target.kind in _KERNEL_KINDS:
                out = self.empty(dev.shape, target)
                self.launch_count += fill_kernels.convert(_flat(dev), _flat(out), stream=self.stream)
                return out
            a = self.to_numpy(dev)  # strided or unusual dtype: convert on the host
        try:
            host = np.ascontiguousarray(a, dtype=want)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a: cannot make a {want or 'numeric'} array from {type(a).__name__}: {exc}") from exc
        if host.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"a: cannot make a device array from {type(a).__name__} (it gives dtype {host.dtype})")
        out = self.empty(host.shape, host.dtype)
        out.copy_to_device(host, stream=self.stream)
        return out

    def to_numpy(self, a: Any) -> np.ndarray:
        if _is_device_array(a):
            host = self._device_view(a).copy_to_host(stream=self.stream)
            self.stream.synchronize()
            return host
        return np.asarray(a)

    def is_array(self, a: Any) -> bool:
        return _is_device_array(a)

    def empty(self, shape: int | Sequence[int], dtype: Any = np.float32) -> Any:
        dt = np.dtype(dtype)
        try:
            return cuda.device_array(shape, dtype=dt, stream=self.stream)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
            asked = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
            free = _free_bytes()
            raise MemoryError(
                f"GPU out of memory: an array of shape {dims} and dtype {dt} needs {_gib(asked)}, "
                f"{'and ' + _gib(free) + ' is free' if free is not None else 'which did not fit'}. Try a smaller "
                "batch_size, a smaller model or float32, or keep the data on the host (backend='numpy')"
            ) from None

    def zeros(self, shape: int | Sequence[int], dtype: Any = np.float32) -> Any:
        a = self.empty(shape, dtype)
        self._fill(a, 0)
        return a

    def _copy(self, dst: Any, src: Any) -> None:
        dt = np.dtype(dst.dtype)
        if _is_device_array(src):
            src = self._device_view(src)
            sdt = np.dtype(src.dtype)
            if not np.can_cast(sdt, dt, casting="same_kind"):
                raise TypeError(f"src: cannot copy dtype {sdt} into dtype {dt} (same-kind casting)")
            if is_c_contiguous(src) and is_c_contiguous(dst):
                if sdt == dt:
                    dst.copy_to_device(src, stream=self.stream)  # device to device
                    return
                if sdt.kind in _KERNEL_KINDS and dt.kind in _KERNEL_KINDS:
                    self.launch_count += fill_kernels.convert(_flat(src), _flat(dst), stream=self.stream)
                    return
            src = self.to_numpy(src)
        host = np.asarray(src)
        if not np.can_cast(host.dtype, dt, casting="same_kind"):
            raise TypeError(f"src: cannot copy dtype {host.dtype} into dtype {dt} (same-kind casting)")
        dst.copy_to_device(np.ascontiguousarray(host, dtype=dt), stream=self.stream)

    def _fill(self, a: Any, value: float) -> None:
        if a.size == 0:
            return
        dt = np.dtype(a.dtype)
        if dt.kind in _KERNEL_KINDS and is_c_contiguous(a):
            self.launch_count += fill_kernels.fill(_flat(a), value, stream=self.stream)
        else:
            a.copy_to_device(np.full(a.shape, value, dtype=dt), stream=self.stream)

    def _fill_stats(self, stats: Any) -> None:
        self.launch_count += fill_kernels.reset_stats(stats, stream=self.stream)

    def synchronize(self) -> None:
        """Wait for everything queued on the device, this backend's stream and any other (CuPy's, ...)."""
        cuda.synchronize()

    # ---------------------------------------------------------------- graphs
    def capture(self, record: Callable[[], None], keepalive: Any = None) -> "_cuda_graph.CapturedGraph":
        """Record the launches ``record()`` makes into a CUDA graph (see ``_cuda_graph``); real GPUs only.

        Everything ``record`` launches must already be compiled and its
        scratch allocated (run it eagerly once first): nothing may be
        allocated or copied from the host during a capture.
        """
        if not self.supports_graphs:
            raise RuntimeError("CUDA graphs need a real GPU; Numba's CUDA simulator cannot capture them")

        def counted() -> int:
            before = self.launch_count
            record()
            return self.launch_count - before

        return _cuda_graph.capture(self.stream, counted, keepalive)

    def graph_key(self) -> tuple:
        """The product configuration: it picks the kernels and grids a captured epoch launches."""
        return (self.gemm_config, self.split_k)

    # ----------------------------------------------------------------- gather
    def _take_rows(self, X: Any, idx: Any, out: Any) -> None:
        self.launch_count += gather.take_rows(X, idx, out, stream=self.stream)

    # ----------------------------------------------------------------- affine
    def _affine_forward(self, x, W, b, act, out) -> None:
        self.launch_count += gemm.affine_forward(x, W, b, act, out, **self._gemm_options)

    def _affine_backward(self, dy, x, W, y, dx, dW, db, act=1) -> None:
        self.launch_count += gemm.affine_backward_dw(dy, x, y, dW, db, act=act, **self._gemm_options)
        if dx is not None:
            self.launch_count += gemm.affine_backward_dx(dy, W, y, dx, act=act, **self._gemm_options)

    # ------------------------------------------------------------ sparse input
    # A CSR batch is dense (csr_batch_layout "dense"): the CSR arrays live on the device, and each step one
    # kernel (kernels/sparse.py) scatters the batch's rows into a preallocated (B, features) buffer, on which
    # the first layer's products are the dense ones.
    csr_batch_layout = "dense"

    def _new_csr_batch(self, X: CSRMatrix, rows: int) -> Any:
        return self.empty((rows, X.shape[1]), X.dtype)

    def _take_rows_csr(self, X, idx, out) -> None:
        self.launch_count += sparse.take_rows_dense(X.indptr, X.indices, X.data, idx, out, stream=self.stream)

    def _csr_affine_forward(self, x, W, b, act, out) -> None:
        self._affine_forward(x, W, b, act, out)

    def _csr_affine_backward(self, dy, x, y, dW, db, act=1) -> None:
        self.launch_count += gemm.affine_backward_dw(dy, x, y, dW, db, act=act, **self._gemm_options)

    @property
    def _gemm_options(self) -> dict:
        return dict(config=self.gemm_config, split_k=self.split_k, workspace=self._workspace, stream=self.stream)

    # ---------------------------------------------------------------- softmax
    def _softmax(self, logits, out) -> None:
        self.launch_count += softmax.softmax(logits, out, stream=self.stream)

    def _softmax_xent(self, logits, labels, dlogits, stats, step, weights=None, clip=False) -> None:
        self.launch_count += softmax.softmax_cross_entropy(logits, labels, dlogits, stats, step, weights,
                                                           clip_eps=log_loss_eps(logits.dtype, clip),
                                                           stream=self.stream)

    # ------------------------------------------------------------------ losses
    def _logistic_xent(self, logits, targets, dlogits, stats, step, weights=None, clip=False) -> None:
        self.launch_count += losses.logistic_cross_entropy(logits, targets, dlogits, stats, step, weights,
                                                           clip_eps=log_loss_eps(logits.dtype, clip),
                                                           stream=self.stream)

    def _squared_error(self, pred, targets, dpred, stats, step, weights=None) -> None:
        self.launch_count += losses.squared_error(pred, targets, dpred, stats, step, weights, stream=self.stream)

    def _poisson_loss(self, logits, targets, dlogits, stats, step, weights=None) -> None:
        self.launch_count += losses.poisson_loss(logits, targets, dlogits, stats, step, weights, stream=self.stream)

    def _l2_penalty(self, params, n, scales, row, stats) -> None:
        self.launch_count += losses.l2_penalty(params, n, scales, row, stats, stream=self.stream)

    # -------------------------------------------------------------- optimizers
    def _sgd_step(self, params, grads, buf, scalars, row, nesterov, n_decay) -> None:
        self.launch_count += optim.sgd_step(params, grads, buf, scalars, row, nesterov=nesterov, n_decay=n_decay,
                                            stream=self.stream)

    def _rmsprop_step(self, params, grads, square_avg, buf, scalars, row, n_decay) -> None:
        self.launch_count += optim.rmsprop_step(params, grads, square_avg, buf, scalars, row, n_decay=n_decay,
                                                stream=self.stream)

    def _adam_step(self, params, grads, exp_avg, exp_avg_sq, scalars, row, decoupled, n_decay) -> None:
        self.launch_count += optim.adam_step(params, grads, exp_avg, exp_avg_sq, scalars, row, decoupled=decoupled,
                                             n_decay=n_decay, stream=self.stream)

    # ---------------------------------------------------------- stacked models
    # One launch per operation for the whole stack, the model index a grid dimension (``kernels/stacked``,
    # ``kernels/gemm_stacked``).  ``rows`` is the stack's device table row of the step, so a stacked epoch
    # can be captured into a CUDA graph; a host array is copied at the launch (not capturable).
    def _fill_stacked_stats(self, stats) -> None:
        self.launch_count += stacked_kernels.reset_stats(stats, stream=self.stream)

    def _take_rows_stacked(self, X, idx, out) -> None:
        self.launch_count += stacked_kernels.take_rows(X, idx, out, stream=self.stream)

    # A stack of one is a single network: its products run the tuned single-network kernels (split-K, per-GPU
    # tiles) on model 0's views, over every row of its buffers.  Its loop never passes a stopped model (it ends
    # when the network stops), and a short last batch's padding rows are multiplied but contribute nothing: the
    # loss zeroes their gradient rows.
    def _affine_forward_stacked(self, x, W, b, act, out, rows=None) -> None:
        if x.shape[0] == 1:
            return self._affine_forward(x[0], W[0], b[0], act, out[0])
        if not (isinstance(W, StackedLayer) and isinstance(b, StackedLayer) and W.same_models(b)):
            return super()._affine_forward_stacked(x, W, b, act, out, rows)
        self.launch_count += gemm_stacked.affine_forward(x, W.flat, W.offset, b.offset, int(act), out,
                                                         self._all_rows(x) if rows is None else rows,
                                                         stream=self.stream)

    def _affine_backward_stacked(self, dy, x, W, y, dx, dW, db, act=1, rows=None) -> None:
        if dy.shape[0] == 1:
            return self._affine_backward(dy[0], x[0], W[0], None if y is None else y[0], None if dx is None else dx[0],
                                         dW[0], db[0], act)
        layers = (W, dW, db)
        if not (all(isinstance(a, StackedLayer) for a in layers) and dW.same_models(db)
                and W.models == dW.models and (W.offset, W.shape) == (dW.offset, dW.shape)):
            return super()._affine_backward_stacked(dy, x, W, y, dx, dW, db, act, rows)
        self.launch_count += gemm_stacked.affine_backward(dy, x, W.flat, y, dx, dW.flat, dW.offset, db.offset,
                                                          int(act), self._all_rows(dy) if rows is None else rows,
                                                          stream=self.stream)

    @staticmethod
    def _all_rows(a) -> np.ndarray:
        return np.full(a.shape[0], a.shape[1], dtype=np.int64)

    @staticmethod
    def _every_model(params, rows) -> Any:
        """``rows``, or (None) every model of ``params`` training (a host array, copied at the launch)."""
        return np.zeros(params.shape[0], dtype=np.int64) if rows is None else rows

    def _loss_stacked(self, output, logits, targets, dlogits, stats, step, weights, rows, clip=False) -> None:
        rows = self._all_rows(logits) if rows is None else rows
        self.launch_count += stacked_kernels.loss(output, logits, targets, dlogits, stats, step, weights, rows,
                                                  clip_eps=log_loss_eps(logits.dtype, clip), stream=self.stream)

    def _l2_penalty_stacked(self, params, n, scales, row, stats, rows) -> None:
        rows = self._every_model(params, rows)
        self.launch_count += stacked_kernels.l2_penalty(params, n, scales, row, stats, rows, stream=self.stream)

    def _sgd_step_stacked(self, params, grads, buf, table, row, nesterov, n_decay, rows) -> None:
        self.launch_count += stacked_kernels.sgd_step(params, grads, buf, table, row, nesterov=nesterov,
                                                      n_decay=n_decay, rows=self._every_model(params, rows),
                                                      stream=self.stream)

    def _rmsprop_step_stacked(self, params, grads, square_avg, buf, table, row, n_decay, rows) -> None:
        self.launch_count += stacked_kernels.rmsprop_step(params, grads, square_avg, buf, table, row, n_decay=n_decay,
                                                          rows=self._every_model(params, rows), stream=self.stream)

    def _adam_step_stacked(self, params, grads, exp_avg, exp_avg_sq, table, row, decoupled, n_decay,
                           rows) -> None:
        self.launch_count += stacked_kernels.adam_step(params, grads, exp_avg, exp_avg_sq, table, row,
                                                       decoupled=decoupled, n_decay=n_decay,
                                                       rows=self._every_model(params, rows),
                                                       stream=self.stream)

    def memory_budget(self) -> int:
        """Half the device's free memory (the simulator reports none: the host's budget then)."""
        free = _free_bytes()
        return super().memory_budget() if free is None else free // 2

    # ---------------------------------------------------------------- extras
    def warmup(self, dtype: Any = np.float32) -> dict[str, Any]:
        """Compile (or load from Numba's cache) every kernel a training step can pick for ``dtype``.

        The matrix products and softmax kernels are exactly those the
        launchers can choose (``gemm.selectable_kernels`` for this backend's
        ``gemm_config``, each for every activation of ``activations.ACTIVATIONS``;
        ``softmax.selectable_kernels``, unweighted and weighted; ``losses.selectable_kernels``), no more.  Returns
        ``{"kernels": count, "names": sorted kernel names, "seconds": wall
        time}``.  Idempotent: a second call for the same dtype builds nothing.
        """
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype: expected float32 or float64, got {dt}")
        start = time.perf_counter()
        built = {f"gemm {c} {v} {name}": gemm.gemm_kernel(dt, c, gemm.VARIANTS[v], act)
                 for c, v in gemm.selectable_kernels(dt, self.gemm_config)
                 for act, name in enumerate(gemm.ACTIVATIONS)}
        built.update({f"softmax {name}": k for name, k in softmax.selectable_kernels(dt).items()})
        built.update({f"weighted softmax {name}": k
                      for name, k in softmax.selectable_kernels(dt, weighted=True).items()})
        built.update({f"losses {name}": k for name, k in losses.selectable_kernels(dt).items()})
        built.update({"sgd": optim.sgd_kernel(dt), "rmsprop": optim.rmsprop_kernel(dt), "adam": optim.adam_kernel(dt),
                      "take_rows_2d": gather.take_rows_2d_kernel(dt),
                      "take_rows_1d": gather.take_rows_1d_kernel(np.dtype(np.int64)),
                      "densify_rows": sparse.densify_rows_kernel(dt),
                      "fill": fill_kernels.fill_kernel(dt), "reset_stats": fill_kernels.reset_stats_kernel()})
        return {"kernels": len(built), "names": sorted(built), "seconds": time.perf_counter() - start}

    def device_info(self) -> dict[str, Any]:
        """Device name, compute capability, SM count, driver/runtime and Numba versions."""
        import numba
        import numba_cuda

        info: dict[str, Any] = {
            "backend": self.name,
            "simulator": ON_SIMULATOR,
            "numba": numba.__version__,
            "numba_cuda": numba_cuda.__version__,
        }
        if ON_SIMULATOR:
            info.update(
                name="Numba CUDA simulator (kernels run as Python threads; timings mean nothing)",
                compute_capability=tuple(cuda.get_current_device().compute_capability),
                sm_count=sm_count(),
                driver_version=None,
                runtime_version=None,
            )
            return info
        from numba.cuda.cudadrv import driver, runtime

        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        info.update(
            name=name,
            compute_capability=tuple(dev.compute_capability),
            sm_count=sm_count(),
            driver_version=_version(driver.driver.get_version),
            runtime_version=_version(runtime.get_version),
        )
        try:
            info["total_memory_bytes"] = int(cuda.current_context().get_memory_info().total)
        except Exception:  # informational only
            pass
        return info


def _version(get) -> str | None:
    try:
        return ".".join(str(v) for v in get())
    except Exception:  # the runtime version needs NVRTC; absent it, say so by None
        return None


__all__ = ["CudaBackend"]
