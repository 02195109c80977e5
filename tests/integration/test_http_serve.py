"""`lineinspect serve` as a real process: uvicorn on a free loopback port, real HTTP, SIGTERM to stop."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from lineinspect.cli import main
from tests.helpers.station_dir import bad_part, encode, good_part, write_station

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


def read_line_with(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """The first stdout line containing `marker`; fails with what the process printed otherwise."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                return line
    pytest.fail(f"no line with {marker!r} within {timeout_s} s; output: {''.join(seen)}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with serving(write_station(tmp_path / "station", http={"max_upload_bytes": 2000})) as got:
        yield got


@contextmanager
def serving(station_dir: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`lineinspect serve` on a free port: (its URL, the process); killed at the end."""
    env = {
        **os.environ,
        "LINEINSPECT_API_KEY": "s3cret",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "inspect"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "lineinspect.cli", "serve", "--station-dir", str(station_dir), "--port", "0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = read_line_with(proc, "serving on", START_TIMEOUT_S)
        url = line.split("serving on ", 1)[1].split()[0]
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_answers_uploads_over_http_and_stops_cleanly_on_sigterm(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = served
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/readyz").json()["recipes"] == ["part"]

        refused = client.post("/v1/inspections", files={"file": ("bad.png", encode(bad_part()))})
        assert refused.status_code == 401
        assert "X-API-Key" in refused.json()["detail"]

        key = {"X-API-Key": "s3cret"}
        result = client.post("/v1/inspections", files={"file": ("bad.png", encode(bad_part()))}, headers=key)
        assert result.status_code == 200
        assert result.json()["verdict"] == "fail"
        assert result.json()["station"] == "acme/s1/a1/l1/cell1/lineinspect/teststation"

        big = b"\x89PNG\r\n\x1a\n" + bytes(100_000)
        too_big = client.post("/v1/inspections", files={"file": ("big.png", big)}, headers=key)
        assert too_big.status_code == 413
        assert "limit is 2000 bytes (http.max_upload_bytes)" in too_big.json()["detail"]

        # The connection is still usable after the 413.
        good = client.post("/v1/inspections", files={"file": ("good.png", encode(good_part()))}, headers=key)
        assert good.json()["verdict"] == "pass"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert proc.stdout is not None
    rest = proc.stdout.read()
    assert "Application shutdown complete" in rest
    assert "lineinspect: stopped (SIGTERM)" in rest


def test_serve_exits_2_naming_the_file_when_station_yaml_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--station-dir", str(tmp_path), "--port", "0"]) == 2
    assert f"{tmp_path / 'station.yaml'}: not found" in capsys.readouterr().err


def test_serve_exits_2_naming_the_address_when_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station_dir = write_station(tmp_path / "station")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--station-dir", str(station_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "choose another --port" in err


def test_a_stalled_upload_is_answered_408_after_the_upload_timeout(tmp_path: Path) -> None:
    """A client that sends half a body and stops gets 408 after http.upload_timeout_s, not a connection held for
    ever; the server goes on answering others."""
    station_dir = write_station(tmp_path / "station", http={"upload_timeout_s": 1.0})
    with serving(station_dir) as (url, _proc):
        host, port = url.removeprefix("http://").split(":")
        body_start = b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n\r\n\x89PNG'
        head = (
            f"POST /v1/inspections HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"X-API-Key: s3cret\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(head + body_start)
            started = time.monotonic()
            answer = stalled.recv(65536).decode(errors="replace")
            waited_s = time.monotonic() - started
            for _ in range(10):  # the body may come in its own packet
                more = stalled.recv(65536).decode(errors="replace")
                if not more:
                    break
                answer += more
                if answer.endswith("}"):
                    break
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "the upload did not arrive within 1 s (http.upload_timeout_s)" in answer
        assert 0.8 <= waited_s < 5, waited_s
        with httpx.Client(base_url=url, timeout=10) as client:
            good = client.post(
                "/v1/inspections", files={"file": ("good.png", encode(good_part()))}, headers={"X-API-Key": "s3cret"}
            )
            assert good.json()["verdict"] == "pass"


def test_an_upload_timeout_that_is_not_a_positive_time_is_refused_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station_dir = write_station(tmp_path / "station", http={"upload_timeout_s": 0})
    assert main(["serve", "--station-dir", str(station_dir), "--port", "0"]) == 2
    assert "http.upload_timeout_s" in capsys.readouterr().err
