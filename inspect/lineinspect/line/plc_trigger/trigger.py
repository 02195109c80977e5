"""PlcTrigger: one camera's parts announced by the PLC, on one thread of its own.

For each rising edge of the trigger bit, in this order: the values read at the edge (part id,
product code, part counter; see the sources for how many requests), the part-counter check (parts
missed between two edges), the product code (a changed code selects its recipe *before* the part
is triggered, so the part is inspected with it), the station's trigger (journaled before it
returns), then the optional acknowledgement ("trigger accepted" with the trigger id).

A PLC that does not answer is the alarm `plc_unreachable` (and the trigger's status); the thread
reconnects with backoff and never blocks the station: its parts simply do not arrive.

Missed edges. Two rising edges between two polls cannot be seen; the PLC's own part counter, where
it is mapped, shows them. They raise the alarm `missed_triggers` (count and counter values in the
message, the `<prefix>/alarm` event records it) and are *not* turned into triggers: a software
trigger sent now would image whichever part is under the camera now, and a timed reject counted from
now would hit the wrong part. The PLC, which owns the counter and the part tracking, knows which parts
went by uninspected and must reject them (in verdict_to_plc mode a part without a verdict by its
deadline is undecided in the PLC's own logic); the alarm tells people the poll is too slow for the
line. The alarm clears after `missed_clear_after_parts` parts in a row without a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from lineinspect.errors import LineinspectError
from lineinspect.line.plc_trigger.settings import PlcTriggerSettings

log = logging.getLogger(__name__)

# How long one wait for an edge may last before the thread looks at its stop flag again.
_EDGE_WAIT_S = 0.1

ALARM_UNREACHABLE = "plc_unreachable"
ALARM_UNKNOWN_CODE = "unknown_product_code"
ALARM_RECIPE_REFUSED = "recipe_not_selected"
ALARM_MISSED = "missed_triggers"
ALARM_TRIGGER_REFUSED = "trigger_refused"


class PlcError(LineinspectError):
    """The PLC did not answer or refused a request; says which PLC, which address and what to check."""


class TriggerState(StrEnum):
    CREATED = "created"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PartReading:
    """The values read at one trigger edge; None where the value is not mapped."""

    part_id: str | None = None
    product_code: str | None = None
    part_counter: int | None = None

    @classmethod
    def of(cls, values: Mapping[str, object]) -> PartReading:
        """From the values read by name (`part_id`, `product_code`, `part_counter`); an empty id is none."""
        part_id = values.get("part_id")
        code = values.get("product_code")
        counter = values.get("part_counter")
        return cls(
            part_id=None if part_id is None or part_id == "" else str(part_id),
            product_code=None if code is None or code == "" else str(code),
            part_counter=None if counter is None else int(str(counter)),
        )


@dataclass(frozen=True, slots=True)
class Edge:
    """A rising edge of the trigger bit: when this side saw it (`time.monotonic_ns()`) and what was read."""

    seen_ns: int
    reading: PartReading


class EdgeDetector:
    """Rising and falling edges of a bit; the first value after a (re)connect is the baseline, not an edge
    (a bit already high then may be a part this side took before the link broke, or one long past)."""

    def __init__(self) -> None:
        self.last: bool | None = None

    def reset(self) -> None:
        self.last = None

    def update(self, value: bool) -> str | None:
        """'rising', 'falling' or None."""
        last, self.last = self.last, value
        if last is None or last == value:
            return None
        return "rising" if value else "falling"


class PollSchedule:
    """When to read a polled trigger next: on a fixed schedule, so a slow answer does not stretch the interval."""

    def __init__(self, poll_ms: float) -> None:
        self._poll_ns = int(poll_ms * 1_000_000)
        self._next_ns = time.monotonic_ns()

    def restart(self) -> None:
        self._next_ns = time.monotonic_ns()

    def wait(self, end_ns: int) -> bool:
        """Sleep until the next read is due (True) or until `end_ns` if that comes first (False)."""
        now = time.monotonic_ns()
        if self._next_ns > now:
            if self._next_ns > end_ns:
                time.sleep(max(0, end_ns - now) / 1e9)
                return False
            time.sleep((self._next_ns - now) / 1e9)
        # A late read does not make the next one early (no burst after a stall).
        self._next_ns = max(self._next_ns + self._poll_ns, time.monotonic_ns())
        return True


class TriggerInput(Protocol):
    """The PLC side of a PlcTrigger (Modbus, OPC UA); called from the trigger's one thread only."""

    @property
    def describe(self) -> str:
        """Where the PLC is, for messages (`modbus 10.0.0.5:502 device 1`)."""
        ...

    @property
    def mode(self) -> str:
        """How the trigger is watched: `poll` or `subscription`."""
        ...

    @property
    def counter_modulus(self) -> int:
        """Where the PLC's part counter wraps to 0."""
        ...

    def connect(self) -> None:
        """Connect and read the trigger once (the baseline); raise PlcError naming the PLC and what to check."""
        ...

    def next_edge(self, timeout_s: float) -> Edge | None:
        """The next rising edge with its values, or None after `timeout_s`; a falling edge clears the
        acknowledgement on the way. Raises PlcError when the PLC is lost."""
        ...

    def acknowledge(self, trigger_id: int) -> None:
        """Tell the PLC the trigger was accepted (no-op where no acknowledgement is mapped). Raises PlcError."""
        ...

    def close(self) -> None:
        """Disconnect (idempotent; a later connect() starts again) and stop any thread it started."""
        ...


