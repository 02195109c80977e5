"""The dashboard as a browser shows it: the app on a real uvicorn (loopback, free port) and headless Chromium.

`needs_chromium` skips a test where Chromium is not installed (`make system-deps` installs it);
`serving(app)` runs an app in a thread for the test's duration; `rendered_dom(url, …)` is the page's DOM
after its scripts ran.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI

from lineinspect.http.server import bind_socket, make_server, url_of
from tests.helpers.waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make system-deps installs it)")


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn, 127.0.0.1, a free port, in a thread (stopped and joined after); its URL."""
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(app, log_level="warning", access_log=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s=10, what="uvicorn started")
        assert server.started, "uvicorn stopped before it served"
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def rendered_dom(url: str, profile: Path, *, expect: str, virtual_time_ms: int = 5000) -> str:
    """The DOM of `url` in headless Chromium once its fetches are done (virtual time), which must contain
    `expect` (else the assertion shows Chromium's own output). profile: an empty folder for its user data."""
    assert CHROMIUM is not None, "use needs_chromium on the test"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Virtual time lets the page's fetches finish before the DOM is dumped.
        f"--virtual-time-budget={virtual_time_ms}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert expect in done.stdout, f"chromium printed no page (exit {done.returncode}): {done.stderr[-2000:]}"
    return done.stdout
