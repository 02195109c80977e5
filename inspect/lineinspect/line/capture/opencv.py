"""UVC cameras, RTSP/HTTP streams and video files through OpenCV's VideoCapture.

Network streams open and read with timeouts (FFmpeg backend), so a dead URL is a
clear error within open_timeout_ms instead of a hang. There is no hardware
trigger; in software trigger mode each trigger takes the next frame the source
delivers (for a live stream that is the frame after the trigger).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import cv2
import numpy as np

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.line.capture.base import CameraError, CameraLost, EndOfStream, TriggerMode
from lineinspect.line.capture.config import OpenCVSource
from lineinspect.line.capture.pacing import FramePacer, SoftwareTriggerLatch


class OpenCVCamera:
    def __init__(self, camera_id: str, source: OpenCVSource, *, trigger_mode: TriggerMode) -> None:
        if trigger_mode is TriggerMode.HARDWARE:
            raise CameraError(camera_id, "OpenCV sources have no input lines", "use trigger mode software or free_run")
        self.camera_id = camera_id
        self.source = source
        self.trigger_mode: TriggerMode = trigger_mode
        self._capture: Any = None
        self._pacer: FramePacer | None = None
        self._latch = SoftwareTriggerLatch()
        self._frame_id = 0
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        src = self.source
        if src.url is not None:
            return src.url
        if src.file is not None:
            return str(src.file)
        return f"video device {src.index}"

    def open(self) -> None:
        src = self.source
        t0 = time.monotonic()
        if src.file is not None:
            if not src.file.is_file():
                raise CameraError(self.camera_id, f"video file {src.file} does not exist", "fix source.file")
            capture = cv2.VideoCapture(str(src.file))
        elif src.url is not None:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, src.open_timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, src.read_timeout_ms,
            ]  # fmt: skip
            capture = cv2.VideoCapture(src.url, cv2.CAP_FFMPEG, params)
        else:
            capture = cv2.VideoCapture(int(src.index or 0))
        if not capture.isOpened():
            capture.release()
            waited_ms = (time.monotonic() - t0) * 1000
            raise CameraError(
                self.camera_id,
                f"cannot open {self.where} (gave up after {waited_ms:.0f} ms)",
                "check the URL, that the camera/stream is up and reachable, or the device index",
            )
        rate = src.rate_hz
        if src.file is not None and rate is None:
            fps = capture.get(cv2.CAP_PROP_FPS)
            rate = fps if fps and fps > 0 else 25.0
        with self._lock:
            self._capture = capture
            self._pacer = FramePacer(rate) if (src.file is not None and rate) else None
        self._latch.clear()

    def grab(self, timeout_ms: int) -> Frame | None:
        capture = self._capture
        if capture is None:
            raise CameraError(self.camera_id, "grab before open", "open the camera first")
        if self.trigger_mode is TriggerMode.SOFTWARE:
            if not self._latch.wait(timeout_ms):
                return None
        elif self._pacer is not None and not self._pacer.wait(timeout_ms):
            return None
        ok, image = capture.read()
        if not ok and self.source.file is not None and self.source.loop:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
        if not ok or image is None:
            if self.source.file is not None:
                raise EndOfStream(self.camera_id, f"video file {self.source.file} finished")
            raise CameraLost(
                self.camera_id,
                f"no frame from {self.where} within {self.source.read_timeout_ms} ms",
                "check the camera and the network",
            )
        position_ms = capture.get(cv2.CAP_PROP_POS_MSEC) if self.source.file is not None else 0.0
        self._frame_id += 1
        return Frame(
            image=np.ascontiguousarray(image, dtype=np.uint8),
            captured_at=utc_now(),
            camera_id=self.camera_id,
            frame_id=self._frame_id,
            # A file's own clock (its position) stands in for the device clock.
            device_timestamp_ns=int(position_ms * 1_000_000) if position_ms else None,
            source=self.where,
            simulated=self.source.file is not None,
        )

    def trigger(self) -> None:
        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(self.camera_id, f"trigger() in {self.trigger_mode} mode", "set trigger mode software")
        self._latch.fire()

    def check_alive(self) -> None:
        capture = self._capture
        if capture is None or not capture.isOpened():
            raise CameraLost(self.camera_id, f"{self.where} is closed", "check the camera and the network")

    def stream_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
        self._latch.clear()
