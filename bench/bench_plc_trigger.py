"""The time from a PLC's trigger edge to the station's part trigger, Modbus TCP (polled) and OPC UA (subscription).

The PLC is pymodbus' server and asyncua's server on loopback (the test peers in tests/helpers); a test rig
writes the part's values and raises the trigger bit, noting `time.monotonic_ns()` just before the write;
the station side is the real `PlcTrigger` with its Modbus or OPC UA input, and its trigger callable
notes the moment it is called (where `Station.trigger` would make the part's PartRef). Each round is
`--parts` full handshakes (values, edge, ack, edge down, ack down); printed per source: median and
p99 over all parts, and the spread of the rounds' medians.

    python bench/bench_plc_trigger.py [--rounds 10] [--parts 50] [--poll-ms 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.plc_trigger_peers import (  # noqa: E402
    CODES,
    ModbusLine,
    ascii_words,
    modbus_source,
    opcua_source,
    running_opcua_line,
    running_trigger_plc,
)
from tests.helpers.waiting import wait_for  # noqa: E402

from lineinspect.assemble import plc_trigger_input  # noqa: E402
from lineinspect.line.plc_trigger.settings import PlcTriggerSettings  # noqa: E402
from lineinspect.line.plc_trigger.trigger import PlcTrigger, TriggerState  # noqa: E402


class Clock:
    """The station side's trigger: when it was called, per trigger id."""

    def __init__(self) -> None:
        self.called_ns: list[int] = []

    def __call__(self, camera_id: str, *, part_id: str | None = None, encoder_count: int | None = None) -> int:
        self.called_ns.append(time.monotonic_ns())
        return len(self.called_ns)


@contextmanager
def watching(source: dict[str, Any], clock: Clock) -> Iterator[PlcTrigger]:
    settings = PlcTriggerSettings.model_validate({"camera": "cam1", "source": source, "product_codes": CODES})
    trigger = PlcTrigger(
        settings,
        plc_trigger_input(settings, "plc_triggers[0].source"),
        trigger=clock,
        select_recipe=lambda camera, recipe: None,
        on_alarm=lambda kind, message: None,
        on_clear=lambda source, kind, message: None,
        alarm_source="bench",
    )
    trigger.start()
    try:
        wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 10, "PLC connected")
        yield trigger
    finally:
        trigger.stop()


def modbus_round(parts: int, poll_ms: float) -> list[float]:
    clock = Clock()
    edges: list[int] = []
    with running_trigger_plc() as plc, watching(modbus_source(plc.port, poll_ms=poll_ms), clock):
        line = ModbusLine(plc)
        try:
            for i in range(parts):
                line.set_part(ascii_words(f"M-{i}", 8), product_code=1)
                edges.append(line.raise_trigger())
                wait_for(line.acked, 5, "ack")
                line.lower_trigger()
                wait_for(lambda: not line.acked(), 5, "ack down")
        finally:
            line.close()
    return [(c - e) / 1e6 for e, c in zip(edges, clock.called_ns, strict=True)]


def opcua_round(parts: int, poll_ms: float) -> list[float]:
    clock = Clock()
    edges: list[int] = []
    with running_opcua_line() as plc, watching(opcua_source(plc.endpoint), clock):
        for i in range(parts):
            plc.set_part(f"O-{i}", product_code=1)
            edges.append(plc.write(Trigger=True))
            wait_for(lambda: plc.value("Ack") is True, 5, "ack")
            plc.write(Trigger=False)
            wait_for(lambda: plc.value("Ack") is False, 5, "ack down")
    return [(c - e) / 1e6 for e, c in zip(edges, clock.called_ns, strict=True)]


def report(name: str, rounds: list[list[float]]) -> None:
    every = [v for r in rounds for v in r]
    medians = [statistics.median(r) for r in rounds]
    spread = (max(medians) - min(medians)) / statistics.median(medians) * 100
    p99 = statistics.quantiles(every, n=100)[98]
    print(
        f"  {name:28s} median {statistics.median(every):6.2f} ms  p99 {p99:6.2f} ms  over {len(every)} parts; "
        f"round medians {', '.join(f'{m:.2f}' for m in medians)} (spread {spread:.0f} %)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--parts", type=int, default=50, help="handshakes per round")
    p.add_argument("--poll-ms", type=float, default=2.0, help="the Modbus trigger's poll interval")
    args = p.parse_args(argv)
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its per-connection notices would bury the figures
    runs: dict[str, Callable[[int, float], list[float]]] = {
        f"modbus (poll {args.poll_ms:g} ms)": modbus_round,
        "opcua (subscription)": opcua_round,
    }
    results: dict[str, list[list[float]]] = {name: [] for name in runs}
    for _ in range(args.rounds):  # interleaved, so a disturbance of the machine falls on both
        for name, run in runs.items():
            results[name].append(run(args.parts, args.poll_ms))
    print(f"PLC edge → station trigger, {args.rounds} rounds of {args.parts} parts")
    for name, rounds in results.items():
        report(name, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
