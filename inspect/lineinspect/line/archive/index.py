"""The archive's index: one row per frame taken (kept, or why not any more) and one per review, on SQLite.

WAL with `synchronous=NORMAL`, like the outbox and the results store: a SIGKILLed process loses nothing
committed. A frame's row is committed as `writing` before its file is written and becomes `kept` after
the file is in place (written to `tmp/`, then renamed: a file either exists whole or not at all), so
at the next start a `writing` row is settled by looking at the disk (`ImageArchive` at start-up): the
file is there (kept) or not (lost). An evicted frame's row says so before its file is removed, so a kill
in between leaves a stray file (removed at the next start), never a `kept` row without its file. Rows of
frames gone (evicted, lost) stay as tombstones so that `GET /v1/results/{id}/image` can say why, until
they are older than the age limit.

Reviews are audit records: inserted, never updated or deleted, and never removed with their frame.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from lineinspect.core.clock import iso_utc
from lineinspect.errors import LineinspectError
from lineinspect.line.sqlite_file import OpenProblem, open_problem, transaction

SCHEMA_VERSION = 1
INDEX_FILE = "index.sqlite"
_PAGE_BYTES = 4096
_WAL_CHECKPOINT_PAGES = 256
# The WAL is checkpointed past 256 pages (1 MiB) and truncated back to that; one transaction more (a batch of
# rows, an eviction: a few dozen pages) is all it can grow beyond.
WAL_BOUND_BYTES = (_WAL_CHECKPOINT_PAGES + 64) * _PAGE_BYTES


class ArchiveIndexError(LineinspectError):
    """The archive's index cannot be used (corrupt, locked, unwritable); the message says what to do."""


class FrameState(StrEnum):
    WRITING = "writing"  # row committed, file not yet in place
    KEPT = "kept"
    EVICTED = "evicted"  # removed for the disk budget or the age limit
    LOST = "lost"  # never written (disk full, unwritable, stopped while writing) or missing on disk


# Eviction order: lowest priority first, oldest first within one.
PRIORITY_PASS = 0
PRIORITY_REJECT = 1  # failed or undecided
PRIORITY_REVIEWED = 2


def epoch_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"time {ts.isoformat()} has no time zone; give UTC (e.g. 2024-05-01T06:00:00Z)")
    return int(ts.timestamp() * 1_000_000)


def from_epoch_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One archived frame (or its tombstone) as the index holds it."""

    result_id: str
    ref: str
    state: FrameState
    source: str  # camera or upload
    camera_id: str | None
    part_id: str | None
    recipe_id: str | None
    verdict: str
    decided_at: datetime
    model_sha256: str | None
    size_bytes: int
    priority: int
    payload: dict[str, Any]  # the result as the archive took it (before the outbox's sequence)
    gone_why: str | None  # evicted or lost: why
    gone_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One review of an archived part: an audit record, never edited."""

    review_id: int
    result_id: str
    label: str
    defect_class: str | None
    box_px: tuple[float, float, float, float] | None
    mask_png: bytes | None
    note: str | None
    reviewer: str | None  # the name the operator typed (not authenticated)
    key_name: str  # the API key that authorised it
    reviewed_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "review_id": self.review_id,
            "result_id": self.result_id,
            "label": self.label,
            "defect_class": self.defect_class,
            "box_px": None if self.box_px is None else list(self.box_px),
            "has_mask": self.mask_png is not None,
            "note": self.note,
            "reviewer": self.reviewer,
            "key_name": self.key_name,
            "reviewed_at": iso_utc(self.reviewed_at, "milliseconds"),
        }


_FRAME_COLUMNS = (
    "result_id, ref, state, source, camera_id, part_id, recipe_id, verdict, decided_us, model_sha256, bytes,"
    " priority, payload, gone_why, gone_us"
)


_RAISE_PRIORITY = "UPDATE frames SET priority = MAX(priority, ?) WHERE result_id = ?"


def _frame(row: Sequence[Any]) -> FrameRow:
    return FrameRow(
        result_id=row[0],
        ref=row[1],
        state=FrameState(row[2]),
        source=row[3],
        camera_id=row[4],
        part_id=row[5],
        recipe_id=row[6],
        verdict=row[7],
        decided_at=from_epoch_us(row[8]),
        model_sha256=row[9],
        size_bytes=int(row[10]),
        priority=int(row[11]),
        payload=json.loads(row[12]),
        gone_why=row[13],
        gone_at=None if row[14] is None else from_epoch_us(row[14]),
    )


def _review(row: Sequence[Any]) -> ReviewRow:
    return ReviewRow(
        review_id=int(row[0]),
        result_id=row[1],
        label=row[2],
        defect_class=row[3],
        box_px=None if row[4] is None else tuple(json.loads(row[4])),
        mask_png=None if row[5] is None else bytes(row[5]),
        note=row[6],
        reviewer=row[7],
        key_name=row[8],
        reviewed_at=from_epoch_us(row[9]),
    )


