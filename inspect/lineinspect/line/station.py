"""The station runtime: triggered parts → inspection → outbox/MQTT, local sinks and the reject station.

Small pieces, wired by `assemble.build_station` top to bottom (nothing here reads a file):

- `ResultFanout`: the one way every final result leaves (inspected, late, skipped). It stamps what
  the station adds (`Result.stamped`), stores it in the outbox (which gives it its `sequence`), then
  hands it to the result sinks (local store, metrics, counts) and the reject station. A result the
  outbox refuses is an alarm and the part is rejected.
- `RejectFeed`: the reject tracker's view of the one camera that feeds it: each part's entry comes
  from that camera's supervisor (`on_part`, at the trigger), each verdict from the fanout. An entry is
  announced before the part can be queued, so a verdict never reaches the tracker first.
- `SkippedParts`: per camera, the parts the supervisor gave up, on their way to an `undecided`
  result (bounded: `line.pending_parts_max`; when full the camera thread decides the part itself:
  slower, never dropped).
- `PartWorker`: per camera, `threads` threads that take captures from the supervisor's queue and
  skipped parts from `SkippedParts`. A part past its deadline (trigger + budget) is `undecided`.
- `LineTrigger`: a simulated line that triggers software-triggered cameras at a part rate (demo).
- `Station`: starts them in order, stops them in reverse, and reports `status()`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.core.part import PartRef, Selection
from lineinspect.core.result import Result, ResultSinks, UndecidedKind, Verdict
from lineinspect.line.archive.archive import ImageArchive
from lineinspect.line.broker import EmbeddedBroker
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor, Capture, SkippedPart
from lineinspect.line.changeover import RecipeBook
from lineinspect.line.commands import StationCommands
from lineinspect.line.events import StationEvents
from lineinspect.line.journal import PartJournal
from lineinspect.line.mqtt import ResultPublisher
from lineinspect.line.outbox import Outbox, OutboxError
from lineinspect.line.reject.tracker import RejectTracker
from lineinspect.line.shadow import ShadowRunner
from lineinspect.line.status import (
    MODE_LINE,
    BrokerStatus,
    OutboxStatus,
    PartCounts,
    RejectStatus,
    StationInfo,
    StationStatus,
)
from lineinspect.line.watch import LinkWatch

log = logging.getLogger(__name__)

_MS = 1_000_000
# How long a worker waits for a capture before it looks at its skipped parts and the stop flag again.
_POLL_S = 0.05


class FrameArchive(Protocol):
    """Where the frames of final results are kept (the image archive, `line/archive.py`)."""

    def keep(self, result: Result, frame: Frame) -> str | None:
        """Take the frame of this result for storage if the archive's rules keep it; its `image.ref`, or None
        when it is not kept (sampled out, archive busy or failing). Never blocks and never raises."""
        ...


class ResultOutput(Protocol):
    """A result sink with a lifetime of its own beside the MQTT channel (the OPC UA server, Sparkplug B):
    started with the station, closed after its workers' last results. Its `start` must not wait for its
    peer, and its sink call never blocks."""

    def start(self) -> None: ...

    def close(self) -> None: ...


class OutboxAlarm(Protocol):
    """The station's alarm table as the fanout raises and clears `outbox_refused` (`StationEvents`)."""

    def station_alarm(self, kind: str, message: str) -> None: ...

    def clear_alarm(self, source: str, kind: str, message: str) -> None: ...


class ResultOutbox(Protocol):
    """Where the fanout stores each result for the MES (`ResultPublisher`)."""

    def publish_result(self, result: Result) -> Result:
        """Store durably and queue for the broker; the result stamped with its sequence. Raises OutboxError."""
        ...


class RejectFeed:
    """The parts of one camera (the one whose parts pass the ejector) as the reject tracker sees them.

    Part numbers are that camera's trigger ids in this run. `part_entered` hears each part's entry
    (through `PartEntry`); `verdict` is called by the fanout with every final result (other cameras' and
    other runs' results are ignored: parts of a run before a restart are not between camera and ejector).
    """

    def __init__(self, tracker: RejectTracker, camera_id: str, *, run_id: str | None = None) -> None:
        self.tracker = tracker
        self.camera_id = camera_id
        self.run_id = run_id

    def part_entered(self, part: PartRef) -> None:
        if part.camera_id == self.camera_id:
            self.tracker.part_entered(part)

    def verdict(self, result: Result) -> None:
        if result.camera_id != self.camera_id or result.trigger_id is None:
            return
        if self.run_id is not None and result.run_id not in (None, self.run_id):
            return
        self.tracker.verdict_ready(result.trigger_id, result.result_id, result.verdict)


