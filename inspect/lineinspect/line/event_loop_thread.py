"""An asyncio event loop on its own thread, for asyncio-only clients (asyncua) behind a sync API.

The caller's thread hands coroutines over with `run(coro, timeout_s)` and waits for the result; the
loop is started once and stopped (and its thread joined) by `stop()`, so tests see no leaked thread.
`line/reject/opcua.py` does the same by hand; it can move onto this class.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopTimeout(TimeoutError):
    """A coroutine handed to the loop did not finish within its time; it was cancelled."""


class EventLoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start the loop's thread (idempotent)."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        self._loop = loop

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coro` on the loop and wait for it; raises what it raises, LoopTimeout after `timeout_s`."""
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.name}: the event loop is not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise LoopTimeout(f"no answer within {timeout_s * 1000:.0f} ms") from exc

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run a plain callable on the loop's thread (no waiting)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and join its thread (idempotent). Pending coroutines are abandoned."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        # The loop's default executor (name resolution) has a thread of its own: end it with the loop.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=2.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout_s)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._thread = None
