"""What went wrong opening one of the station's SQLite files (outbox, results store), read from SQLite's error.

Each owner words its own message (what the file holds decides what to do about it); the reading of
SQLite's text is done once, here.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum


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