class PartEntry:
    """A camera's `on_part` hook: a part passed its trigger. In this order: journaled (durably), then the
    reject station told; only then does the trigger id go back to whoever triggered (PLC, HTTP)."""

    def __init__(self, journal: PartJournal | None, reject: RejectFeed | None) -> None:
        self.journal = journal
        self.reject = reject

    def __call__(self, part: PartRef) -> None:
        if self.journal is not None:
            self.journal.entered(part)
        if self.reject is not None:
            self.reject.part_entered(part)


class ResultFanout:
    """Every final result: stamped → outbox (sequence) → result sinks → reject station, in that order."""

    def __init__(
        self,
        outbox: ResultOutbox,
        *,
        station_path: str,
        sinks: ResultSinks,
        run_id: str | None = None,
        reject: RejectFeed | None = None,
        archive: FrameArchive | None = None,
        alarms: OutboxAlarm | None = None,
    ) -> None:
        self.outbox = outbox
        self.station_path = station_path
        self.run_id = run_id
        self.sinks = sinks
        self.reject = reject
        self.archive = archive
        self.alarms = alarms
        self._refusing = False

    def deliver(
        self, result: Result, *, frame: Frame | None = None, timings_ms: dict[str, float] | None = None
    ) -> Result:
        """Send one final result; returns it as the sinks saw it (stamped, with its sequence when stored).

        frame: the part's image, for the archive (None: there is none). timings_ms: the runtime's own
        stage times (queue, end_to_end) added to the Inspector's.
        """
        image_ref = self._archive(result, frame)
        stamped = result.stamped(
            station=self.station_path, run_id=self.run_id, timings_ms=timings_ms, image_ref=image_ref
        )
        try:
            final = self.outbox.publish_result(stamped)
        except OutboxError as exc:
            # The only way a result misses the MES, and it is loud: alarm, count, reject the part.
            log.error("ALARM result %s not stored for the MES: %s", result.result_id, exc)
            self._outbox_refusing(str(exc))
            was = f" (it was undecided: {stamped.reason})" if stamped.verdict is Verdict.UNDECIDED else ""
            final = stamped.overruled(UndecidedKind.OUTBOX_REFUSED, f"not stored for the MES: {exc}{was}")
        else:
            if self._refusing:
                self._outbox_accepting()
        self.sinks(final)
        if self.reject is not None:
            try:
                self.reject.verdict(final)
            except Exception:
                log.exception("reject tracker refused the verdict of result %s", final.result_id)
        return final

    def _outbox_refusing(self, message: str) -> None:
        self._refusing = True
        if self.alarms is not None:
            try:
                self.alarms.station_alarm(UndecidedKind.OUTBOX_REFUSED.value, message)
            except Exception:
                log.exception("outbox alarm hook failed")

    def _outbox_accepting(self) -> None:
        self._refusing = False
        log.warning("results are stored for the MES again; outbox_refused alarm cleared")
        if self.alarms is not None:
            try:
                self.alarms.clear_alarm("station", UndecidedKind.OUTBOX_REFUSED.value, "results are stored again")
            except Exception:
                log.exception("outbox alarm hook failed")

    def _archive(self, result: Result, frame: Frame | None) -> str | None:
        if self.archive is None or frame is None:
            return None
        try:
            return self.archive.keep(result, frame)
        except Exception:  # the archive must never cost a part its result
            log.exception("image archive failed for result %s", result.result_id)
            return None


