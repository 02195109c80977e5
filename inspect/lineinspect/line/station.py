"""The station runtime: triggered parts → inspection → outbox/MQTT, local sinks and the reject station.

Small pieces, wired by `assemble.build_station` (nothing here reads a file):

- `ResultFanout`: the one way every final result leaves (inspected, late, skipped): the outbox stamps
  its `sequence` (`ResultPublisher.publish_result`), then the result sinks (local store, metrics),
  then the reject station. A result the outbox refuses is an alarm and the part is rejected.
- `RejectFeed`: tells the reject tracker about the parts of the camera that feeds it (at trigger
  time for software-triggered cameras, so timed rejects are measured from the trigger) and hands it
  their verdicts.
- `PartWorker`: per camera, `threads` threads that take `Capture`s from the camera supervisor's
  queue and skipped parts from its own bounded queue. A part past its deadline (trigger + budget)
  is `undecided`, never silently dropped.
- `LineTrigger`: a simulated line that triggers software-triggered cameras at a part rate (demo).
- `Station`: starts them in order, stops them in reverse, and reports `status()`.

Queues and their full policies: the camera supervisor's capture queue (its `queue.full_policy`:
the part becomes a skipped part); the skipped-part queue (`line.pending_parts_max`; when full the
camera thread decides the part itself: slower, never dropped).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from lineinspect.core.frame import utc_now
from lineinspect.core.inspector import Inspector
from lineinspect.core.recipe import Verdict
from lineinspect.core.result import Result
from lineinspect.line.broker import EmbeddedBroker
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.supervisor import CameraState, CameraStatus, CameraSupervisor, Capture, SkippedPart
from lineinspect.line.mqtt import ResultPublisher
from lineinspect.line.outbox import Outbox, OutboxError
from lineinspect.line.reject.alarms import Alarm
from lineinspect.line.reject.tracker import RejectTracker

log = logging.getLogger(__name__)

ResultSink = Callable[[Result], None]
SkippedSink = Callable[[str], None]  # called with the camera id of each skipped part

_MS = 1_000_000
# How long a worker waits for a capture before it looks at its skipped parts and the stop flag again.
_POLL_S = 0.05


class PartCounts:
    """Parts by final verdict since start, and how many were skipped, late or refused by the outbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {v.value: 0 for v in Verdict} | {"skipped": 0, "late": 0, "outbox_refused": 0}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    @property
    def decided(self) -> int:
        with self._lock:
            return sum(self._values[v.value] for v in Verdict)


class RejectFeed:
    """The parts of one camera (the one whose parts pass the ejector) as the reject tracker sees them.

    Part numbers are that camera's trigger ids. A software trigger and its `part_entered` happen
    under one lock, and a verdict is handed over under the same lock, so the tracker never gets a
    verdict before it knows the part (the camera may skip a part inside `trigger()` already).
    """

    def __init__(self, tracker: RejectTracker, camera_id: str, *, announce_at_trigger: bool) -> None:
        self.tracker = tracker
        self.camera_id = camera_id
        self.announce_at_trigger = announce_at_trigger
        self._lock = threading.RLock()

    def trigger(self, supervisor: CameraSupervisor, *, part_id: str | None, encoder_count: int | None) -> int:
        with self._lock:
            trigger_ns = time.monotonic_ns()
            trigger_id = supervisor.trigger(part_id=part_id, encoder_count=encoder_count)
            self.tracker.part_entered(trigger_id, trigger_ns=trigger_ns, encoder_count=encoder_count, part_id=part_id)
        return trigger_id

    def part_seen(self, camera_id: str, trigger_id: int | None, seen_ns: int, part_id: str | None) -> None:
        """A hardware-triggered part reached the worker: it enters tracking now (its trigger time is not known)."""
        if self.announce_at_trigger or camera_id != self.camera_id or trigger_id is None:
            return
        with self._lock:
            self.tracker.part_entered(trigger_id, trigger_ns=seen_ns, part_id=part_id)

    def verdict(self, result: Result) -> None:
        if result.camera_id != self.camera_id or result.trigger_id is None:
            return
        with self._lock:
            self.tracker.verdict_ready(result.trigger_id, result.result_id, result.verdict)


