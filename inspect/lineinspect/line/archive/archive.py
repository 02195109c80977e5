"""ImageArchive: the frames of failed, undecided and sampled passed parts, kept off the line's path.

`keep(result, frame)` is the station's `FrameArchive` (the fanout calls it for every final result with a
frame, on a worker thread, before the outbox) and the upload route's: it decides by the rules
(`KeepRule`), hands the frame to a bounded queue and returns the reference at once. It never blocks and
never raises. A writer thread encodes each frame losslessly (PNG, the camera's own bit depth), writes it
under `<folder>/<day>/<camera or upload>/<result_id>.png` and keeps the disk budget and the age limit
(passes go first, then rejects, reviewed parts last; oldest first).

When the writer cannot keep up the frame is not kept (image.ref null, `skipped_busy`). When the disk is
full, the folder unwritable or the index unusable the archive raises an alarm and keeps nothing (one
frame every few seconds probes whether the problem is gone, and clears the alarm when it is); inspection
and MQTT never notice.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.core.frame import Frame
from lineinspect.core.result import Result, Verdict
from lineinspect.line.archive.index import (
    INDEX_FILE,
    PRIORITY_PASS,
    PRIORITY_REJECT,
    ArchiveIndex,
    ArchiveIndexError,
    FrameRow,
    FrameState,
    NewFrame,
    ReviewRow,
)
from lineinspect.line.archive.settings import ArchiveSettings

log = logging.getLogger(__name__)

SOURCE_CAMERA = "camera"
SOURCE_UPLOAD = "upload"
TMP_FOLDER = "tmp"
# A failing archive lets one frame through this often to find out whether the problem is gone.
PROBE_INTERVAL_NS = 5_000_000_000
# Frames per writer pass: one index commit for many frames.
_BATCH_MAX = 16
_EVICT_BATCH = 64
_WAKE_S = 0.5
_CLOSE_TIMEOUT_S = 10.0
# Why the last results were not kept, for the 404 of GET /v1/results/{id}/image (bounded, in memory).
_REASONS_KEPT = 20_000
_STOP = object()
# Why a frame whose row said `writing` at start-up has no file: the process ended between the two.
LOST_AT_STOP = "the station stopped before the frame was written (killed or crashed); its result is complete"
MISSING_AT_START = "its file was missing when the archive started (removed outside lineinspect?)"
_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
# Tombstones are only for messages; forgetting the old ones once a minute is plenty.
_TOMBSTONE_PRUNE_INTERVAL_NS = 60_000_000_000

AlarmHook = Callable[[str, str], None]  # (kind, message)


class ArchiveAlarm(StrEnum):
    DISK_FULL = "disk_full"
    UNWRITABLE = "unwritable"
    INDEX = "index"  # the index is corrupt, locked or cannot be written


class NotKept(Exception):
    """A frame the archive does not have; the message says why (for a 404)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ArchiveStatus:
    """The archive at a glance (`/v1/status` → `archive`, `/metrics` → `lineinspect_archive_*`)."""

    state: str  # ok, failing (alarm active: see problem), off (the index could not be opened)
    problem: str | None
    folder: str
    budget_bytes: int
    used_bytes: int
    frames: int
    queue_depth: int
    queue_size: int
    counters: dict[str, int]  # kept, sampled_out, skipped_busy, skipped_failing, write_errors, evicted, reviews
    # What the start-up found after an unclean stop (frames being written, stray files); None: all in order.
    recovered: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "problem": self.problem,
            "folder": self.folder,
            "budget_bytes": self.budget_bytes,
            "used_bytes": self.used_bytes,
            "frames": self.frames,
            "queue_depth": self.queue_depth,
            "queue_size": self.queue_size,
            "counters": dict(self.counters),
            "recovered": self.recovered,
        }


COUNTER_NAMES = ("kept", "sampled_out", "skipped_busy", "skipped_failing", "write_errors", "evicted", "reviews")


