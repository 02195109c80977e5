"""The station runtime, measured side by side in one run.

1. Pipeline efficiency: station parts/s (folder camera triggered as fast as the station takes parts,
   frame → inspection → outbox → MQTT PUBACK) ÷ raw onnxruntime inferences/s (session.run on one
   preprocessed tensor), same model and thread budget (one inspection thread, the same intra-op
   threads), in interleaved rounds; the median ratio is printed.
2. At 1.0× and 1.5× a configured line rate (software triggers from the simulated line): the share
   of parts that end `undecided`, and the overhead = end-to-end p99 (frame → result received by an
   MQTT subscriber, an upper bound of frame → PUBACK) − model p99 (session.run alone).
3. Memory: `lineinspect run` in its own process at 1.0× the line rate for --minutes; its peak RSS and
   the slope of its RSS over the run (after a warm-up), which must stay flat.

    python bench/bench_station.py [--model models/default] [--images sample_images] [--minutes 10]

The broker is a Mosquitto started here on a free loopback port (the embedded broker if none is installed).
"""

from __future__ import annotations

import argparse
import json
import logging
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.assemble import build_station
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.preprocess import preprocess
from lineinspect.line.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench/site/area/line/cell/lineinspect/bench"  # the UNS path write_station gives the station
RSS_WARMUP_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker() -> Iterator[tuple[int, str]]:
    """A loopback broker: (port, what it is)."""
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if mosquitto is None:
        with EmbeddedBroker() as embedded:
            yield embedded.port, "embedded amqtt"
        return
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    (folder / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "m.conf")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port, "mosquitto"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


