"""The station at line rate when the broker dies, and when the station itself is SIGKILLed and restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from lineinspect.line.outbox import Outbox
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_runtime import SAVE_SESSIONS, running_station, subscribed, write_line_station
from tests.helpers.subscriber import assert_complete_in_order
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_every_result_arrives_in_order_when_the_broker_is_killed_at_line_rate(tmp_path: Path) -> None:
    mosquitto = Mosquitto(extra_lines=SAVE_SESSIONS)
    mosquitto.start()
    try:
        write_line_station(tmp_path, mosquitto.port, parts="gbg", line={"trigger_rate_parts_per_min": 1200})
        with subscribed(mosquitto.port) as sub:
            with running_station(tmp_path) as station:
                wait_for(lambda: len(sub.results()) >= 10, 5, "results before the outage")
                mosquitto.stop()
                # 20 parts/s keep coming; their results wait in the outbox
                wait_for(lambda: station.outbox.depth() >= 30, 10, "results waiting in the outbox during the outage")
                mosquitto.start()
                wait_for(lambda: station.publisher.stats().connected, 5, "reconnected")
                resumed_at = station.outbox.last_sequence
                wait_for(lambda: station.outbox.last_sequence >= resumed_at + 10, 5, "parts after the reconnect")
                assert station.line is not None
                station.line.stop()
                wait_for(lambda: station.outbox.depth() == 0, 10, "outbox drained")
                last = station.outbox.last_sequence
                sub.wait_until(lambda: len({s for s, _ in sub.results()} & set(range(1, last + 1))) >= last, 10, "all")
                counts = station.status().to_payload()["counts"]
            received = [(s, r) for s, r in sub.results() if s <= last]
    finally:
        mosquitto.close()
    assert last >= 60
    assert_complete_in_order(received, last)
    assert counts["pass"] + counts["fail"] + counts["undecided"] >= last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def outbox_depth(url: str) -> int:
    """The running station's outbox depth from its own /v1/status (its outbox file is locked to it)."""
    try:
        depth: int = httpx.get(f"{url}/v1/status", timeout=2.0).json()["outbox"]["depth"]
    except httpx.TransportError:  # not serving yet
        return 0
    return depth


def run_station(station_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
    return subprocess.Popen(
        [sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(station_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_nothing_decided_is_lost_when_the_station_is_sigkilled_and_restarted(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="gb", line={"trigger_rate_parts_per_min": 1200})
    with subscribed(mosquitto.port) as sub:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = run_station(tmp_path, "--port", str(port))
        try:
            sub.wait_until(lambda: len(sub.results()) >= 20, 20, "results from the first run")
            mosquitto.stop()  # results now pile up in the outbox only
            wait_for(lambda: outbox_depth(url) >= 5, 10, "results stranded in the outbox")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        with Outbox(tmp_path / "var" / "outbox.sqlite") as outbox:
            stranded, last_before = outbox.depth(), outbox.last_sequence
        assert stranded >= 5, "the kill did not leave results in the outbox"
        mosquitto.start()
        sub.wait_until(lambda: sub.subscribed >= 2, 5, "subscriber back")
        second = run_station(tmp_path, "--port", "0", "--duration-s", "2")
        try:
            out, _ = second.communicate(timeout=30)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        assert second.returncode == 0, out
        with Outbox(tmp_path / "var" / "outbox.sqlite") as outbox:
            left, last = outbox.depth(), outbox.last_sequence
        sub.wait_until(lambda: {s for s, _ in sub.results()} >= set(range(1, last + 1)), 10, "every result")
    assert left == 0
    assert last > last_before
    assert_complete_in_order([(s, r) for s, r in sub.results() if s <= last], last)
