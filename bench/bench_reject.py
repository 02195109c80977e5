"""Timed reject on time: pulse-start error measured where the PLC would see it.

A pymodbus Modbus TCP server runs in its own process on 127.0.0.1 and
timestamps every coil write as it receives it (CLOCK_MONOTONIC is shared by
processes, so its stamps compare with the tracker's schedule). Parts arrive
at 20 parts/s, 30 % fail (seeded); verdicts arrive 20–80 ms after the trigger
(inside the 100 ms budget); the ejector is 150 ms downstream; pulses are 20 ms.

Three runs side by side in one process: the scheduler as shipped (wait, then
sleep the last 1 ms in 0.1 ms slices), with that fine phase off
(Condition.wait only), and as shipped with `scheduler_priority: 50`
(SCHED_FIFO; needs root or CAP_SYS_NICE, else it warns and runs normally).
Prints p50 / p99 / max start error and missed / extra pulses (must be 0).

    PYTHONPATH=inspect python bench/bench_reject.py [--seconds 10] [--rate 20] [--reject-share 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import multiprocessing as mp
import random
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lineinspect.core.part import PartRef
from lineinspect.core.result import Verdict
from lineinspect.line.reject.audit import AuditTrail
from lineinspect.line.reject.modbus import ModbusActuator
from lineinspect.line.reject.settings import ModbusBackend, RejectSettings
from lineinspect.line.reject.tracker import RejectTracker

EJECTOR_COIL = 0
DELAY_MS = 150.0
BUDGET_MS = 100.0
PULSE_MS = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_plc(port: int, conn: Connection) -> None:
    """Child process: Modbus TCP server that logs (monotonic_ns, coil, value) for every coil write."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    writes: list[tuple[int, int, bool]] = []

    async def on_access(fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> None:
        if values is not None and fc in (5, 15):
            now = time.monotonic_ns()
            writes.extend((now, address + i, bool(v)) for i, v in enumerate(values))

    def bits() -> list[SimData]:
        return [SimData(0, count=32, values=False, datatype=DataType.BITS)]

    def regs() -> list[SimData]:
        return [SimData(0, count=32, values=0, datatype=DataType.REGISTERS)]

    async def main() -> None:
        server = ModbusTcpServer(
            SimDevice(1, simdata=(bits(), bits(), regs(), regs()), action=on_access), address=("127.0.0.1", port)
        )
        await server.serve_forever(background=True)
        conn.send("ready")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # parent says stop
        conn.send(writes)
        await server.shutdown()

    asyncio.run(main())


def run_line(
    port: int, *, seconds: float, rate: float, reject_share: float, seed: int, fine_ms: float, priority: int | None
) -> dict[str, Any]:
    settings = RejectSettings(
        mode="timed",
        backend=ModbusBackend(host="127.0.0.1", port=port, ejector_coil=EJECTOR_COIL, timeout_ms=200),
        inspection_budget_ms=BUDGET_MS,
        delay_ms=DELAY_MS,
        pulse_width_ms=PULSE_MS,
        line_rate_parts_per_min=rate * 60,
        scheduler_priority=priority,
    )
    rng = random.Random(seed)
    spacing_ns = int(1e9 / rate)
    n_parts = int(seconds * rate)
    with tempfile.TemporaryDirectory() as audit_dir:
        tracker = RejectTracker(
            settings,
            ModbusActuator(settings.backend),
            AuditTrail(Path(audit_dir)),
            fine_ms=fine_ms,  # type: ignore[arg-type]
        )
        tracker.start()
        expected: list[int] = []
        t0 = time.monotonic_ns() + 200_000_000
        # The line: triggers on the part spacing; each verdict 20-80 ms later (an inspection thread would do this).
        events: list[tuple[int, int, int, Verdict | None]] = []
        for n in range(n_parts):
            trigger = t0 + n * spacing_ns
            verdict = Verdict.FAIL if rng.random() < reject_share else Verdict.PASS
            if verdict is Verdict.FAIL:
                expected.append(trigger + int(DELAY_MS * 1e6))
            heapq.heappush(events, (trigger, n, 0, None))
            heapq.heappush(events, (trigger + rng.randint(20, 80) * 1_000_000, n, 1, verdict))
        try:
            while events:
                due, n, kind, verdict = heapq.heappop(events)
                pause = (due - time.monotonic_ns()) / 1e9
                if pause > 0:
                    time.sleep(pause)
                if kind == 0:
                    tracker.part_entered(PartRef("bench", n, due))
                else:
                    assert verdict is not None
                    tracker.verdict_ready(n, f"result-{n}", verdict)
            time.sleep((DELAY_MS + 3 * PULSE_MS) / 1000)
        finally:
            tracker.close()
    return {"expected": expected, "counters": tracker.counters.snapshot()}


def score(expected: list[int], writes: list[tuple[int, int, bool]]) -> dict[str, Any]:
    ons = sorted(t for t, coil, v in writes if coil == EJECTOR_COIL and v)
    offs = sorted(t for t, coil, v in writes if coil == EJECTOR_COIL and not v)
    errors_ms: list[float] = []
    widths_ms: list[float] = []
    unmatched = list(ons)
    missed = 0
    for scheduled in expected:
        # A pulse belongs to a part when it starts within half a pulse width of the part's slot.
        match = next((t for t in unmatched if abs(t - scheduled) <= PULSE_MS / 2 * 1e6), None)
        if match is None:
            missed += 1
            continue
        unmatched.remove(match)
        errors_ms.append((match - scheduled) / 1e6)
        off = next((t for t in offs if t > match), None)
        if off is not None:
            widths_ms.append((off - match) / 1e6)
    errors_ms.sort()

    def pct(q: float) -> float:
        return errors_ms[min(len(errors_ms) - 1, round(q * (len(errors_ms) - 1)))] if errors_ms else float("nan")

    return {
        "pulses_expected": len(expected),
        "pulses_seen": len(ons),
        "missed": missed,
        "extra": len(unmatched),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": errors_ms[-1] if errors_ms else float("nan"),
        "width_p50_ms": statistics.median(widths_ms) if widths_ms else float("nan"),
    }


def measure(args: argparse.Namespace, fine_ms: float, priority: int | None) -> dict[str, Any]:
    port = free_port()
    parent, child = mp.Pipe()
    server = mp.Process(target=serve_plc, args=(port, child), daemon=True)
    server.start()
    if not parent.poll(15) or parent.recv() != "ready":
        raise RuntimeError("Modbus server process did not start")
    try:
        line = run_line(
            port,
            seconds=args.seconds,
            rate=args.rate,
            reject_share=args.reject_share,
            seed=args.seed,
            fine_ms=fine_ms,
            priority=priority,
        )
        parent.send("stop")
        writes = parent.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()
    result = score(line["expected"], writes)
    result["tracker"] = line["counters"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="run length per variant in seconds")
    parser.add_argument("--rate", type=float, default=20.0, help="parts per second")
    parser.add_argument("--reject-share", type=float, default=0.3, help="share of failing parts (0-1)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        f"timed reject over Modbus TCP (pymodbus server in a separate process, 127.0.0.1): {args.rate:g} parts/s, "
        f"{args.reject_share:.0%} rejects, {args.seconds:g} s per variant, delay {DELAY_MS:g} ms, "
        f"pulse {PULSE_MS:g} ms; start error = server-side receive time of the coil-on write - scheduled time"
    )
    variants = (("wait+fine 1 ms", 1.0, None), ("wait only", 0.0, None), ("fine + FIFO 50", 1.0, 50))
    results = {name: measure(args, fine, priority) for name, fine, priority in variants}
    header = (
        f"{'scheduler':<16}{'pulses':>8}{'missed':>8}{'extra':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'width':>8}"
    )
    print(header)
    for name, r in results.items():
        print(
            f"{name:<16}{r['pulses_seen']:>4}/{r['pulses_expected']:<3}{r['missed']:>8}{r['extra']:>7}"
            f"{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['max_ms']:>9.3f}{r['width_p50_ms']:>8.2f}"
        )
    fine, plain = results["wait+fine 1 ms"], results["wait only"]
    fifo = results["fine + FIFO 50"]
    print(f"p99 start error, wait only / wait+fine: {plain['p99_ms'] / fine['p99_ms']:.1f}x")
    print(f"p99 start error, wait+fine / with SCHED_FIFO: {fine['p99_ms'] / fifo['p99_ms']:.1f}x")
    print(f"tracker counters (wait+fine): {fine['tracker']}")
    ok = all(r["missed"] == 0 and r["extra"] == 0 for r in results.values())
    print("missed/extra pulses: 0" if ok else "FAILED: missed or extra pulses")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
