"""Collects what a CameraSupervisor reports through its hooks."""

from __future__ import annotations

import threading

from lineinspect.core.part import PartRef
from lineinspect.line.capture.supervisor import CameraState, CameraStatus, SkippedPart


class Recorder:
    def __init__(self) -> None:
        self.parts: list[PartRef] = []
        self.skipped: list[SkippedPart] = []
        self.states: list[CameraState] = []
        self._lock = threading.Lock()

    def on_part(self, part: PartRef) -> None:
        with self._lock:
            self.parts.append(part)

    def on_skipped(self, part: SkippedPart) -> None:
        with self._lock:
            self.skipped.append(part)

    def on_status(self, status: CameraStatus) -> None:
        with self._lock:
            self.states.append(status.state)