class Latencies:
    """Subscribes to the results; frame capture → arrival here, per result, in ms."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.ms: list[float] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{port}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/result", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = datetime.now(UTC)
        captured = datetime.fromisoformat(json.loads(msg.payload)["captured_at"].replace("Z", "+00:00"))
        with self._lock:
            self.ms.append((now - captured).total_seconds() * 1000)

    def take(self) -> list[float]:
        with self._lock:
            out, self.ms = self.ms, []
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else float("nan")


def write_station(
    folder: Path, model: Path, images: Path, patterns: list[str], port: int, threads: int, camera: dict[str, Any]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    link = folder / "models" / "bench"
    if not link.exists():
        link.symlink_to(model.resolve())
    config = {
        "station": {
            "id": "bench",
            "uns": {"enterprise": "bench", "site": "site", "area": "area", "line": "line", "cell": "cell"},
        },
        "runtime": {"intra_op_threads": threads},
        "recipes": [{"id": "bench", "model": "bench"}],
        "mqtt": {"port": port, "outbox_file": "var/outbox.sqlite", "max_inflight": 100},
        **camera.pop("station_sections", {}),
    }
    (folder / "station.yaml").write_text(yaml.safe_dump(config))
    (folder / "cameras").mkdir(exist_ok=True)
    cam = {"source": {"backend": "folder", "path": str(images.resolve()), "patterns": patterns}, **camera}
    (folder / "cameras" / "cam.yaml").write_text(yaml.safe_dump(cam))
    return folder


def raw_round(model: Model, image: Path, seconds: float) -> tuple[float, list[float]]:
    tensor, _ = preprocess(read_image_file(str(image)), model.card.input)
    feed = {model.input_name: tensor}
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic_ns()
        model.session.run(model.output_names, feed)
        times.append((time.monotonic_ns() - t0) / 1e6)
    return len(times) / sum(times) * 1000, times


def station_flood_round(folder: Path, seconds: float, outstanding: int = 2) -> float:
    """As fast as the station takes parts: a new software trigger whenever fewer than `outstanding` parts are
    undecided yet (so no frame is grabbed only to be dropped); results acknowledged by the broker per second."""
    station = build_station(folder, load_station(folder))
    station.start()
    try:
        time.sleep(1.0)  # camera open, broker connected
        sent = 0
        a0, t0 = station.publisher.stats().acked, time.monotonic()
        while time.monotonic() - t0 < seconds:
            if sent - station.counts.decided < outstanding:
                station.trigger("cam")
                sent += 1
            else:
                time.sleep(0.0005)
        a1, t1 = station.publisher.stats().acked, time.monotonic()
        undecided = station.counts.snapshot()["undecided"]
    finally:
        station.stop()
    if undecided:
        print(f"  (flood round: {undecided} parts undecided)")
    return (a1 - a0) / (t1 - t0)


def line_round(folder: Path, seconds: float, latencies: Latencies) -> tuple[dict[str, int], list[float]]:
    station = build_station(folder, load_station(folder))
    station.start()
    try:
        time.sleep(seconds)
        assert station.line is not None
        station.line.stop()
        deadline = time.monotonic() + 10
        while station.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        station.stop()
    return station.counts.snapshot(), latencies.take()


def rss_run(folder: Path, minutes: float) -> tuple[float, float, list[tuple[float, float]]]:
    """`lineinspect run` in its own process; (peak RSS MiB, slope MiB/min after warm-up, samples)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(folder), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    samples: list[tuple[float, float]] = []
    peak = 0.0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < minutes * 60 and proc.poll() is None:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
            samples.append((time.monotonic() - t0, int(fields["VmRSS"]) / 1024))
            peak = max(peak, int(fields["VmHWM"]) / 1024)
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    later = [(t, r) for t, r in samples if t >= min(RSS_WARMUP_S, minutes * 60 / 3)]
    slope = (
        statistics.linear_regression([t for t, _ in later], [r for _, r in later]).slope * 60 if len(later) > 2 else 0
    )
    return peak, slope, samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--images", type=Path, default=REPO / "sample_images")
    p.add_argument("--patterns", nargs="+", default=["good/*.png", "defective/*.png"])
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (both sides)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved raw/station rounds")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each round and each line-rate phase")
    p.add_argument("--line-rate", type=float, help="parts/min (default: 2/3 of the measured station capacity)")
    p.add_argument("--budget-ms", type=float, help="trigger → verdict budget (default: 4 × model p99, ≥ 100)")
    p.add_argument("--minutes", type=float, default=1.0, help="length of the RSS run (10 for the acceptance figure)")
    args = p.parse_args(argv)
    # Skipped and late parts are expected under overload; their per-part log lines would drown the figures.
    logging.basicConfig(level=logging.ERROR)

    model = Model.load(args.model, RuntimeOptions(intra_op_threads=args.threads, inter_op_threads=1))
    first_image = sorted(p for pat in args.patterns for p in args.images.glob(pat))[0]
    work = Path(tempfile.mkdtemp(prefix="bench-station-"))
    try:
        with broker() as (port, what):
            print(f"model {args.model} ({args.threads} intra-op threads), broker {what} :{port}, cpus {os.cpu_count()}")
            flood = write_station(
                work / "flood",
                args.model,
                args.images,
                args.patterns,
                port,
                args.threads,
                {
                    "acquisition": {"trigger": {"mode": "software"}},
                    "station_sections": {"line": {"inspection_threads": 1, "budget_ms": 60_000}},
                },
            )
            ratios, raw_rates, station_rates, model_ms = [], [], [], []
            for _ in range(args.rounds):
                raw, times = raw_round(model, first_image, args.seconds)
                got = station_flood_round(flood, args.seconds)
                raw_rates.append(raw)
                station_rates.append(got)
                model_ms += times
                ratios.append(got / raw)
            model_p99 = p99(model_ms)
            print(
                f"raw onnxruntime {statistics.median(raw_rates):.1f} inferences/s (p99 {model_p99:.1f} ms); "
                f"station {statistics.median(station_rates):.1f} parts/s frame→PUBACK; "
                f"pipeline efficiency {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            line_rate = args.line_rate or round(statistics.median(station_rates) * 60 * 2 / 3)
            budget = args.budget_ms or max(100.0, 4 * model_p99)
            latencies = Latencies(port)
            try:
                for factor in (1.0, 1.5):
                    folder = write_station(
                        work / f"line{factor}",
                        args.model,
                        args.images,
                        args.patterns,
                        port,
                        args.threads,
                        {
                            "acquisition": {"trigger": {"mode": "software"}},
                            "queue": {"size": 4, "full_policy": "undecided_new"},
                            "station_sections": {
                                "line": {
                                    "inspection_threads": 1,
                                    "budget_ms": budget,
                                    "trigger_rate_parts_per_min": line_rate * factor,
                                }
                            },
                        },
                    )
                    counts, ms = line_round(folder, args.seconds * 2, latencies)
                    total = counts["pass"] + counts["fail"] + counts["undecided"]
                    share = counts["undecided"] / total if total else float("nan")
                    print(
                        f"{factor:.1f}× line rate ({line_rate * factor:.0f} parts/min, budget {budget:.0f} ms): "
                        f"{total} parts, undecided {share:.1%} (skipped {counts['skipped']}, late {counts['late']}); "
                        f"end-to-end p99 {p99(ms):.1f} ms, overhead over model p99 {p99(ms) - model_p99:.1f} ms"
                    )
            finally:
                latencies.close()
            rss_station = write_station(
                work / "rss",
                args.model,
                args.images,
                args.patterns,
                port,
                args.threads,
                {
                    "acquisition": {"trigger": {"mode": "software"}},
                    "station_sections": {
                        "line": {"inspection_threads": 1, "budget_ms": budget, "trigger_rate_parts_per_min": line_rate},
                        "http": {"port": 0},
                    },
                },
            )
            peak, slope, samples = rss_run(rss_station, args.minutes)
            warm = next((r for t, r in samples if t >= min(RSS_WARMUP_S, args.minutes * 20)), samples[-1][1])
            print(
                f"RSS over {args.minutes:g} min at {line_rate:.0f} parts/min (one camera, this model): "
                f"peak {peak:.1f} MiB, after warm-up {warm:.1f} → end {samples[-1][1]:.1f} MiB, "
                f"slope after warm-up {slope:+.3f} MiB/min"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
