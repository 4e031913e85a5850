"""One function over chunks of items, in a pool of processes: the single helper behind every
parallel job of the package (checking a dataset, class statistics, scoring mask folders).

Torch-free (the mask-folder evaluation never imports torch); a caller whose workers decode
with torch passes an ``initializer`` that limits each worker to one thread.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

MIN_PARALLEL = 48  # fewer items than this are done inline: starting processes costs more
MAX_CHUNK = 64  # items per chunk at most: results come back in small, evenly spread parts


def chunks(items: Sequence, workers: int) -> list[list]:
    """``items`` in order, cut into about four chunks per worker (balanced load, few round
    trips) of at most :data:`MAX_CHUNK` items."""
    size = max(1, min(MAX_CHUNK, math.ceil(len(items) / (4 * max(1, workers)))))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def pool(workers: int, initializer: Callable[[], Any] | None = None) -> ProcessPoolExecutor:
    """A process pool for :func:`parallel_map` to share across calls (use it in a ``with``)."""
    return ProcessPoolExecutor(workers, initializer=initializer)


def parallel_map(
    fn: Callable,
    items: Sequence,
    workers: int,
    *args: Any,
    initializer: Callable[[], Any] | None = None,
    meanwhile: Callable[[], Any] | None = None,
    executor: ProcessPoolExecutor | None = None,
) -> list:
    """``[fn(chunk, *args) for chunk in chunks(items, workers)]``, the chunks spread over
    ``workers`` processes.

    Inline, in this process, when ``workers <= 1``, with fewer than :data:`MIN_PARALLEL`
    items or with a single chunk. ``fn`` (and ``args``) must pickle: a module-level function.

    Args:
        initializer: run once in each new worker (e.g. to set torch to one thread).
        meanwhile: called here once every chunk is submitted, while the workers run (inline:
            before the work), e.g. to import something the caller needs next.
        executor: a pool from :func:`pool` to reuse across calls (``initializer`` is then
            the pool's own); by default one is started and shut down here.

    Raises:
        The first chunk's error in chunk order; the chunks not yet started are cancelled
        (an error does not wait for the rest of the work).
    """
    parts = chunks(items, workers)
    if workers <= 1 or len(items) < MIN_PARALLEL or len(parts) <= 1:
        if meanwhile is not None:
            meanwhile()
        return [fn(c, *args) for c in parts]
    if executor is not None:
        return _run(executor, fn, parts, args, meanwhile)
    with pool(min(workers, len(parts)), initializer) as own:
        return _run(own, fn, parts, args, meanwhile)


def _run(
    executor: ProcessPoolExecutor,
    fn: Callable,
    parts: list[list],
    args: tuple,
    meanwhile: Callable[[], Any] | None,
) -> list:
    futures: list[Future] = []
    try:
        futures = [executor.submit(fn, c, *args) for c in parts]  # submitted: workers start
        if meanwhile is not None:
            meanwhile()
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()  # on an error, don't finish the rest: drop the chunks not started
        raise


class Preloaded:
    """A forked process that imports ``module`` now and runs one of its functions later, when
    its arguments exist: a slow import (matplotlib's 0.4 s, for the evaluation plots) then
    overlaps this process's own work. Use it in a ``with``; :meth:`call` at most once.

    Needs the ``fork`` start method (Linux; see :func:`can_preload`). The function's return
    value and any exception (which must pickle, as :class:`~bddseg.errors.BddsegError` does)
    come back to :meth:`call`.
    """

    def __init__(self, module: str):
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._called = False
        self._proc = context.Process(target=_serve, args=(module, child, self._conn))
        self._proc.start()  # not a daemon: the function may start processes of its own
        child.close()

    def call(self, function: str, *args: Any) -> Any:
        self._called = True
        self._conn.send((function, args))
        try:
            ok, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the helper process died (exit code {self._proc.exitcode})"
            ) from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if not self._called:
            with contextlib.suppress(OSError):
                self._conn.send(None)  # no call is coming: the helper exits
        self._conn.close()
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def __enter__(self) -> Preloaded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def can_preload() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _serve(module: str, conn: Any, callers_end: Any) -> None:
    """The helper's side of :class:`Preloaded`: import, wait for one call, answer it."""
    callers_end.close()  # inherited by the fork: closed, so that a vanished caller is EOF here
    try:
        loaded, failed = importlib.import_module(module), None
    except Exception as e:  # noqa: BLE001 - reported by the call, if one comes
        loaded, failed = None, e
    try:
        request = conn.recv()
    except (EOFError, KeyboardInterrupt):  # the caller is gone
        return
    if request is None:  # closed without a call
        return
    function, args = request
    try:
        if failed is not None:
            raise failed
        reply = (True, getattr(loaded, function)(*args))
    except BaseException as e:  # noqa: BLE001 - handed back to the caller, who raises it
        reply = (False, e)
    try:
        conn.send(reply)
    except (OSError, KeyboardInterrupt):  # the caller is gone
        pass
    except Exception as e:  # noqa: BLE001 - an exception that does not pickle
        conn.send((False, RuntimeError(f"{type(e).__name__}: {e}")))
