"""The station's part path without a broker: PartWorker, SkippedParts, ResultFanout and RejectFeed.

A real Inspector (a real ONNX graph run by onnxruntime), a real SQLite outbox behind the fanout, and a
real CameraSupervisor over a scripted camera; only the reject tracker is a recorder, so the order in
which it hears of entries and verdicts can be checked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import RuntimeOptions
from lineinspect.core.part import PartRef
from lineinspect.core.recipe import Recipe
from lineinspect.core.result import Result, ResultSink, ResultSinks, UndecidedKind, Verdict
from lineinspect.line.capture.supervisor import CameraSupervisor, Capture, SkippedPart
from lineinspect.line.changeover import RecipeBook
from lineinspect.line.outbox import Outbox
from lineinspect.line.station import PartWorker, RejectFeed, ResultFanout, SkippedParts
from lineinspect.line.status import PartCounts
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.scripted_cameras import TriggeredCamera
from tests.helpers.waiting import wait_for

STATION = "acme/s1/a1/l1/cell1/lineinspect/teststation"
TOPIC = f"{STATION}/result"


def good_image() -> np.ndarray:
    return np.full((64, 64), 10, np.uint8)


def bad_image() -> np.ndarray:
    image = good_image()
    image[20:30, 20:30] = 255
    return image


class StoringOutbox:
    """The fanout's outbox side as the publisher does it, minus MQTT: append to a real SQLite outbox."""

    def __init__(self, path: Path, *, max_rows: int = 1000) -> None:
        self.outbox = Outbox(path, max_rows=max_rows)

    def publish_result(self, result: Result) -> Result:
        return self.outbox.append(result, TOPIC)

    def stored(self) -> list[dict[str, object]]:
        return [json.loads(e.payload) for e in self.outbox.pending(limit=1000)]


class TrackerLog:
    """Records what a reject tracker would be told, in order (`entered 3`, `verdict 3 fail`)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._lock = threading.Lock()

    def part_entered(self, part: PartRef) -> None:
        with self._lock:
            self.events.append(f"entered {part.trigger_id}")

    def verdict_ready(self, part_number: int, result_id: str, verdict: Verdict) -> None:
        with self._lock:
            self.events.append(f"verdict {part_number} {verdict.value}")


class SlowInspector(Inspector):
    """The real Inspector, taking `delay_s` longer per frame (an overloaded host)."""

    delay_s = 0.0

    def _judge(self, frame: Frame, recipe: Recipe) -> Result:
        time.sleep(self.delay_s)
        return super()._judge(frame, recipe)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    model = brightness_anomaly(tmp_path_factory.mktemp("model") / "bright")
    return single_model_inspector(model, RuntimeOptions(intra_op_threads=1))


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[StoringOutbox]:
    store = StoringOutbox(tmp_path / "outbox.db")
    yield store
    store.outbox.close()


class AlarmLog:
    """The station's alarm table as the fanout sees it: what was raised and cleared, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def station_alarm(self, kind: str, message: str) -> None:
        self.events.append(("raised", kind))

    def clear_alarm(self, source: str, kind: str, message: str) -> None:
        self.events.append(("cleared", kind))


def fanout_for(
    outbox: StoringOutbox,
    *sinks: ResultSink,
    reject: RejectFeed | None = None,
    alarms: AlarmLog | None = None,
    run_id: str | None = "run-1",
) -> ResultFanout:
    return ResultFanout(
        outbox, station_path=STATION, sinks=ResultSinks(sinks), run_id=run_id, reject=reject, alarms=alarms
    )


def capture(image: np.ndarray, *, trigger_id: int, age_ms: float = 0.0, part_id: str | None = None) -> Capture:
    """A captured part whose trigger was `age_ms` ago."""
    now = time.monotonic_ns()
    part = PartRef("cam1", trigger_id, now - int(age_ms * 1e6), part_id=part_id)
    return Capture(Frame(image, camera_id="cam1", frame_id=trigger_id, part=part), grabbed_ns=now)


# --- ResultFanout ------------------------------------------------------------------------------


