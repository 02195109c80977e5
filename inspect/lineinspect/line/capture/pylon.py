"""Basler cameras through pypylon (pip extra `pylon`; the wheel bundles the pylon runtime).

pylon's camera emulation (`emulation: true`) serves images from a file or folder
(`image_path`) and takes software triggers, for demos and tests. The pylon
transport layer reads PYLON_CAMEMU once, when it is first used; this backend sets
it to 1 for an emulated camera unless it is already set.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import numpy as np

from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.line.capture.base import CameraError, CameraLost, CameraNotFound, GrabFailed, TriggerMode
from lineinspect.line.capture.config import Acquisition, EdgeActivation, HardwareTrigger, PylonSource

EMULATION_CLASS = "BaslerCamEmu"
TRIGGER_READY_TIMEOUT_MS = 1000
# pylon Stream Grabber statistics (names as pylon reports them) → names in our status.
STREAM_STATISTICS = {
    "Statistic_Total_Buffer_Count": "total_buffers",
    "Statistic_Failed_Buffer_Count": "failed_buffers",
    "Statistic_Buffer_Underrun_Count": "buffer_underruns",
    "Statistic_Total_Packet_Count": "total_packets",
    "Statistic_Failed_Packet_Count": "failed_packets",
    "Statistic_Resend_Request_Count": "resend_requests",
    "Statistic_Resend_Packet_Count": "resent_packets",
    "Statistic_Resynchronization_Count": "resynchronizations",
    "Statistic_Missed_Frame_Count": "missed_frames",
}


def _describe(exc: Exception) -> str:
    """pylon's message without the C++ file and line it appends."""
    return str(exc).split(" : ")[0].strip()


def _pylon() -> Any:
    try:
        from pypylon import pylon
    except ImportError as exc:
        raise CameraError(
            "?", "pypylon is not installed", "pip install 'lineinspect[pylon]' (the wheel bundles the pylon runtime)"
        ) from exc
    return pylon


