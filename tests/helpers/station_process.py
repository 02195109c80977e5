"""`lineinspect run` as its own process, as a plant runs it: started on a free loopback port, and killed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_station(station_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`lineinspect run` over station_dir on 127.0.0.1; (the process, its HTTP URL) once /healthz answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(station_dir), "--port", str(port)]
    proc = subprocess.Popen([*command, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, f"the station exited with {proc.returncode}"
            return False

    try:
        wait_for(serving, START_TIMEOUT_S, "station serving")
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc, url


def trigger(url: str, part_id: str, camera: str = "cam1") -> tuple[str, int] | None:
    """One part over HTTP; (run_id, trigger_id) when the station accepted it, None when the answer was lost."""
    try:
        answer = httpx.post(f"{url}/v1/cameras/{camera}/trigger", json={"part_id": part_id}, timeout=2.0)
    except httpx.TransportError:
        return None
    assert answer.status_code == 202, answer.text
    body = answer.json()
    return str(body["run_id"]), int(body["trigger_id"])