@dataclass(frozen=True, slots=True)
class NewFrame:
    """What the writer records for a frame it is about to write."""

    result_id: str
    ref: str
    source: str
    camera_id: str | None
    part_id: str | None
    recipe_id: str | None
    verdict: str
    decided_at: datetime
    model_sha256: str | None
    priority: int
    payload: dict[str, Any]


class ArchiveIndex:
    """The index file of one archive folder. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            # A small WAL, checkpointed often: the index counts against the disk budget, so its size must be
            # bounded and known (WAL_BOUND_BYTES), not swing by megabytes between checkpoints.
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}").fetchone()
            conn.execute(f"PRAGMA journal_size_limit={_WAL_CHECKPOINT_PAGES * _PAGE_BYTES}").fetchone()
            conn.execute("PRAGMA synchronous=NORMAL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ArchiveIndexError(
                    f"archive index {self.path} was written by a newer lineinspect (schema {version}, this one "
                    f"knows {SCHEMA_VERSION}); upgrade, or give archive.folder a new folder"
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS frames ("
                " result_id TEXT PRIMARY KEY, ref TEXT NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL,"
                " camera_id TEXT, part_id TEXT, recipe_id TEXT, verdict TEXT NOT NULL, decided_us INTEGER NOT NULL,"
                " model_sha256 TEXT, bytes INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL,"
                " payload TEXT NOT NULL, gone_why TEXT, gone_us INTEGER)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS frames_evict ON frames (state, priority, decided_us)")
            conn.execute("CREATE INDEX IF NOT EXISTS frames_decided ON frames (decided_us)")
            conn.execute("CREATE INDEX IF NOT EXISTS frames_part ON frames (part_id)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS reviews ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL, label TEXT NOT NULL,"
                " defect_class TEXT, box_px TEXT, mask_png BLOB, note TEXT, reviewer TEXT, key_name TEXT NOT NULL,"
                " reviewed_us INTEGER NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS reviews_result ON reviews (result_id, id)")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            # A file that is not a database is only found out at the first real read.
            conn.execute("SELECT COUNT(*) FROM frames").fetchone()
            return conn
        except ArchiveIndexError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise ArchiveIndexError(_explain_open_error(self.path, exc)) from None

    # -- frames ----------------------------------------------------------------------------------

    def begin_frames(self, frames: Iterable[NewFrame]) -> None:
        """Commit rows in state `writing` (before their files are written)."""
        rows = [
            (
                f.result_id,
                f.ref,
                FrameState.WRITING.value,
                f.source,
                f.camera_id,
                f.part_id,
                f.recipe_id,
                f.verdict,
                epoch_us(f.decided_at),
                f.model_sha256,
                f.priority,
                json.dumps(f.payload, ensure_ascii=False, separators=(",", ":")),
            )
            for f in frames
        ]
        self._write(
            "INSERT OR REPLACE INTO frames (result_id, ref, state, source, camera_id, part_id, recipe_id, verdict,"
            " decided_us, model_sha256, priority, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def mark_kept(self, sizes: dict[str, int]) -> None:
        self._write(
            "UPDATE frames SET state = 'kept', bytes = ? WHERE result_id = ?",
            [(size, result_id) for result_id, size in sizes.items()],
        )

    def mark_gone(self, result_ids: Iterable[str], state: FrameState, why: str, at: datetime) -> None:
        """Frames evicted or lost: their bytes no longer count; the row stays as a tombstone saying why."""
        self._write(
            "UPDATE frames SET state = ?, bytes = 0, gone_why = ?, gone_us = ? WHERE result_id = ?",
            [(state.value, why, epoch_us(at), result_id) for result_id in result_ids],
        )

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._transaction():
            self._conn.executemany(sql, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Under the lock, one transaction (`sqlite_file.transaction`)."""
        with self._lock, transaction(self._conn):
            yield

    def kept_bytes(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM frames WHERE state = 'kept'").fetchone()
        return int(row[0])

    def count(self, state: FrameState) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM frames WHERE state = ?", (state.value,)).fetchone()[0])

    def writing(self) -> list[FrameRow]:
        return self._frames(" WHERE state = 'writing'", ())

    def kept_refs(self) -> dict[str, str]:
        """result_id → ref of every kept frame (what the folder should hold, for the check at start-up)."""
        with self._lock:
            rows = self._conn.execute("SELECT result_id, ref FROM frames WHERE state = 'kept'").fetchall()
        return {str(result_id): str(ref) for result_id, ref in rows}

    def eviction_candidates(self, limit: int) -> list[FrameRow]:
        """Kept frames in eviction order: passes before rejects before reviewed parts, oldest first."""
        return self._frames(" WHERE state = 'kept' ORDER BY priority, decided_us LIMIT ?", (limit,))

    def older_than(self, cutoff: datetime, limit: int) -> list[FrameRow]:
        return self._frames(
            " WHERE state = 'kept' AND decided_us < ? ORDER BY decided_us LIMIT ?", (epoch_us(cutoff), limit)
        )

    def forget_tombstones(self, cutoff: datetime) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM frames WHERE state IN ('evicted', 'lost') AND gone_us < ?", (epoch_us(cutoff),)
            )

    def get(self, result_id: str) -> FrameRow | None:
        rows = self._frames(" WHERE result_id = ?", (result_id,))
        return rows[0] if rows else None

    def search(
        self,
        *,
        text: str | None = None,
        camera: str | None = None,
        recipe: str | None = None,
        verdicts: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        states: Sequence[FrameState] = (FrameState.KEPT,),
        limit: int | None = 100,
        oldest_first: bool = False,
    ) -> list[FrameRow]:
        """Frames by part id or result id (`text`, exact), camera, recipe, verdict and decided time [since, until)."""
        clauses = [f"state IN ({', '.join('?' * len(states))})"]
        args: list[Any] = [s.value for s in states]
        if text is not None:
            clauses.append("(part_id = ? OR result_id = ?)")
            args += [text, text]
        for column, value in (("camera_id", camera), ("recipe_id", recipe)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if verdicts:
            clauses.append(f"verdict IN ({', '.join('?' * len(verdicts))})")
            args += list(verdicts)
        if since is not None:
            clauses.append("decided_us >= ?")
            args.append(epoch_us(since))
        if until is not None:
            clauses.append("decided_us < ?")
            args.append(epoch_us(until))
        order = "ASC" if oldest_first else "DESC"
        sql = f" WHERE {' AND '.join(clauses)} ORDER BY decided_us {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._frames(sql, tuple(args))

    def _frames(self, where: str, args: tuple[Any, ...]) -> list[FrameRow]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_FRAME_COLUMNS} FROM frames{where}", args).fetchall()
        return [_frame(r) for r in rows]

    # -- reviews ---------------------------------------------------------------------------------

    def add_review(
        self,
        *,
        result_id: str,
        label: str,
        defect_class: str | None,
        box_px: tuple[float, float, float, float] | None,
        mask_png: bytes | None,
        note: str | None,
        reviewer: str | None,
        key_name: str,
        at: datetime,
    ) -> ReviewRow:
        with self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO reviews (result_id, label, defect_class, box_px, mask_png, note, reviewer, key_name,"
                " reviewed_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result_id,
                    label,
                    defect_class,
                    None if box_px is None else json.dumps(list(box_px)),
                    mask_png,
                    note,
                    reviewer,
                    key_name,
                    epoch_us(at),
                ),
            )
            # A reviewed part's frame is the last to go.
            self._conn.execute(_RAISE_PRIORITY, (PRIORITY_REVIEWED, result_id))
        review_id = int(cursor.lastrowid or 0)
        return ReviewRow(review_id, result_id, label, defect_class, box_px, mask_png, note, reviewer, key_name, at)

    def reviews(self, result_id: str) -> list[ReviewRow]:
        """Every review of one result, oldest first (the last one is the current judgement)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, result_id, label, defect_class, box_px, mask_png, note, reviewer, key_name, reviewed_us"
                " FROM reviews WHERE result_id = ? ORDER BY id",
                (result_id,),
            ).fetchall()
        return [_review(r) for r in rows]

    def reviewed_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT DISTINCT result_id FROM reviews").fetchall()}

    def file_bytes(self) -> int:
        """The index's own size on disk (it counts against the budget too)."""
        return self._size("") + self._size("-wal")

    def growth_bytes(self) -> int:
        """How much more the index's WAL may grow before a checkpoint: kept free within the budget."""
        return max(0, WAL_BOUND_BYTES - self._size("-wal"))

    def _size(self, suffix: str) -> int:
        try:
            return Path(f"{self.path}{suffix}").stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _explain_open_error(path: Path, exc: sqlite3.Error) -> str:
    problem = open_problem(exc)
    if problem is OpenProblem.NOT_A_DATABASE:
        return (
            f"archive index {path} is not a readable archive index ({exc}); the archive is off. Move the file "
            "aside and restart: a new empty index is made (frames already in the folder are then not listed)"
        )
    if problem is OpenProblem.IN_USE:
        return f"archive index {path} is locked by another process; give this station its own archive.folder"
    if problem is OpenProblem.NOT_WRITABLE:
        return f"archive index {path}: cannot open for writing ({exc}); check archive.folder and its permissions"
    return f"archive index {path}: cannot open ({exc}); check archive.folder and its permissions"
