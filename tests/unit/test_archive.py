"""The image archive on a real folder and a real SQLite index: what it keeps, its budget, and how it fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.archive.archive import ImageArchive, KeepRule, NotKept, encode_png
from lineinspect.line.archive.index import INDEX_FILE, WAL_BOUND_BYTES, FrameState
from lineinspect.line.archive.settings import ArchiveSettings
from tests.helpers.line_results import finding, line_result
from tests.helpers.waiting import wait_for


class Alarms:
    """The station's alarm table as the archive sees it: (kind, message) raised and cleared."""

    def __init__(self) -> None:
        self.raised: list[tuple[str, str]] = []
        self.cleared: list[tuple[str, str]] = []

    def on_alarm(self, kind: str, message: str) -> None:
        self.raised.append((kind, message))

    def on_clear(self, kind: str, message: str) -> None:
        self.cleared.append((kind, message))


def settings(**overrides: object) -> ArchiveSettings:
    values: dict[str, object] = {"min_free_bytes": 0, "pass_first_count": 0, "pass_sample_every": 1}
    values.update(overrides)
    return ArchiveSettings.model_validate(values)


@pytest.fixture
def alarms() -> Alarms:
    return Alarms()


def open_archive(folder: Path, alarms: Alarms, **overrides: object) -> ImageArchive:
    return ImageArchive(
        settings(**overrides), folder=folder, on_alarm=alarms.on_alarm, on_clear=alarms.on_clear, probe_interval_s=0
    )


@pytest.fixture
def archive(tmp_path: Path, alarms: Alarms) -> Iterator[ImageArchive]:
    with open_archive(tmp_path / "archive", alarms) as a:
        yield a


def frame_of(seed: int = 0, shape: tuple[int, ...] = (48, 64, 3)) -> Frame:
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return Frame(image=image, camera_id="cam1")


def result(verdict: Verdict = Verdict.FAIL, **kw: object) -> Result:
    defects = (finding("scratch"),) if verdict is Verdict.FAIL else ()
    return line_result(verdict=verdict, defects=defects, decided_at=utc_now(), **kw)  # type: ignore[arg-type]


# --- what is kept ----------------------------------------------------------------------------------


def test_keep_rule_keeps_every_reject_the_first_passes_and_then_one_in_n_when_a_line_runs() -> None:
    rule = KeepRule(pass_sample_every=5, pass_first_count=3)
    passes = [rule.why_not(result(Verdict.PASS, part_id=f"p{i}")) is None for i in range(13)]
    assert passes == [True, True, True, False, False, False, False, True, False, False, False, False, True]
    assert rule.why_not(result(Verdict.FAIL)) is None and rule.why_not(result(Verdict.UNDECIDED)) is None
    why = rule.why_not(result(Verdict.PASS))
    assert why is not None and "1 in 5" in why and "archive.pass_sample_every" in why


def test_keep_rule_keeps_the_first_passes_again_after_a_changeover() -> None:
    rule = KeepRule(pass_sample_every=0, pass_first_count=2)
    kept = [rule.why_not(result(Verdict.PASS, recipe=r)) is None for r in ["a", "a", "a", "b", "b", "b"]]
    assert kept == [True, True, False, True, True, False]


def test_a_kept_frame_reads_back_pixel_for_pixel_and_a_sampled_out_one_says_why(tmp_path: Path, alarms: Alarms) -> None:
    with open_archive(tmp_path / "a", alarms, pass_sample_every=0) as archive:
        failed, passed = result(Verdict.FAIL, part_id="A123"), result(Verdict.PASS)
        frame = frame_of(1)
        ref = archive.keep(failed, frame)
        assert ref == f"{failed.decided_at:%Y-%m-%d}/cam1/{failed.result_id}.png"
        assert archive.keep(passed, frame_of(2)) is None
        archive.flush()
        stored = archive.frame(failed.result_id)
        assert np.array_equal(stored.image, frame.image)
        assert (tmp_path / "a" / ref).is_file()
        assert stored.row.part_id == "A123" and stored.row.payload["image"]["ref"] == ref
        with pytest.raises(NotKept, match="sampled out: a passed part"):
            archive.frame(passed.result_id)
        with pytest.raises(NotKept, match="no record of it"):
            archive.frame("no-such-result")
    assert not alarms.raised