class SkippedParts:
    """One camera's skipped parts on their way to an `undecided` result (rejected by default).

    `put` is the camera supervisor's `on_skipped` hook (camera or trigger thread): the part waits for a
    worker; when `max_waiting` are already waiting it is decided right there (slower, never dropped).
    """

    def __init__(self, camera_id: str, fanout: ResultFanout, book: RecipeBook, *, max_waiting: int) -> None:
        self.camera_id = camera_id
        self.fanout = fanout
        self.book = book
        self._waiting: queue.Queue[SkippedPart] = queue.Queue(maxsize=max_waiting)

    def put(self, part: SkippedPart) -> None:
        try:
            self._waiting.put_nowait(part)
        except queue.Full:
            log.warning(
                "camera %s: %d skipped parts waiting; deciding this one on the camera thread",
                self.camera_id,
                self._waiting.qsize(),
            )
            self.decide(part)

    def decide_waiting(self) -> bool:
        """Decide one waiting part, if any; whether there was one."""
        try:
            part = self._waiting.get_nowait()
        except queue.Empty:
            return False
        self.decide(part)
        return True

    def decide(self, part: SkippedPart) -> None:
        result = Result.undecided(
            part.part,
            part.kind,
            f"not inspected: {part.reason}",
            frame=part.frame,
            provenance=self.book.provenance(_selection(part.part)),
        )
        deliver(self.fanout, result, self.camera_id, frame=part.frame)

    def qsize(self) -> int:
        return self._waiting.qsize()


def deliver(
    fanout: ResultFanout,
    result: Result,
    camera_id: str,
    *,
    frame: Frame | None = None,
    timings_ms: dict[str, float] | None = None,
) -> Result | None:
    """Hand a result to the fanout from a camera or worker thread, which must go on whatever happens."""
    try:
        return fanout.deliver(result, frame=frame, timings_ms=timings_ms)
    except Exception:
        log.exception("camera %s: result %s could not be delivered", camera_id, result.result_id)
        return None


class PartWorker:
    """Inspects one camera's parts; each triggered part ends as exactly one result through the fanout."""

    def __init__(
        self,
        supervisor: CameraSupervisor,
        skipped: SkippedParts,
        book: RecipeBook,
        fanout: ResultFanout,
        *,
        budget_ms: float,
        threads: int = 1,
        shadow: ShadowRunner | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.shadow = shadow
        self.skipped = skipped
        self.camera_id = supervisor.camera_id
        self.book = book
        self.fanout = fanout
        self.budget_ms = budget_ms
        self._n_threads = threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._n_threads):
            thread = threading.Thread(target=self._run, name=f"inspect-{self.camera_id}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, drain_timeout_s: float) -> None:
        """Decide what is queued (stop the camera first), then join. Parts left at the deadline are undecided."""
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline and (self.skipped.qsize() or self.supervisor.captures.qsize()):
            time.sleep(0.01)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, drain_timeout_s))
        self._threads.clear()
        # Whatever is still queued (drain timed out) gets its undecided result now: nothing is silent.
        while (capture := self.supervisor.get(0)) is not None:
            result = Result.undecided(
                None,
                UndecidedKind.STOPPED,
                "not inspected: the station stopped before its turn",
                frame=capture.frame,
                provenance=self.book.provenance(self._selection(capture)),
            )
            deliver(self.fanout, result, self.camera_id, frame=capture.frame)
        while self.skipped.decide_waiting():
            pass

    # --- worker threads ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self.skipped.decide_waiting():
                continue
            capture = self.supervisor.get(_POLL_S)
            if capture is not None:
                self.inspect(capture)

    def inspect(self, capture: Capture) -> None:
        """One captured part → its result (late: undecided) → the fanout."""
        frame = capture.frame
        start_ns = capture.start_ns
        deadline_ns = capture.deadline_ns(self.budget_ms)
        selection = self._selection(capture)
        began_ns = time.monotonic_ns()
        queue_ms = (began_ns - start_ns) / _MS
        if began_ns >= deadline_ns:
            result = Result.undecided(
                None,
                UndecidedKind.LATE,
                f"late: not inspected within the budget of {self.budget_ms:g} ms (waited {queue_ms:.0f} ms)",
                frame=frame,
                provenance=self.book.provenance(selection),
            )
            deliver(self.fanout, result, self.camera_id, frame=frame, timings_ms={"queue": queue_ms})
            return
        # The recipe and models active at the part's trigger, whatever was switched since.
        result = self.book.inspector_for(selection).inspect(frame, selection.recipe_id)
        done_ns = time.monotonic_ns()
        end_to_end_ms = (done_ns - start_ns) / _MS
        if done_ns > deadline_ns:
            result = result.overruled(
                UndecidedKind.LATE,
                f"late: decided after {end_to_end_ms:.0f} ms, budget {self.budget_ms:g} ms "
                f"(the inspection said {result.verdict.value}: {result.reason})",
            )
        timings = {"queue": queue_ms, "end_to_end": end_to_end_ms}
        final = deliver(self.fanout, result, self.camera_id, frame=frame, timings_ms=timings)
        if self.shadow is not None and final is not None:
            # After the verdict is out, and only when no part waits for its own inspection.
            self.shadow.after_verdict(final, frame, busy=self.supervisor.captures.qsize() > 0)

    def _selection(self, capture: Capture) -> Selection:
        """The part's own selection; a free-running frame (no trigger) takes the camera's active one now."""
        part = capture.frame.part
        return (
            part.selection if part is not None and part.selection is not None else self.book.selection(self.camera_id)
        )


