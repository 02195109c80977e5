"""LinkWatch: alarms for the path to the MES, raised and cleared by their conditions, not by events.

One thread looks at the publisher's numbers every `period_s` and keeps three alarms in step with
what it sees (the station's alarm table, `StationEvents`):

- `broker_unreachable`: not connected for more than `mqtt.alarm_after_s`;
- `broker_not_acknowledging`: connected, but the oldest result in flight has waited more than
  `mqtt.alarm_after_s` for its PUBACK (a hung broker keeps the TCP connection open);
- `outbox_filling`: at the rate the outbox grew over the last minute it would be full within
  `mqtt.outbox_full_alarm_s`, or it is over its alarm depth.

Each alarm is raised once when its condition starts and cleared once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from lineinspect.line.events import SOURCE_STATION, StationAlarm, StationEvents
from lineinspect.line.mqtt import PublisherStats

log = logging.getLogger(__name__)

BROKER_UNREACHABLE = "broker_unreachable"
BROKER_NOT_ACKNOWLEDGING = "broker_not_acknowledging"
OUTBOX_FILLING = "outbox_filling"
# How far back the outbox's fill rate is measured.
_RATE_WINDOW_S = 60.0


class LinkWatch:
    def __init__(
        self,
        stats: Callable[[], PublisherStats],
        events: StationEvents,
        *,
        alarm_after_s: float,
        outbox_max_rows: int,
        outbox_full_alarm_s: float,
        where: str,
        period_s: float = 0.5,
    ) -> None:
        self._stats = stats
        self._events = events
        self.alarm_after_s = alarm_after_s
        self.outbox_max_rows = outbox_max_rows
        self.outbox_full_alarm_s = outbox_full_alarm_s
        self.where = where
        self.period_s = period_s
        self._raised: set[str] = set()
        self._depths: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="link-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check(self._stats(), time.monotonic())
            except Exception:  # the watch must outlive a bad moment; the next look may work
                log.exception("link watch failed")

    def check(self, stats: PublisherStats, now_s: float) -> None:
        """One look: raise what started, clear what ended (also called directly by tests)."""
        after = self.alarm_after_s
        down = stats.disconnected_for_s
        self._keep(
            BROKER_UNREACHABLE,
            down is not None and down > after,
            lambda: (
                f"MQTT broker {self.where} unreachable for {down:.0f} s ({stats.last_error or 'no answer'}); "
                f"results wait in the outbox ({stats.outbox_depth} now). Check the broker and the network"
            ),
            "the broker is reachable again",
        )
        waited = stats.oldest_unacked_s
        self._keep(
            BROKER_NOT_ACKNOWLEDGING,
            down is None and waited is not None and waited > after,
            lambda: (
                f"MQTT broker {self.where} has acknowledged nothing for {waited:.0f} s while connected "
                f"({stats.in_flight} results in flight, {stats.outbox_depth} in the outbox): the broker may be hung "
                "or overloaded"
            ),
            "the broker acknowledges results again",
        )
        seconds_to_full = self._seconds_to_full(stats.outbox_depth, now_s)
        filling = stats.outbox_alarm or (seconds_to_full is not None and seconds_to_full < self.outbox_full_alarm_s)
        self._keep(
            OUTBOX_FILLING,
            filling,
            lambda: (
                f"outbox holds {stats.outbox_depth} of at most {self.outbox_max_rows} results"
                + (f" and would be full in about {_duration(seconds_to_full)}" if seconds_to_full is not None else "")
                + "; when full, parts are undecided and rejected. Bring the broker back"
            ),
            "the outbox is no longer filling",
        )

    def _seconds_to_full(self, depth: int, now_s: float) -> float | None:
        self._depths.append((now_s, depth))
        while self._depths and now_s - self._depths[0][0] > _RATE_WINDOW_S:
            self._depths.popleft()
        then_s, then_depth = self._depths[0]
        draining = len(self._depths) > 1 and depth < self._depths[-2][1]
        if draining or now_s - then_s < 1.0 or depth <= then_depth:
            return None
        rate = (depth - then_depth) / (now_s - then_s)
        return (self.outbox_max_rows - depth) / rate

    def _keep(self, kind: str, active: bool, message: Callable[[], str], cleared: str) -> None:
        if active and kind not in self._raised:
            self._raised.add(kind)
            self._events.raise_alarm(StationAlarm(SOURCE_STATION, kind, message()))
        elif not active and kind in self._raised:
            self._raised.discard(kind)
            self._events.clear_alarm(SOURCE_STATION, kind, cleared)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
