"""The station's SQLite files (outbox, results store, archive index): what went wrong opening one, read from
SQLite's error, and the one way they write a transaction.

Each owner words its own message (what the file holds decides what to do about it); the reading of
SQLite's text is done once, here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

log = logging.getLogger(__name__)


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
