"""GigE Vision and USB3 Vision cameras through Aravis (GObject introspection).

Needs the system package gir1.2-aravis-0.8 and the pip extra `aravis` (PyGObject).
Aravis' GvFakeCamera serves real GVCP/GVSP on loopback, which the tests use.

Loss detection: Aravis emits `control-lost` when the heartbeat fails; while no
images arrive the supervisor also asks `check_alive`, which looks for the device
with a GigE Vision discovery (about 1 s). Once the device is known to be gone,
close() sends it nothing more: each unanswered control request costs Aravis 2.5 s.
Even so, Aravis 0.8.26 takes about 10 s to release a vanished GigE device (its
heartbeat retries for 5 s); the supervisor reports `lost` first, then reconnects.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import cv2
import numpy as np

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.line.capture.base import CameraError, CameraLost, CameraNotFound, GrabFailed, TriggerMode
from lineinspect.line.capture.config import Acquisition, AravisSource, EdgeActivation, HardwareTrigger

# Aravis stream counters (ArvStream infos) reported as they are named there, where this Aravis has them.
STREAM_INFOS = (
    "n_completed_buffers",
    "n_failures",
    "n_underruns",
    "n_timeouts",
    "n_aborted",
    "n_missing_frames",
    "n_received_packets",
    "n_missing_packets",
    "n_error_packets",
    "n_resend_requests",
    "n_resent_packets",
    "n_duplicated_packets",
)


def _aravis() -> tuple[Any, Any]:
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, GLib
    except (ImportError, ValueError) as exc:
        raise CameraError(
            "?",
            f"Aravis is not available ({exc})",
            "apt-get install gir1.2-aravis-0.8 and pip install 'lineinspect[aravis]'",
        ) from exc
    return Aravis, GLib


def _to_bgr_or_gray(aravis: Any, data: bytes, width: int, height: int, pixel_format: int) -> np.ndarray | None:
    raw = np.frombuffer(data, dtype=np.uint8)
    if pixel_format == aravis.PIXEL_FORMAT_MONO_8:
        return raw[: width * height].reshape(height, width).copy()
    if pixel_format in (aravis.PIXEL_FORMAT_RGB_8_PACKED, aravis.PIXEL_FORMAT_BGR_8_PACKED):
        image = raw[: width * height * 3].reshape(height, width, 3)
        return (
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if pixel_format == aravis.PIXEL_FORMAT_RGB_8_PACKED else image.copy()
        )
    # OpenCV names Bayer patterns by the second row, GenICam by the first: RG8 is OpenCV's BG.
    bayer = {
        aravis.PIXEL_FORMAT_BAYER_RG_8: cv2.COLOR_BayerBG2BGR,
        aravis.PIXEL_FORMAT_BAYER_GR_8: cv2.COLOR_BayerGB2BGR,
        aravis.PIXEL_FORMAT_BAYER_GB_8: cv2.COLOR_BayerGR2BGR,
        aravis.PIXEL_FORMAT_BAYER_BG_8: cv2.COLOR_BayerRG2BGR,
    }
    if pixel_format in bayer:
        return cv2.cvtColor(raw[: width * height].reshape(height, width), bayer[pixel_format])
    return None


class AravisCamera:
    def __init__(self, camera_id: str, source: AravisSource, acquisition: Acquisition) -> None:
        self.camera_id = camera_id
        self.source = source
        self.acquisition = acquisition
        self.trigger_mode = TriggerMode(acquisition.trigger.mode)
        self._camera: Any = None
        self._stream: Any = None
        self._device: Any = None
        self._lost_handler: int | None = None
        self._chosen: str | None = None
        self._lost = threading.Event()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- open

    def open(self) -> None:
        aravis, glib = _aravis()
        aravis.update_device_list()
        found = []
        chosen = None
        for i in range(aravis.get_n_devices()):
            ids = (aravis.get_device_id(i), aravis.get_device_serial_nbr(i), aravis.get_device_address(i))
            found.append(f"{ids[0]} ({aravis.get_device_model(i)}, {ids[2]})")
            if self.source.device_id in ids and chosen is None:
                chosen = ids[0]
        if chosen is None:
            raise CameraNotFound(self.camera_id, f"Aravis device '{self.source.device_id}'", found)
        self._lost.clear()
        self._chosen = chosen
        try:
            camera = aravis.Camera.new(chosen)
        except glib.Error as exc:
            raise CameraError(
                self.camera_id, f"Aravis cannot open {chosen}: {exc.message}", "check the network"
            ) from exc
        device = camera.get_device()
        self._lost_handler = device.connect("control-lost", self._on_control_lost)
        with self._lock:
            self._camera, self._device = camera, device
        try:
            self._configure(camera, device, aravis, glib)
            stream = camera.create_stream(None, None)
            if stream is None:
                raise CameraError(self.camera_id, "Aravis could not create a stream", "check firewall and network")
            payload = camera.get_payload()
            for _ in range(self.source.n_buffers):
                stream.push_buffer(aravis.Buffer.new_allocate(payload))
            with self._lock:
                self._stream = stream
            camera.start_acquisition()
        except glib.Error as exc:
            self.close()
            raise CameraError(self.camera_id, f"Aravis cannot start acquisition: {exc.message}") from exc
        except CameraError:
            self.close()
            raise

    def _on_control_lost(self, _device: Any) -> None:
        # Called from Aravis' heartbeat thread: only flag it; grab() raises in the supervisor's thread.
        self._lost.set()

    def _configure(self, camera: Any, device: Any, aravis: Any, glib: Any) -> None:
        acq = self.acquisition

        def apply(what: str, call: Any, *args: Any) -> None:
            try:
                call(*args)
            except glib.Error as exc:
                raise CameraError(
                    self.camera_id, f"cannot set {what} to {args!r}: {exc.message}", "fix the camera definition"
                ) from exc

        if acq.pixel_format:
            apply("pixel_format", camera.set_pixel_format_from_string, acq.pixel_format)
        if acq.roi is not None:
            apply("roi", camera.set_region, acq.roi.x, acq.roi.y, acq.roi.width, acq.roi.height)
        if acq.exposure_us is not None:
            apply("exposure_us", camera.set_exposure_time, float(acq.exposure_us))
        if acq.gain_db is not None:
            apply("gain_db", camera.set_gain, float(acq.gain_db))
        trigger = acq.trigger
        if isinstance(trigger, HardwareTrigger):
            apply("trigger line", camera.set_trigger, trigger.line)
            edge = "RisingEdge" if trigger.activation is EdgeActivation.RISING_EDGE else "FallingEdge"
            apply("TriggerActivation", device.set_string_feature_value, "TriggerActivation", edge)
        elif self.trigger_mode is TriggerMode.SOFTWARE:
            apply("trigger", camera.set_trigger, "Software")
        else:
            apply("free run", camera.clear_triggers)
            apply("acquisition mode", camera.set_acquisition_mode, aravis.AcquisitionMode.CONTINUOUS)
            rate = getattr(trigger, "frame_rate_hz", None)
            if rate is not None:
                apply("frame_rate_hz", camera.set_frame_rate, float(rate))

    # ----------------------------------------------------------------- grab

    def grab(self, timeout_ms: int) -> Frame | None:
        aravis, _ = _aravis()
        stream = self._stream
        if stream is None:
            raise CameraError(self.camera_id, "grab before open", "open the camera first")
        if self._lost.is_set():
            raise CameraLost(self.camera_id, "Aravis lost control of the camera (no heartbeat answer)", "check network")
        buffer = stream.timeout_pop_buffer(timeout_ms * 1000)
        if buffer is None:
            return None
        try:
            status = buffer.get_status()
            if status != aravis.BufferStatus.SUCCESS:
                raise GrabFailed(
                    self.camera_id,
                    f"image {buffer.get_frame_id()} {status.value_nick}",
                    "check the network (packet size, bandwidth, firewall) if this repeats",
                )
            fmt = buffer.get_image_pixel_format()
            image = _to_bgr_or_gray(
                aravis, buffer.get_image_data(), buffer.get_image_width(), buffer.get_image_height(), fmt
            )
            if image is None:
                raise GrabFailed(
                    self.camera_id, f"pixel format 0x{fmt:08x} is not supported", "set pixel_format to Mono8 or BGR8"
                )
            timestamp_ns = int(buffer.get_timestamp())
            return Frame(
                image=image,
                captured_at=utc_now(),
                camera_id=self.camera_id,
                frame_id=int(buffer.get_frame_id()),
                device_timestamp_ns=timestamp_ns or None,
                source=f"aravis:{self.source.device_id}",
            )
        finally:
            stream.push_buffer(buffer)

    def trigger(self) -> None:
        _, glib = _aravis()
        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(self.camera_id, f"trigger() in {self.trigger_mode} mode", "set trigger mode software")
        with self._lock:
            camera = self._camera
            if camera is None:
                raise CameraError(self.camera_id, "software trigger while the camera is closed")
            try:
                camera.software_trigger()
            except glib.Error as exc:
                self._lost.set()
                raise CameraLost(self.camera_id, f"software trigger not acknowledged: {exc.message}") from exc

    def check_alive(self) -> None:
        aravis, _ = _aravis()
        if self._device is None or self._lost.is_set():
            raise CameraLost(self.camera_id, "Aravis lost control of the camera", "check network and power")
        # Discovery, not a register read: while the heartbeat is failing Aravis holds the control
        # channel for seconds, so a register read would only tell after ~8 s; discovery takes ~1 s.
        aravis.update_device_list()
        listed = {aravis.get_device_id(i) for i in range(aravis.get_n_devices())}
        if self._chosen not in listed:
            self._lost.set()
            raise CameraLost(
                self.camera_id, f"{self._chosen} no longer answers discovery", "check network cable and power"
            )

    def stream_stats(self) -> dict[str, int]:
        aravis, _ = _aravis()
        stream = self._stream
        if stream is None:
            return {}
        completed, failures, underruns = aravis.Stream.get_statistics(stream)
        stats = {"n_completed_buffers": completed, "n_failures": failures, "n_underruns": underruns}
        if hasattr(stream, "get_info_uint64_by_name"):  # Aravis >= 0.8.23
            for name in STREAM_INFOS:
                stats[name] = int(stream.get_info_uint64_by_name(name))
        return stats

    def close(self) -> None:
        with self._lock:
            camera, device, stream = self._camera, self._device, self._stream
            self._camera = self._device = self._stream = None
        if camera is not None and not self._lost.is_set():
            # The camera is going away anyway; closing must not fail.
            with contextlib.suppress(Exception):
                camera.stop_acquisition()
        if device is not None and self._lost_handler is not None:
            device.disconnect(self._lost_handler)
            self._lost_handler = None
        del stream  # the last reference: Aravis stops its stream thread