def test_fanout_stores_first_then_sinks_then_reject_with_the_stamped_result(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    order: list[str] = []
    seen: list[Result] = []

    def sink(result: Result) -> None:
        order.append(f"sink saw depth {outbox.outbox.depth()}")
        seen.append(result)

    class OrderedLog(TrackerLog):
        def verdict_ready(self, part_number: int, result_id: str, verdict: Verdict) -> None:
            order.append("reject")
            super().verdict_ready(part_number, result_id, verdict)

    log = OrderedLog()
    fanout = fanout_for(outbox, sink, reject=RejectFeed(log, "cam1"))  # type: ignore[arg-type]
    judged = inspector.inspect(capture(bad_image(), trigger_id=4).frame)
    final = fanout.deliver(judged, timings_ms={"queue": 1.5, "end_to_end": 9.0})

    assert order == ["sink saw depth 1", "reject"]
    assert seen == [final]
    assert final.sequence == 1 and final.station == STATION and final.run_id == "run-1"
    assert final.timings_ms["queue"] == 1.5 and "infer" in final.timings_ms
    assert log.events == ["verdict 4 fail"]
    (stored,) = outbox.stored()
    assert stored["result_id"] == final.result_id and stored["sequence"] == 1 and stored["station"] == STATION


def test_a_failing_sink_leaves_the_next_sink_and_the_reject_untouched(
    inspector: Inspector, outbox: StoringOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Result] = []
    log = TrackerLog()

    def broken(result: Result) -> None:
        raise RuntimeError("disk of the results store is gone")

    fanout = fanout_for(outbox, broken, seen.append, reject=RejectFeed(log, "cam1"))  # type: ignore[arg-type]
    final = fanout.deliver(inspector.inspect(capture(good_image(), trigger_id=1).frame))
    assert seen == [final] and log.events == ["verdict 1 pass"]
    assert "result sink" in caplog.text and "disk of the results store is gone" in caplog.text


def test_a_result_the_outbox_refuses_raises_the_alarm_and_is_rejected_as_undecided(
    inspector: Inspector, tmp_path: Path
) -> None:
    full = StoringOutbox(tmp_path / "full.db", max_rows=1)
    alarms = AlarmLog()
    counts = PartCounts()
    log = TrackerLog()
    fanout = fanout_for(full, counts.observe, reject=RejectFeed(log, "cam1"), alarms=alarms)  # type: ignore[arg-type]
    try:
        first = fanout.deliver(inspector.inspect(capture(good_image(), trigger_id=1).frame))
        refused = fanout.deliver(inspector.inspect(capture(good_image(), trigger_id=2).frame))
        refused_again = fanout.deliver(inspector.inspect(capture(good_image(), trigger_id=3).frame))
        full.outbox.ack(1)  # the broker took the first one: there is room again
        stored = fanout.deliver(inspector.inspect(capture(good_image(), trigger_id=4).frame))
    finally:
        full.outbox.close()
    assert first.verdict is Verdict.PASS
    assert refused.verdict is Verdict.UNDECIDED and refused.undecided_kind is UndecidedKind.OUTBOX_REFUSED
    assert refused.reason.startswith("not stored for the MES: ")
    assert refused.sequence is None
    assert refused_again.undecided_kind is UndecidedKind.OUTBOX_REFUSED and stored.sequence == 2
    # Raised while refusing (each refusal says so), cleared by the first result stored again.
    assert alarms.events == [("raised", "outbox_refused"), ("raised", "outbox_refused"), ("cleared", "outbox_refused")]
    assert log.events == ["verdict 1 pass", "verdict 2 undecided", "verdict 3 undecided", "verdict 4 pass"]
    assert counts.snapshot()["outbox_refused"] == 2 and counts.snapshot()["undecided"] == 2


def test_reject_feed_ignores_other_cameras_and_free_running_frames() -> None:
    log = TrackerLog()
    feed = RejectFeed(log, "cam1")  # type: ignore[arg-type]
    feed.part_entered(PartRef("cam2", 1, 0))
    feed.part_entered(PartRef("cam1", 1, 0))
    feed.verdict(Result.undecided(PartRef("cam2", 1, 0), UndecidedKind.NO_IMAGE, "no image"))
    feed.verdict(Result.undecided(None, UndecidedKind.LATE, "late", frame=Frame(good_image(), camera_id="cam1")))
    feed.verdict(Result.undecided(PartRef("cam1", 1, 0), UndecidedKind.NO_IMAGE, "no image"))
    assert log.events == ["entered 1", "verdict 1 undecided"]


# --- PartWorker --------------------------------------------------------------------------------


def book_of(inspector: Inspector) -> RecipeBook:
    """The recipe book of a one-camera station that runs the Inspector's default recipe."""
    return RecipeBook(inspector, {"cam1": None})


def worker_for(
    supervisor: CameraSupervisor, inspector: Inspector, fanout: ResultFanout, budget_ms: float
) -> PartWorker:
    skipped = SkippedParts("cam1", fanout, book_of(inspector), max_waiting=4)
    return PartWorker(supervisor, skipped, skipped.book, fanout, budget_ms=budget_ms)


def test_a_part_past_its_deadline_is_undecided_late_without_being_inspected(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    seen: list[Result] = []
    supervisor = CameraSupervisor(TriggeredCamera(good_image(), bad_image()))
    worker = worker_for(supervisor, inspector, fanout_for(outbox, seen.append), budget_ms=50)
    worker.inspect(capture(bad_image(), trigger_id=7, age_ms=80, part_id="P7"))
    (late,) = seen
    assert late.verdict is Verdict.UNDECIDED and late.undecided_kind is UndecidedKind.LATE
    assert late.reason.startswith("late: not inspected within the budget of 50 ms (waited ")
    assert late.score is None and late.findings == ()  # the model never saw it
    assert (late.trigger_id, late.part_id, late.camera_id) == (7, "P7", "cam1")
    assert late.timings_ms["queue"] >= 80
    assert late.recipe_id == inspector.default_recipe and late.model_sha256 is not None


def test_an_inspection_that_ends_after_the_deadline_is_late_and_keeps_what_the_model_said(
    tmp_path: Path, outbox: StoringOutbox
) -> None:
    model = brightness_anomaly(tmp_path / "bright")
    fast = single_model_inspector(model, RuntimeOptions(intra_op_threads=1))
    slow = SlowInspector(fast.models, fast.recipes, fast.default_recipe)
    slow.delay_s = 0.06
    seen: list[Result] = []
    worker = worker_for(
        CameraSupervisor(TriggeredCamera(good_image(), bad_image())),
        slow,
        fanout_for(outbox, seen.append),
        budget_ms=30,
    )
    worker.inspect(capture(bad_image(), trigger_id=3))
    (late,) = seen
    assert late.undecided_kind is UndecidedKind.LATE
    assert "budget 30 ms (the inspection said fail: 1 defect" in late.reason
    assert late.score is not None and late.findings  # the judgement stays on record
    assert late.timings_ms["end_to_end"] >= 60


def camera_line(
    inspector: Inspector,
    outbox: StoringOutbox,
    log: TrackerLog,
    seen: list[Result],
    *,
    bad_triggers: frozenset[int] = frozenset(),
) -> tuple[CameraSupervisor, PartWorker]:
    """One camera as the station wires it: entries to the reject feed, skipped parts, a worker (not started)."""
    feed = RejectFeed(log, "cam1")  # type: ignore[arg-type]
    fanout = fanout_for(outbox, seen.append, reject=feed)
    skipped = SkippedParts("cam1", fanout, book_of(inspector), max_waiting=4)
    camera = TriggeredCamera(good_image(), bad_image(), bad_triggers=bad_triggers)
    supervisor = CameraSupervisor(camera, on_part=feed.part_entered, on_skipped=skipped.put)
    return supervisor, PartWorker(supervisor, skipped, skipped.book, fanout, budget_ms=2000)


def test_worker_threads_give_each_triggered_part_one_result_in_order_and_entries_before_verdicts(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    log, seen = TrackerLog(), []
    supervisor, worker = camera_line(inspector, outbox, log, seen, bad_triggers=frozenset({2}))
    worker.start()
    supervisor.start()
    try:
        wait_for(lambda: supervisor.status().state.value == "connected", 5, "camera connected")
        ids = [supervisor.trigger(part_id=f"P{i}") for i in range(1, 4)]
        wait_for(lambda: len(seen) == 3, 5, "three results")
    finally:
        supervisor.stop()
        worker.stop(drain_timeout_s=1.0)
    assert ids == [1, 2, 3]
    assert [(r.trigger_id, r.part_id, r.verdict.value) for r in seen] == [
        (1, "P1", "pass"),
        (2, "P2", "fail"),
        (3, "P3", "pass"),
    ]
    assert [r.sequence for r in seen] == [1, 2, 3]
    for n in ids:
        assert log.events.index(f"entered {n}") < next(
            i for i, e in enumerate(log.events) if e.startswith(f"verdict {n} ")
        )


def test_a_trigger_while_the_camera_is_down_is_announced_then_undecided_camera_lost(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    log, seen = TrackerLog(), []
    supervisor, worker = camera_line(inspector, outbox, log, seen)
    worker.start()
    try:
        supervisor.trigger(part_id="early")  # never started: not connected
        wait_for(lambda: len(seen) == 1, 5, "one result")
    finally:
        worker.stop(drain_timeout_s=1.0)
    (result,) = seen
    assert result.undecided_kind is UndecidedKind.CAMERA_LOST
    assert result.reason.startswith("not inspected: camera starting: ")
    assert (result.trigger_id, result.part_id) == (1, "early")
    assert log.events == ["entered 1", "verdict 1 undecided"]


def test_skipped_parts_beyond_the_waiting_limit_are_decided_on_the_camera_thread(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    seen: list[tuple[Result, str]] = []
    fanout = fanout_for(outbox, lambda r: seen.append((r, threading.current_thread().name)))
    skipped = SkippedParts("cam1", fanout, book_of(inspector), max_waiting=2)
    for n in range(1, 5):
        skipped.put(
            SkippedPart(
                "cam1",
                UndecidedKind.NO_IMAGE,
                f"no image {n}",
                at=Frame(good_image()).captured_at,
                part=PartRef("cam1", n, 0),
            )
        )
    assert [r.trigger_id for r, _ in seen] == [3, 4]  # decided at once, here
    assert skipped.qsize() == 2
    while skipped.decide_waiting():
        pass
    assert sorted(r.trigger_id for r, _ in seen) == [1, 2, 3, 4]
    assert all(r.undecided_kind is UndecidedKind.NO_IMAGE for r, _ in seen)
    assert seen[0][0].reason == "not inspected: no image 3"


def test_stopping_decides_every_queued_capture_as_stopped(inspector: Inspector, outbox: StoringOutbox) -> None:
    seen: list[Result] = []
    supervisor = CameraSupervisor(TriggeredCamera(good_image(), bad_image()), queue_size=4)
    worker = worker_for(supervisor, inspector, fanout_for(outbox, seen.append), budget_ms=2000)
    for n in (1, 2):
        supervisor.captures.put(capture(good_image(), trigger_id=n))
    worker.stop(drain_timeout_s=0.0)  # never started: nothing inspects them
    assert [(r.trigger_id, r.undecided_kind) for r in seen] == [(1, UndecidedKind.STOPPED), (2, UndecidedKind.STOPPED)]
    assert all(r.reason == "not inspected: the station stopped before its turn" for r in seen)


class KeepFails:
    """An archive that keeps the frames of failed parts only (or raises, when broken)."""

    def __init__(self, *, broken: bool = False) -> None:
        self.kept: list[tuple[str, tuple[int, ...]]] = []
        self.broken = broken

    def keep(self, result: Result, frame: Frame) -> str | None:
        if self.broken:
            raise OSError("No space left on device")
        if result.verdict is Verdict.PASS:
            return None
        self.kept.append((result.result_id, frame.image.shape))
        return f"archive/{result.result_id}.png"


def test_the_archive_reference_is_in_the_stored_result_and_a_broken_archive_costs_nothing(
    inspector: Inspector, outbox: StoringOutbox
) -> None:
    archive = KeepFails()
    fanout = ResultFanout(outbox, station_path=STATION, sinks=ResultSinks(), run_id="run-1", archive=archive)
    bad = capture(bad_image(), trigger_id=1).frame
    good = capture(good_image(), trigger_id=2).frame
    failed = fanout.deliver(inspector.inspect(bad), frame=bad)
    passed = fanout.deliver(inspector.inspect(good), frame=good)
    assert failed.image_ref == f"archive/{failed.result_id}.png" and passed.image_ref is None
    assert archive.kept == [(failed.result_id, (64, 64))]
    assert [s["image"]["ref"] for s in outbox.stored()] == [failed.image_ref, None]  # type: ignore[index]

    fanout.archive = KeepFails(broken=True)
    third = fanout.deliver(inspector.inspect(bad), frame=bad)
    assert third.sequence == 3 and third.verdict is Verdict.FAIL and third.image_ref is None


def test_reject_feed_ignores_the_results_of_an_earlier_run() -> None:
    log = TrackerLog()
    feed = RejectFeed(log, "cam1", run_id="now")  # type: ignore[arg-type]
    earlier = Result.undecided(PartRef("cam1", 5, 0), UndecidedKind.RESTARTED, "restarted", run_id="before")
    feed.verdict(earlier)
    feed.verdict(earlier.stamped(station=STATION, run_id="now"))  # stamping keeps the part's own run
    feed.verdict(
        Result.undecided(PartRef("cam1", 5, 0), UndecidedKind.NO_IMAGE, "no image").stamped(
            station=STATION, run_id="now"
        )
    )
    assert log.events == ["verdict 5 undecided"]