class KeepRule:
    """Which results' frames are kept: every fail and undecided; passes: the first N of each camera after
    start-up and after each changeover (its recipe changed), then 1 in `pass_sample_every`."""

    def __init__(self, *, pass_sample_every: int, pass_first_count: int) -> None:
        self.pass_sample_every = pass_sample_every
        self.pass_first_count = pass_first_count
        self._lock = threading.Lock()
        # Per camera (None: uploads): the recipe last seen and the passes seen since it began.
        self._seen: dict[str | None, tuple[str | None, int]] = {}

    def why_not(self, result: Result) -> str | None:
        """None: keep it; else why it is not kept."""
        if result.verdict is not Verdict.PASS:
            return None
        with self._lock:
            recipe, passes = self._seen.get(result.camera_id, (result.recipe_id, 0))
            if recipe != result.recipe_id:
                passes = 0  # a changeover: the new product's first parts are worth seeing
            passes += 1
            self._seen[result.camera_id] = (result.recipe_id, passes)
        if passes <= self.pass_first_count:
            return None
        every = self.pass_sample_every
        if every > 0 and (passes - self.pass_first_count) % every == 0:
            return None
        sampled = f"1 in {every}" if every > 0 else "none"
        return (
            f"sampled out: a passed part; the archive keeps the first {self.pass_first_count} passes after start-up "
            f"or a changeover, then {sampled} (archive.pass_sample_every)"
        )


@dataclass(slots=True)
class _Job:
    result: Result
    frame: Frame
    ref: str
    source: str
    queued_ns: int = field(default_factory=time.monotonic_ns)


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """A frame the archive holds: its image and the row that describes it."""

    row: FrameRow
    image: np.ndarray  # (H, W) or (H, W, 3) as the camera delivered it


def frame_ref(result: Result, source: str) -> str:
    """The archive's reference (image.ref): `<UTC day>/<camera id or upload>/<result_id>.png`."""
    day = iso_utc(result.decided_at, "seconds")[:10]
    owner = result.camera_id if source == SOURCE_CAMERA and result.camera_id else SOURCE_UPLOAD
    safe_owner = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in owner)
    return f"{day}/{safe_owner}/{result.result_id}.png"


def encode_png(image: np.ndarray) -> bytes:
    """Lossless: PNG keeps 8-bit and 16-bit, gray and colour, exactly as given."""
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} frame as PNG")
    return data.tobytes()


