"""Chaos at line rate, counted as the PLC and the MES see it, and what the part journal costs.

1. Chaos: `lineinspect run` in its own process, a real Mosquitto (persistence on), a software-triggered
   folder camera. This script triggers parts over HTTP at the line rate and keeps the (run_id,
   trigger_id) of every trigger the station accepted; a persistent QoS 1 subscriber counts the results.
   In one run: `--station-kills` SIGKILLs of the station (each restarted at once), `--broker-kills`
   SIGKILLs of Mosquitto (back after 2 s), and, where a small tmpfs can be mounted (root), a disk-full
   spell of the outbox's filesystem. Printed: triggered, accepted, received, lost (accepted parts
   with no result), duplicates (a message again, same result_id), extra results for one part, sequence
   gaps, restarted parts, and the parts refused while the disk was full (alarmed and rejected; nothing
   can be stored then, so the MES cannot get them).
2. Journal cost: the same station in this process at the line rate, interleaved rounds with the
   journal on and off (off: each camera's part entry skips the journal; for measuring only, the
   station has no such setting); end-to-end p99 (trigger → result stored) of both and the difference,
   with the spread over rounds.

    python bench/chaos.py [--station-kills 5] [--broker-kills 2] [--rate 10] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.assemble import build_station
from lineinspect.config import load_station
from lineinspect.core.result import Result
from lineinspect.line.station import PartEntry

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BURST = 8  # parts triggered at once just before each station kill
SPELL_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Mosquitto with persistence on a fixed loopback port; `kill()` is a crash, `start()` brings it back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-mosquitto-"))
        conf = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_queued_messages 1000000",
            "log_dest none",
            "user root",
        ]
        (self.dir / "m.conf").write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "m.conf")], stderr=subprocess.DEVNULL)
        for _ in range(250):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Mes:
    """A persistent QoS 1 subscriber: every result message, as (run_id, trigger_id, result_id, sequence)."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.results: list[tuple[str | None, int | None, str, int, str | None]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="chaos-mes", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("chaos/+/+/+/+/lineinspect/chaos/result", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        r = json.loads(msg.payload)
        with self._lock:
            self.results.append((r["run_id"], r["trigger_id"], r["result_id"], r["sequence"], r["undecided_kind"]))

    def snapshot(self) -> list[tuple[str | None, int | None, str, int, str | None]]:
        with self._lock:
            return list(self.results)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_station(folder: Path, port: int, *, outbox: Path, rate: float | None) -> None:
    import cv2
    from tests.helpers.graphs import brightness_anomaly
    from tests.helpers.station_dir import bad_part, good_part

    (folder / "models").mkdir(parents=True, exist_ok=True)
    brightness_anomaly(folder / "models" / "bright")
    parts = folder / "parts"
    parts.mkdir(exist_ok=True)
    for i, image in enumerate([good_part(), good_part(), bad_part()]):
        cv2.imwrite(str(parts / f"p{i}.png"), image)
    config = {
        "station": {"id": "chaos", "uns": {"enterprise": "chaos", "site": "site", "area": "area", "line": "line"}},
        "runtime": {"intra_op_threads": 1},
        "recipes": [{"id": "part", "model": "bright"}],
        "mqtt": {"port": port, "outbox_file": str(outbox), "reconnect_min_delay_s": 1, "reconnect_max_delay_s": 1,
                 "keepalive_s": 5, "connect_timeout_s": 2, "alarm_after_s": 2},
        "line": {"budget_ms": 2000, "drain_timeout_s": 3,
                 **({"trigger_rate_parts_per_min": rate * 60} if rate else {})},
    }  # fmt: skip
    (folder / "station.yaml").write_text(yaml.safe_dump(config))
    (folder / "cameras").mkdir(exist_ok=True)
    camera = {
        "source": {"backend": "folder", "path": "parts", "loop": True},
        "acquisition": {"trigger": {"mode": "software"}},
    }
    (folder / "cameras" / "cam1.yaml").write_text(yaml.safe_dump(camera))


