"""Session-wide test rules: a test that leaks threads fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

# Shared fixtures: `mosquitto` (a real broker per test).
pytest_plugins = ["tests.helpers.mosquitto"]

# Threads that libraries start once per process and keep (not leaks of a test).
# tqdm starts one `tqdm_monitor` per process with the first progress bar and never stops it.
_LONG_LIVED_PREFIXES = ("asyncio_", "AnyIO worker thread", "ThreadPoolExecutor-0_", "tqdm_monitor")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_LONG_LIVED_PREFIXES)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"