def test_png_keeps_16_bit_and_gray_frames_losslessly() -> None:
    for image in (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, np.eye(5, dtype=np.uint8) * 255):
        decoded = cv2.imdecode(np.frombuffer(encode_png(image), np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.dtype == image.dtype and np.array_equal(decoded, image)


def test_uploads_are_archived_under_upload_unless_switched_off(tmp_path: Path, alarms: Alarms) -> None:
    with open_archive(tmp_path / "a", alarms) as archive:
        upload = result(Verdict.FAIL, camera=None)
        assert (
            archive.keep(upload, Frame(image=frame_of().image))
            == f"{upload.decided_at:%Y-%m-%d}/upload/{upload.result_id}.png"
        )
        archive.flush()
        assert archive.frame(upload.result_id).row.source == "upload"
    with open_archive(tmp_path / "b", alarms, uploads=False) as archive:
        upload = result(Verdict.FAIL, camera=None)
        assert archive.keep(upload, Frame(image=frame_of().image)) is None
        with pytest.raises(NotKept, match=r"archive\.uploads: false"):
            archive.frame(upload.result_id)


# --- bounds --------------------------------------------------------------------------------------


def test_the_budget_evicts_passes_before_rejects_oldest_first(tmp_path: Path, alarms: Alarms) -> None:
    shape = (160, 160, 3)  # noise: about 77 kB a frame
    frame_bytes = len(encode_png(frame_of(0, shape).image))
    # Room for the index (its file, and its WAL as large as it may grow) and about ten frames.
    budget = WAL_BOUND_BYTES + 300_000 + 10 * frame_bytes
    with open_archive(tmp_path / "a", alarms, budget_bytes=budget) as archive:
        start = utc_now() - timedelta(hours=1)
        order = []
        for i in range(24):
            verdict = Verdict.PASS if i % 2 == 0 else Verdict.FAIL
            r = line_result(verdict=verdict, decided_at=start + timedelta(seconds=i), part_id=f"p{i}")
            assert archive.keep(r, frame_of(i, shape)) is not None
            order.append(r)
            archive.flush()
            assert archive.status().used_bytes <= budget
        status = archive.status()
        kept = {row.part_id for row in archive.index.search(limit=None)}
        # Every pass went before any fail did; the fails that went are the oldest ones.
        assert not any(int(p[1:]) % 2 == 0 for p in kept if p is not None and int(p[1:]) < 20)
        fails_kept = sorted(int(p[1:]) for p in kept if p is not None and int(p[1:]) % 2 == 1)
        assert fails_kept == list(range(fails_kept[0], 24, 2))
        assert status.counters["evicted"] == 24 - status.frames
        with pytest.raises(NotKept, match=r"evicted to keep archive\.budget_bytes"):
            archive.frame(order[0].result_id)
    assert not alarms.raised


def test_frames_past_the_age_limit_are_removed(archive: ImageArchive, tmp_path: Path) -> None:
    old = line_result(verdict=Verdict.FAIL, decided_at=utc_now() - timedelta(days=40))
    new = result(Verdict.FAIL)
    ref = archive.keep(old, frame_of())
    archive.keep(new, frame_of())
    archive.flush()
    assert ref is not None and not (tmp_path / "archive" / ref).exists()
    with pytest.raises(NotKept, match=r"older than archive\.max_age_days"):
        archive.frame(old.result_id)
    archive.frame(new.result_id)


def test_a_writer_that_cannot_keep_up_skips_frames_and_never_blocks_the_caller(tmp_path: Path, alarms: Alarms) -> None:
    with open_archive(tmp_path / "a", alarms, queue_frames=1) as archive:
        big = [frame_of(i, (800, 800, 3)) for i in range(3)]  # noise: slow to compress
        results = [result(Verdict.FAIL) for _ in range(40)]
        refs = [archive.keep(r, big[i % 3]) for i, r in enumerate(results)]
        skipped = [r for r, ref in zip(results, refs, strict=True) if ref is None]
        assert skipped, "40 large frames offered at once, one queue slot: some must be skipped"
        assert archive.status().counters["skipped_busy"] == len(skipped)
        archive.flush(timeout_s=30)
        with pytest.raises(NotKept, match="writer was behind"):
            archive.frame(skipped[0].result_id)
        for r, ref in zip(results, refs, strict=True):
            if ref is not None:
                archive.frame(r.result_id)
    assert not alarms.raised


# --- failures --------------------------------------------------------------------------------------


def test_a_full_disk_is_an_alarm_frames_are_not_kept_and_it_clears_once_there_is_room(
    tmp_path: Path, alarms: Alarms
) -> None:
    with open_archive(tmp_path / "a", alarms, min_free_bytes=2**62) as archive:
        first = result(Verdict.FAIL)
        archive.keep(first, frame_of())
        wait_for(lambda: bool(alarms.raised), what="disk_full alarm")
        assert alarms.raised[0][0] == "disk_full" and "archive.min_free_bytes" in alarms.raised[0][1]
        assert archive.status().state == "failing" and "bytes free" in (archive.status().problem or "")
        with pytest.raises(NotKept, match=r"under archive\.min_free_bytes"):
            archive.frame(first.result_id)
        archive.settings.min_free_bytes = 0
        later = result(Verdict.FAIL)
        assert archive.keep(later, frame_of()) is not None
        archive.flush()
        wait_for(lambda: bool(alarms.cleared), what="alarm cleared")
        assert alarms.cleared[0][0] == "disk_full" and archive.status().state == "ok"
        archive.frame(later.result_id)


def test_a_folder_that_cannot_be_created_turns_the_archive_off_with_an_alarm(tmp_path: Path, alarms: Alarms) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with open_archive(tmp_path / "blocked" / "archive", alarms) as archive:
        failed = result(Verdict.FAIL)
        assert archive.keep(failed, frame_of()) is None
        assert alarms.raised[0][0] == "unwritable" and "archive.folder" in alarms.raised[0][1]
        assert archive.status().state == "off"
        with pytest.raises(NotKept, match="cannot be created"):
            archive.frame(failed.result_id)


def test_a_folder_that_becomes_unwritable_is_an_alarm_and_the_next_frames_say_why(
    archive: ImageArchive, alarms: Alarms, tmp_path: Path
) -> None:
    first = result(Verdict.FAIL)
    archive.keep(first, frame_of())
    archive.flush()
    day = tmp_path / "archive" / f"{first.decided_at:%Y-%m-%d}"
    for path in (day / "cam1").iterdir():
        path.unlink()
    (day / "cam1").rmdir()
    (day / "cam1").write_text("not a folder")
    second = result(Verdict.FAIL)
    archive.keep(second, frame_of())
    wait_for(lambda: bool(alarms.raised), what="unwritable alarm")
    assert alarms.raised[0][0] == "unwritable"
    with pytest.raises(NotKept, match="writable folder"):
        archive.frame(second.result_id)
    with pytest.raises(NotKept, match="missing or unreadable"):
        archive.frame(first.result_id)


def test_a_corrupt_index_turns_the_archive_off_with_an_alarm_saying_what_to_do(tmp_path: Path, alarms: Alarms) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    with open_archive(folder, alarms) as archive:
        assert archive.keep(result(Verdict.FAIL), frame_of()) is None
        kind, message = alarms.raised[0]
        assert kind == "index" and "Move the file aside" in message
        assert archive.status().state == "off"


def test_frames_survive_a_restart_and_rows_left_writing_are_settled(tmp_path: Path, alarms: Alarms) -> None:
    folder = tmp_path / "a"
    kept = result(Verdict.FAIL)
    with open_archive(folder, alarms) as archive:
        archive.keep(kept, frame_of(3))
        archive.flush()
        # As a SIGKILL leaves them: a row committed as writing whose file never came, and a stray tmp file.
        from lineinspect.line.archive.archive import _Job, _new_frame

        ghost = result(Verdict.FAIL)
        archive.index.begin_frames([_new_frame(_Job(ghost, frame_of(), "2000-01-01/cam1/ghost.png", "camera"))])
    (folder / "tmp" / "half.png").write_bytes(b"\x89PNG half")
    with open_archive(folder, alarms) as archive:
        assert np.array_equal(archive.frame(kept.result_id).image, frame_of(3).image)
        with pytest.raises(NotKept, match="stopped before the frame was written"):
            archive.frame(ghost.result_id)
        assert archive.index.count(FrameState.WRITING) == 0
        assert not list((folder / "tmp").iterdir())
        assert archive.status().frames == 1


def test_results_that_are_undecided_are_kept_like_fails(archive: ImageArchive) -> None:
    undecided = line_result(verdict=Verdict.UNDECIDED, kind=UndecidedKind.LATE, decided_at=utc_now())
    assert archive.keep(undecided, frame_of()) is not None
    archive.flush()
    assert archive.frame(undecided.result_id).row.verdict == "undecided"


def test_a_restart_removes_stray_frame_files_and_lists_a_kept_frame_without_its_file_as_lost(
    tmp_path: Path, alarms: Alarms
) -> None:
    folder = tmp_path / "a"
    gone, kept, evicted = result(), result(), result()
    with open_archive(folder, alarms) as archive:
        refs = {r.result_id: archive.keep(r, frame_of(i)) for i, r in enumerate((gone, kept, evicted))}
        archive.flush()
        # A kill between an eviction's commit and the removal of its file leaves the file behind.
        archive.index.mark_gone(
            [evicted.result_id], FrameState.EVICTED, "evicted to keep archive.budget_bytes", utc_now()
        )
    (folder / str(refs[gone.result_id])).unlink()  # removed by hand while the station was stopped
    stray = folder / "2001-02-03" / "cam1" / "nobody.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(encode_png(frame_of(9).image))
    not_ours = folder / "notes" / "sketch.png"  # outside the archive's layout: never touched
    not_ours.parent.mkdir()
    not_ours.write_bytes(b"mine")
    with open_archive(folder, alarms) as archive:
        status = archive.status()
        with pytest.raises(NotKept, match="its file was missing when the archive started"):
            archive.frame(gone.result_id)
        assert np.array_equal(archive.frame(kept.result_id).image, frame_of(1).image)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert on_disk == sorted([str(refs[kept.result_id]), "notes/sketch.png"])
    assert status.frames == 1 and status.used_bytes - (folder / INDEX_FILE).stat().st_size >= 0
    assert status.recovered is not None
    assert "1 kept frame(s) had no file" in status.recovered and "2 stray frame file(s)" in status.recovered
    assert status.to_payload()["recovered"] == status.recovered


def test_a_clean_restart_reports_nothing_recovered(tmp_path: Path, alarms: Alarms) -> None:
    folder = tmp_path / "a"
    with open_archive(folder, alarms) as archive:
        archive.keep(result(), frame_of())
        archive.flush()
    with open_archive(folder, alarms) as archive:
        assert archive.status().recovered is None and archive.status().frames == 1


def test_the_budget_holds_while_a_batch_is_written_not_only_after_it(tmp_path: Path, alarms: Alarms) -> None:
    """Room is made before each frame is written: bytes on disk never exceed the budget, even mid-batch (for a
    budget larger than one batch of frames, as any real one is)."""
    budget = 2_000_000
    seen: list[int] = []

    def written_all(archive: ImageArchive, count: int) -> bool:
        seen.append(_bytes_on_disk(tmp_path / "a"))
        return archive.status().counters["kept"] == count

    with open_archive(tmp_path / "a", alarms, budget_bytes=budget, queue_frames=64) as archive:
        for i in range(60):
            archive.keep(result(), frame_of(i, (160, 200, 3)))  # ~96 kB of noise each
        wait_for(lambda: written_all(archive, 60), 10, "60 frames written")
        status = archive.status()
    most = max(seen)
    assert status.counters["evicted"] > 0
    # A walk of the folder can meet a frame twice (in tmp/ and in its place, renamed meanwhile) and the index
    # grows a little after each eviction: two frames' worth of slack. Writing before evicting was ~10 frames over.
    assert most <= budget + 2 * 160 * 200 * 3, f"{most} bytes on disk, budget {budget}"
    assert status.used_bytes <= budget


def _bytes_on_disk(folder: Path) -> int:
    """Frames and the index as the budget counts them (SQLite's small -shm memory map is not data)."""
    total = 0
    for path in folder.rglob("*"):
        if path.name.endswith("-shm"):
            continue
        with contextlib.suppress(FileNotFoundError):  # removed by the writer meanwhile
            total += path.stat().st_size if path.is_file() else 0
    return total
