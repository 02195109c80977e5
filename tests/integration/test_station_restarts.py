"""Every triggered part ends as exactly one result, however often the station process is SIGKILLed.

Counted from the outside, as the PLC and the MES see it: the test triggers parts over HTTP and keeps
the (run_id, trigger_id) of every trigger the station accepted (202); a persistent QoS 1 subscriber on
a real Mosquitto collects the results. The station is killed at line rate, with parts in flight, three
times in a row, then started once more and stopped cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_process import start_station, trigger
from tests.helpers.station_runtime import SAVE_SESSIONS, subscribed, write_line_station
from tests.helpers.subscriber import assert_complete_in_order

REPO = Path(__file__).resolve().parents[2]
KILLS = 3
# Large enough that parts are still in flight when the kill comes, however fast the station clears them.
BURST = 16


def test_every_accepted_trigger_ends_as_exactly_one_result_across_repeated_kills(tmp_path: Path) -> None:
    mosquitto = Mosquitto(extra_lines=SAVE_SESSIONS)
    mosquitto.start()
    accepted: dict[tuple[str, int], str] = {}
    unanswered = 0
    sent = 0
    try:
        write_line_station(tmp_path, mosquitto.port, parts="gb")
        with subscribed(mosquitto.port) as sub:
            for _kill in range(KILLS):
                proc, url = start_station(tmp_path)
                try:
                    # Line rate first (one part at a time), then a burst so parts are in flight at the kill.
                    for _ in range(40):
                        sent += 1
                        answer = trigger(url, f"P{sent}")
                        if answer is None:
                            unanswered += 1
                        else:
                            accepted[answer] = f"P{sent}"
                    # A burst sent all at once: the camera and the worker are still at them when the kill comes.
                    burst = [f"P{sent + i + 1}" for i in range(BURST)]
                    sent += BURST
                    with ThreadPoolExecutor(BURST) as pool:
                        answers = list(pool.map(partial(trigger, url), burst))
                    proc.send_signal(signal.SIGKILL)
                    for part_id, answer in zip(burst, answers, strict=True):
                        if answer is None:
                            unanswered += 1
                        else:
                            accepted[answer] = part_id
                finally:
                    proc.kill()
                    proc.wait(timeout=10)
            # One more start: the last run's open parts are issued, then a clean stop.
            last = subprocess.run(
                [
                    sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(tmp_path),
                    "--port", "0", "--duration-s", "3",
                ],
                env={**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"},
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
            assert last.returncode == 0, last.stdout + last.stderr

            def parts_seen() -> set[tuple[str, int]]:
                return {(r["run_id"], r["trigger_id"]) for r in payloads(sub)}

            sub.wait_until(lambda: set(accepted) <= parts_seen(), 20, "a result for every accepted trigger")
            results = payloads(sub)
    finally:
        mosquitto.close()

    by_part: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in results:
        by_part[(r["run_id"], r["trigger_id"])].add(r["result_id"])
    # Exactly one result per accepted part (QoS 1 may repeat a message, always with its own result_id).
    assert {part: len(ids) for part, ids in by_part.items() if part in accepted and len(ids) != 1} == {}
    assert all(
        r["part_id"] == accepted[(r["run_id"], r["trigger_id"])]
        for r in results
        if (r["run_id"], r["trigger_id"]) in accepted
    )
    # Results for parts the test never heard accepted: only triggers whose answer the kill cut off.
    assert len(set(by_part) - set(accepted)) <= unanswered + KILLS
    # Nothing lost on the way to the MES: the sequence has no gap.
    last_sequence = max(r["sequence"] for r in results)
    assert_complete_in_order([(r["sequence"], r["result_id"]) for r in results], last_sequence)
    # The parts in flight at each kill came back as undecided results of the run that triggered them.
    restarted = [r for r in results if r["undecided_kind"] == "restarted"]
    assert len(restarted) >= KILLS, "fewer parts in flight at the kills than kills"
    assert all("the station restarted before a verdict" in r["reason"] for r in restarted)
    assert len({run for run, _ in accepted}) == KILLS  # each run has its own id


def payloads(sub: object) -> list[dict]:  # type: ignore[type-arg]
    received = sub.received("/result")  # type: ignore[attr-defined]
    return [m.json() for m in received]