class PylonCamera:
    def __init__(self, camera_id: str, source: PylonSource, acquisition: Acquisition) -> None:
        self.camera_id = camera_id
        self.source = source
        self.acquisition = acquisition
        self.trigger_mode = TriggerMode(acquisition.trigger.mode)
        self._camera: Any = None
        self._converter: Any = None
        self._tick_ns: float = 1.0
        # The trigger may come from another thread than grab(); pylon serialises node access itself,
        # this lock only keeps close() from pulling the camera away under a trigger.
        self._lock = threading.Lock()

    @property
    def instant_camera(self) -> Any:
        """The pylon InstantCamera while open (for diagnostics and tests), else None."""
        return self._camera

    # ----------------------------------------------------------------- open

    def open(self) -> None:
        if self.source.emulation:
            os.environ.setdefault("PYLON_CAMEMU", "1")
        pylon = _pylon()
        from pypylon import genicam

        try:
            factory = pylon.TlFactory.GetInstance()
            devices = list(factory.EnumerateDevices())
            info = self._select(devices)
            camera = pylon.InstantCamera(factory.CreateDevice(info))
            camera.Open()
        except genicam.GenericException as exc:
            raise CameraError(self.camera_id, f"pylon cannot open the camera: {exc}", "check cable and power") from exc
        try:
            self._configure(camera, genicam)
            camera.MaxNumBuffer.Value = self.source.max_buffers
            # OneByOne: every image in arrival order; "latest image only" would lose triggered parts.
            camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except CameraError:
            self._release(camera)
            raise
        except genicam.GenericException as exc:
            self._release(camera)
            raise CameraError(self.camera_id, f"pylon cannot start grabbing: {exc}", "check the settings") from exc
        converter = pylon.ImageFormatConverter()
        converter.OutputPixelFormat = pylon.PixelType_BGR8packed
        with self._lock:
            self._camera = camera
            self._converter = converter

    def _select(self, devices: list[Any]) -> Any:
        src = self.source

        def describe(d: Any) -> str:
            name = d.GetUserDefinedName()
            return f"{d.GetSerialNumber()} ({d.GetModelName()}{', ' + name if name else ''})"

        if src.serial:
            wanted, match = f"serial {src.serial}", [d for d in devices if d.GetSerialNumber() == src.serial]
        elif src.user_defined_name:
            wanted = f"user-defined name '{src.user_defined_name}'"
            match = [d for d in devices if d.GetUserDefinedName() == src.user_defined_name]
        else:
            wanted, match = "an emulated camera", [d for d in devices if d.GetDeviceClass() == EMULATION_CLASS]
        if not match:
            action = ""
            if src.emulation and os.environ.get("PYLON_CAMEMU", "0") in ("", "0"):
                action = "set PYLON_CAMEMU=1 (or more) before the station starts"
            raise CameraNotFound(self.camera_id, f"pylon camera with {wanted}", [describe(d) for d in devices], action)
        return match[0]

    def _configure(self, camera: Any, genicam: Any) -> None:
        nodes = camera.GetNodeMap()

        def set_value(name: str, value: object, *alternatives: str) -> None:
            for feature in (name, *alternatives):
                node = nodes.GetNode(feature)
                if node is not None and genicam.IsWritable(node):
                    try:
                        if isinstance(value, str):
                            node.FromString(value)
                        else:
                            node.SetValue(value)
                    except genicam.GenericException as exc:
                        allowed = ""
                        if hasattr(node, "GetSymbolics"):
                            allowed = f" (allowed: {', '.join(node.GetSymbolics())})"
                        raise CameraError(
                            self.camera_id,
                            f"cannot set {feature} to {value!r}{allowed}: {_describe(exc)}",
                            "fix the camera definition",
                        ) from exc
                    return
            raise CameraError(
                self.camera_id,
                f"this camera has no writable {' / '.join((name, *alternatives))} to set to {value!r}",
                "remove the setting from the camera definition or check the camera model",
            )

        acq = self.acquisition
        if self.source.emulation and self.source.image_path is not None:
            set_value("TestImageSelector", "Off")
            set_value("ImageFileMode", "On")
            set_value("ImageFilename", str(self.source.image_path))
        if acq.pixel_format:
            set_value("PixelFormat", acq.pixel_format)
        if acq.roi is not None:
            # Offsets first to 0 so a larger width/height fits, then the region itself.
            set_value("OffsetX", 0)
            set_value("OffsetY", 0)
            set_value("Width", acq.roi.width)
            set_value("Height", acq.roi.height)
            set_value("OffsetX", acq.roi.x)
            set_value("OffsetY", acq.roi.y)
        if acq.exposure_us is not None:
            if nodes.GetNode("ExposureAuto") is not None:
                set_value("ExposureAuto", "Off")
            set_value("ExposureTime", float(acq.exposure_us), "ExposureTimeAbs")
        if acq.gain_db is not None:
            if nodes.GetNode("GainAuto") is not None:
                set_value("GainAuto", "Off")
            set_value("Gain", float(acq.gain_db))
        set_value("TriggerSelector", "FrameStart")
        trigger = acq.trigger
        if self.trigger_mode is TriggerMode.FREE_RUN:
            set_value("TriggerMode", "Off")
            rate = getattr(trigger, "frame_rate_hz", None)
            if rate is not None:
                set_value("AcquisitionFrameRateEnable", True)
                set_value("AcquisitionFrameRate", float(rate), "AcquisitionFrameRateAbs")
        else:
            set_value("TriggerMode", "On")
            if isinstance(trigger, HardwareTrigger):
                set_value("TriggerSource", trigger.line)
                edge = "RisingEdge" if trigger.activation is EdgeActivation.RISING_EDGE else "FallingEdge"
                set_value("TriggerActivation", edge)
            else:
                set_value("TriggerSource", "Software")
        tick = nodes.GetNode("GevTimestampTickFrequency")
        # GigE cameras count timestamp ticks at this rate; USB3 cameras count ns.
        self._tick_ns = 1e9 / tick.GetValue() if tick is not None and genicam.IsReadable(tick) else 1.0

    # ----------------------------------------------------------------- grab

    def grab(self, timeout_ms: int) -> Frame | None:
        pylon = _pylon()
        from pypylon import genicam

        camera = self._camera
        if camera is None:
            raise CameraError(self.camera_id, "grab before open", "open the camera first")
        if camera.IsCameraDeviceRemoved():
            raise CameraLost(self.camera_id, "pylon reports the camera removed", "check cable and power")
        try:
            result = camera.RetrieveResult(timeout_ms, pylon.TimeoutHandling_Return)
        except genicam.GenericException as exc:
            if camera.IsCameraDeviceRemoved():
                raise CameraLost(self.camera_id, f"camera removed: {_describe(exc)}", "check cable and power") from exc
            raise CameraError(self.camera_id, f"grab failed: {_describe(exc)}") from exc
        if not result.IsValid():
            if camera.IsCameraDeviceRemoved():
                raise CameraLost(self.camera_id, "pylon reports the camera removed", "check cable and power")
            return None
        try:
            if not result.GrabSucceeded():
                raise GrabFailed(
                    self.camera_id,
                    f"image {result.GetBlockID()} incomplete: {result.GetErrorDescription()} "
                    f"(error 0x{result.GetErrorCode():x})",
                    "check the network (packet size, bandwidth) if this repeats",
                )
            if result.GetPixelType() == pylon.PixelType_Mono8:
                image = np.array(result.GetArray(), dtype=np.uint8, copy=True)
            else:
                image = np.array(self._converter.Convert(result).GetArray(), dtype=np.uint8, copy=True)
            ticks = int(result.GetTimeStamp())
            return Frame(
                image=image,
                captured_at=utc_now(),
                camera_id=self.camera_id,
                frame_id=int(result.GetBlockID()),
                device_timestamp_ns=int(ticks * self._tick_ns) if ticks else None,
                source=f"pylon:{self.source.serial or self.source.user_defined_name or 'emulation'}",
                simulated=self.source.emulation,
            )
        finally:
            result.Release()

    def trigger(self) -> None:
        pylon = _pylon()
        from pypylon import genicam

        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(self.camera_id, f"trigger() in {self.trigger_mode} mode", "set trigger mode software")
        with self._lock:
            camera = self._camera
            if camera is None:
                raise CameraError(self.camera_id, "software trigger while the camera is closed")
            if camera.IsCameraDeviceRemoved():
                raise CameraLost(self.camera_id, "pylon reports the camera removed", "check cable and power")
            try:
                # Waiting for "trigger ready" turns an overtrigger into a clear error instead of a lost exposure.
                if not camera.WaitForFrameTriggerReady(TRIGGER_READY_TIMEOUT_MS, pylon.TimeoutHandling_Return):
                    raise CameraError(
                        self.camera_id,
                        f"camera not ready for a trigger within {TRIGGER_READY_TIMEOUT_MS} ms",
                        "parts come faster than exposure + readout allow; lower exposure or line speed",
                    )
                camera.ExecuteSoftwareTrigger()
            except genicam.GenericException as exc:
                raise CameraLost(self.camera_id, f"software trigger failed: {_describe(exc)}") from exc

    def check_alive(self) -> None:
        camera = self._camera
        if camera is None or camera.IsCameraDeviceRemoved():
            raise CameraLost(self.camera_id, "pylon reports the camera removed", "check cable and power")

    def stream_stats(self) -> dict[str, int]:
        from pypylon import genicam

        camera = self._camera
        if camera is None:
            return {}
        nodes = camera.GetStreamGrabberNodeMap()
        stats = {}
        for feature, name in STREAM_STATISTICS.items():
            node = nodes.GetNode(feature)
            if node is not None and genicam.IsReadable(node):
                stats[name] = int(node.GetValue())
        return stats

    def close(self) -> None:
        with self._lock:
            camera, self._camera = self._camera, None
        if camera is not None:
            self._release(camera)

    @staticmethod
    def _release(camera: Any) -> None:
        for step in (camera.StopGrabbing, camera.Close, camera.DestroyDevice):
            # The device may already be gone; closing must not fail.
            with contextlib.suppress(Exception):
                step()
