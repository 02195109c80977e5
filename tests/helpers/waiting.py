"""Bounded waits for tests that watch a camera thread."""

from __future__ import annotations

import time
from collections.abc import Callable

from lineinspect.line.capture.supervisor import CameraSupervisor, Capture


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        time.sleep(0.01)


def take(sup: CameraSupervisor, n: int, timeout_s: float = 5.0) -> list[Capture]:
    """Exactly n captures from the supervisor's queue, or fail after timeout_s."""
    got: list[Capture] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        cap = sup.get(0.1)
        if cap is not None:
            got.append(cap)
    assert len(got) == n, f"got {len(got)} of {n} frames within {timeout_s} s; status: {sup.status().to_payload()}"
    return got


def holds(condition: Callable[[], bool], duration_s: float, what: str = "condition") -> None:
    """Check that `condition` stays true for `duration_s`, failing as soon as it does not.

    For "nothing happens" checks (no alarm, no extra pulse) where the end of a window is what the test waits for:
    the duration paces the test on purpose, the polling makes a break show at once.
    """
    deadline = time.monotonic() + duration_s
    while True:
        if not condition():
            raise AssertionError(f"{what} stopped holding within {duration_s} s")
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
