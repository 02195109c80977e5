"""CameraSupervisor: owns one camera in its own thread.

It opens the camera, grabs one image at a time in arrival order, and puts each
on a bounded queue of `Capture`s for the inspection worker. It never loses a
triggered part silently: a part that has no usable image (no image by the grab
timeout, a broken image, the camera lost, the queue full) is handed to
`on_skipped` as a `SkippedPart`, which the runtime turns into an `undecided`
result (a reject). Each triggered part is a `PartRef` made once, at its trigger,
and announced to `on_part` before any image or skip of it can exist; its
capture or skipped-part notice carries the same PartRef. When the camera stops answering it closes it and reconnects
with exponential backoff. `status()` is the snapshot for HTTP; `on_status` is
called on every state change (for the retained MQTT camera status).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.core.part import PartRef, Selection
from lineinspect.core.result import UndecidedKind
from lineinspect.line.capture.base import (
    Camera,
    CameraError,
    CameraLost,
    EndOfStream,
    GrabFailed,
    TriggerMode,
)
from lineinspect.line.capture.config import CameraConfig, QueueFullPolicy

log = logging.getLogger(__name__)

# grab() is called with at most this timeout so stop() and trigger deadlines are noticed promptly.
POLL_MS = 100
# Device frame counters wrap or restart; a jump larger than this is not counted as missed frames.
MAX_FRAME_GAP = 1000
SDK_STATS_PERIOD_NS = 1_000_000_000


class CameraState(StrEnum):
    STARTING = "starting"  # first connection attempt not finished yet
    CONNECTED = "connected"  # acquiring
    LOST = "lost"  # the device stopped answering; waiting to reconnect
    RECONNECTING = "reconnecting"  # trying to open the device again (or it was never found)
    FINISHED = "finished"  # a replayed file/folder has no more images
    STOPPED = "stopped"  # stop() was called


@dataclass(frozen=True, slots=True)
class Capture:
    """One grabbed frame waiting for inspection; its part (if triggered) is `frame.part`.

    grabbed_ns is a `time.monotonic_ns()` value. The part's deadline starts at its
    trigger (`frame.part.trigger_ns`) or, for a free-running camera, at the grab.
    """

    frame: Frame
    grabbed_ns: int

    @property
    def start_ns(self) -> int:
        """Where the part's time budget starts (monotonic ns)."""
        part = self.frame.part
        return part.trigger_ns if part is not None else self.grabbed_ns

    def deadline_ns(self, budget_ms: float) -> int:
        return self.start_ns + int(budget_ms * 1_000_000)


