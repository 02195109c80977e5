"""What the reject scheduler and its modes share: the queue of timed actions and the parts in flight.

`Schedule` is the event heap under the one condition: any thread adds an
action, only the scheduler thread (`RejectTracker`) takes due ones and runs
them. `InFlight` holds the parts between camera and ejector until their
decision; each part is decided once (`settle`), whichever event comes first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lineinspect.core.part import PartRef
from lineinspect.core.result import Verdict
from lineinspect.line.reject.audit import AuditEvent, AuditRecord

MS_NS = 1_000_000

Action = Callable[[int], None]
"""Run on the scheduler thread with the time (monotonic ns) it was due."""


OnTime = Callable[[], bool]
"""Asked on the scheduler thread shortly before an action is due: must it start on the dot (the scheduler then
holds the GIL spinning up to it)? An ejector decision for a part known to pass need not."""


class Schedule:
    """Actions by due time (monotonic ns); `cond` wakes the scheduler thread whenever one is added."""

    def __init__(self) -> None:
        # Reentrant (Condition's default lock): a mode may add actions while the tracker holds the condition.
        self.cond = threading.Condition()
        self._events: list[tuple[int, int, Action, OnTime | None]] = []
        self._seq = itertools.count()  # keeps equal due times in the order they were added

    def at(self, due_ns: int, action: Action, *, on_time: OnTime | None = None) -> None:
        """Any thread: run `action` at `due_ns` (now or in the past: as soon as the scheduler gets to it).

        `on_time`: whether it must start on time (see OnTime); None: it need not (bookkeeping, alarms).
        """
        with self.cond:
            heapq.heappush(self._events, (due_ns, next(self._seq), action, on_time))
            self.cond.notify()

    def next_due_ns(self) -> int | None:
        with self.cond:
            return self._events[0][0] if self._events else None

    def next_on_time(self) -> tuple[int, bool] | None:
        """Due time of the earliest action and whether it must start on time; None when there is none."""
        with self.cond:
            if not self._events:
                return None
            due_ns, _, _, on_time = self._events[0]
            return due_ns, on_time is not None and on_time()

    def pop_due(self, now_ns: int) -> tuple[int, Action] | None:
        """The earliest action due by `now_ns` with its due time; None when none is."""
        with self.cond:
            if not self._events or self._events[0][0] > now_ns:
                return None
            due_ns, _, action, _ = heapq.heappop(self._events)
            return due_ns, action


@dataclass(slots=True, eq=False)  # eq=False: a part is itself, two parts with equal fields are still two parts
class TrackedPart:
    ref: PartRef
    result_id: str | None = None
    verdict: Verdict | None = None
    decided: bool = False
    fired_ns: int | None = None  # when its ejector pulse started
    confirmed: bool = False  # the confirm sensor saw it in the bin

    @property
    def part_number(self) -> int:
        return self.ref.trigger_id

    def audit_record(
        self,
        event: AuditEvent,
        *,
        verdict: str | None = None,
        scheduled_ns: int | None = None,
        actual_ns: int | None = None,
        error_ms: float | None = None,
        detail: str = "",
    ) -> AuditRecord:
        """The audit record of this part; `verdict` overrides the part's own (e.g. undecided written at the budget)."""
        return AuditRecord(
            event,
            result_id=self.result_id,
            part_number=self.part_number,
            verdict=verdict or (self.verdict.value if self.verdict else None),
            scheduled_ns=scheduled_ns,
            actual_ns=actual_ns,
            error_ms=None if error_ms is None else round(error_ms, 3),
            detail=detail,
        )


class InFlight:
    """Parts between camera and ejector by part number, at most `capacity`; any thread."""

    def __init__(self, *, capacity: int) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._parts: dict[int, TrackedPart] = {}
        # Numbers of parts decided lately, so a late verdict is told apart from one for a part never seen.
        self._recently_decided: deque[int] = deque(maxlen=4 * capacity)

    def add(self, part: TrackedPart) -> bool:
        """Track a part; False (and not tracked) when `capacity` parts are in flight already."""
        with self._lock:
            if len(self._parts) >= self._capacity:
                return False
            self._parts[part.part_number] = part
            return True

    def attach(self, part_number: int, result_id: str, verdict: Verdict) -> TrackedPart | None:
        """Give an undecided part its verdict; None when the part is unknown or decided already."""
        with self._lock:
            part = self._parts.get(part_number)
            if part is None or part.decided:
                return None
            part.result_id = result_id
            part.verdict = verdict
            return part

    def settle(self, part: TrackedPart) -> bool:
        """Decide the part now: True the first time, False when it was decided already.

        After this its verdict no longer changes (`attach` refuses it), so the caller reads `part.verdict` freely.
        """
        with self._lock:
            if part.decided:
                return False
            part.decided = True
            self._parts.pop(part.part_number, None)
            self._recently_decided.append(part.part_number)
            return True

    def was_decided(self, part_number: int) -> bool:
        with self._lock:
            return part_number in self._recently_decided
