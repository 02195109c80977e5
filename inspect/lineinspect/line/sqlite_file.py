"""The station's SQLite files (outbox, results store, archive index): what went wrong opening one, read from
SQLite's error, the one way they write a transaction, and group commit (several writers, one fsync).

Each owner words its own message (what the file holds decides what to do about it); the reading of
SQLite's text is done once, here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class OpenProblem(StrEnum):
    IN_USE = "in_use"  # locked or busy: another process has it
    NOT_A_DATABASE = "not_a_database"  # corrupt, or some other file
    NOT_WRITABLE = "not_writable"  # read-only file or folder, or the path cannot be opened
    OTHER = "other"


def open_problem(exc: sqlite3.Error) -> OpenProblem:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return OpenProblem.IN_USE
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return OpenProblem.NOT_A_DATABASE
    if "readonly" in text or "unable to open" in text:
        return OpenProblem.NOT_WRITABLE
    return OpenProblem.OTHER


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT; on failure roll back what SQLite has not already, keeping the first error.

    SQLite rolls a failed commit back itself in some cases (SQLITE_FULL): a second ROLLBACK then fails
    with "no transaction is active" and would hide the real cause ("database or disk is full").
    The caller holds whatever lock guards `conn`.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                log.error("rollback failed too: %s", rollback_error)
        raise


@dataclass(slots=True)
class _Write(Generic[T]):
    """One caller's statements, waiting for the transaction that commits them."""

    statements: Callable[[sqlite3.Connection], T]
    after_commit: Callable[[T], None] | None = None
    durable: bool = True
    done: bool = False
    value: T | None = None
    error: BaseException | None = None


class GroupCommit:
    """Several writers' statements in one transaction: one commit (one fsync) for all of them.

    `write(statements)` returns only once `statements(conn)` is committed, or raises the sqlite3.Error that
    kept it from being committed; nobody may be told of a write before it returns. Whoever calls `write`
    while no commit is in progress commits everything queued so far (its own statements among them) in one
    `transaction`; writers arriving during that commit queue up and are committed together by the next one.
    A lone writer commits at once: grouping costs no waiting, it only happens where writers meet.

    A batch is committed or rolled back as a whole: when one writer's statements fail, every writer of that
    batch gets the error (what fails a write here is the file, a full disk or an I/O error, and that fails
    all of them alike). `lock` guards `conn` against everyone else that uses it (readers) and is held while
    a batch runs. Statements see the batch's earlier statements (an `UPDATE … RETURNING` counter counts on).
    A write's `after_commit(value)` runs under `lock` right after the commit, before any reader can see the
    rows: where in-memory counters must agree with the file (keep it short; it must not raise).

    Durability: the connection is opened with `synchronous=FULL` (every commit waits for its fsync). A write
    with `durable=False` may be lost to a power cut (never to a killed process): a batch of such writes only
    is committed with `synchronous=NORMAL`, no fsync of its own; the next durable commit's fsync covers it,
    since WAL frames reach the disk in order.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock
        self._group = threading.Condition(threading.Lock())
        self._queued: list[_Write[Any]] = []
        self._committing = False
        self._synchronous_full = True  # what the owner opened the connection with
        self.commits = 0  # transactions committed (for tests and benchmarks: writes per commit)
        self.writes = 0  # writes committed

    def write(
        self,
        statements: Callable[[sqlite3.Connection], T],
        *,
        after_commit: Callable[[T], None] | None = None,
        durable: bool = True,
    ) -> T:
        """Run `statements(conn)` in a transaction shared with the writers queued beside it; its value."""
        job: _Write[T] = _Write(statements, after_commit, durable)
        with self._group:
            self._queued.append(job)
            while not job.done and self._committing:
                self._group.wait()
            if not job.done:
                self._committing = True
                batch, self._queued = self._queued, []
            else:
                batch = []
        if batch:
            try:
                self._commit(batch)
            finally:
                with self._group:
                    self._committing = False
                    self._group.notify_all()
        if isinstance(job.error, sqlite3.Error):
            # Each writer raises its own copy: one exception object raised in several threads at once would
            # collect their tracebacks into one another's.
            raise type(job.error)(*job.error.args) from job.error
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]  # set by the commit when there is no error

    def _commit(self, batch: list[_Write[Any]]) -> None:
        error: BaseException | None = None
        full = any(job.durable for job in batch)
        with self._lock:
            try:
                if full is not self._synchronous_full:
                    self._conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
                    self._synchronous_full = full
                with transaction(self._conn):
                    for job in batch:
                        job.value = job.statements(self._conn)
            except BaseException as exc:  # every writer of the batch hears why, not only the one committing it
                error = exc
            else:
                self.commits += 1
                self.writes += len(batch)
                for job in batch:
                    if job.after_commit is not None:
                        try:
                            job.after_commit(job.value)
                        except Exception:  # committed all the same: the writer must hear so
                            log.exception("group commit: an after-commit hook failed")
        with self._group:
            for job in batch:
                job.error = error
                job.done = True
