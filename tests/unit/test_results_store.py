"""ResultStore: filters, paging, the size bound, threads, restarts and unusable files."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.results_store import ResultStore, ResultStoreError
from tests.helpers.line_results import T0, finding, line_result

MINUTE = timedelta(minutes=1)


@pytest.fixture
def store() -> ResultStore:
    with ResultStore(":memory:", retain_rows=1000) as s:
        yield s


# Part n is decided n minutes after T0 with station sequence n + 1.
LINE = [
    ("cam1", Verdict.PASS),
    ("cam2", Verdict.PASS),
    ("cam1", Verdict.PASS),
    ("cam1", Verdict.FAIL),
    ("cam1", Verdict.PASS),
    ("cam2", Verdict.PASS),
    ("cam1", Verdict.FAIL),
    ("cam2", Verdict.PASS),
    ("cam2", Verdict.UNDECIDED),
    ("cam2", Verdict.PASS),
]


def fill_line(store: ResultStore) -> None:
    """LINE (fails have a counting scratch and a dent within limits), then two uploads: a stain fail and a pass."""
    for n, (camera, verdict) in enumerate(LINE):
        defects = (finding("scratch"), finding("dent", counts=False)) if verdict is Verdict.FAIL else ()
        store.add(
            line_result(
                camera=camera,
                verdict=verdict,
                defects=defects,
                decided_at=T0 + n * MINUTE,
                sequence=n + 1,
                part_id=f"p{n}",
            )
        )
    store.add(line_result(camera=None, verdict=Verdict.FAIL, defects=(finding("stain"),), decided_at=T0 + 10 * MINUTE))
    store.add(line_result(camera=None, decided_at=T0 + 11 * MINUTE))


def part_ids(payloads: list[dict]) -> list[str | None]:
    return [p["part_id"] for p in payloads]


def test_query_returns_newest_first_with_the_published_payload(store: ResultStore) -> None:
    result = line_result(part_id="a", sequence=7, defects=(finding("scratch"),), verdict=Verdict.FAIL)
    store.add(result)
    store.add(line_result(part_id="b", sequence=8))
    rows = store.query()
    assert part_ids(rows) == ["b", "a"]
    assert rows[1] == result.to_payload()


def test_query_filters_by_camera_verdict_source_and_time(store: ResultStore) -> None:
    fill_line(store)
    assert part_ids(store.query(camera="cam2")) == ["p9", "p8", "p7", "p5", "p1"]
    assert part_ids(store.query(verdict="fail", source="camera")) == ["p6", "p3"]
    assert part_ids(store.query(verdict=[Verdict.FAIL, Verdict.UNDECIDED], camera="cam2")) == ["p8"]
    assert len(store.query(source="upload")) == 2
    assert all(p["camera_id"] is None for p in store.query(source="upload"))
    # since inclusive, until exclusive
    assert part_ids(store.query(since=T0 + 2 * MINUTE, until=T0 + 5 * MINUTE)) == ["p4", "p3", "p2"]


def test_query_pages_by_offset_and_by_sequence(store: ResultStore) -> None:
    fill_line(store)
    first = store.query(source="camera", limit=4)
    second = store.query(source="camera", limit=4, offset=4)
    assert part_ids(first) == ["p9", "p8", "p7", "p6"]
    assert part_ids(second) == ["p5", "p4", "p3", "p2"]
    assert part_ids(store.query(before_sequence=first[-1]["sequence"], limit=4)) == part_ids(second)


def test_query_refuses_bad_arguments_with_a_message(store: ResultStore) -> None:
    with pytest.raises(ValueError, match="limit must be 1–1000"):
        store.query(limit=0)
    with pytest.raises(ValueError, match="'maybe' is not a valid Verdict"):
        store.query(verdict="maybe")
    with pytest.raises(ValueError, match="has no time zone"):
        store.query(since=datetime(2024, 5, 1, 6, 0))  # noqa: DTZ001 - the naive time is the bad input
    with pytest.raises(ValueError, match="source must be"):
        store.query(source="plc")


def test_get_finds_a_result_by_id_and_none_when_unknown(store: ResultStore) -> None:
    result = line_result(part_id="x")
    store.add(result)
    assert store.get(result.result_id) == result.to_payload()
    assert store.get("no-such-id") is None


def test_add_ignores_a_duplicate_result_id(store: ResultStore) -> None:
    result = line_result(defects=(finding("scratch"),), verdict=Verdict.FAIL)
    store.add(result)
    store.add(result)
    assert store.count() == 1
    assert store.summary()["defect_pareto"][0]["parts"] == 1


def test_summary_gives_yield_per_camera_and_the_defect_pareto(store: ResultStore) -> None:
    fill_line(store)
    for _ in range(2):
        store.add(line_result(camera="cam1", verdict=Verdict.FAIL, defects=(finding("dent"),), decided_at=T0))
    summary = store.summary()
    assert summary["total"] == 14
    assert summary["by_verdict"] == {"pass": 8, "fail": 5, "undecided": 1}
    assert summary["yield_pct"] == 57.14
    cameras = {(c["camera_id"], c["source"]): c for c in summary["cameras"]}
    assert cameras[("cam1", "camera")]["total"] == 7
    assert cameras[("cam1", "camera")]["yield_pct"] == 42.86
    assert cameras[("cam2", "camera")] == {
        "camera_id": "cam2",
        "source": "camera",
        "total": 5,
        "pass": 4,
        "fail": 0,
        "undecided": 1,
        "yield_pct": 80.0,
    }
    assert cameras[(None, "upload")]["fail"] == 1
    # Only defects that counted against a part; most parts first; cumulative share of rejecting defects.
    assert [(p["class"], p["parts"], p["cumulative_pct"]) for p in summary["defect_pareto"]] == [
        ("dent", 2, 40.0),
        ("scratch", 2, 80.0),
        ("stain", 1, 100.0),
    ]


def test_summary_counts_only_the_window(store: ResultStore) -> None:
    fill_line(store)
    summary = store.summary(since=T0 + 6 * MINUTE, until=T0 + 9 * MINUTE)
    assert summary["total"] == 3
    assert summary["by_verdict"] == {"pass": 1, "fail": 1, "undecided": 1}
    assert [p["class"] for p in summary["defect_pareto"]] == ["scratch"]
    assert summary["since"] == "2024-05-01T06:06:00Z"
    empty = store.summary(since=T0 + 60 * MINUTE)
    assert empty["total"] == 0 and empty["yield_pct"] is None and empty["defect_pareto"] == []


def test_store_keeps_about_retain_rows_newest_results(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.db", retain_rows=50, prune_slack_rows=10) as store:
        for n in range(300):
            store.add(line_result(part_id=f"p{n}", sequence=n, defects=(finding("scratch"),), verdict=Verdict.FAIL))
            assert store.count() <= 60
        newest = store.query(limit=1000)
        assert 50 <= len(newest) <= 60
        assert newest[0]["part_id"] == "p299"
        assert store.summary()["defect_pareto"][0]["defects"] == len(newest)  # defect rows pruned with results


def test_store_file_stops_growing_once_the_bound_is_reached(tmp_path: Path) -> None:
    path = tmp_path / "r.db"

    def run_line(parts: int) -> int:
        """Add `parts` failed parts; the file's size in bytes after a clean close."""
        with ResultStore(path, retain_rows=200) as store:
            for _ in range(parts):
                store.add(line_result(defects=(finding("scratch"), finding("dent")), verdict=Verdict.FAIL))
                # A read after each part writes it at once: the peak does not depend on the writer's timing.
                store.count()
        return path.stat().st_size

    at_bound = run_line(600)
    later = run_line(1800)
    assert later <= at_bound * 1.2, (at_bound, later)


