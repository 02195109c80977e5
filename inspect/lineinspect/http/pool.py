"""The bounded pool that inspects uploads off the event loop.

`workers` threads inspect; at most `max_waiting` more uploads wait for one.
Beyond that the pool refuses at once (the route answers 503 with
Retry-After) instead of letting a queue grow without limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every worker is busy and the waiting line is full."""


class PoolTimeout(Exception):
    """The job did not finish within its time limit (it may still be running)."""


class InspectionPool:
    """A ThreadPoolExecutor with a bounded number of accepted jobs.

    A job holds its slot until it really finishes, so a job that outlives its
    timeout keeps counting against the limit: a model that hangs fills the
    pool and clients get 503 rather than piling more work on top of it.
    """

    def __init__(self, *, workers: int, max_waiting: int, thread_name_prefix: str = "lineinspect-http") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        self.workers = workers
        self.max_waiting = max_waiting
        self._slots = threading.BoundedSemaphore(workers + max_waiting)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()
        self._accepted = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Jobs accepted and not yet finished (running or waiting)."""
        with self._lock:
            return self._accepted

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Accept a job or raise PoolFull at once (never blocks)."""
        if self._closed:
            raise PoolFull("the inspection pool is shutting down")
        if not self._slots.acquire(blocking=False):
            raise PoolFull(f"{self.workers} uploads are being inspected and {self.max_waiting} are waiting")
        with self._lock:
            self._accepted += 1
        try:
            future = self._executor.submit(job)
        except RuntimeError:  # shut down between the check and the submit
            self._release(None)
            raise PoolFull("the inspection pool is shutting down") from None
        future.add_done_callback(self._release)
        return future

    async def run(self, job: Callable[[], T], *, timeout_s: float) -> T:
        """Run a job in the pool and wait for it without blocking the event loop.

        Raises PoolFull when no slot is free and PoolTimeout after `timeout_s`
        (a job still waiting for a worker is then cancelled; a running one
        finishes in the background and frees its slot when done).
        """
        future = self.submit(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            raise PoolTimeout(f"not finished within {timeout_s * 1000:.0f} ms") from None

    def shutdown(self) -> None:
        """Refuse new jobs, cancel waiting ones, wait for running ones to finish."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _release(self, _future: Future[T] | None) -> None:
        with self._lock:
            self._accepted -= 1
        self._slots.release()
