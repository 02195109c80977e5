"""Outbox: order, sequence across restarts, acknowledgement, the bound and its alarm, bad files."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.synchronize
import sqlite3
import threading
from pathlib import Path

import pytest

from lineinspect.core.result import Result
from lineinspect.line.outbox import Outbox, OutboxError, OutboxFullError
from tests.helpers.results import make_result
from tests.helpers.small_disk import fill, small_disk

TOPIC = "acme/plant1/area1/line1/cell1/lineinspect/station1/result"


def test_append_stamps_sequence_into_stored_payload(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        stamped = outbox.append(make_result(1), TOPIC)
        [entry] = outbox.pending(10)
    assert stamped.sequence == 1
    assert entry.sequence == 1
    assert entry.topic == TOPIC
    assert entry.result_id == stamped.result_id
    assert json.loads(entry.payload)["sequence"] == 1


def test_pending_returns_results_in_order_after_a_given_sequence(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        ids = [outbox.append(make_result(i), TOPIC).result_id for i in range(10)]
        first = outbox.pending(4)
        rest = outbox.pending(100, after_sequence=first[-1].sequence)
    assert [e.sequence for e in first] == [1, 2, 3, 4]
    assert [e.sequence for e in rest] == list(range(5, 11))
    assert [e.result_id for e in first + rest] == ids


def test_sequence_continues_and_never_repeats_when_reopened_after_everything_was_acked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        for i in range(3):
            outbox.append(make_result(i), TOPIC)
        for seq in (1, 2, 3):
            assert outbox.ack(seq)
        assert outbox.depth() == 0
    with Outbox(path) as outbox:
        assert outbox.last_sequence == 3
        assert outbox.append(make_result(9), TOPIC).sequence == 4


def test_unacked_results_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        for i in range(5):
            outbox.append(make_result(i), TOPIC)
        outbox.ack(2)
    with Outbox(path) as outbox:
        assert outbox.depth() == 4
        assert [e.sequence for e in outbox.pending(10)] == [1, 3, 4, 5]


def test_ack_deletes_once_when_acked_twice(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        outbox.append(make_result(1), TOPIC)
        assert outbox.ack(1) is True
        assert outbox.ack(1) is False
        assert outbox.depth() == 0


def test_append_refuses_loudly_when_outbox_is_full(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="lineinspect.line.outbox"),
        Outbox(tmp_path / "outbox.sqlite", max_rows=5, alarm_rows=3) as outbox,
    ):
        for i in range(2):
            outbox.append(make_result(i), TOPIC)
        assert not outbox.alarm
        outbox.append(make_result(2), TOPIC)
        assert outbox.alarm
        assert any("ALARM outbox" in r.getMessage() for r in caplog.records)
        outbox.append(make_result(3), TOPIC)
        outbox.append(make_result(4), TOPIC)
        refused = make_result(5)
        with pytest.raises(OutboxFullError, match=f"full .*5 of 5.*{refused.result_id} was NOT stored"):
            outbox.append(refused, TOPIC)
        assert outbox.depth() == 5
        # the refused append used no sequence number: the next stored result has no gap
        for seq in (1, 2, 3):
            outbox.ack(seq)
        assert not outbox.alarm
        assert outbox.append(make_result(6), TOPIC).sequence == 6


def test_writers_that_meet_share_commits_and_each_result_is_stored_when_its_append_returns(tmp_path: Path) -> None:
    # given: 6 camera workers appending and a trigger thread journaling, all at once
    path = tmp_path / "outbox.sqlite"
    n_threads, per_thread = 6, 30
    stored: dict[str, int] = {}
    seen_after_return: list[bool] = []
    start = threading.Barrier(n_threads + 1)
    with Outbox(path) as outbox:

        def worker(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                result = part_result(t * 1000 + i)
                stamped = outbox.append(result, TOPIC)
                assert stamped.sequence is not None
                stored[stamped.result_id] = stamped.sequence
                # when: append has returned, the row is there for the sender
                seen_after_return.append(
                    any(e.result_id == stamped.result_id for e in outbox.pending(1, stamped.sequence - 1))
                )

        def journal() -> None:
            start.wait()
            for n in range(per_thread):
                record(outbox, 90_000 + n)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        threads.append(threading.Thread(target=journal))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        commits, writes = outbox.commits
        assert outbox.ack_many(range(1, 11)) == 10  # ten PUBACKs, one commit
        assert outbox.commits == (commits + 1, writes + 1)
    # then: every result has its own sequence, none lost or repeated, all there after a reopen
    total = n_threads * per_thread
    assert sorted(stored.values()) == list(range(1, total + 1))
    assert all(seen_after_return) and len(seen_after_return) == total
    assert writes == total + per_thread  # the results and the journal entries
    assert commits < writes, "writers that met were not grouped into shared commits"
    with Outbox(path) as outbox:
        assert outbox.depth() == total - 10 and outbox.last_sequence == total
        assert {e.result_id for e in outbox.pending(total)} == {r for r, seq in stored.items() if seq > 10}
        assert len(outbox.open_parts()) == per_thread  # the journal entries, none of them closed by these results


def test_open_gives_clear_error_when_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not sqlite, just some text that ended up here\n" * 100)
    with pytest.raises(OutboxError, match=r"not a readable outbox database.*Move the file aside"):
        Outbox(path)


def _hold_outbox(
    path: str, opened: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with Outbox(Path(path)):
        opened.set()
        release.wait(10)


def test_open_gives_clear_error_when_another_process_owns_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ctx = multiprocessing.get_context("spawn")
    opened, release = ctx.Event(), ctx.Event()
    owner = ctx.Process(target=_hold_outbox, args=(str(path), opened, release))
    owner.start()
    try:
        assert opened.wait(20), "owner process did not open the outbox"
        with pytest.raises(OutboxError, match="in use by another process"):
            Outbox(path)
    finally:
        release.set()
        owner.join(10)
    with Outbox(path) as outbox:  # free again once the owner is gone
        assert outbox.depth() == 0


def test_open_gives_clear_error_when_written_by_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(OutboxError, match="newer lineinspect"):
        Outbox(path)


# --- the part journal --------------------------------------------------------------------------


def record(outbox: Outbox, trigger_id: int, *, run_id: str = "run-1", part_id: str | None = None) -> None:
    outbox.record_part(
        run_id=run_id, camera_id="cam1", trigger_id=trigger_id, part_id=part_id, encoder_count=None, recipe_id="r"
    )


def part_result(trigger_id: int, run_id: str = "run-1") -> Result:
    return dataclasses.replace(make_result(trigger_id), camera_id="cam1", trigger_id=trigger_id, run_id=run_id)


def test_a_journaled_part_closes_when_its_result_is_stored_and_stays_open_across_a_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        for n in (1, 2, 3):
            record(outbox, n, part_id=f"P{n}")
        outbox.append(part_result(2), TOPIC)
        outbox.append(part_result(1, run_id="another-run"), TOPIC)  # same trigger id, other run: not this part
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        assert [(p.run_id, p.trigger_id, p.part_id) for p in outbox.open_parts()] == [
            ("run-1", 1, "P1"),
            ("run-1", 3, "P3"),
        ]


def test_an_outbox_of_the_first_schema_gets_the_journal_on_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        outbox.append(make_result(1), TOPIC)
    db = sqlite3.connect(path, isolation_level=None)  # as lineinspect before the journal left it
    db.execute("DROP TABLE open_parts")
    db.execute("PRAGMA user_version=1")
    db.close()
    with Outbox(path) as outbox:
        assert outbox.depth() == 1 and outbox.open_parts() == []
        record(outbox, 1)
        assert len(outbox.open_parts()) == 1


def test_a_full_disk_is_reported_as_a_full_disk_and_the_outbox_works_once_there_is_room(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=512) as disk, Outbox(disk / "outbox.sqlite") as outbox:
        outbox.append(make_result(1), TOPIC)
        filler = fill(disk)
        with pytest.raises(OutboxError) as refused:
            for n in range(2, 200):  # the WAL may still have room for a few
                outbox.append(make_result(n), TOPIC)
        assert "disk is full" in str(refused.value) and "no transaction is active" not in str(refused.value)
        with pytest.raises(OutboxError, match=r"could not journal part .* disk is full"):
            for n in range(200, 400):
                record(outbox, n)
        filler.unlink()
        stored = outbox.append(make_result(500), TOPIC)
        assert stored.sequence is not None and stored.sequence > 1
