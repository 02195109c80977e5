"""A real Mosquitto broker on a free loopback port, owned by the test that starts it.

`stop()` kills it (SIGKILL, like a crashed broker) and `start()` brings it back on
the same port, so outage tests can take the broker away and return it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(
        self,
        port: int | None = None,
        persistence: bool = True,
        allow_anonymous: bool = True,
        extra_lines: Sequence[str] = (),
    ) -> None:
        """`extra_lines` go at the end of mosquitto.conf (they apply to its one listener: TLS, password_file, …)."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "log_dest none",
            "max_queued_messages 100000",
            *extra_lines,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.skip("mosquitto is not installed (make test installs it when run as root)")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout_s}s")

    def stop(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash or power loss would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the broker hangs with its connections open (nothing is answered, nothing is closed)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused broker cannot be reaped otherwise
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running_mosquitto(persistence: bool = True) -> Iterator[Mosquitto]:
    broker = Mosquitto(persistence=persistence)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh broker per test (tests may kill and restart it)."""
    with running_mosquitto() as broker:
        yield broker