def _selection(part: PartRef | None) -> Selection | None:
    return part.selection if part is not None else None


class LineTrigger:
    """A simulated line: calls `trigger()` at `rate_parts_per_min` on its own thread (demo, commissioning, bench)."""

    def __init__(self, trigger: Callable[[], None], rate_parts_per_min: float) -> None:
        self._trigger = trigger
        self.period_ns = int(60e9 / rate_parts_per_min)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="line-trigger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        next_ns = time.monotonic_ns()
        while not self._stop.is_set():
            wait_ns = next_ns - time.monotonic_ns()
            if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):
                break
            try:
                self._trigger()
            except Exception:
                log.exception("simulated line: trigger failed")
            self.sent += 1
            # A late tick does not burst: the schedule restarts from now (a real line does not catch up either).
            next_ns = max(next_ns + self.period_ns, time.monotonic_ns())


class Station:
    """One station's runtime: start() brings the parts up in order, stop() takes them down in reverse."""

    def __init__(
        self,
        *,
        station_id: str,
        station_path: str,
        publisher: ResultPublisher,
        outbox: Outbox,
        events: StationEvents,
        counts: PartCounts,
        fanout: ResultFanout,
        supervisors: Sequence[CameraSupervisor],
        workers: Sequence[PartWorker],
        run_id: str,
        book: RecipeBook,
        journal: PartJournal | None = None,
        watch: LinkWatch | None = None,
        commands: StationCommands | None = None,
        shadow: ShadowRunner | None = None,
        tracker: RejectTracker | None = None,
        line_rate_parts_per_min: float | None = None,
        drain_timeout_s: float = 5.0,
        broker: EmbeddedBroker | None = None,
        mqtt_address: tuple[str, int] = ("127.0.0.1", 1883),
        archive: ImageArchive | None = None,
        outputs: Sequence[ResultOutput] = (),
    ) -> None:
        self.archive = archive  # closed by stop(), after the workers' last results
        self.outputs = list(outputs)  # started after the publisher, closed with the archive
        self.station_id = station_id
        self.station_path = station_path
        self.publisher = publisher
        self.outbox = outbox
        self.events = events
        self.counts = counts
        self.fanout = fanout
        self.run_id = run_id
        self.journal = journal
        self.watch = watch
        self.book = book
        self.commands = commands
        self.shadow = shadow
        self.supervisors = {s.camera_id: s for s in supervisors}
        self.workers = list(workers)
        self.tracker = tracker
        self.broker = broker
        self.mqtt_address = mqtt_address
        self.drain_timeout_s = drain_timeout_s
        self.line = LineTrigger(self.trigger_all, line_rate_parts_per_min) if line_rate_parts_per_min else None
        self._state = "created"
        self._started_at = utc_now()
        self._lock = threading.Lock()
        self._tracker_closed = False

    # --- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Publisher, reject station, the last run's open parts, workers, cameras, then the simulated line.

        A failure undoes what started.
        """
        self._state = "starting"
        self._started_at = utc_now()
        try:
            self.book.announce_start()  # before connecting: the first retained status names each camera's recipe
            self.publisher.start()
            if self.watch is not None:
                self.watch.start()
            for output in self.outputs:
                output.start()
            if self.commands is not None:
                self.commands.start()
            if self.shadow is not None:
                self.shadow.start()
            if self.tracker is not None:
                try:
                    self.tracker.start()  # refuses an unreachable actuator
                except BaseException:
                    self._tracker_closed = True  # start() closed it
                    raise
            if self.journal is not None:
                # Before any new part: the parts the last run left without a result, in trigger order.
                for result in self.journal.recover(self.book.current.provenance):
                    self.fanout.deliver(result)
            for worker in self.workers:
                worker.start()
            for sup in self.supervisors.values():
                sup.start()
            if self.line is not None:
                self._wait_for_cameras(timeout_s=5.0)
                self.line.start()
        except BaseException:
            self.stop()
            raise
        self._state = "running"
        log.info("station %s running with cameras %s", self.station_path, sorted(self.supervisors) or "none")

    def _wait_for_cameras(self, timeout_s: float) -> None:
        """The simulated line starts once the cameras have tried to connect, so its first parts are not undecided."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(s.status().state is not CameraState.STARTING for s in self.supervisors.values()):
                return
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop triggers and cameras, decide what is in flight (bounded), publish offline, close everything."""
        with self._lock:
            if self._state in ("stopping", "stopped"):
                return
            self._state = "stopping"
        if self.line is not None:
            self.line.stop()
        for sup in self.supervisors.values():
            sup.stop()  # pending triggers become skipped parts (undecided)
        for worker in self.workers:
            worker.stop(self.drain_timeout_s)
        if self.archive is not None:
            self.archive.close()
        for output in self.outputs:
            try:
                output.close()
            except Exception:  # one output that fails to close must not keep the rest of the station up
                log.exception("result output %r did not close", output)
        tracker = self.tracker
        if tracker is not None and not self._tracker_closed:
            settings = tracker.settings
            # Parts already between camera and ejector are still rejected if their pulse is due soon.
            linger_ms = (settings.delay_ms or 0.0) + settings.pulse_width_ms
            time.sleep(min(linger_ms / 1000, self.drain_timeout_s))
            tracker.close()
        if self.watch is not None:
            self.watch.stop()
        if self.commands is not None:
            self.commands.stop()
        if self.shadow is not None:
            self.shadow.stop()
        self.book.close()
        self.publisher.close(drain_timeout_s=min(2.0, self.drain_timeout_s) if self.drain_timeout_s else 0.0)
        self.outbox.close()
        if self.broker is not None:
            self.broker.stop()
        self._state = "stopped"
        log.info("station %s stopped; parts %s", self.station_path, self.counts.snapshot())

    def __enter__(self) -> Station:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- triggers ----------------------------------------------------------------------------------
    def trigger(self, camera_id: str, *, part_id: str | None = None, encoder_count: int | None = None) -> int:
        """An external software trigger (PLC input, HTTP, the simulated line) for one camera; its trigger id."""
        return self.supervisors[camera_id].trigger(part_id=part_id, encoder_count=encoder_count)

    def trigger_all(self) -> None:
        """One part passes every software-triggered camera (the simulated line's tick)."""
        for camera_id, sup in self.supervisors.items():
            if sup.trigger_mode is TriggerMode.SOFTWARE:
                self.trigger(camera_id)

    # --- status ------------------------------------------------------------------------------------
    def status(self) -> StationStatus:
        stats = self.publisher.stats()
        host, port = self.mqtt_address
        tracker = self.tracker
        return StationStatus(
            station=StationInfo(self.station_id, self.station_path, self._state, MODE_LINE, self._started_at),
            cameras=tuple(sup.status() for sup in self.supervisors.values()),
            broker=BrokerStatus(host, port, self.broker is not None, stats),
            outbox=OutboxStatus(stats.outbox_depth, stats.outbox_alarm),
            reject=None
            if tracker is None
            else RejectStatus(
                tracker.counters.snapshot(),
                tuple(tracker.active_alarms),
                backend=tracker.settings.backend.type,
                mode=tracker.settings.mode.value,
            ),
            alarms=tuple(self.events.active_alarms),
            counts=self.counts.snapshot(),
            archive=None if self.archive is None else self.archive.status(),
            recipes=self.book.active(),
            setup=self.book.setup,
        )