@dataclass(frozen=True, slots=True)
class SkippedPart:
    """A triggered part that will not be inspected; the runtime gives it an `undecided` result.

    `part` is None only for an image that arrived with no trigger waiting for it; `frame` is set
    when an image exists but could not be queued. `kind` is the result's `undecided_kind`.
    """

    camera_id: str
    kind: UndecidedKind
    reason: str
    at: datetime
    part: PartRef | None = None
    frame: Frame | None = None


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A snapshot for HTTP (`/v1/status`) and MQTT (`.../camera/<id>/status`, retained)."""

    camera_id: str
    state: CameraState
    since: datetime
    trigger_mode: TriggerMode
    last_error: str | None
    reconnect_attempts: int
    next_attempt_in_ms: int | None
    queue_depth: int
    queue_size: int
    counters: dict[str, int]
    stream: dict[str, int] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "state": self.state.value,
            "since": self.since.isoformat(),
            "trigger_mode": self.trigger_mode.value,
            "last_error": self.last_error,
            "reconnect_attempts": self.reconnect_attempts,
            "next_attempt_in_ms": self.next_attempt_in_ms,
            "queue": {"depth": self.queue_depth, "size": self.queue_size},
            "counters": dict(self.counters),
            "stream": dict(self.stream),
        }


COUNTER_NAMES = (
    "frames",  # images grabbed
    "triggers",  # software triggers sent
    "grab_failures",  # broken images (incomplete buffer, lost packets)
    "missed_triggers",  # software triggers without an image within grab_timeout_ms
    "missed_frames",  # frames the device numbered but never delivered (gaps in frame ids)
    "late_frames",  # images that arrived after their part was already given up
    "skipped_parts",  # parts handed to on_skipped (all reasons)
    "dropped_frames",  # free run only: frames discarded because the queue was full
    "idle_timeouts",  # free run: grab_timeout_ms passed without an image
    "reconnects",  # successful reconnections after a loss
)


class CameraSupervisor:
    def __init__(
        self,
        camera: Camera,
        *,
        grab_timeout_ms: int = 1000,
        liveness_check_ms: int = 2000,
        reconnect_min_ms: int = 250,
        reconnect_max_ms: int = 10_000,
        queue_size: int = 4,
        full_policy: QueueFullPolicy | None = None,
        on_part: Callable[[PartRef], None] | None = None,
        on_skipped: Callable[[SkippedPart], None] | None = None,
        on_status: Callable[[CameraStatus], None] | None = None,
        selection: Callable[[], Selection] | None = None,
        join_timeout_s: float = 20.0,
    ) -> None:
        """Times in ms; `join_timeout_s` bounds stop() (an SDK call may block a few seconds on a lost device).

        Hooks (called on the trigger or camera thread; an exception is logged, never raised): `on_part` once
        per triggered part, at its trigger; `on_skipped` for a part that will not be inspected; `on_status`
        on every camera state change. `selection`: the recipe and setup active now, fixed into each part at
        its trigger (None: parts carry none and are inspected with the camera's default).
        """
        mode = camera.trigger_mode
        if full_policy is None:
            full_policy = QueueFullPolicy.DROP_OLDEST if mode is TriggerMode.FREE_RUN else QueueFullPolicy.UNDECIDED_NEW
        if full_policy is QueueFullPolicy.DROP_OLDEST and mode is not TriggerMode.FREE_RUN:
            raise CameraError(camera.camera_id, "drop_oldest would silently lose triggered parts", "use undecided_new")
        self.camera = camera
        self.camera_id = camera.camera_id
        self.trigger_mode = mode
        self.grab_timeout_ms = grab_timeout_ms
        self.liveness_check_ms = liveness_check_ms
        self.reconnect_min_ms = reconnect_min_ms
        self.reconnect_max_ms = reconnect_max_ms
        self.full_policy = full_policy
        self.on_part = on_part
        self.selection = selection
        self.on_skipped = on_skipped
        self.on_status = on_status
        self.join_timeout_s = join_timeout_s
        self.captures: queue.Queue[Capture] = queue.Queue(maxsize=queue_size)
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: deque[PartRef] = deque()
        self._next_trigger_id = 1
        self._last_device_frame_id: int | None = None
        self._trigger_loss: CameraLost | None = None
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._sdk_stats: dict[str, int] = {}
        self._state = CameraState.STARTING
        self._since = utc_now()
        self._last_error: str | None = None
        self._attempts = 0
        self._next_attempt_at_ns: int | None = None

    @classmethod
    def from_config(
        cls,
        config: CameraConfig,
        camera: Camera | None = None,
        *,
        on_part: Callable[[PartRef], None] | None = None,
        on_skipped: Callable[[SkippedPart], None] | None = None,
        on_status: Callable[[CameraStatus], None] | None = None,
        selection: Callable[[], Selection] | None = None,
    ) -> CameraSupervisor:
        """A supervisor with the definition's timeouts, backoff and queue; builds the backend unless given."""
        if camera is None:
            from lineinspect.line.capture.build import build_camera

            camera = build_camera(config)
        return cls(
            camera,
            grab_timeout_ms=config.grab_timeout_ms,
            liveness_check_ms=config.liveness_check_ms,
            reconnect_min_ms=config.reconnect.min_ms,
            reconnect_max_ms=config.reconnect.max_ms,
            queue_size=config.queue.size,
            full_policy=config.full_policy,
            on_part=on_part,
            on_skipped=on_skipped,
            on_status=on_status,
            selection=selection,
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera '{self.camera_id}' supervisor already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop grabbing, close the camera and join the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.join_timeout_s)
            if thread.is_alive():
                log.error("camera %s: grab thread did not stop within %.1f s", self.camera_id, self.join_timeout_s)

    def __enter__(self) -> CameraSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout_s: float) -> Capture | None:
        """The next capture, or None after timeout_s."""
        try:
            return self.captures.get(timeout=timeout_s)
        except queue.Empty:
            return None

    # ----------------------------------------------------------------- trigger

    def trigger(self, *, part_id: str | None = None, encoder_count: int | None = None) -> int:
        """Send a software trigger for one part; returns its trigger id.

        Never raises for a camera problem: if the camera cannot take the trigger
        the part is handed to on_skipped at once.
        """
        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(
                self.camera_id, f"software trigger sent, but the trigger mode is {self.trigger_mode}", "fix the caller"
            )
        now = time.monotonic_ns()
        selection = self.selection() if self.selection is not None else None
        with self._lock:
            trigger_id = self._next_trigger_id
            self._next_trigger_id += 1
            self._counters["triggers"] += 1
            connected = self._state is CameraState.CONNECTED
            reason = f"camera {self._state.value}: {self._last_error or 'not connected'}"
            pending = PartRef(self.camera_id, trigger_id, now, part_id, encoder_count, selection)
            if connected:
                # Recorded before the trigger goes out, so its image cannot arrive first.
                self._pending.append(pending)
        self._announce(pending)
        if not connected:
            self._skip(UndecidedKind.CAMERA_LOST, reason, pending)
            return trigger_id
        try:
            self.camera.trigger()
        except CameraError as exc:
            with self._lock:
                taken = pending in self._pending
                if taken:
                    self._pending.remove(pending)
                if isinstance(exc, CameraLost):
                    self._trigger_loss = exc
            if taken:
                self._skip(UndecidedKind.TRIGGER_FAILED, f"software trigger failed: {exc}", pending)
        return trigger_id

    # ----------------------------------------------------------------- status

    def status(self) -> CameraStatus:
        with self._lock:
            next_ms = None
            if self._next_attempt_at_ns is not None:
                next_ms = max(0, (self._next_attempt_at_ns - time.monotonic_ns()) // 1_000_000)
            return CameraStatus(
                camera_id=self.camera_id,
                state=self._state,
                since=self._since,
                trigger_mode=self.trigger_mode,
                last_error=self._last_error,
                reconnect_attempts=self._attempts,
                next_attempt_in_ms=next_ms,
                queue_depth=self.captures.qsize(),
                queue_size=self._queue_size,
                counters=dict(self._counters),
                stream=dict(self._sdk_stats),
            )

    def _set_state(self, state: CameraState, error: str | None = None) -> None:
        with self._lock:
            changed = state is not self._state
            self._state = state
            if changed:
                self._since = utc_now()
            if error is not None:
                self._last_error = error
        if changed:
            log.info("camera %s: %s%s", self.camera_id, state.value, f" ({error})" if error else "")
            if self.on_status is not None:
                try:
                    self.on_status(self.status())
                except Exception:
                    log.exception("camera %s: on_status hook failed", self.camera_id)

    # ----------------------------------------------------------------- grab thread

    def _run(self) -> None:
        delay_ms = self.reconnect_min_ms
        ever_connected = False
        try:
            while not self._stop.is_set():
                try:
                    self.camera.open()
                except CameraError as exc:
                    self.camera.close()
                    with self._lock:
                        self._attempts += 1
                        self._next_attempt_at_ns = time.monotonic_ns() + delay_ms * 1_000_000
                    self._set_state(CameraState.RECONNECTING, str(exc))
                    if self._stop.wait(delay_ms / 1000):
                        break
                    delay_ms = min(delay_ms * 2, self.reconnect_max_ms)
                    continue
                with self._lock:
                    self._attempts = 0
                    self._next_attempt_at_ns = None
                    self._last_device_frame_id = None
                    self._trigger_loss = None
                    if ever_connected:
                        self._counters["reconnects"] += 1
                ever_connected = True
                delay_ms = self.reconnect_min_ms
                self._set_state(CameraState.CONNECTED)
                try:
                    self._grab_until_lost()
                except CameraLost as exc:
                    # Report first: closing a vanished device can block in the SDK for seconds.
                    with self._lock:
                        self._next_attempt_at_ns = time.monotonic_ns() + delay_ms * 1_000_000
                    self._set_state(CameraState.LOST, str(exc))
                    self._fail_pending(UndecidedKind.CAMERA_LOST, f"camera lost: {exc}")
                    self._refresh_sdk_stats()
                    self.camera.close()
                    if self._stop.wait(delay_ms / 1000):
                        break
                    delay_ms = min(delay_ms * 2, self.reconnect_max_ms)
                except EndOfStream as exc:
                    self._refresh_sdk_stats()
                    self._set_state(CameraState.FINISHED, str(exc))
                    return
        finally:
            if self._state is CameraState.CONNECTED:
                self._refresh_sdk_stats()
            self.camera.close()
            self._fail_pending(UndecidedKind.STOPPED, "camera stopped before the image arrived")
            if self._state is not CameraState.FINISHED:
                self._set_state(CameraState.STOPPED)

    def _grab_until_lost(self) -> None:
        poll_ms = min(POLL_MS, self.grab_timeout_ms)
        timeout_ns = self.grab_timeout_ms * 1_000_000
        last_image_ns = last_check_ns = time.monotonic_ns()
        last_stats_ns = 0
        while not self._stop.is_set():
            with self._lock:
                loss = self._trigger_loss
            if loss is not None:
                raise loss
            try:
                frame = self.camera.grab(poll_ms)
            except GrabFailed as exc:
                self._count("grab_failures")
                with self._lock:
                    self._last_error = str(exc)
                    if self._last_device_frame_id is not None:
                        # The device counted the broken image: it is not also a gap in the frame ids.
                        self._last_device_frame_id += 1
                if self.trigger_mode is not TriggerMode.FREE_RUN:
                    self._skip(UndecidedKind.IMAGE_BROKEN, f"image broken: {exc.problem}", self._take_trigger())
                continue
            except (CameraLost, EndOfStream):
                raise
            except CameraError as exc:
                raise CameraLost(exc.camera_id, exc.problem, exc.action) from exc
            now = time.monotonic_ns()
            if now - last_stats_ns >= SDK_STATS_PERIOD_NS:
                last_stats_ns = now
                self._refresh_sdk_stats()
            if frame is None:
                self._expire_triggers(now, timeout_ns)
                if self.trigger_mode is TriggerMode.FREE_RUN and now - last_image_ns >= timeout_ns:
                    self._count("idle_timeouts")
                    last_image_ns = now
                if now - max(last_image_ns, last_check_ns) >= self.liveness_check_ms * 1_000_000:
                    last_check_ns = now
                    self.camera.check_alive()
                continue
            last_image_ns = now
            self._count("frames")
            self._deliver(frame, now)

    def _deliver(self, frame: Frame, now_ns: int) -> None:
        part: PartRef | None = None
        if self.trigger_mode is TriggerMode.SOFTWARE:
            part = self._take_trigger(before_ns=now_ns)
            if part is None:
                # Its trigger already timed out and that part was reported undecided.
                self._count("late_frames")
                return
        elif self.trigger_mode is TriggerMode.HARDWARE:
            for missing in self._missed_device_frames(frame.frame_id):
                self._skip(
                    UndecidedKind.NO_IMAGE,
                    f"camera numbered frame {missing} but never delivered it",
                    self._take_trigger(),
                )
                self._count("missed_frames")
            part = self._take_trigger()
        frame = replace(frame, camera_id=frame.camera_id or self.camera_id, part=part)
        self._enqueue(Capture(frame=frame, grabbed_ns=now_ns))

    def _enqueue(self, capture: Capture) -> None:
        try:
            self.captures.put_nowait(capture)
            return
        except queue.Full:
            pass
        waiting = self.captures.qsize()
        if self.full_policy is QueueFullPolicy.UNDECIDED_NEW:
            self._skip_capture(capture, f"inspection queue full ({waiting} parts waiting)")
            return
        try:
            oldest = self.captures.get_nowait()
        except queue.Empty:
            oldest = None
        if oldest is not None:
            if self.full_policy is QueueFullPolicy.DROP_OLDEST:
                self._count("dropped_frames")
            else:
                self._skip_capture(oldest, f"inspection queue full ({waiting} parts waiting); oldest part given up")
        try:
            self.captures.put_nowait(capture)
        except queue.Full:
            self._skip_capture(capture, f"inspection queue full ({waiting} parts waiting)")

    def _skip_capture(self, capture: Capture, reason: str) -> None:
        if self.trigger_mode is TriggerMode.FREE_RUN:
            self._count("dropped_frames")
            return
        f = capture.frame
        self._report(SkippedPart(self.camera_id, UndecidedKind.QUEUE_FULL, reason, utc_now(), f.part, frame=f))

    def _take_trigger(self, before_ns: int | None = None) -> PartRef | None:
        """The oldest pending software trigger, or a new (announced) part for a hardware-triggered image."""
        with self._lock:
            if self.trigger_mode is not TriggerMode.HARDWARE:
                if self._pending and (before_ns is None or self._pending[0].trigger_ns <= before_ns):
                    return self._pending.popleft()
                return None
            selection = self.selection() if self.selection is not None else None
            part = PartRef(self.camera_id, self._next_trigger_id, time.monotonic_ns(), selection=selection)
            self._next_trigger_id += 1
        self._announce(part)
        return part

    def _announce(self, part: PartRef) -> None:
        """A part entered: tell `on_part`, once, before anything else of it is reported."""
        if self.on_part is not None:
            try:
                self.on_part(part)
            except Exception:
                log.exception("camera %s: on_part hook failed for trigger %d", self.camera_id, part.trigger_id)

    def _missed_device_frames(self, frame_id: int | None) -> list[int]:
        with self._lock:
            last = self._last_device_frame_id
            self._last_device_frame_id = frame_id
        if frame_id is None or last is None or not (0 < frame_id - last <= MAX_FRAME_GAP):
            return []
        return list(range(last + 1, frame_id))

    def _expire_triggers(self, now_ns: int, timeout_ns: int) -> None:
        expired = []
        with self._lock:
            while self._pending and now_ns - self._pending[0].trigger_ns >= timeout_ns:
                expired.append(self._pending.popleft())
        for pending in expired:
            self._count("missed_triggers")
            self._skip(
                UndecidedKind.NO_IMAGE, f"no image within {self.grab_timeout_ms} ms of the software trigger", pending
            )

    def _fail_pending(self, kind: UndecidedKind, reason: str) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        for p in pending:
            self._skip(kind, reason, p)

    def _skip(self, kind: UndecidedKind, reason: str, part: PartRef | None) -> None:
        self._report(SkippedPart(self.camera_id, kind, reason, utc_now(), part))

    def _report(self, part: SkippedPart) -> None:
        self._count("skipped_parts")
        trigger_id = part.part.trigger_id if part.part is not None else None
        log.warning("camera %s: part (trigger %s) not inspected: %s", self.camera_id, trigger_id, part.reason)
        if self.on_skipped is not None:
            try:
                self.on_skipped(part)
            except Exception:
                log.exception("camera %s: on_skipped hook failed", self.camera_id)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _refresh_sdk_stats(self) -> None:
        try:
            stats = self.camera.stream_stats()
        except Exception as exc:  # statistics are best effort; a lost device may not answer
            log.debug("camera %s: stream statistics unavailable: %s", self.camera_id, exc)
            return
        with self._lock:
            self._sdk_stats = stats
