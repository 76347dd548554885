"""Worker processes for ``task_runner: processes``: each chunk of wells runs in one of them.

The `run-steps` task stays a Prefect task in a flow thread (its states, retries and name in the
UI are those of the threads runner); what it executes, every step of its chunk, runs in a
worker process, so pipeline functions that hold the GIL (scipy.ndimage, scikit-image) use every
core. Workers are forked from a ``forkserver`` that imported the pipeline modules once (per
flow process, shared by later runs in it): a worker starts in milliseconds and shares those
pages. A worker that dies (killed, out of memory, a crash in C code) fails its chunk with a
transient error, so Prefect retries the chunk in a fresh pool; the other wells are not lost.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from prefect_hcs.runtime import stores
from prefect_hcs.runtime.chunk import ChunkReport, execute_chunk

#: What the forkserver imports once, so that every worker forked from it starts with them: the
#: chunk executor, the built-in functions, the readers and writers, and what the first well
#: would import lazily (pandas and pyarrow.compute for the Parquet tables, Pillow's PNG codec
#: for thumbnails; measured by diffing `sys.modules` around one well).
PRELOAD = (
    "prefect_hcs.runtime.chunk",
    "prefect_hcs.processing",
    "prefect_hcs.formats.detect",
    "prefect_hcs.formats.omezarr",
    "prefect_hcs.formats.tables",
    "pandas",
    "pyarrow.compute",
    "pyarrow.pandas_compat",
    "PIL.PngImagePlugin",
)


class WorkerProcessDiedError(ConnectionError):
    """A worker process ended while running a chunk (killed, out of memory, a crash): transient."""

    transient = True


class ChunkPool:
    """`workers` worker processes running chunks; replaced by a fresh pool if one dies."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=_context(),
                    initializer=_exit_with_flow,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def run(
        self,
        wells: str,
        plans: list[Any],
        output: Any,
        storage_options: dict[str, Any],
        *args: Any,
    ) -> ChunkReport:
        """Execute a chunk in a worker (`execute_chunk`'s arguments after the first three).

        `wells` names the chunk for the error raised when its worker dies.
        """
        executor = self._current()
        credentials = stores.credentials_for(output, storage_options)
        modules = sorted(_function_modules(plans))
        try:
            future = executor.submit(
                _in_worker, credentials, modules, plans, output, storage_options, *args
            )
            return future.result()
        except BrokenProcessPool:
            self._discard(executor)
            raise WorkerProcessDiedError(
                f"a worker process died while running wells {wells} (killed, out of memory or "
                "crashed); the chunk is retried in a new worker"
            ) from None

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self, abort: bool = False) -> None:
        """Stop the workers: after their chunks finish, or at once (`abort`: the run is over)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        if abort:  # a cancelled or crashed run must not wait for its chunks to finish
            for proc in list(getattr(executor, "_processes", {}).values()):
                proc.terminate()
        executor.shutdown(wait=not abort, cancel_futures=True)


_POOLS: dict[str, ChunkPool] = {}  # flow run id -> its pool, in the flow process


@contextlib.contextmanager
def pool_for_run(run_id: str, workers: int) -> Iterator[ChunkPool]:
    """A pool of `workers` processes for the flow run `run_id`, closed when the block ends."""
    pool = ChunkPool(workers)
    _POOLS[run_id] = pool
    try:
        yield pool
    except BaseException:
        pool.close(abort=True)
        raise
    else:
        pool.close()
    finally:
        _POOLS.pop(run_id, None)


def prestart() -> None:
    """Start the forkserver now (it imports `PRELOAD` in the background); idempotent.

    The flow calls this right after compiling, so the imports overlap preparing the outputs.
    """
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def warm_up() -> None:
    """Start the forkserver and wait until it has imported `PRELOAD` (benchmarks, long-lived
    processes): the next pool's workers then start without paying those imports."""
    prestart()
    proc = _context().Process(target=int)
    proc.start()
    proc.join()


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *_main_module()])
    return context


def _main_module() -> list[str]:
    """The parent's main module, for the forkserver to import once.

    Multiprocessing re-runs the parent's main module in every worker: ``prefect.engine`` under
    a Prefect worker or `serve` (Prefect's imports, ~2 CPU s each), the ``prefect-hcs`` script.
    Imported once in the forkserver, a forked worker finds it there instead. A package's
    ``__main__`` (``python -m pytest``) is never re-run, so it is not preloaded either.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name:
        return [] if name.endswith(".__main__") else [name]
    return ["__main__"] if getattr(main, "__file__", None) else []


def pool_of(run_id: str) -> ChunkPool | None:
    """The pool of the flow run `run_id` (None: its chunks run in the calling thread)."""
    return _POOLS.get(run_id)


def _exit_with_flow(flow_pid: int) -> None:
    """In a worker: end this process when the flow process is gone (killed, even by SIGKILL).

    A pool's workers wait on a queue the dead flow can no longer close, so without this they
    would live on as orphans holding their memory.
    """

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(flow_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="hcs-watch-flow", daemon=True).start()


def _function_modules(plans: list[Any]) -> set[str]:
    """Modules defining the functions the plans call, for a worker to import (registering them)."""
    from prefect_hcs.processing.registry import get_function

    names = {n for p in plans for n in p.code_versions}
    modules = set()
    for name in names:
        with contextlib.suppress(Exception):
            modules.add(get_function(name).func.__module__)
    return {m for m in modules if not m.startswith("prefect_hcs.")}


def _in_worker(
    credentials: dict[str, dict[str, Any]], modules: list[str], *args: Any
) -> ChunkReport:
    """In a worker process: credentials and user functions ready, then `execute_chunk`."""
    stores.use_credentials(credentials)
    for module in modules:
        importlib.import_module(module)
    return execute_chunk(*args)