class ResultFanout:
    """Every final result: outbox (sequence) → result sinks → reject station, in that order."""

    def __init__(
        self,
        publisher: ResultPublisher,
        *,
        station_path: str,
        counts: PartCounts,
        sinks: Sequence[ResultSink] = (),
        reject: RejectFeed | None = None,
        on_alarm: Callable[[str, str], None] | None = None,
    ) -> None:
        self.publisher = publisher
        self.station_path = station_path
        self.counts = counts
        self.sinks = tuple(sinks)
        self.reject = reject
        self.on_alarm = on_alarm

    def deliver(self, result: Result) -> Result:
        """Publish one final result; returns it as the sinks saw it (stamped with its sequence when stored)."""
        result = replace(result, station=self.station_path)
        try:
            final = self.publisher.publish_result(result)
        except OutboxError as exc:
            # The only way a result misses the MES, and it is loud: alarm, count, reject the part.
            self.counts.add("outbox_refused")
            log.error("ALARM result %s not stored for the MES: %s", result.result_id, exc)
            if self.on_alarm is not None:
                self.on_alarm("outbox_refused", str(exc))
            final = result
            if result.verdict is not Verdict.UNDECIDED:
                final = replace(result, verdict=Verdict.UNDECIDED, reason=f"not stored for the MES: {exc}")
        self.counts.add(final.verdict.value)
        for sink in self.sinks:
            try:
                sink(final)
            except Exception:
                log.exception("result sink %r failed for result %s", sink, final.result_id)
        if self.reject is not None:
            try:
                self.reject.verdict(final)
            except Exception:
                log.exception("reject tracker refused the verdict of result %s", final.result_id)
        return final


