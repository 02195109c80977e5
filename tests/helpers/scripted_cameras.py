"""Cameras that follow a script, for supervisor and station tests: the Camera protocol is small enough
that a fake is a few lines (open, grab, trigger, check_alive, stream_stats, close)."""

from __future__ import annotations

import threading
import time

import numpy as np

from lineinspect.core.frame import Frame
from lineinspect.line.capture.base import TriggerMode


class _Quiet:
    """The parts of the protocol a scripted camera has nothing to do for."""

    def open(self) -> None:
        pass

    def check_alive(self) -> None:
        pass

    def stream_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class ScriptedCamera(_Quiet):
    """Hands out a fixed list of grab outcomes (a device frame id, or an exception), then nothing."""

    def __init__(self, script: list[int | Exception], trigger_mode: TriggerMode = TriggerMode.HARDWARE) -> None:
        self.camera_id = "fake"
        self.trigger_mode = trigger_mode
        self.script = list(script)

    def grab(self, timeout_ms: int) -> Frame | None:
        if not self.script:
            return None
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Frame(image=np.zeros((4, 4), np.uint8), camera_id="fake", frame_id=step)

    def trigger(self) -> None:
        pass


class TriggeredCamera(_Quiet):
    """A software-triggered camera: one image per trigger, `bad` for the trigger numbers in `bad_triggers`."""

    def __init__(self, good: np.ndarray, bad: np.ndarray, *, bad_triggers: frozenset[int] = frozenset()) -> None:
        self.camera_id = "cam1"
        self.good_image = good
        self.bad_image = bad
        self.trigger_mode = TriggerMode.SOFTWARE
        self.bad = bad_triggers
        self._sent = 0
        self._waiting: list[int] = []
        self._lock = threading.Lock()

    def trigger(self) -> None:
        with self._lock:
            self._sent += 1
            self._waiting.append(self._sent)

    def grab(self, timeout_ms: int) -> Frame | None:
        with self._lock:
            step = self._waiting.pop(0) if self._waiting else None
        if step is None:
            time.sleep(min(timeout_ms, 5) / 1000)
            return None
        return Frame(self.bad_image if step in self.bad else self.good_image, frame_id=step)
