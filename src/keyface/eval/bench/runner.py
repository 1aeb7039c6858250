"""Scheduling: the process pool (or in-process runs for ``--jobs 1``), progress bars, and the
reuse of cached points."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from keyface.eval.bench.cache import _read_json
from keyface.eval.bench.config import SLOW_METRICS, BenchError
from keyface.eval.bench.worker import _worker_init
from keyface.threads import child_environment

# scheduling


T = TypeVar("T")


class _Runner:
    """Runs jobs in-process (``jobs <= 1``, or a single job) or in a process pool started on
    first need and kept for later batches; stops its workers when left by an exception."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        self._env: dict[str, str | None] = {}
        self._pids: Any = None  # a SimpleQueue the workers put their pid in when they start

    def __enter__(self) -> _Runner:
        return self

    def _start(self) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            # Children inherit these: one compute thread each, the parallelism is the pool
            # (read by keyface.threads in the worker, before it imports torch).
            for k, v in child_environment(compute=1).items():
                self._env[k] = os.environ.get(k)
                os.environ[k] = v
            if "SVT_LOG" not in os.environ:  # SVT-AV1: errors only, not its banner per encode
                self._env["SVT_LOG"] = None
                os.environ["SVT_LOG"] = "1"
            context = multiprocessing.get_context("spawn")
            self._pids = context.SimpleQueue()
            self.pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=context,
                initializer=_worker_init,
                initargs=(self._pids,),
            )
        return self.pool

    def map_unordered(
        self, fn: Callable[[T], dict[str, Any]], tasks: Sequence[T]
    ) -> Iterator[tuple[T, dict[str, Any]]]:
        """Yield ``(task, result)`` as jobs finish."""
        if self.jobs <= 1 or (len(tasks) <= 1 and self.pool is None):
            for task in tasks:
                yield task, fn(task)
            return
        pool = self._start()
        futures: dict[Future[dict[str, Any]], T] = {pool.submit(fn, t): t for t in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    raise BenchError(
                        "a worker process died (out of memory or a crash in native code); "
                        "finished points are cached: run again to resume, --jobs 1 to see why"
                    ) from None
                yield futures[fut], result

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.pool is None:
            return
        if exc_type is not None:
            # Interrupted or failed: drop queued jobs and stop the workers we started (each
            # told us its pid; the pool's own process table is private).
            self.pool.shutdown(wait=False, cancel_futures=True)
            pids = []
            while not self._pids.empty():
                pids.append(self._pids.get())
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.05)
        else:
            self.pool.shutdown(wait=True)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="job",
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
    )


def _cached_point(
    path: Path, key: dict[str, Any], metrics: Sequence[str], frames: int, slow_every: int = 1
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(record, None)`` when the cached point has every metric asked for; ``(None, partial)``
    when it matches but lacks some (``partial`` keeps the ones it has, so only the missing ones
    are measured); ``(None, None)`` when there is nothing usable."""
    record = _read_json(path)
    if not isinstance(record, dict) or record.get("key") != key or record.get("frames") != frames:
        return None, None
    sampled = record.get("sampled", {})
    kept = {
        m: v
        for m, v in record.get("metrics", {}).items()
        if m not in SLOW_METRICS or sampled.get(m, 1) == slow_every
    }
    if all(m in kept for m in metrics):
        return record, None
    partial = {
        **record,
        "metrics": kept,
        "sampled": {m: n for m, n in sampled.items() if m in kept},
    }
    partial["notes"] = {k: v for k, v in record.get("notes", {}).items() if k in kept}
    return None, partial


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process now
        return False
    return True
