"""Outbox: the durable on-disk queue between the inspection and MQTT.

A result is committed here before anything tries to publish it and its row is
deleted only when the broker has acknowledged it (PUBACK). The station's
`sequence` is assigned in the same transaction that stores the result, so the
payload on disk already carries it, the number survives restarts and is never
handed out twice (a rolled-back append does not use one up).

Durability: WAL journal with `synchronous=FULL`. In WAL mode NORMAL already
survives a killed process, but after a power cut it may roll back the last
commits; a station cabinet does lose power, and by then the part has been
passed or rejected, so the result must not vanish. FULL costs one fsync per
commit, well under a millisecond to several ms on an SSD (more on a busy one).

Group commit (`sqlite_file.GroupCommit`): results, journal entries and
acknowledgements that arrive while a commit is in progress wait for it and are
then committed together, in one transaction and one fsync. Each call still
returns only once its own write is committed, so a result is durable before
anyone is told of it (publisher, sinks, reject station); a lone writer commits
at once. The sender acknowledges every PUBACK it has collected in one commit,
without an fsync of its own (`synchronous=NORMAL` for that commit: a power cut
may undo the last acknowledgements, and those results are sent once more).

Ownership: the database is opened with an exclusive lock so that two processes
never publish the same rows; a second opener gets a clear error. The OS drops
the lock when the owner dies, so a restart after SIGKILL opens it at once.

Bound policy (never a silent drop): the outbox only grows while the broker is
unreachable. From `alarm_rows` on, every crossing logs an ERROR and `alarm`
is true (the status/metrics flag `outbox_alarm`) while it accepts on. At
`max_rows` `append` raises `OutboxFullError` and stores nothing: the caller
must treat that part as undecided (rejected) and raise an alarm. We refuse
rather than drop the oldest (losing decided results without a trace), block
(camera workers would miss every part's deadline) or grow without limit (a
full disk takes the logs, the image archive and the OS down with it).

Part journal (`open_parts`): every triggered part is recorded here (`record_part`)
before anyone is told it was accepted, and its row is deleted in the same
transaction that stores its result (`append`), so "the part has a result in
the outbox" and "the part is no longer open" can never disagree, whenever the
process dies. After a restart `open_parts()` lists the parts that never got a
result; the station issues each an `undecided` result (see `line/journal.py`).
One file for both is what makes the close atomic.

Thread-safe: one connection behind a lock (held while a batch commits); the
counters (depth, last sequence, alarm) behind their own, so status readers never
wait for an fsync. Camera workers append, the MQTT sender reads and
acknowledges, trigger threads record parts.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lineinspect.core.clock import utc_now_iso
from lineinspect.core.result import Result
from lineinspect.errors import LineinspectError
from lineinspect.line.sqlite_file import GroupCommit, OpenProblem, open_problem

log = logging.getLogger(__name__)

# 2: the open_parts table (the part journal); a version-1 file gets it on open.
SCHEMA_VERSION = 2
DEFAULT_MAX_ROWS = 500_000
# How long opening waits for another owner to let go before it reports the file as in use.
_OPEN_BUSY_TIMEOUT_MS = 1000


class OutboxError(LineinspectError):
    """The outbox file cannot be used (corrupt, in use by another process, unwritable)."""


class OutboxFullError(OutboxError):
    """The outbox reached its hard bound; the result was not stored."""


@dataclass(frozen=True, slots=True)
class OpenPart:
    """A part recorded at its trigger that has no result in the outbox yet."""

    run_id: str
    camera_id: str
    trigger_id: int
    part_id: str | None
    encoder_count: int | None
    recipe_id: str | None
    triggered_at: str  # ISO 8601 UTC


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stored result waiting for its PUBACK."""

    sequence: int
    result_id: str
    topic: str
    payload: str  # the result JSON, `sequence` already in it


