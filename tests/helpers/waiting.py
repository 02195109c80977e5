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