@dataclass(frozen=True, slots=True)
class PlcTriggerStatus:
    """What `/v1/status` can show of one PLC trigger."""

    camera_id: str
    plc: str
    mode: str
    state: TriggerState
    triggers: int
    missed: int
    last_part_id: str | None
    product_code: str | None
    last_error: str | None

    def to_payload(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "plc": self.plc,
            "mode": self.mode,
            "state": self.state.value,
            "triggers": self.triggers,
            "missed": self.missed,
            "last_part_id": self.last_part_id,
            "product_code": self.product_code,
            "last_error": self.last_error,
        }


Trigger = Callable[..., int]  # Station.trigger(camera_id, *, part_id=, encoder_count=) -> trigger id
SelectRecipe = Callable[[str, str], None]  # (camera_id, recipe_id); raises to refuse


@dataclass
class _Counts:
    triggers: int = 0
    missed: int = 0
    in_a_row: int = 0  # parts since the last counter gap
    last_part_id: str | None = None
    last_error: str | None = None


class PlcTrigger:
    """Watches one camera's trigger at the PLC and triggers the station for each part.

    trigger: `Station.trigger`. select_recipe: (camera_id, recipe_id), called when the PLC's product code
    changes to a mapped one (raises to refuse; the part keeps the active recipe and an alarm says why).
    on_alarm(kind, message) / on_clear(source, kind, message): the station's alarm table, with
    `alarm_source` as the source of every alarm of this trigger.
    """

    def __init__(
        self,
        settings: PlcTriggerSettings,
        plc: TriggerInput,
        *,
        trigger: Trigger,
        select_recipe: SelectRecipe,
        on_alarm: Callable[[str, str], None],
        on_clear: Callable[[str, str, str], None],
        alarm_source: str,
        field_path: str = "plc_triggers",
    ) -> None:
        self.settings = settings
        self.camera_id = settings.camera
        self.plc = plc
        self.alarm_source = alarm_source
        self._trigger = trigger
        self._select_recipe = select_recipe
        self._on_alarm = on_alarm
        self._on_clear = on_clear
        self._field = field_path
        self._state = TriggerState.CREATED
        self._counts = _Counts()
        self._lock = threading.Lock()
        self._active_alarms: set[str] = set()
        self._product_code: str | None = None
        self._last_counter: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching on a thread of its own; returns at once (a PLC that is not there is an alarm)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"plc-trigger-{self.camera_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the station stops, so no trigger reaches a stopping station)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.settings.source.timeout_ms / 1000 * 4))
            self._thread = None
        self.plc.close()
        self._set_state(TriggerState.STOPPED)

    def status(self) -> PlcTriggerStatus:
        with self._lock:
            c = self._counts
            return PlcTriggerStatus(
                self.camera_id,
                self.plc.describe,
                self.plc.mode,
                self._state,
                c.triggers,
                c.missed,
                c.last_part_id,
                self._product_code,
                c.last_error,
            )

    @property
    def active_alarms(self) -> set[str]:
        with self._lock:
            return set(self._active_alarms)

    # --- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        delay_ms = float(self.settings.reconnect.min_ms)
        while not self._stop.is_set():
            self._set_state(TriggerState.CONNECTING)
            try:
                self.plc.connect()
            except PlcError as exc:
                self._lost(exc, connected=False)
            else:
                delay_ms = float(self.settings.reconnect.min_ms)
                self._set_state(TriggerState.CONNECTED)
                self._clear(ALARM_UNREACHABLE, f"{self.plc.describe}: connected ({self.plc.mode})")
                try:
                    self._watch()
                except PlcError as exc:
                    self._lost(exc, connected=True)
                except Exception as exc:  # a bug or an unforeseen client error must not end the trigger for good
                    log.exception("camera %s: PLC trigger failed", self.camera_id)
                    self._lost(PlcError(f"{self.plc.describe}: {type(exc).__name__}: {exc}"), connected=True)
            self.plc.close()
            if self._stop.wait(delay_ms / 1000):
                break
            delay_ms = min(delay_ms * 2, float(self.settings.reconnect.max_ms))

    def _watch(self) -> None:
        while not self._stop.is_set():
            edge = self.plc.next_edge(_EDGE_WAIT_S)
            if edge is not None:
                self.on_edge(edge)

    def _lost(self, exc: PlcError, *, connected: bool) -> None:
        with self._lock:
            self._counts.last_error = str(exc)
        self._set_state(TriggerState.LOST)
        if ALARM_UNREACHABLE in self.active_alarms:
            return  # one alarm per outage, not one per attempt
        what = "lost" if connected else "not connected"
        self._alarm(
            ALARM_UNREACHABLE,
            f"camera {self.camera_id}: PLC trigger {what}: {exc}. Parts of this camera are not triggered until it "
            f"answers again (retrying every {self.settings.reconnect.min_ms}..{self.settings.reconnect.max_ms} ms)",
        )

    # --- one part ----------------------------------------------------------------------------------
    def on_edge(self, edge: Edge) -> int | None:
        """One rising edge: counter check, product code, trigger, acknowledgement. Its trigger id, or None
        when the station refused the trigger. Raises PlcError only for the acknowledgement."""
        reading = edge.reading
        self._check_counter(reading.part_counter)
        if reading.product_code is not None:
            self._product(reading.product_code)
        try:
            trigger_id = self._trigger(self.camera_id, part_id=reading.part_id, encoder_count=None)
        except Exception as exc:  # the station is stopping or refused: alarm, the PLC gets no ack
            log.exception("camera %s: PLC trigger of part %s refused by the station", self.camera_id, reading.part_id)
            self._alarm(
                ALARM_TRIGGER_REFUSED, f"camera {self.camera_id}: trigger of part {reading.part_id} refused: {exc}"
            )
            return None
        self._clear(ALARM_TRIGGER_REFUSED, f"camera {self.camera_id}: triggers accepted again")
        with self._lock:
            self._counts.triggers += 1
            self._counts.last_part_id = reading.part_id
        self.plc.acknowledge(trigger_id)
        return trigger_id

    def _product(self, code: str) -> None:
        if code == self._product_code:
            return
        field = f"{self._field}.product_codes"
        recipe = self.settings.product_codes.get(code)
        if recipe is None:
            known = ", ".join(sorted(self.settings.product_codes)) or "none"
            self._alarm(
                ALARM_UNKNOWN_CODE,
                f"camera {self.camera_id}: PLC product code {code!r} maps to no recipe in station.yaml {field} "
                f"(known: {known}); parts are inspected with the active recipe. Add the code to {field} or "
                "correct the PLC program",
            )
            self._set_code(code)
            return
        self._clear(ALARM_UNKNOWN_CODE, f"camera {self.camera_id}: product code {code!r} is known (recipe {recipe})")
        try:
            self._select_recipe(self.camera_id, recipe)
        except Exception as exc:  # refused (unknown recipe, model does not load): nothing changed
            self._alarm(
                ALARM_RECIPE_REFUSED,
                f"camera {self.camera_id}: PLC product code {code!r} → recipe {recipe} ({field}) refused: {exc}; "
                "parts are inspected with the active recipe",
            )
            return  # the code is tried again at the next part
        self._clear(ALARM_RECIPE_REFUSED, f"camera {self.camera_id}: recipe {recipe} selected")
        log.info("camera %s: PLC product code %r selected recipe %s", self.camera_id, code, recipe)
        self._set_code(code)

    def _set_code(self, code: str) -> None:
        with self._lock:
            self._product_code = code

    def _check_counter(self, counter: int | None) -> None:
        if counter is None:
            return
        last, self._last_counter = self._last_counter, counter
        if last is None:
            return
        modulus = self.plc.counter_modulus
        step = (counter - last) % modulus
        if step == 1:
            with self._lock:
                self._counts.in_a_row += 1
                clear = self._counts.in_a_row >= self.settings.missed_clear_after_parts
            if clear:
                self._clear(ALARM_MISSED, f"camera {self.camera_id}: {self._counts.in_a_row} parts in a row seen")
            return
        if step == 0 or step > modulus // 2:
            # Not advanced, or gone back: the PLC restarted or reset its counter. Nothing was missed.
            log.warning("camera %s: PLC part counter went from %d to %d (reset?)", self.camera_id, last, counter)
            return
        missed = step - 1
        with self._lock:
            self._counts.missed += missed
            self._counts.in_a_row = 0
            total = self._counts.missed
        self._alarm(
            ALARM_MISSED,
            f"camera {self.camera_id}: the PLC's part counter went from {last} to {counter}: {missed} part(s) "
            f"passed without a trigger seen ({total} so far). They were not inspected; the PLC must reject them. "
            "Hold the trigger bit longer than source.poll_ms (or use the acknowledgement), or lower poll_ms",
        )

    # --- alarms and state --------------------------------------------------------------------------
    def _set_state(self, state: TriggerState) -> None:
        with self._lock:
            self._state = state

    def _alarm(self, kind: str, message: str) -> None:
        with self._lock:
            self._active_alarms.add(kind)
        try:
            self._on_alarm(kind, message)
        except Exception:
            log.exception("camera %s: alarm hook failed for %s", self.camera_id, kind)

    def _clear(self, kind: str, message: str) -> None:
        with self._lock:
            if kind not in self._active_alarms:
                return
            self._active_alarms.discard(kind)
        try:
            self._on_clear(self.alarm_source, kind, message)
        except Exception:
            log.exception("camera %s: alarm hook failed clearing %s", self.camera_id, kind)