class ImageArchive:
    """The station's image archive (a `FrameArchive`). Build it, use it, `close()` it (joins the writer).

    folder: where frames and the index live (created when missing). on_alarm / on_clear: the station's
    alarm table (`StationEvents`), called with (kind, message); None: logged only (`lineinspect serve`).
    An archive whose folder or index cannot be opened is built anyway, `off`, with its alarm raised: the
    station runs without it.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        *,
        folder: Path,
        on_alarm: AlarmHook | None = None,
        on_clear: AlarmHook | None = None,
        probe_interval_s: float = PROBE_INTERVAL_NS / 1e9,
    ) -> None:
        self.settings = settings
        self.probe_interval_ns = int(probe_interval_s * 1e9)
        self.folder = folder
        self.on_alarm = on_alarm
        self.on_clear = on_clear
        self.rule = KeepRule(pass_sample_every=settings.pass_sample_every, pass_first_count=settings.pass_first_count)
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._pending: dict[str, _Job] = {}  # queued or being written: served from memory
        self._reasons: OrderedDict[str, str] = OrderedDict()
        self._alarms: dict[ArchiveAlarm, str] = {}
        self._next_probe_ns = 0
        self._next_tombstone_prune_ns = 0
        self._used_bytes = 0
        self._frames = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_frames)
        self._closed = False
        self._index: ArchiveIndex | None = None
        self._off_reason: str | None = None
        self._recovered: str | None = None
        self._open()
        self._writer: threading.Thread | None = None
        if self._index is not None:
            self._writer = threading.Thread(target=self._run_writer, name="image-archive", daemon=True)
            self._writer.start()

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            (self.folder / TMP_FOLDER).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._off(
                ArchiveAlarm.UNWRITABLE,
                f"image archive folder {self.folder} cannot be created ({exc.strerror or exc}); no frame is kept. "
                "Point archive.folder at a writable folder and restart; inspection goes on without it",
            )
            return
        try:
            index = ArchiveIndex(self.folder / INDEX_FILE)
        except ArchiveIndexError as exc:
            self._off(ArchiveAlarm.INDEX, str(exc))
            return
        try:
            self._recovered = self._settle(index)
            self._used_bytes = index.kept_bytes()
            self._frames = index.count(FrameState.KEPT)
        except Exception as exc:  # sqlite3.Error on a damaged file: the archive is off, the station runs
            index.close()
            self._off(
                ArchiveAlarm.INDEX,
                f"archive index {self.folder / INDEX_FILE} cannot be read ({exc}); the archive is off. Move the "
                "file aside and restart: a new empty index is made",
            )
            return
        self._index = index

    def _settle(self, index: ArchiveIndex) -> str | None:
        """Make the index and the folder agree again after an unclean stop; what was found, or None.

        A `writing` row is kept if its file is in place, else lost; a `kept` row without its file is lost; a
        frame file that no `kept` row claims (its row evicted just before a kill, or never committed) and
        half-written files in tmp/ are removed, so that nothing on disk is uncounted by the budget.
        """
        leftovers = 0
        for leftover in (self.folder / TMP_FOLDER).iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
                leftovers += 1
        now = utc_now()
        lost: list[str] = []
        sizes: dict[str, int] = {}
        for row in index.writing():
            path = self.folder / row.ref
            if path.is_file():
                sizes[row.result_id] = path.stat().st_size
            else:
                lost.append(row.result_id)
        index.mark_kept(sizes)
        index.mark_gone(lost, FrameState.LOST, LOST_AT_STOP, now)
        kept = index.kept_refs()
        on_disk = {path.relative_to(self.folder).as_posix(): path for path in self._frame_files()}
        missing = [result_id for result_id, ref in kept.items() if ref not in on_disk]
        index.mark_gone(missing, FrameState.LOST, MISSING_AT_START, now)
        claimed = set(kept.values())
        stray = 0
        for ref, path in on_disk.items():
            if ref not in claimed:
                with contextlib.suppress(OSError):
                    path.unlink()
                    stray += 1
        found = [
            (len(sizes), "frame(s) being written when the station stopped were complete"),
            (len(lost), "frame(s) being written were lost (the station stopped before their file was in place)"),
            (len(missing), "kept frame(s) had no file"),
            (stray, "stray frame file(s) no row counted were removed"),
            (leftovers, "half-written file(s) in tmp/ were removed"),
        ]
        if not any(n for n, _ in found):
            return None
        recovered = "at start-up: " + "; ".join(f"{n} {what}" for n, what in found if n)
        log.warning("image archive %s: %s", self.folder, recovered)
        return recovered

    def _frame_files(self) -> Iterator[Path]:
        """The frame files in the archive's own layout (`<day>/<owner>/<name>.png`); nothing else is touched."""
        for day in self.folder.iterdir():
            if not (_DAY_FOLDER.fullmatch(day.name) and day.is_dir()):
                continue
            for owner in day.iterdir():
                if owner.is_dir():
                    yield from (f for f in owner.glob("*.png") if f.is_file())

    def _off(self, kind: ArchiveAlarm, message: str) -> None:
        self._off_reason = message
        self._raise(kind, message)

    # -- the line's side -------------------------------------------------------------------------

    def keep(self, result: Result, frame: Frame) -> str | None:
        """Take the frame for storage if the rules keep it; its image.ref, or None. Never blocks or raises."""
        try:
            return self._keep(result, frame, SOURCE_CAMERA if result.camera_id is not None else SOURCE_UPLOAD)
        except Exception:  # the archive must never cost a part anything
            log.exception("image archive: result %s", result.result_id)
            return None

    def _keep(self, result: Result, frame: Frame, source: str) -> str | None:
        if self._closed or self._index is None:
            self._not_kept(result.result_id, None, self._off_reason or "the archive is closed")
            return None
        if source == SOURCE_UPLOAD and not self.settings.uploads:
            self._not_kept(result.result_id, None, "uploads are not archived here (archive.uploads: false)")
            return None
        why = self.rule.why_not(result)
        if why is not None:
            self._not_kept(result.result_id, "sampled_out", why)
            return None
        with self._lock:
            problem = next(iter(self._alarms.values()), None)
            now_ns = time.monotonic_ns()
            if problem is not None and now_ns < self._next_probe_ns:
                self._counters["skipped_failing"] += 1
                self._remember(result.result_id, f"not kept: the archive is failing ({problem})")
                return None
            self._next_probe_ns = now_ns + self.probe_interval_ns
        job = _Job(result, frame, frame_ref(result, source), source)
        with self._lock:
            self._pending[result.result_id] = job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._pending.pop(result.result_id, None)
            self._not_kept(
                result.result_id,
                "skipped_busy",
                f"not kept: the archive's writer was behind ({self.settings.queue_frames} frames waiting, "
                "archive.queue_frames); the verdict was not delayed",
            )
            return None
        return job.ref

    def _not_kept(self, result_id: str, counter: str | None, why: str) -> None:
        with self._lock:
            if counter is not None:
                self._counters[counter] += 1
            self._remember(result_id, why)

    def _remember(self, result_id: str, why: str) -> None:
        self._reasons[result_id] = why
        if len(self._reasons) > _REASONS_KEPT:
            self._reasons.popitem(last=False)

    # -- the writer ------------------------------------------------------------------------------

    def _run_writer(self) -> None:
        index = self._index
        assert index is not None
        try:  # archive.budget_bytes may be lower than at the last run
            self._evict(index)
        except Exception:
            log.exception("image archive %s: keeping the budget at start-up failed", self.folder)
        while True:
            try:
                first = self._queue.get(timeout=_WAKE_S)
            except queue.Empty:
                continue
            batch: list[_Job] = [] if first is _STOP else [first]
            stopping = first is _STOP
            while len(batch) < _BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                try:
                    self._write(batch)
                except Exception:  # the writer must outlive one bad batch
                    log.exception("image archive %s: writing %d frames failed", self.folder, len(batch))
                finally:
                    with self._lock:
                        for job in batch:
                            self._pending.pop(job.result.result_id, None)
            if stopping and self._queue.empty():
                return

    def _write(self, batch: list[_Job]) -> None:
        index = self._index
        assert index is not None
        try:
            # The rows first: a frame the station was killed while writing is then known as lost (and why).
            index.begin_frames(_new_frame(job) for job in batch)
        except Exception as exc:
            self._lose(batch, ArchiveAlarm.INDEX, f"archive index {index.path} cannot be written ({exc})")
            return
        sizes: dict[str, int] = {}
        failed: dict[ArchiveAlarm, tuple[list[_Job], str]] = {}
        for n, job in enumerate(batch):
            try:
                data = encode_png(job.frame.image)
            except ValueError as exc:
                failed.setdefault(ArchiveAlarm.UNWRITABLE, ([], f"image archive: {exc}"))[0].append(job)
                continue
            try:
                # Room first (for this frame and the batch's frames not yet counted), so that the budget holds
                # while the batch is written, not only after it.
                self._evict(index, room_bytes=sum(sizes.values()) + len(data))
            except Exception as exc:
                failed[ArchiveAlarm.INDEX] = (batch[n:], f"archive index {index.path} cannot be written ({exc})")
                break
            problem = self._write_file(job, data)
            if problem is None:
                sizes[job.result.result_id] = len(data)
            else:
                kind, message = problem
                failed.setdefault(kind, ([], message))[0].append(job)
        try:
            index.mark_kept(sizes)
        except Exception as exc:
            for job in batch:  # written, but no row counts them: they would only take up the budget's disk
                if job.result.result_id in sizes:
                    with contextlib.suppress(OSError):
                        (self.folder / job.ref).unlink()
            self._lose(batch, ArchiveAlarm.INDEX, f"archive index {index.path} cannot be written ({exc})")
            return
        for kind, (jobs, message) in failed.items():
            self._lose(jobs, kind, message)
        with self._lock:
            self._counters["kept"] += len(sizes)
            self._used_bytes += sum(sizes.values())
            self._frames += len(sizes)
        if sizes:
            for kind in [k for k in ArchiveAlarm if k not in failed]:
                self._clear(kind, f"image archive {self.folder}: frames are written again")
        self._evict(index)  # the index itself grew by the batch's rows

    def _write_file(self, job: _Job, data: bytes) -> tuple[ArchiveAlarm, str] | None:
        """Write one encoded frame (tmp file, then rename); None, or the alarm it raises and its message."""
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError as exc:
            return ArchiveAlarm.UNWRITABLE, f"image archive folder {self.folder} cannot be read ({exc.strerror or exc})"
        if free < self.settings.min_free_bytes:
            return ArchiveAlarm.DISK_FULL, (
                f"image archive {self.folder}: {free} bytes free on its disk, under archive.min_free_bytes "
                f"{self.settings.min_free_bytes}; no frame is kept until space is freed"
            )
        target = self.folder / job.ref
        tmp = self.folder / TMP_FOLDER / f"{job.result.result_id}.png"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return ArchiveAlarm.DISK_FULL, f"image archive {self.folder}: the disk is full ({exc.strerror})"
            return ArchiveAlarm.UNWRITABLE, (
                f"image archive {self.folder}: cannot write {target.relative_to(self.folder)} ({exc.strerror or exc}); "
                "check that archive.folder is a writable folder"
            )
        return None

    def _lose(self, jobs: Sequence[_Job], kind: ArchiveAlarm, message: str) -> None:
        with self._lock:
            self._counters["write_errors"] += len(jobs)
            for job in jobs:
                self._remember(job.result.result_id, f"not kept: {message}")
        if self._index is not None:
            with contextlib.suppress(Exception):  # the index may be what failed
                self._index.mark_gone([j.result.result_id for j in jobs], FrameState.LOST, message, utc_now())
        self._raise(kind, message)

    def _evict(self, index: ArchiveIndex, room_bytes: int = 0) -> None:
        """Keep the age limit and the disk budget (frames + index, and room for the index to grow until its next
        checkpoint), leaving `room_bytes` for frames about to be written."""
        budget = self.settings.budget_bytes
        now = utc_now()
        cutoff = now - timedelta(days=self.settings.max_age_days)
        while rows := index.older_than(cutoff, _EVICT_BATCH):
            self._remove(index, rows, f"older than archive.max_age_days ({self.settings.max_age_days:g})", now)
        if time.monotonic_ns() >= self._next_tombstone_prune_ns:
            self._next_tombstone_prune_ns = time.monotonic_ns() + _TOMBSTONE_PRUNE_INTERVAL_NS
            index.forget_tombstones(cutoff)
        while (over := self._used_bytes + index.file_bytes() + index.growth_bytes() + room_bytes - budget) > 0:
            rows = index.eviction_candidates(_EVICT_BATCH)
            if not rows:
                return
            chosen: list[FrameRow] = []
            for row in rows:
                chosen.append(row)
                over -= row.size_bytes
                if over <= 0:
                    break
            self._remove(index, chosen, f"evicted to keep archive.budget_bytes ({self.settings.budget_bytes})", now)

    def _remove(self, index: ArchiveIndex, rows: list[FrameRow], why: str, now: datetime) -> None:
        # The rows first: a kill before the files go leaves stray files (removed at the next start), never a
        # `kept` row without its file.
        index.mark_gone([r.result_id for r in rows], FrameState.EVICTED, f"{why} on {iso_utc(now, 'seconds')}", now)
        for row in rows:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / row.ref).unlink()
        with self._lock:
            self._used_bytes -= sum(r.size_bytes for r in rows)
            self._frames -= len(rows)
            self._counters["evicted"] += len(rows)

    # -- alarms ----------------------------------------------------------------------------------

    def _raise(self, kind: ArchiveAlarm, message: str) -> None:
        with self._lock:
            again = self._alarms.get(kind) == message
            self._alarms[kind] = message
        if again:
            return
        log.error("image archive: %s", message)
        if self.on_alarm is not None:
            try:
                self.on_alarm(kind.value, message)
            except Exception:
                log.exception("image archive: the alarm hook failed")

    def _clear(self, kind: ArchiveAlarm, message: str) -> None:
        with self._lock:
            was = self._alarms.pop(kind, None)
        if was is None:
            return
        log.warning("image archive: %s cleared: %s", kind.value, message)
        if self.on_clear is not None:
            try:
                self.on_clear(kind.value, message)
            except Exception:
                log.exception("image archive: the alarm hook failed")

    # -- looking up ------------------------------------------------------------------------------

    @property
    def index(self) -> ArchiveIndex:
        """The index, for searches and reviews; raises NotKept when the archive is off."""
        if self._index is None:
            raise NotKept("archive_off", f"the image archive is off: {self._off_reason}")
        return self._index

    def frame(self, result_id: str) -> StoredFrame:
        """The stored frame of one result, or NotKept saying why there is none."""
        with self._lock:
            job = self._pending.get(result_id)
        if job is not None:  # not yet written: the frame is still in memory
            return StoredFrame(_pending_row(job), job.frame.image)
        row = self.index.get(result_id)
        if row is None:
            with self._lock:
                why = self._reasons.get(result_id)
            raise NotKept(
                "image_not_kept",
                f"result {result_id}: no frame kept: "
                + (
                    why
                    or "the archive has no record of it (a pass sampled out, a frame still queued for the writer when "
                    "the station stopped, or a result of another station)"
                ),
            )
        if row.state is not FrameState.KEPT:
            raise NotKept(
                "image_not_kept", f"result {result_id}: the frame is gone ({row.state.value}): {row.gone_why}"
            )
        image = cv2.imread(str(self.folder / row.ref), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise NotKept(
                "image_missing", f"result {result_id}: the frame file {self.folder / row.ref} is missing or unreadable"
            )
        return StoredFrame(row, image)

    def reviews(self, result_id: str) -> list[ReviewRow]:
        return self.index.reviews(result_id)

    def count_review(self) -> None:
        with self._lock:
            self._counters["reviews"] += 1

    def status(self) -> ArchiveStatus:
        with self._lock:
            problem = "; ".join(self._alarms.values()) or None
            counters = dict(self._counters)
            used = self._used_bytes
            frames = self._frames
        state = "off" if self._index is None else ("failing" if problem else "ok")
        index_bytes = 0 if self._index is None else self._index.file_bytes()
        return ArchiveStatus(
            state=state,
            problem=problem,
            folder=str(self.folder),
            budget_bytes=self.settings.budget_bytes,
            used_bytes=used + index_bytes,
            frames=frames,
            queue_depth=self._queue.qsize(),
            queue_size=self.settings.queue_frames,
            counters=counters,
            recovered=self._recovered,
        )

    # -- life ------------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every frame taken so far is written (tests, the bench, `close`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return
            time.sleep(0.005)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the index. Frames offered later are not kept."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=_CLOSE_TIMEOUT_S)
        if self._index is not None:
            self._index.close()

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _priority(result: Result) -> int:
    return PRIORITY_PASS if result.verdict is Verdict.PASS else PRIORITY_REJECT


def _new_frame(job: _Job) -> NewFrame:
    result = job.result
    return NewFrame(
        result_id=result.result_id,
        ref=job.ref,
        source=job.source,
        camera_id=result.camera_id,
        part_id=result.part_id,
        recipe_id=result.recipe_id,
        verdict=result.verdict.value,
        decided_at=result.decided_at,
        model_sha256=result.model_sha256,
        priority=_priority(result),
        payload=result.stamped(station=result.station, image_ref=job.ref).to_payload(),
    )


def _pending_row(job: _Job) -> FrameRow:
    new = _new_frame(job)
    return FrameRow(
        result_id=new.result_id,
        ref=new.ref,
        state=FrameState.WRITING,
        source=new.source,
        camera_id=new.camera_id,
        part_id=new.part_id,
        recipe_id=new.recipe_id,
        verdict=new.verdict,
        decided_at=new.decided_at,
        model_sha256=new.model_sha256,
        size_bytes=0,
        priority=new.priority,
        payload=new.payload,
        gone_why=None,
        gone_at=None,
    )