class StationProcess:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
        cmd = [sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(self.folder), "--port", str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("station did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None


@contextmanager
def disk_or_none(folder: Path, size_kib: int) -> Iterator[Path | None]:
    """A small tmpfs (tests/helpers/small_disk.py), or None where it cannot be mounted (not root)."""
    from tests.helpers.small_disk import small_disk

    try:
        with small_disk(folder, size_kib) as disk:
            yield disk
    except pytest.skip.Exception:
        yield None


def chaos(args: argparse.Namespace) -> None:
    from tests.helpers.small_disk import fill

    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    broker = Broker()
    broker.start()
    with disk_or_none(work / "disk", size_kib=16 * 1024) as disk:
        outbox = (disk or work) / "outbox.sqlite"
        write_station(work / "station", broker.port, outbox=outbox, rate=None)
        mes = Mes(broker.port)
        station = StationProcess(work / "station")
        station.start()
        accepted: dict[tuple[str, int], float] = {}  # part → when it was triggered (monotonic s)
        triggered = unanswered = 0
        refused_window: list[tuple[float, float]] = []
        period_s = 1.0 / args.rate
        # The schedule, in parts: kills of the station and the broker spread over the run, the disk spell after.
        total = max(60, int(args.rate * args.seconds))
        station_kills = {int(total * (i + 1) / (args.station_kills + 1)) for i in range(args.station_kills)}
        broker_kills = {int(total * (i + 0.5) / (args.broker_kills + 1)) for i in range(args.broker_kills)}
        spell_at = int(total * 0.9) if disk is not None else -1
        broker_back_at: float | None = None
        filler: Path | None = None
        next_s = time.monotonic()

        def send(part_id: str) -> tuple[str, int] | None:
            try:
                body = httpx.post(f"{station.url}/v1/cameras/cam1/trigger", json={"part_id": part_id}, timeout=2).json()
                return str(body["run_id"]), int(body["trigger_id"])
            except (httpx.TransportError, KeyError, ValueError):
                return None

        for n in range(total):
            if n in station_kills:
                # A burst at once, then the kill: parts are in flight when the process dies.
                with ThreadPoolExecutor(BURST) as pool:
                    answers = list(pool.map(send, [f"P{n}-burst{i}" for i in range(BURST)]))
                station.kill()
                triggered += BURST
                for answer in answers:
                    if answer is None:
                        unanswered += 1
                    else:
                        accepted[answer] = time.monotonic()
                station.start()
            if n in broker_kills:
                broker.kill()
                broker_back_at = time.monotonic() + 2.0
            if broker_back_at is not None and time.monotonic() >= broker_back_at:
                broker.start()
                broker_back_at = None
            if n == spell_at and disk is not None:
                # The worst case: the broker away while the disk is full, so results must pile up on it.
                filler = fill(disk)
                broker.kill()
                broker_back_at = time.monotonic() + SPELL_S
                refused_window.append((time.monotonic(), time.monotonic() + SPELL_S))
            if filler is not None and time.monotonic() >= refused_window[-1][1]:
                filler.unlink()
                filler = None
            triggered += 1
            answer = send(f"P{n}")
            if answer is None:
                unanswered += 1
            else:
                accepted[answer] = time.monotonic()
            next_s += period_s
            time.sleep(max(0.0, next_s - time.monotonic()))
        if filler is not None:
            filler.unlink()
        if broker_back_at is not None:
            broker.start()
        station.stop()
        station.start()  # a last start issues what the last run left open, then a clean stop
        time.sleep(2.0)
        station.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = {(r[0], r[1]) for r in mes.snapshot()}
            if set(accepted) <= seen:
                break
            time.sleep(0.2)
        results = mes.snapshot()
        mes.close()
    broker.close()
    shutil.rmtree(work, ignore_errors=True)

    by_part: dict[tuple[str | None, int | None], set[str]] = defaultdict(set)
    for run_id, trigger_id, result_id, _seq, _kind in results:
        by_part[(run_id, trigger_id)].add(result_id)
    ids = [r[2] for r in results]
    sequences = sorted({r[3] for r in results})
    gaps = (sequences[-1] - sequences[0] + 1 - len(sequences)) if sequences else 0
    lost = [p for p in accepted if p not in by_part]
    in_spell = [p for p in lost if any(start - 0.5 <= accepted[p] <= end + 0.5 for start, end in refused_window)]
    spell = f"yes, {SPELL_S:g} s with the broker away" if spell_at >= 0 else "no (no tmpfs)"
    print(
        f"chaos at line rate ({args.rate:g} parts/s, {args.station_kills} station kills, "
        f"{args.broker_kills} broker kills, disk-full spell: {spell})"
    )
    print(f"  triggered {triggered}, accepted {len(accepted)}, answer cut off by a kill {unanswered}")
    print(f"  results received {len(set(ids))} unique ({len(ids) - len(set(ids))} duplicate messages, same result_id)")
    print(f"  lost (accepted, no result) outside the disk-full spell: {len(lost) - len(in_spell)}")
    print(f"  not stored while the disk was full (alarmed, rejected; nothing could be written): {len(in_spell)}")
    print(f"  parts with two different results: {sum(1 for v in by_part.values() if len(v) > 1)}")
    print(f"  sequence gaps: {gaps} (the refused parts of a disk-full spell are never stored, so they leave none)")
    print(
        f"  restarted (in flight at a kill, issued at the next start): {sum(1 for r in results if r[4] == 'restarted')}"
    )


def journal_cost(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="chaos-cost-"))
    broker = Broker()
    broker.start()
    try:
        write_station(work, broker.port, outbox=work / "var" / "outbox.sqlite", rate=args.rate)
        p99s: dict[bool, list[float]] = {True: [], False: []}
        for _round in range(args.rounds):
            for journal in (True, False):
                p99s[journal].append(line_p99(work, journal, args.round_s))
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.rounds < 1:
        return
    print(f"journal cost at {args.rate:g} parts/s, end-to-end p99 (trigger → result stored), {args.rounds} rounds")
    for journal in (True, False):
        values = p99s[journal]
        spread = (max(values) - min(values)) / statistics.median(values) * 100
        print(f"  journal {'on ' if journal else 'off'}: median p99 {statistics.median(values):7.2f} ms "
              f"(rounds {', '.join(f'{v:.2f}' for v in values)}; spread {spread:.0f} %)")  # fmt: skip
    diffs = [on - off for on, off in zip(p99s[True], p99s[False], strict=True)]
    print(
        f"  on − off per round: {', '.join(f'{d:+.2f}' for d in diffs)} ms; median {statistics.median(diffs):+.2f} ms"
    )


def line_p99(folder: Path, journal: bool, seconds: float) -> float:
    latencies: list[float] = []
    lock = threading.Lock()

    def seen(result: Result) -> None:
        if "end_to_end" in result.timings_ms:
            with lock:
                latencies.append(result.timings_ms["end_to_end"])

    station = build_station(folder, load_station(folder), result_sinks=[seen])
    if not journal:
        for sup in station.supervisors.values():
            entry = sup.on_part
            assert isinstance(entry, PartEntry)
            sup.on_part = PartEntry(None, entry.reject)
    station.start()
    try:
        time.sleep(1.0)  # warm-up, not measured
        with lock:
            latencies.clear()
        time.sleep(seconds)
    finally:
        station.stop()
    return statistics.quantiles(latencies, n=100)[98]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--station-kills", type=int, default=5)
    p.add_argument("--broker-kills", type=int, default=2)
    p.add_argument("--rate", type=float, default=10.0, help="parts per second")
    p.add_argument("--seconds", type=float, default=40.0, help="length of the chaos run")
    p.add_argument("--rounds", type=int, default=4, help="journal on/off rounds")
    p.add_argument("--round-s", type=float, default=8.0, help="seconds per journal round")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    chaos(args)
    journal_cost(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
