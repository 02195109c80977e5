"""An ejector write through a real EMQX Neuron, against the same write straight to the PLC over Modbus TCP.

The peers are the tests' (tests/helpers): a Mosquitto on loopback, pymodbus' server in a thread of this process
(it stamps each coil write with `time.monotonic_ns()` as it receives it) and a Neuron built by `make neuron`
(mqtt north app → modbus-tcp south node → that server). Each write is `NeuronActuator.set_output(EJECTOR, on)`,
which publishes the request and returns on Neuron's `{"uuid","error":0}` (sent by Neuron's Modbus driver once
the request is on the wire, not after the PLC's reply); the reference is `ModbusActuator` writing the same coil
directly (it returns after the PLC's reply). Writes are `--gap-ms` apart, as parts on a line, alternating on/off.

Printed per path: median and p99 of request → coil written at the PLC and of request → answer back (over all
rounds), the spread of the rounds' medians, and the Neuron/direct ratio of the medians. The first write through
the freshly started Neuron (after the read that `check_reachable` and the peer's readiness probe send) is printed
apart.

    python bench/bench_neuron.py [--rounds 5] [--writes 40] [--gap-ms 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.mosquitto import running_mosquitto  # noqa: E402
from tests.helpers.neuron_peer import CoilTag, NorthApp, SouthNode, neuron_cache, running_neuron  # noqa: E402
from tests.helpers.reject_peers import ModbusPlc, running_modbus_plc  # noqa: E402

from lineinspect.line.reject.actuator import Actuator, Output  # noqa: E402
from lineinspect.line.reject.modbus import ModbusActuator  # noqa: E402
from lineinspect.line.reject.neuron import NeuronActuator  # noqa: E402
from lineinspect.line.reject.settings import ModbusBackend, NeuronBackend  # noqa: E402

EJECTOR_COIL = 3
MS_NS = 1_000_000


@dataclass
class Round:
    coil_ms: list[float] = field(default_factory=list)  # request → coil written at the PLC
    answer_ms: list[float] = field(default_factory=list)  # request → set_output returned (answer back)


def one_write(actuator: Actuator, plc: ModbusPlc, on: bool) -> tuple[float, float]:
    seen = len(plc.coil_writes)
    start_ns = time.monotonic_ns()
    actuator.set_output(Output.EJECTOR, on)
    answer_ns = time.monotonic_ns()
    deadline = time.monotonic() + 1.0
    while len(plc.coil_writes) == seen:  # Neuron answers once the request is sent: the PLC may see it later
        if time.monotonic() > deadline:
            raise RuntimeError("the PLC saw no coil write within 1 s")
        time.sleep(0.0001)
    coil_ns = plc.coil_writes[seen][0]
    return (coil_ns - start_ns) / MS_NS, (answer_ns - start_ns) / MS_NS


def run_round(actuator: Actuator, plc: ModbusPlc, writes: int, gap_ms: float) -> Round:
    out = Round()
    for i in range(writes):
        coil_ms, answer_ms = one_write(actuator, plc, on=i % 2 == 0)
        out.coil_ms.append(coil_ms)
        out.answer_ms.append(answer_ms)
        time.sleep(gap_ms / 1000)
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(name: str, rounds: list[Round]) -> dict[str, float]:
    medians: dict[str, float] = {}
    for what in ("coil_ms", "answer_ms"):
        every = [v for r in rounds for v in getattr(r, what)]
        per_round = [statistics.median(getattr(r, what)) for r in rounds]
        medians[what] = statistics.median(every)
        label = "request → coil written" if what == "coil_ms" else "request → answer back "
        print(
            f"  {name:<7} {label}: median {medians[what]:6.2f} ms  p99 {p99(every):6.2f} ms  "
            f"max {max(every):6.2f} ms  (round medians {min(per_round):.2f}–{max(per_round):.2f} ms, n={len(every)})"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=40, help="writes per round and path")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between writes")
    args = parser.parse_args()
    binary = neuron_cache() / "build" / "neuron"
    if not binary.is_file():
        sys.exit(f"{binary} is missing: run `make neuron` first (log: {neuron_cache()}/build.log)")

    app = NorthApp("mqtt-north")
    with running_mosquitto() as broker, running_modbus_plc() as plc, tempfile.TemporaryDirectory() as work:
        south = SouthNode("plc1", "reject", plc.port, (CoilTag("ejector", EJECTOR_COIL),))
        with running_neuron(
            binary,
            Path(work) / "neuron",
            broker_host=broker.host,
            broker_port=broker.port,
            norths=(app,),
            souths=(south,),
        ):
            neuron = NeuronActuator(
                NeuronBackend(
                    host=broker.host,
                    port=broker.port,
                    app=app.name,
                    node=south.node,
                    group=south.group,
                    ejector_tag="ejector",
                    response_timeout_ms=2000,
                )
            )
            direct = ModbusActuator(ModbusBackend(host="127.0.0.1", port=plc.port, ejector_coil=EJECTOR_COIL))
            try:
                neuron.check_reachable()
                direct.check_reachable()
                first_coil_ms, first_answer_ms = one_write(neuron, plc, on=False)
                one_write(direct, plc, on=False)
                by_path: dict[str, list[Round]] = {"neuron": [], "direct": []}
                for _ in range(args.rounds):  # the two paths side by side, round by round
                    by_path["neuron"].append(run_round(neuron, plc, args.writes, args.gap_ms))
                    by_path["direct"].append(run_round(direct, plc, args.writes, args.gap_ms))
            finally:
                neuron.close()
                direct.close()

    print(
        f"ejector coil writes, {args.rounds} rounds × {args.writes} writes per path, {args.gap_ms:g} ms apart "
        "(loopback; Mosquitto, Neuron and pymodbus on this host)"
    )
    print(f"  first write through a fresh Neuron: coil {first_coil_ms:.2f} ms, answer {first_answer_ms:.2f} ms")
    through = report("neuron", by_path["neuron"])
    straight = report("direct", by_path["direct"])
    print(
        f"  neuron / direct (medians): coil ×{through['coil_ms'] / straight['coil_ms']:.1f}, "
        f"answer ×{through['answer_ms'] / straight['answer_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
