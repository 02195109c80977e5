"""UTC wall-clock time, the one way the project reads and writes it.

Timestamps are timezone-aware UTC; durations come from `time.monotonic_ns()`, never from here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["seconds", "milliseconds", "microseconds"]


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def iso_utc(ts: datetime, timespec: Precision = "microseconds") -> str:
    """`2026-05-01T06:00:00.123456Z`: ISO 8601 in UTC with a `Z` (an aware time in another zone is converted).

    Refuses a naive time: it would be read as local time somewhere and be hours off.
    """
    if ts.tzinfo is None:
        raise ValueError(f"time {ts.isoformat()} has no time zone; give UTC (e.g. 2024-05-01T06:00:00Z)")
    return ts.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_now_iso(timespec: Precision = "microseconds") -> str:
    """`iso_utc(utc_now())`."""
    return iso_utc(utc_now(), timespec)
