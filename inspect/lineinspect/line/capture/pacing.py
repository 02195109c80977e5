"""When a camera without its own clock or trigger input (folder, video file, UVC) delivers the next image."""

from __future__ import annotations

import threading
import time


class SoftwareTriggerLatch:
    """Counts software triggers; `wait` takes one, waiting up to a timeout. Thread-safe.

    Every trigger is kept (one image per trigger, in order), never merged.
    """

    def __init__(self) -> None:
        self._pending = 0
        self._cond = threading.Condition()

    def fire(self) -> None:
        with self._cond:
            self._pending += 1
            self._cond.notify()

    def wait(self, timeout_ms: int) -> bool:
        """True when a trigger was taken, False after timeout_ms without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending > 0, timeout=timeout_ms / 1000):
                return False
            self._pending -= 1
            return True

    def clear(self) -> None:
        with self._cond:
            self._pending = 0


class FramePacer:
    """Free run at a fixed rate: `wait` returns when the next frame is due (False if not within the timeout)."""

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self._next_ns: int | None = None
        self._stop = threading.Event()

    def wait(self, timeout_ms: int) -> bool:
        now = time.monotonic_ns()
        if self._next_ns is None:
            self._next_ns = now
        wait_ns = self._next_ns - now
        if wait_ns > timeout_ms * 1_000_000:
            self._stop.wait(timeout_ms / 1000)
            return False
        if wait_ns > 0:
            self._stop.wait(wait_ns / 1e9)
        # A late reader does not get a burst of catch-up frames: the schedule restarts from now.
        self._next_ns = max(self._next_ns + self.period_ns, time.monotonic_ns())
        return True

    def reset(self) -> None:
        self._next_ns = None