class PartWorker:
    """Inspects one camera's parts; each triggered part ends as exactly one result through the fanout."""

    def __init__(
        self,
        supervisor: CameraSupervisor,
        inspector: Inspector,
        fanout: ResultFanout,
        *,
        recipe_id: str | None,
        budget_ms: float,
        threads: int = 1,
        pending_parts_max: int = 1024,
        reject: RejectFeed | None = None,
        skipped_sinks: Sequence[SkippedSink] = (),
    ) -> None:
        self.supervisor = supervisor
        self.camera_id = supervisor.camera_id
        self.inspector = inspector
        self.fanout = fanout
        self.recipe_id = recipe_id
        self.budget_ms = budget_ms
        self.reject = reject
        self.skipped_sinks = tuple(skipped_sinks)
        self._n_threads = threads
        self._skipped: queue.Queue[SkippedPart] = queue.Queue(maxsize=pending_parts_max)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- camera thread -----------------------------------------------------------------------------
    def on_skipped(self, part: SkippedPart) -> None:
        """The supervisor's hook (camera or trigger thread): queue the part; if the queue is full, decide it here."""
        try:
            self._skipped.put_nowait(part)
        except queue.Full:
            log.warning(
                "camera %s: %d skipped parts waiting; deciding this one on the camera thread",
                self.camera_id,
                self._skipped.qsize(),
            )
            self._decide_skipped(part)

    # --- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._n_threads):
            thread = threading.Thread(target=self._run, name=f"inspect-{self.camera_id}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, drain_timeout_s: float) -> None:
        """Decide what is queued (stop the camera first), then join. Parts left at the deadline are undecided."""
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline and (self._skipped.qsize() or self.supervisor.captures.qsize()):
            time.sleep(0.01)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, drain_timeout_s))
        self._threads.clear()
        # Whatever is still queued (drain timed out) gets its undecided result now: nothing is silent.
        while (capture := self.supervisor.get(0)) is not None:
            self.fanout.counts.add("skipped")
            result = self.inspector.undecided(
                capture.frame, "not inspected: the station stopped before its turn", self.recipe_id
            )
            self._publish(result)
        while True:
            try:
                self._decide_skipped(self._skipped.get_nowait())
            except queue.Empty:
                break

    # --- worker threads ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._decide_skipped(self._skipped.get_nowait())
                continue
            except queue.Empty:
                pass
            capture = self.supervisor.get(_POLL_S)
            if capture is not None:
                self._publish(self._inspect(capture))

    def _inspect(self, capture: Capture) -> Result:
        frame = capture.frame
        start_ns = capture.trigger_ns if capture.trigger_ns is not None else capture.grabbed_ns
        deadline_ns = capture.deadline_ns(self.budget_ms)
        if self.reject is not None:
            self.reject.part_seen(self.camera_id, frame.trigger_id, start_ns, frame.part_id)
        began_ns = time.monotonic_ns()
        if began_ns >= deadline_ns:
            waited = (began_ns - start_ns) / _MS
            return self._undecided_capture(
                capture, f"late: not inspected within the budget of {self.budget_ms:g} ms (waited {waited:.0f} ms)"
            )
        try:
            result = self.inspector.inspect(frame, self.recipe_id)
        except Exception as exc:  # the Inspector turns model failures into results; this is a last guard
            log.exception("camera %s: inspection failed", self.camera_id)
            result = self.inspector.undecided(frame, f"inspection error: {type(exc).__name__}: {exc}", self.recipe_id)
        done_ns = time.monotonic_ns()
        timings = {**result.timings_ms, "queue": (began_ns - start_ns) / _MS, "end_to_end": (done_ns - start_ns) / _MS}
        result = replace(result, timings_ms=timings)
        if done_ns > deadline_ns:
            self.fanout.counts.add("late")
            result = replace(
                result,
                verdict=Verdict.UNDECIDED,
                reason=f"late: decided after {(done_ns - start_ns) / _MS:.0f} ms, budget {self.budget_ms:g} ms "
                f"(the inspection said {result.verdict.value}: {result.reason})",
            )
        return result

    def _undecided_capture(self, capture: Capture, reason: str) -> Result:
        self.fanout.counts.add("late")
        return self.inspector.undecided(capture.frame, reason, self.recipe_id)

    def _decide_skipped(self, part: SkippedPart) -> None:
        self.fanout.counts.add("skipped")
        for sink in self.skipped_sinks:
            try:
                sink(part.camera_id)
            except Exception:
                log.exception("skipped-part sink %r failed", sink)
        if self.reject is not None:
            self.reject.part_seen(part.camera_id, part.trigger_id, time.monotonic_ns(), part.part_id)
        result = self.inspector.undecided(part.frame, f"not inspected: {part.reason}", self.recipe_id)
        result = replace(
            result,
            camera_id=part.camera_id,
            trigger_id=part.trigger_id,
            part_id=part.part_id,
            encoder_count=part.encoder_count,
        )
        self._publish(result)

    def _publish(self, result: Result) -> None:
        try:
            self.fanout.deliver(result)
        except Exception:
            log.exception("camera %s: result %s could not be delivered", self.camera_id, result.result_id)


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
    """One station's runtime: start() brings the parts up in order, stop() takes them down in reverse.

    `status()` is the JSON-able snapshot for HTTP `/v1/status` and the metrics collector.
    """

    def __init__(
        self,
        *,
        station_id: str,
        station_path: str,
        publisher: ResultPublisher,
        outbox: Outbox,
        supervisors: Sequence[CameraSupervisor],
        workers: Sequence[PartWorker],
        fanout: ResultFanout,
        reject: RejectFeed | None = None,
        line_rate_parts_per_min: float | None = None,
        drain_timeout_s: float = 5.0,
        broker: EmbeddedBroker | None = None,
        mqtt_address: tuple[str, int] = ("127.0.0.1", 1883),
    ) -> None:
        self.station_id = station_id
        self.station_path = station_path
        self.publisher = publisher
        self.outbox = outbox
        self.supervisors = {s.camera_id: s for s in supervisors}
        self.workers = list(workers)
        self.fanout = fanout
        self.counts = fanout.counts
        self.reject = reject
        self.broker = broker
        self.mqtt_address = mqtt_address
        self.drain_timeout_s = drain_timeout_s
        self.line = LineTrigger(self.trigger_all, line_rate_parts_per_min) if line_rate_parts_per_min else None
        self._state = "created"
        self._started_at: datetime | None = None
        self._lock = threading.Lock()
        self._tracker_closed = False

    @property
    def tracker(self) -> RejectTracker | None:
        return self.reject.tracker if self.reject is not None else None

    # --- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Publisher, reject station, workers, cameras, then the simulated line. A failure undoes what started."""
        self._state = "starting"
        self._started_at = utc_now()
        try:
            self.publisher.start()
            if self.tracker is not None:
                try:
                    self.tracker.start()  # refuses an unreachable actuator
                except BaseException:
                    self._tracker_closed = True  # start() closed it
                    raise
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
        tracker = self.tracker
        if tracker is not None and not self._tracker_closed:
            settings = tracker.settings
            # Parts already between camera and ejector are still rejected if their pulse is due soon.
            linger_ms = (settings.delay_ms or 0.0) + settings.pulse_width_ms
            time.sleep(min(linger_ms / 1000, self.drain_timeout_s))
            tracker.close()
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
        sup = self.supervisors[camera_id]
        if self.reject is not None and self.reject.camera_id == camera_id and self.reject.announce_at_trigger:
            return self.reject.trigger(sup, part_id=part_id, encoder_count=encoder_count)
        return sup.trigger(part_id=part_id, encoder_count=encoder_count)

    def trigger_all(self) -> None:
        """One part passes every software-triggered camera (the simulated line's tick)."""
        for camera_id, sup in self.supervisors.items():
            if sup.trigger_mode is TriggerMode.SOFTWARE:
                self.trigger(camera_id)

    # --- status ------------------------------------------------------------------------------------
    def on_camera_status(self, status: CameraStatus) -> None:
        """Supervisor hook (camera thread): the retained MQTT camera status."""
        payload = status.to_payload()
        payload.pop("camera_id")
        state = payload.pop("state")
        if state not in ("connected", "stopped", "finished"):
            log.warning(
                "camera %s is %s: parts pass unseen or undecided (%s)", status.camera_id, state, status.last_error
            )
        self.publisher.publish_camera_status(status.camera_id, state, **payload)

    def on_reject_alarm(self, alarm: Alarm) -> None:
        """Reject tracker hook: log, an alarm event, and the retained status listing active alarms."""
        payload = alarm.to_payload()
        if alarm.active:
            log.error("ALARM reject %s: %s", alarm.kind.value, alarm.message)
        else:
            log.warning("reject alarm %s cleared", alarm.kind.value)
        self.publisher.publish_event(self.publisher.topics.alarm, {"source": "reject", **payload})
        active = [a.to_payload() for a in self.reject.tracker.active_alarms] if self.reject is not None else []
        self.publisher.publish_status("alarm" if active else "online", alarms=active)

    def on_alarm(self, kind: str, message: str) -> None:
        """Station alarms outside the reject station (outbox refusing results)."""
        alarm = {"kind": kind, "active": True, "message": message}
        self.publisher.publish_event(self.publisher.topics.alarm, {"source": "station", **alarm})
        self.publisher.publish_status("alarm", alarms=[alarm])

    def status(self) -> dict[str, Any]:
        stats = asdict(self.publisher.stats())
        host, port = self.mqtt_address
        tracker = self.tracker
        return {
            "station": {
                "id": self.station_id,
                "path": self.station_path,
                "state": self._state,
                "started_at": self._started_at.isoformat() if self._started_at else None,
            },
            "cameras": [sup.status().to_payload() for sup in self.supervisors.values()],
            "broker": {**stats, "host": host, "port": port, "embedded": self.broker is not None},
            "outbox": {"depth": stats["outbox_depth"], "alarm": stats["outbox_alarm"]},
            "reject": None
            if tracker is None
            else {
                "counters": tracker.counters.snapshot(),
                "alarms": [a.to_payload() for a in tracker.active_alarms],
            },
            "counts": self.counts.snapshot(),
        }