def test_store_drops_results_older_than_retain_days(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with ResultStore(tmp_path / "r.db", retain_rows=None, retain_days=1) as store:
        store.add(line_result(part_id="old", decided_at=now - timedelta(days=2)))
        store.add(line_result(part_id="new", decided_at=now))
    # Reopening prunes at once as well.
    with ResultStore(tmp_path / "r.db", retain_rows=None, retain_days=1) as store:
        assert part_ids(store.query()) == ["new"]


def test_store_keeps_results_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "station" / "results.db"
    with ResultStore(path) as store:
        for n in range(3):
            store.add(line_result(part_id=f"p{n}", sequence=n))
    with ResultStore(path) as store:
        assert part_ids(store.query()) == ["p2", "p1", "p0"]
        store.add(line_result(part_id="after"))
        assert part_ids(store.query(limit=2)) == ["after", "p2"]
        assert store.count() == 4


def test_store_takes_results_from_many_threads_while_queried(store: ResultStore) -> None:
    errors: list[BaseException] = []

    def camera_worker(camera: str) -> None:
        try:
            for n in range(150):
                store.add(line_result(camera=camera, part_id=f"{camera}-{n}"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def dashboard() -> None:
        try:
            for _ in range(50):
                store.query(limit=20)
                store.summary()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=camera_worker, args=(f"cam{i}",)) for i in range(4)]
    threads.append(threading.Thread(target=dashboard))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert store.count() == 600
    assert len({p["result_id"] for p in store.query(limit=1000)}) == 600
    assert {c["camera_id"]: c["total"] for c in store.summary()["cameras"]} == {f"cam{i}": 150 for i in range(4)}


def test_store_refuses_a_folder_as_its_file(tmp_path: Path) -> None:
    with pytest.raises(ResultStoreError, match=r"is a folder; give a file path such as .*results\.db"):
        ResultStore(tmp_path)


def test_store_says_when_its_folder_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(ResultStoreError, match=r"cannot create its folder .*plain-file.*choose a writable path"):
        ResultStore(tmp_path / "plain-file" / "results.db")


def test_store_says_what_to_do_with_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_bytes(b"this is a camera image, not a database" * 200)
    with pytest.raises(ResultStoreError, match=r"not a readable results database.*Move the file aside"):
        ResultStore(path)


def test_store_refuses_to_grow_without_a_bound() -> None:
    with pytest.raises(ValueError, match="unbounded results store fills the disk"):
        ResultStore(":memory:", retain_rows=None)


def test_results_added_without_reads_are_written_by_the_writer_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        for n in range(200):
            store.add(line_result(part_id=f"p{n}"))
    with ResultStore(path) as store:
        assert store.count() == 200
        assert store.query(limit=1)[0]["part_id"] == "p199"


def test_store_counts_results_it_cannot_queue_while_the_disk_stalls(caplog: pytest.LogCaptureFixture) -> None:
    with ResultStore(":memory:", max_pending=3) as stalled:
        with stalled._lock:  # the writer is stuck as on a stalled disk
            for n in range(10):
                stalled.add(line_result(part_id=f"p{n}"))
        # The writer may have taken a batch off the queue before it blocked on the lock; at most
        # max_pending (3) wait in the queue, so most of the ten cannot be kept.
        assert 0 < stalled.dropped <= 7
        # The batch the writer held when it stalled lands once the disk is back.
        deadline = time.monotonic() + 2.0
        while stalled.count() != 10 - stalled.dropped and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stalled.count() == 10 - stalled.dropped
    assert "results not kept for /v1/results" in caplog.text and "They still go to the MES" in caplog.text


def test_adding_to_a_closed_store_says_so(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    store.close()
    with pytest.raises(ResultStoreError, match="is closed"):
        store.add(line_result())
