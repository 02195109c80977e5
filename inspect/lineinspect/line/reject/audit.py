"""Audit trail of every actuation, and the counters `/metrics` exports.

Format: append-only JSON Lines, one file per UTC day
(`reject-audit-YYYY-MM-DD.jsonl`), chosen over SQLite because
- a record is one `write()` + `flush()` into the kernel, done synchronously,
  so it survives a crash of this process the moment `record()` returns, and it
  costs microseconds on the scheduler thread (no transaction, no lock file);
- a power cut can at worst tear the last line, which `read_audit()` skips; a
  background thread fsyncs every `fsync_interval_ms` to bound that window;
- plant engineers read it with `tail -f` / `grep result_id`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from lineinspect.core.clock import utc_now_iso


class AuditEvent(StrEnum):
    FIRE = "fire"  # ejector pulse started
    PULSE_END = "pulse_end"
    SKIP = "skip"  # good part passed the ejector, nothing switched
    WRITE = "write"  # verdict written to the PLC
    ACK = "ack"
    MISS = "miss"  # an actuation that should have happened did not (or too late)
    LATE = "late"  # verdict missing at decision time; part handled as undecided
    LATE_VERDICT = "late_verdict"  # verdict that arrived after its part was decided
    CONFIRM = "confirm"
    ALARM = "alarm"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    event: AuditEvent
    result_id: str | None
    part_number: int | None
    verdict: str | None = None
    scheduled_ns: int | None = None  # monotonic clock
    actual_ns: int | None = None
    error_ms: float | None = None  # actual - scheduled
    detail: str = ""
    at: str = field(default_factory=utc_now_iso)

    def to_json(self) -> str:
        data = asdict(self)
        data["event"] = self.event.value
        return json.dumps(data, separators=(",", ":"))


class AuditTrail:
    """Thread-safe append-only writer; `close()` fsyncs and stops the fsync thread."""

    def __init__(self, directory: Path, *, fsync_interval_ms: int = 200) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._day: str | None = None
        self._dirty = False
        self._stop = threading.Event()
        self._interval_s = fsync_interval_ms / 1000.0
        self._syncer = threading.Thread(target=self._sync_loop, name="reject-audit-fsync", daemon=True)
        self._syncer.start()

    def path_for(self, day: str) -> Path:
        return self.directory / f"reject-audit-{day}.jsonl"

    def record(self, rec: AuditRecord) -> None:
        line = rec.to_json() + "\n"
        day = rec.at[:10]
        with self._lock:
            if self._file is None or day != self._day:
                if self._file is not None:
                    self._file.close()
                self._file = self.path_for(day).open("a", encoding="utf-8")
                self._day = day
            self._file.write(line)
            self._file.flush()
            self._dirty = True

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            if self._file is None or not self._dirty:
                return
            fd = self._file.fileno()
            self._dirty = False
        # fsync outside the lock: on a busy disk it takes milliseconds, and the scheduler thread must never
        # wait for it to record the next actuation.
        with contextlib.suppress(OSError):  # the day's file was rotated (closed) meanwhile
            os.fsync(fd)

    def close(self) -> None:
        self._stop.set()
        self._syncer.join(timeout=5.0)
        self._sync()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_audit(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one audit file; a torn last line (power cut mid-write) is skipped."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


class RejectCounters:
    """Counters for `/metrics` (plain numbers; the runtime exports them, e.g. as Prometheus counters)."""

    NAMES = (
        "parts_tracked",
        "fired",
        "passed",
        "late",
        "undecided_rejected",
        "missed",
        "errors",
        "verdicts_written",
        "acks_missing",
        "confirm_missing",
        "alarms",
        "late_verdicts",
        "pulses_merged",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        """Name → count since start, e.g. export as `lineinspect_reject_<name>_total`."""
        with self._lock:
            return dict(self._values)
