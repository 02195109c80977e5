"""The image archive of a real `lineinspect run` SIGKILLed while it writes frames, three times in a row.

The station (folder camera of large noisy rejects, so that each frame takes the writer a while; a real
Mosquitto; a disk budget of a few frames, so that eviction runs too) is fed parts over HTTP and killed once
its writer is behind. Before each restart the test reads what the kill left on disk and in the index; after
it, the station must have made them agree (every `kept` row has its file, no frame file is left that no row
counts, no row stays `writing`), count the right bytes, say what it found in /v1/status, answer a 404 that
says why for a frame lost by the kill, and go on inspecting and keeping new parts.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_process import start_station, trigger
from tests.helpers.station_runtime import write_line_station
from tests.helpers.waiting import wait_for
from tests.integration.test_http_inspections import assert_error

KILLS = 3
BUDGET_BYTES = 24_000_000  # about six of the frames below: eviction runs in every run
ARCHIVE = {
    "folder": "var/archive",
    "min_free_bytes": 0,
    "pass_first_count": 0,
    "pass_sample_every": 0,
    "budget_bytes": BUDGET_BYTES,
    "queue_frames": 8,
}
FEED_TIMEOUT_S = 10


def write_noisy_rejects(folder: Path, count: int = 2) -> None:
    """Parts of 1280×960 dark noise (hard to compress: ~3.5 MB of PNG each) with a bright spot: all fail."""
    for old in folder.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(7)
    for i in range(count):
        image = rng.integers(0, 60, (960, 1280, 3), dtype=np.uint8)
        image[300:500, 400:600] = 255
        assert cv2.imwrite(str(folder / f"reject{i}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 0])


@dataclass(frozen=True)
class LeftByKill:
    """The archive folder as the kill left it, read before the station starts again."""

    kept: dict[str, tuple[str, int]]  # result_id → (ref, bytes) of rows committed as kept
    writing: dict[str, str]  # result_id → ref of rows committed as writing
    files: dict[str, int]  # ref → size of the frame files on disk
    tmp_files: int

    @property
    def complete(self) -> set[str]:
        """Rows left writing whose file was already in place: kept at the next start."""
        return {result_id for result_id, ref in self.writing.items() if ref in self.files}

    @property
    def lost(self) -> set[str]:
        return set(self.writing) - self.complete

    @property
    def kept_after(self) -> dict[str, str]:
        kept = {result_id: ref for result_id, (ref, _) in self.kept.items()}
        return kept | {result_id: self.writing[result_id] for result_id in self.complete}

    @property
    def stray(self) -> set[str]:
        return set(self.files) - set(self.kept_after.values())

    @property
    def kept_bytes(self) -> int:
        return sum(size for _, size in self.kept.values()) + sum(self.files[self.writing[r]] for r in self.complete)


def left_by_kill(folder: Path) -> LeftByKill:
    conn = sqlite3.connect(folder / "index.sqlite")
    try:
        rows = conn.execute("SELECT result_id, ref, state, bytes FROM frames").fetchall()
    finally:
        conn.close()
    return LeftByKill(
        kept={r: (ref, size) for r, ref, state, size in rows if state == "kept"},
        writing={r: ref for r, ref, state, _ in rows if state == "writing"},
        files={p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.glob("????-??-??/*/*.png")},
        tmp_files=len(list((folder / "tmp").iterdir())),
    )


def index_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "index.sqlite", folder / "index.sqlite-wal") if p.exists())


def archive_status(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/v1/status", timeout=5).json()["archive"]
    return status


def feed_until_the_writer_is_behind(url: str, run: int) -> int:
    """Trigger parts until this run kept a few frames and more wait for the writer; the parts sent."""
    sent = 0
    deadline = time.monotonic() + FEED_TIMEOUT_S
    while True:
        for _ in range(3):
            sent += 1
            trigger(url, f"R{run}-{sent}")
        archive = archive_status(url)
        if archive["counters"]["kept"] >= 2 and archive["queue_depth"] >= 2:
            return sent
        assert time.monotonic() < deadline, f"the writer never fell behind in {FEED_TIMEOUT_S} s: {archive}"


def check_the_start_settled(url: str, folder: Path, left: LeftByKill) -> None:
    """What the restarted station shows of the kill before it (no part triggered yet in this run)."""
    status = archive_status(url)
    assert status["state"] == "ok" and status["problem"] is None, status
    assert status["frames"] == len(left.kept_after)
    # Bytes counted = the kept frames' files + the index, nothing else (the index may still be checkpointing).
    wait_for(
        lambda: archive_status(url)["used_bytes"] == left.kept_bytes + index_bytes(folder),
        5,
        f"used_bytes = {left.kept_bytes} bytes of frames + the index",
    )
    assert status["used_bytes"] <= BUDGET_BYTES
    recovered = status["recovered"]
    expected = [
        (len(left.complete), "frame(s) being written when the station stopped were complete"),
        (len(left.lost), "frame(s) being written were lost"),
        (len(left.stray), "stray frame file(s) no row counted were removed"),
        (left.tmp_files, "half-written file(s) in tmp/ were removed"),
    ]
    if not any(n for n, _ in expected):
        assert recovered is None
        return
    assert recovered is not None and recovered.startswith("at start-up: ")
    for n, what in expected:
        assert (f"{n} {what}" in recovered) == (n > 0), (n, what, recovered)
    for result_id in sorted(left.lost)[:2]:
        assert_error(
            httpx.get(f"{url}/v1/results/{result_id}/image", timeout=5),
            404,
            "image_not_kept",
            "the frame is gone (lost)",
            "the station stopped before the frame was written",
        )


def check_folder_and_index_agree(folder: Path) -> LeftByKill:
    """After a clean stop: one file per kept row, of its size; no other frame file; nothing left writing."""
    state = left_by_kill(folder)
    assert state.writing == {} and state.tmp_files == 0
    assert {ref: size for ref, size in state.kept.values()} == state.files
    assert sum(state.files.values()) + index_bytes(folder) <= BUDGET_BYTES
    return state


def test_a_station_killed_while_it_writes_frames_comes_back_with_its_archive_in_order(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="b", archive=ARCHIVE, line={"budget_ms": 5000})
    write_noisy_rejects(tmp_path / "parts")
    folder = tmp_path / "var" / "archive"
    left: LeftByKill | None = None
    mid_write = lost = 0
    for run in range(KILLS + 1):
        proc, url = start_station(tmp_path)
        try:
            if left is not None:
                check_the_start_settled(url, folder, left)
            if run == KILLS:
                break
            feed_until_the_writer_is_behind(url, run)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        left = left_by_kill(folder)
        assert all(ref in left.files for ref, _ in left.kept.values()), "a kept row lost its file at the kill"
        mid_write += bool(left.writing)
        lost += len(left.lost)
    # The last run: new parts are inspected and kept as before, then a clean stop.
    try:
        for i in range(3):
            assert trigger(url, f"NEW-{i}") is not None

        def new_parts_kept() -> bool:
            rows = [httpx.get(f"{url}/v1/results", params={"part_id": f"NEW-{i}"}).json() for i in range(3)]
            return all(r["count"] == 1 and r["results"][0]["image"]["ref"] for r in rows)

        wait_for(new_parts_kept, 15, "the new parts inspected, with an image.ref")
        new = httpx.get(f"{url}/v1/results", params={"part_id": "NEW-2"}).json()["results"][0]
        assert new["verdict"] == "fail"
        wait_for(
            lambda: httpx.get(f"{url}/v1/results/{new['result_id']}/image").status_code == 200, 10, "the frame served"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    final = check_folder_and_index_agree(folder)
    assert new["image"]["ref"] in final.files
    # The kills came while frames were being written, not between batches.
    assert mid_write >= 2, f"only {mid_write} of {KILLS} kills found frames being written"
    assert lost >= 1, "no kill lost a frame being written"
