"""CUDA graphs for the CUDA backend: record a sequence of launches once, replay it with one call.

Capture goes through the CUDA driver API as ``cuda.bindings`` exposes it
(``cuStreamBeginCapture`` on the backend's own stream, ``cuStreamEndCapture``,
``cuGraphInstantiate``, ``cuGraphLaunch``).  Every launch of the backend
goes to that stream, never to the legacy default stream, so the captured
graph holds exactly the launches the backend counted; :func:`capture`
compares the two and refuses a graph that lost any (a launch that escaped
the capture would otherwise be silently missing from every replay).

A graph bakes in the addresses of the buffers its launches named and the
scalar arguments they were given.  Keeping those buffers alive, and
recapturing when any of them or any scalar changes, is the caller's job
(see ``mlp.loop.TrainingLoop``).

Nothing may free device memory or unload a module while a capture is under
way: the driver calls that would do it (``cuMemFree``, ``cuModuleUnload``)
invalidate the capture.  Numba defers such releases and flushes them once
enough are pending, from whatever code happens to drop the last reference,
and a garbage-collection pass (which may also finalise an old graph) can drop
references anywhere; so the recording runs inside
``numba.cuda.defer_cleanup()`` with the garbage collector paused.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .base import GraphCaptureError


def _driver():
    """``cuda.bindings.driver`` (a dependency of numba-cuda); ImportError when it is missing."""
    from cuda.bindings import driver

    return driver


@contextmanager
def _nothing_released() -> Iterator[None]:
    """No deallocation, module unload or garbage collection in the body (each would break a capture)."""
    from numba import cuda

    paused = gc.isenabled()
    gc.disable()
    try:
        with cuda.defer_cleanup():
            yield
    finally:
        if paused:
            gc.enable()


def _check(result: Any, what: str) -> Any:
    """Unpack a ``cuda.bindings`` result tuple, raising on an error code."""
    driver = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err!r}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


#: raised when the graph lacks a launch that was made (a launch escaped the capture)
CaptureError = GraphCaptureError


class CapturedGraph:
    """An instantiated CUDA graph replayed on one stream.

    ``launches`` is the number of kernel launches recorded; ``keepalive``
    holds the objects whose device memory the graph points at.
    """

    def __init__(self, graph: Any, exec_: Any, stream: Any, launches: int, keepalive: Any) -> None:
        self._graph, self._exec, self._stream = graph, exec_, stream
        self.launches = launches
        self.keepalive = keepalive

    def replay(self) -> None:
        """Enqueue one replay on the stream it was captured on (asynchronous)."""
        _check(_driver().cuGraphLaunch(self._exec, int(self._stream)), "cuGraphLaunch")

    def close(self) -> None:
        driver = _driver()
        if self._exec is not None:
            driver.cuGraphExecDestroy(self._exec)
            driver.cuGraphDestroy(self._graph)
            self._exec = self._graph = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


def capture(stream: Any, record: Callable[[], int], keepalive: Any = None) -> CapturedGraph:
    """Capture the launches ``record()`` makes on ``stream`` (a Numba stream) into a graph.

    ``record`` returns the number of kernel launches it made; the graph must
    hold exactly that many nodes, or :class:`CaptureError` is raised.  The
    capture is thread-local: another thread of the process may keep using
    the GPU meanwhile, but this thread must not touch the legacy default
    stream (such a call fails the capture instead of running outside it).
    """
    driver = _driver()
    handle = int(stream)  # the stream's CUstream as an integer, whatever type numba-cuda keeps it in
    with _nothing_released():
        _check(driver.cuStreamBeginCapture(handle, driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
               "cuStreamBeginCapture")
        try:
            launches = record()
        except BaseException:
            # End the capture even when recording failed, so the stream is usable again.
            err, graph = driver.cuStreamEndCapture(handle)
            if err == driver.CUresult.CUDA_SUCCESS and graph:
                driver.cuGraphDestroy(graph)
            raise
        graph = _check(driver.cuStreamEndCapture(handle), "cuStreamEndCapture (a call during capture broke it)")
    try:
        _, nodes = _check(driver.cuGraphGetNodes(graph, 0), "cuGraphGetNodes")
        if nodes != launches:
            raise CaptureError(
                f"the captured graph holds {nodes} kernel launches but {launches} were made: a launch "
                "escaped the capture (it went to another stream) and would be missing from every replay")
        exec_ = _check(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    except BaseException:
        driver.cuGraphDestroy(graph)
        raise
    return CapturedGraph(graph, exec_, stream, launches, keepalive)