class Outbox:
    """Durable, ordered, bounded queue of results on SQLite.

    Args:
        path: the database file (created with its folder when missing).
        max_rows: hard bound; `append` raises `OutboxFullError` at this depth.
        alarm_rows: depth from which `alarm` is raised and logged; default 80 % of `max_rows`.
    """

    def __init__(self, path: Path, *, max_rows: int = DEFAULT_MAX_ROWS, alarm_rows: int | None = None) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.path = Path(path)
        self.max_rows = max_rows
        self.alarm_rows = min(max_rows, alarm_rows if alarm_rows is not None else max(1, int(max_rows * 0.8)))
        self._lock = threading.Lock()  # the connection
        self._state = threading.Lock()  # depth, last sequence, alarm, appends in progress
        self._conn = self._open()
        self._writes = GroupCommit(self._conn, self._lock)
        self._depth, self._last_sequence = self._read_state()
        self._appending = 0
        self._alarm = False
        self._update_alarm()
        if self._depth:
            log.info("outbox %s holds %d results from before; they are sent first", self.path, self._depth)

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot create its folder: {exc}") from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=_OPEN_BUSY_TIMEOUT_MS / 1000
            )
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {self.path} was written by a newer lineinspect (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); run that version until the outbox is empty, or upgrade"
                )
            # A write transaction takes the exclusive lock now and keeps it for the life of the connection.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " sequence INTEGER PRIMARY KEY, result_id TEXT NOT NULL, topic TEXT NOT NULL,"
                " payload TEXT NOT NULL, stored_at TEXT NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS open_parts ("
                " run_id TEXT NOT NULL, camera_id TEXT NOT NULL, trigger_id INTEGER NOT NULL, part_id TEXT,"
                " encoder_count INTEGER, recipe_id TEXT, triggered_at TEXT NOT NULL,"
                " PRIMARY KEY (run_id, camera_id, trigger_id))"
            )
            conn.execute("INSERT OR IGNORE INTO counter (name, value) VALUES ('sequence', 0)")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            conn.execute("PRAGMA quick_check").fetchone()
            return conn
        except OutboxError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise OutboxError(_explain_open_error(self.path, exc)) from exc

    def _read_state(self) -> tuple[int, int]:
        try:
            depth = int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            last = int(self._conn.execute("SELECT value FROM counter WHERE name='sequence'").fetchone()[0])
        except sqlite3.Error as exc:
            self._conn.close()
            raise OutboxError(_explain_open_error(self.path, exc)) from exc
        return depth, last

    # -- queue -----------------------------------------------------------------------------------

    def append(self, result: Result, topic: str) -> Result:
        """Store `result` for `topic`; returns it stamped with the station's next `sequence`, once committed.

        Raises:
            OutboxFullError: the outbox holds `max_rows` results; nothing was stored.
            OutboxError: the write failed (disk full, I/O error); nothing was stored.
        """
        with self._state:
            if self._depth + self._appending >= self.max_rows:
                raise OutboxFullError(
                    f"outbox {self.path} is full ({self._depth + self._appending} of {self.max_rows} results waiting "
                    f"for the broker): result {result.result_id} was NOT stored. Bring the MQTT broker back or raise "
                    f"mqtt.outbox_max_rows; until then parts are undecided and rejected"
                )
            self._appending += 1
        closes_part = result.run_id is not None and result.camera_id is not None and result.trigger_id is not None

        def statements(conn: sqlite3.Connection) -> Result:
            row = conn.execute("UPDATE counter SET value = value + 1 WHERE name='sequence' RETURNING value").fetchone()
            stamped = dataclasses.replace(result, sequence=int(row[0]))
            conn.execute(
                "INSERT INTO outbox (sequence, result_id, topic, payload, stored_at) VALUES (?, ?, ?, ?, ?)",
                (stamped.sequence, stamped.result_id, topic, stamped.to_json(), utc_now_iso()),
            )
            if closes_part:
                conn.execute(
                    "DELETE FROM open_parts WHERE run_id = ? AND camera_id = ? AND trigger_id = ?",
                    (result.run_id, result.camera_id, result.trigger_id),
                )
            return stamped

        def committed(stamped: Result) -> None:  # before the sender can read the row
            with self._state:
                self._appending -= 1
                self._depth += 1
                self._last_sequence = max(self._last_sequence, stamped.sequence or 0)
                self._update_alarm()

        try:
            return self._writes.write(statements, after_commit=committed)
        except BaseException as exc:
            with self._state:
                self._appending -= 1
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(
                    f"outbox {self.path}: could not store result {result.result_id}: {exc} "
                    f"(disk full or failing? the part must be treated as undecided)"
                ) from exc
            raise

    def record_part(
        self,
        *,
        run_id: str,
        camera_id: str,
        trigger_id: int,
        part_id: str | None,
        encoder_count: int | None,
        recipe_id: str | None,
    ) -> None:
        """Journal a triggered part durably (committed when this returns); `append` of its result closes it.

        Raises OutboxError when it cannot be written (the part goes on: its result says the rest).
        """
        row = (run_id, camera_id, trigger_id, part_id, encoder_count, recipe_id, utc_now_iso())

        def statements(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO open_parts (run_id, camera_id, trigger_id, part_id, encoder_count,"
                " recipe_id, triggered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        try:
            self._writes.write(statements)
        except sqlite3.Error as exc:
            raise OutboxError(
                f"outbox {self.path}: could not journal part {trigger_id} of camera {camera_id}: {exc} "
                "(disk full or failing? if the station stops now this part gets no undecided result)"
            ) from exc

    def open_parts(self) -> list[OpenPart]:
        """Parts journaled and without a result, in the order they were triggered."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, camera_id, trigger_id, part_id, encoder_count, recipe_id, triggered_at"
                " FROM open_parts ORDER BY rowid"
            ).fetchall()
        return [OpenPart(str(a), str(b), int(c), d, e, f, str(g)) for a, b, c, d, e, f, g in rows]

    def pending(self, limit: int, after_sequence: int = 0) -> list[OutboxEntry]:
        """Up to `limit` stored results with a sequence above `after_sequence`, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT sequence, result_id, topic, payload FROM outbox WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after_sequence, limit),
            ).fetchall()
        return [OutboxEntry(int(s), str(r), str(t), str(p)) for s, r, t, p in rows]

    def ack(self, sequence: int) -> bool:
        """Delete the row of an acknowledged result; False when it was not there (already acknowledged)."""
        return self.ack_many([sequence]) == 1

    def ack_many(self, sequences: Iterable[int]) -> int:
        """Delete the rows of acknowledged results in one commit; how many were there (not acknowledged before).

        Raises sqlite3.Error when the delete fails (the rows stay; they are sent again after a restart).
        """
        keys = [(s,) for s in sequences]
        if not keys:
            return 0

        def statements(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany("DELETE FROM outbox WHERE sequence = ?", keys)
            return conn.total_changes - before

        def committed(deleted: int) -> None:
            with self._state:
                self._depth -= deleted
                self._update_alarm()

        # Not durable: an acknowledgement lost to a power cut only sends its result once more (QoS 1 may
        # duplicate anyway; consumers drop duplicates on result_id), so it waits for no fsync of its own.
        return self._writes.write(statements, after_commit=committed, durable=False)

    @property
    def commits(self) -> tuple[int, int]:
        """(transactions committed, writes they held) since open: how well writes were grouped."""
        return self._writes.commits, self._writes.writes

    def depth(self) -> int:
        """Results stored and not yet acknowledged."""
        with self._state:
            return self._depth

    @property
    def last_sequence(self) -> int:
        """The sequence given to the newest result ever stored here (0: none yet)."""
        with self._state:
            return self._last_sequence

    @property
    def alarm(self) -> bool:
        """True while the depth is at or above `alarm_rows` (the `outbox_alarm` status flag)."""
        with self._state:
            return self._alarm

    def _update_alarm(self) -> None:
        if not self._alarm and self._depth >= self.alarm_rows:
            self._alarm = True
            log.error(
                "ALARM outbox %s holds %d of at most %d results: results are not reaching the MQTT broker; "
                "at %d new parts will be undecided and rejected",
                self.path,
                self._depth,
                self.max_rows,
                self.max_rows,
            )
        elif self._alarm and self._depth < self.alarm_rows:
            self._alarm = False
            log.warning("outbox %s back to %d results; alarm cleared", self.path, self._depth)

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _explain_open_error(path: Path, exc: sqlite3.Error) -> str:
    problem = open_problem(exc)
    if problem is OpenProblem.IN_USE:
        return (
            f"outbox {path} is in use by another process (another lineinspect on this station directory?). "
            f"Stop that process, or give this station its own mqtt.outbox_file"
        )
    if problem is OpenProblem.NOT_A_DATABASE:
        return (
            f"outbox {path} is not a readable outbox database ({exc}). Move the file aside (keep it: it may hold "
            f"undelivered results) and start again; a new empty outbox is created"
        )
    return f"outbox {path}: cannot open ({exc}); check the path and its permissions"
