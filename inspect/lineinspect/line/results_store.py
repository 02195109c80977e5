"""ResultStore: the station's local record of recent results, for `/v1/results` and the dashboard.

It is a view, not a channel: the outbox (lineinspect.line.outbox) is what makes
sure the MES gets every result. This store keeps the most recent ones so an
operator or quality engineer can look back ("show me the rejects of camera 2
in the last hour") without a broker or an MES at hand.

SQLite in WAL mode with `synchronous=NORMAL`: a killed process loses nothing
committed; a power cut may lose the last few results here, which the outbox
still holds for the MES. One row per result: the payload as published plus
indexed columns for the filters (decided time, camera, verdict, sequence,
source) and one row per defect for the Pareto.

Bounded: rows beyond `retain_rows` (oldest first) and rows decided more than
`retain_days` ago are deleted as results arrive, so the file stops growing
once the bound is reached (SQLite reuses the freed pages).

Off the line's path: `add` only queues the result; a writer thread commits
queued results in batches, so a slow disk never delays a camera worker or the
reject that follows the result. Reads first write what is queued, so a query
sees every result added before it.

Thread-safe: one connection behind a lock; camera workers and HTTP uploads
add, HTTP requests query.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.core.result import Result, Verdict
from lineinspect.errors import LineinspectError
from lineinspect.line.sqlite_file import OpenProblem, open_problem

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
IN_MEMORY = ":memory:"
DEFAULT_RETAIN_ROWS = 100_000
MAX_QUERY_LIMIT = 1000
DEFAULT_MAX_PENDING = 10_000
# Results per transaction: one commit per batch instead of one per result.
_BATCH_MAX = 500
_CLOSE_TIMEOUT_S = 10.0
# How often an idle writer looks at the stop flag (close() also wakes it through the queue).
_WRITER_WAKE_S = 0.5
_STOP = object()
# Checking the age bound costs a query; once a minute keeps the store within a minute of retain_days.
_AGE_PRUNE_INTERVAL_NS = 60 * 1_000_000_000

SOURCE_CAMERA = "camera"
SOURCE_UPLOAD = "upload"


class ResultStoreError(LineinspectError):
    """The results database cannot be used (bad path, corrupt, unwritable)."""


# SQLite's largest integer: a bound above it would overflow the binding (OverflowError, a 500).
MAX_SQLITE_INT = 2**63 - 1


def source_of(result: Result) -> str:
    """`camera` for a part seen by a station camera, `upload` for an offline HTTP upload (no camera)."""
    return SOURCE_UPLOAD if result.camera_id is None else SOURCE_CAMERA


def _epoch_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"time {ts.isoformat()} has no time zone; give UTC (e.g. 2024-05-01T06:00:00Z)")
    return int(ts.timestamp() * 1_000_000)


def _iso(ts: datetime) -> str:
    return iso_utc(ts, "seconds")


def _yield_pct(passed: int, total: int) -> float | None:
    return None if total == 0 else round(100.0 * passed / total, 2)


class ResultStore:
    """Recent results on SQLite, newest first.

    Args:
        path: the database file (created with its folder when missing), or ":memory:".
        retain_rows: keep at most about this many results (the oldest go first); None: no row bound.
        retain_days: drop results decided more than this many days ago; None: no age bound.
        prune_slack_rows: rows allowed over `retain_rows` before a prune runs (pruning in batches
            keeps the cost per result small); default 1 % of `retain_rows`, at least 1, at most 1000.
        max_pending: results waiting for the writer thread beyond which new ones are not kept.

    Call `close()` (or use `with`): it writes what is queued and joins the writer thread.

    At least one bound must be set: a store that grows without limit fills the disk.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        retain_rows: int | None = DEFAULT_RETAIN_ROWS,
        retain_days: float | None = None,
        prune_slack_rows: int | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if retain_rows is None and retain_days is None:
            raise ValueError("set retain_rows or retain_days: an unbounded results store fills the disk")
        if retain_rows is not None and retain_rows < 1:
            raise ValueError(f"retain_rows must be at least 1 (got {retain_rows})")
        if retain_days is not None and retain_days <= 0:
            raise ValueError(f"retain_days must be more than 0 (got {retain_days})")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1 (got {max_pending})")
        self.path = IN_MEMORY if str(path) == IN_MEMORY else Path(path)
        self._name = "memory" if self.path == IN_MEMORY else Path(path).name
        self.retain_rows = retain_rows
        self.retain_days = retain_days
        if prune_slack_rows is None:
            prune_slack_rows = min(1000, max(1, (retain_rows or 0) // 100))
        self.prune_slack_rows = max(1, prune_slack_rows)
        self._lock = threading.Lock()
        self._conn = self._open()
        self._rows = int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        self._next_age_prune_ns = 0
        with self._lock:
            self._prune_locked(force=True)
        self.max_pending = max_pending
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._dropped_lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._run_writer, name=f"results-store-{self._name}", daemon=True)
        self._writer.start()

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        where = self.path
        if isinstance(where, Path):
            if where.is_dir():
                raise ResultStoreError(
                    f"results store {where} is a folder; give a file path such as {where}/results.db"
                )
            try:
                where.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ResultStoreError(
                    f"results store {where}: cannot create its folder {where.parent}: {exc.strerror or exc}; "
                    "choose a writable path"
                ) from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False, timeout=1.0)
            if isinstance(where, Path):
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                # The WAL file is truncated back to this size after checkpoints instead of keeping its peak.
                conn.execute("PRAGMA journal_size_limit=4194304").fetchone()
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ResultStoreError(
                    f"results store {where} was written by a newer lineinspect (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade, or move the file aside to start an empty store"
                )
            conn.execute("BEGIN IMMEDIATE")
            # AUTOINCREMENT: row ids are never reused after pruning, so id order is arrival order.
            conn.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, sequence INTEGER,"
                " decided_us INTEGER NOT NULL, camera_id TEXT, source TEXT NOT NULL, verdict TEXT NOT NULL,"
                " recipe_id TEXT, payload TEXT NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS results_decided ON results (decided_us)")
            conn.execute("CREATE INDEX IF NOT EXISTS results_camera ON results (camera_id, id)")
            conn.execute("CREATE INDEX IF NOT EXISTS results_verdict ON results (verdict, id)")
            conn.execute("CREATE INDEX IF NOT EXISTS results_sequence ON results (sequence)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS defects ("
                " result_row INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,"
                " class TEXT NOT NULL, counts INTEGER NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS defects_result ON defects (result_row)")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            return conn
        except ResultStoreError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise ResultStoreError(_explain_open_error(where, exc)) from None

    # -- writing ---------------------------------------------------------------------------------

    def add(self, result: Result) -> None:
        """Queue one result for storing and return at once (a result sink for camera workers).

        The writer thread commits queued results in batches, so a slow disk (a WAL checkpoint's
        fsync) never holds up a camera worker or the reject that follows it. Reads see every result
        added before them. A result whose result_id is already stored is ignored (a duplicate).
        When `max_pending` results are waiting (the disk has stalled), further ones are counted in
        `dropped` and logged, not stored: this store is a local view, the outbox holds them for the MES.
        """
        if self._closed:
            raise ResultStoreError(f"results store {self.path} is closed; results can no longer be added")
        try:
            self._pending.put_nowait(result)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1
                dropped = self._dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.error(
                    "results store %s: %d results not kept for /v1/results (%d waiting to be written; is the "
                    "disk stalled?). They still go to the MES",
                    self.path,
                    dropped,
                    self.max_pending,
                )

    @property
    def dropped(self) -> int:
        """Results not kept because the write queue was full (since start)."""
        with self._dropped_lock:
            return self._dropped

    def _run_writer(self) -> None:
        while True:
            try:
                first = self._pending.get(timeout=_WRITER_WAKE_S)
            except queue.Empty:
                first = None
            stopping = first is _STOP or self._stopping.is_set()
            try:
                with self._lock:
                    if first is not None and first is not _STOP:
                        self._write_locked([first])
                    # Whatever queued meanwhile goes in the same pass.
                    self._write_pending_locked()
            except Exception:  # the writer must outlive one bad result, or the queue would fill for good
                log.exception("results store %s: writing results failed", self.path)
            if stopping:
                return

    def _write_pending_locked(self) -> None:
        while True:
            batch: list[Result] = []
            while len(batch) < _BATCH_MAX:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:  # close() has set _stopping too; the writer sees that
                    batch.append(item)
            if not batch:
                return
            self._write_locked(batch)

    def _write_locked(self, batch: list[Result]) -> None:
        """Store `batch` in one transaction (one commit for many results)."""
        added = 0
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for result in batch:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO results"
                    " (result_id, sequence, decided_us, camera_id, source, verdict, recipe_id, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        result.result_id,
                        result.sequence,
                        _epoch_us(result.decided_at),
                        result.camera_id,
                        source_of(result),
                        result.verdict.value,
                        result.recipe_id,
                        result.to_json(),  # the payload as the outbox stored and published it, serialised once
                    ),
                )
                if cursor.rowcount != 1:
                    continue
                added += 1
                if result.findings:
                    row = cursor.lastrowid
                    self._conn.executemany(
                        "INSERT INTO defects (result_row, class, counts) VALUES (?, ?, ?)",
                        [(row, f.defect.class_name, 1 if f.counts else 0) for f in result.findings],
                    )
            self._conn.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            self._rollback()
            log.error("results store %s: %d results could not be written: %s", self.path, len(batch), exc)
            return
        self._rows += added
        if added:
            self._prune_locked()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction open
            self._conn.execute("ROLLBACK")

    def _prune_locked(self, *, force: bool = False) -> None:
        try:
            if self.retain_rows is not None and (force or self._rows > self.retain_rows + self.prune_slack_rows):
                excess = self._rows - self.retain_rows
                if excess > 0:
                    self._conn.execute(
                        "DELETE FROM results WHERE id IN (SELECT id FROM results ORDER BY id LIMIT ?)", (excess,)
                    )
                    self._rows -= excess
            now_ns = time.monotonic_ns()
            if self.retain_days is not None and (force or now_ns >= self._next_age_prune_ns):
                self._next_age_prune_ns = now_ns + _AGE_PRUNE_INTERVAL_NS
                cutoff = utc_now() - timedelta(days=self.retain_days)
                deleted = self._conn.execute("DELETE FROM results WHERE decided_us < ?", (_epoch_us(cutoff),))
                self._rows -= max(0, deleted.rowcount)
        except sqlite3.Error as exc:
            # The result is stored; a failed prune is retried with the next one.
            log.error("results store %s: pruning failed: %s", self.path, exc)

    # -- reading ---------------------------------------------------------------------------------

    def query(
        self,
        *,
        camera: str | None = None,
        verdict: Verdict | str | Iterable[Verdict | str] | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_sequence: int | None = None,
        part_id: str | None = None,
        result_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Result payloads, newest first (arrival order).

        camera: one camera id. verdict: one verdict or several (e.g. fail + undecided = the rejects).
        source: `camera` or `upload`. since/until: decided at or after `since`, before `until`
        (tz-aware). before_sequence: only results with a smaller station sequence (paging through
        camera results; uploads have none). part_id, result_id: that part or result only (a look-up: "why was
        A123 rejected?"). limit: 1–1000; offset: rows to skip.
        """
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be 1–{MAX_QUERY_LIMIT} (got {limit})")
        if offset < 0:
            raise ValueError(f"offset must be 0 or more (got {offset})")
        where, args = self._filters(
            camera=camera,
            verdict=verdict,
            source=source,
            since=since,
            until=until,
            before_sequence=before_sequence,
            part_id=part_id,
            result_id=result_id,
        )
        sql = f"SELECT payload FROM results{where} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            self._write_pending_locked()
            rows = self._conn.execute(sql, (*args, limit, offset)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def get(self, result_id: str) -> dict[str, Any] | None:
        """One result's payload, or None when it is not (or no longer) stored."""
        with self._lock:
            self._write_pending_locked()
            row = self._conn.execute("SELECT payload FROM results WHERE result_id = ?", (result_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def count(self) -> int:
        with self._lock:
            self._write_pending_locked()
            return self._rows

    def summary(self, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """For the dashboard: counts by verdict, yield overall and per camera, and the defect Pareto.

        Over results decided in [since, until) (default: everything stored). Yield = pass / all
        (undecided parts are rejected, so they count against it). The Pareto lists defect classes
        that counted against a part, by the number of parts they rejected, with the cumulative share.
        """
        where, args = self._filters(since=since, until=until)
        with self._lock:
            self._write_pending_locked()
            by_verdict_rows = self._conn.execute(
                f"SELECT verdict, COUNT(*) FROM results{where} GROUP BY verdict", args
            ).fetchall()
            camera_rows = self._conn.execute(
                f"SELECT camera_id, source, verdict, COUNT(*) FROM results{where}"
                " GROUP BY camera_id, source, verdict ORDER BY camera_id",
                args,
            ).fetchall()
            defect_where, _ = self._filters(since=since, until=until, table="r.")
            defect_rows = self._conn.execute(
                "SELECT d.class, COUNT(DISTINCT d.result_row), COUNT(*) FROM defects d"
                " JOIN results r ON r.id = d.result_row"
                f"{defect_where}{' AND' if defect_where else ' WHERE'} d.counts = 1"
                " GROUP BY d.class ORDER BY 2 DESC, 3 DESC, d.class",
                args,
            ).fetchall()
        by_verdict = {v.value: 0 for v in Verdict}
        for verdict, n in by_verdict_rows:
            by_verdict[verdict] = int(n)
        total = sum(by_verdict.values())
        cameras: dict[tuple[str | None, str], dict[str, Any]] = {}
        for camera_id, source, verdict, n in camera_rows:
            entry = cameras.setdefault(
                (camera_id, source),
                {"camera_id": camera_id, "source": source, "total": 0, **{v.value: 0 for v in Verdict}},
            )
            entry[verdict] = int(n)
            entry["total"] += int(n)
        for entry in cameras.values():
            entry["yield_pct"] = _yield_pct(entry[Verdict.PASS.value], entry["total"])
        pareto = []
        rejected_parts = sum(int(parts) for _cls, parts, _n in defect_rows)
        running = 0
        for name, parts, n in defect_rows:
            running += int(parts)
            pareto.append(
                {
                    "class": name,
                    "parts": int(parts),
                    "defects": int(n),
                    "cumulative_pct": round(100.0 * running / rejected_parts, 2) if rejected_parts else None,
                }
            )
        return {
            "since": None if since is None else _iso(since),
            "until": None if until is None else _iso(until),
            "total": total,
            "by_verdict": by_verdict,
            "yield_pct": _yield_pct(by_verdict[Verdict.PASS.value], total),
            "cameras": list(cameras.values()),
            "defect_pareto": pareto,
        }

    @staticmethod
    def _filters(
        *,
        camera: str | None = None,
        verdict: Verdict | str | Iterable[Verdict | str] | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_sequence: int | None = None,
        part_id: str | None = None,
        result_id: str | None = None,
        table: str = "",
    ) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause and its arguments; `table` prefixes the column names (e.g. "r.")."""
        clauses: list[str] = []
        args: list[Any] = []
        if camera is not None:
            clauses.append(f"{table}camera_id = ?")
            args.append(camera)
        if verdict is not None:
            wanted = [verdict] if isinstance(verdict, str) else list(verdict)
            values = [Verdict(v).value for v in wanted]  # ValueError names a bad verdict
            if values:
                clauses.append(f"{table}verdict IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if source is not None:
            if source not in (SOURCE_CAMERA, SOURCE_UPLOAD):
                raise ValueError(f"source must be '{SOURCE_CAMERA}' or '{SOURCE_UPLOAD}' (got {source!r})")
            clauses.append(f"{table}source = ?")
            args.append(source)
        if since is not None:
            clauses.append(f"{table}decided_us >= ?")
            args.append(_epoch_us(since))
        if until is not None:
            clauses.append(f"{table}decided_us < ?")
            args.append(_epoch_us(until))
        if before_sequence is not None and before_sequence <= MAX_SQLITE_INT:  # beyond: every sequence is smaller
            clauses.append(f"{table}sequence < ?")
            args.append(before_sequence)
        if result_id is not None:
            clauses.append(f"{table}result_id = ?")
            args.append(result_id)
        if part_id is not None:
            # No column of its own: a look-up by part is rare, a scan of the payloads is fast enough for it.
            clauses.append(f"json_extract({table}payload, '$.part_id') = ?")
            args.append(part_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return where, tuple(args)

    # -- life ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the database."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._pending.put(_STOP)  # wakes the writer at once
        self._writer.join(timeout=_CLOSE_TIMEOUT_S)
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _explain_open_error(path: Path | str, exc: sqlite3.Error) -> str:
    problem = open_problem(exc)
    if problem is OpenProblem.NOT_A_DATABASE:
        return (
            f"results store {path} is not a readable results database ({exc}). Move the file aside and start "
            "again; a new empty store is created (the MES and the outbox are not affected)"
        )
    if problem is OpenProblem.IN_USE:
        return f"results store {path} is locked by another process; give this station its own results file"
    if problem is OpenProblem.NOT_WRITABLE:
        return f"results store {path}: cannot open for writing ({exc}); check the path and its permissions"
    return f"results store {path}: cannot open ({exc}); check the path and its permissions"
