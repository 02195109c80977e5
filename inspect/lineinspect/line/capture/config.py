"""Camera definitions: `cameras/<id>.yaml`, one file per camera, validated like station.yaml.

Example (a Basler camera triggered by a light barrier on input line 1):

    description: Top view of the bracket, station 3
    source: {backend: pylon, serial: "40012345"}
    acquisition:
      trigger: {mode: hardware, line: Line1, activation: rising_edge}
      exposure_us: 1500
    recipe: bracket
    reject_output: ejector1
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect.core.plausibility import FrameLimits
from lineinspect.errors import ConfigError
from lineinspect.line.capture.base import TriggerMode
from lineinspect.yamlfile import read_yaml, validate_mapping

CAMERAS_DIR = "cameras"
CAMERA_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"


class PylonSource(BaseModel):
    """A Basler camera through pypylon (GigE, USB3, or pylon's camera emulation)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["pylon"] = Field(description="Basler pylon SDK (pip extra `pylon`).")
    serial: str | None = Field(None, description="Device serial number (printed on the camera).")
    user_defined_name: str | None = Field(None, description="Device user id set in pylon Viewer (DeviceUserID).")
    emulation: bool = Field(
        False,
        description="Use pylon's camera emulation (for demos and tests; sets PYLON_CAMEMU=1 when it is unset). "
        "Without serial or name the first emulated camera is used.",
    )
    image_path: Path | None = Field(
        None,
        description="Emulation only: an image file or folder the emulated camera serves "
        "(relative paths are relative to the station directory).",
    )
    max_buffers: int = Field(10, ge=1, le=1000, description="Grab buffers the SDK may fill before the station reads.")

    @model_validator(mode="after")
    def _selector(self) -> PylonSource:
        if self.serial and self.user_defined_name:
            raise ValueError("give either serial or user_defined_name, not both")
        if not (self.serial or self.user_defined_name or self.emulation):
            raise ValueError("give serial or user_defined_name (or emulation: true)")
        if self.image_path is not None and not self.emulation:
            raise ValueError("image_path only applies to the camera emulation (emulation: true)")
        return self


class AravisSource(BaseModel):
    """A GigE Vision or USB3 Vision camera through Aravis (pip extra `aravis` + gir1.2-aravis-0.8)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["aravis"] = Field(description="Aravis (GObject introspection).")
    device_id: str = Field(
        ...,
        min_length=1,
        description="Aravis device id (`arv-tool-0.8` lists them, e.g. 'Basler-21234567'), "
        "its serial number, or an IP address.",
    )
    n_buffers: int = Field(10, ge=1, le=1000, description="Stream buffers queued for the camera.")


class OpenCVSource(BaseModel):
    """A UVC camera, an RTSP/HTTP stream or a video file through OpenCV."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["opencv"] = Field(description="OpenCV VideoCapture.")
    index: int | None = Field(None, ge=0, description="UVC device index (0 = /dev/video0).")
    url: str | None = Field(None, description="Stream URL (rtsp://, http://, https://).")
    file: Path | None = Field(None, description="Video file (relative paths are relative to the station directory).")
    open_timeout_ms: int = Field(5000, gt=0, description="Longest wait to open a stream before it counts as failed.")
    read_timeout_ms: int = Field(5000, gt=0, description="Longest wait for one frame of a stream.")
    loop: bool = Field(False, description="Video file: start again at the end instead of finishing.")
    rate_hz: float | None = Field(
        None, gt=0, description="Video file in free run: frames per second to replay (default: the file's rate)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OpenCVSource:
        given = [n for n in ("index", "url", "file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of index, url, file (got {given or 'none'})")
        return self


class StoredImagesSource(BaseModel):
    """What the folder and replay backends share: a folder of images, replayed in file-name order."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(..., description="Folder of images (relative paths are relative to the station directory).")
    rate_hz: float = Field(2.0, gt=0, le=1000, description="Free run: images per second.")
    loop: bool = Field(True, description="Start again after the last image instead of finishing.")
    patterns: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Glob patterns under `path` naming the images to replay, e.g. [good/*.png, defective/*.png] "
        "(`**` searches subfolders); images are replayed sorted by file name, whichever pattern found them.",
    )


class FolderSource(StoredImagesSource):
    """Replay a folder of images as if a camera took them (commissioning, demos, tests)."""

    backend: Literal["folder"] = Field(description="Images from a folder, sorted by name; marked simulated.")


class ReplaySource(StoredImagesSource):
    """Replay a folder's images from memory, decoded once at open, as a camera delivers raw frames
    (commissioning before the camera is wired, benchmarks of the station rather than of PNG decoding)."""

    backend: Literal["replay"] = Field(
        description="Images from a folder, decoded once when the camera opens and handed out from memory, sorted by "
        "name; marked simulated. Changes to the folder are seen at the next open."
    )
    max_memory_mib: float = Field(
        512.0,
        gt=0,
        le=65_536,
        description="Most memory the decoded images may take, MiB (a 640x480 BGR image is 0.9 MiB); a folder that "
        "needs more is refused when the camera opens.",
    )


CameraSource = Annotated[
    PylonSource | AravisSource | OpenCVSource | FolderSource | ReplaySource,
    Field(discriminator="backend"),
]


class EdgeActivation(StrEnum):
    RISING_EDGE = "rising_edge"
    FALLING_EDGE = "falling_edge"


class HardwareTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal[TriggerMode.HARDWARE] = Field(description="An input line starts each exposure.")
    line: str = Field("Line1", min_length=1, description="Camera input line (SDK name, e.g. Line1, Line0).")
    activation: EdgeActivation = Field(EdgeActivation.RISING_EDGE, description="Which signal edge triggers.")


class SoftwareTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal[TriggerMode.SOFTWARE] = Field(description="The station triggers each exposure (e.g. on a PLC bit).")


class FreeRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal[TriggerMode.FREE_RUN] = Field(description="The camera runs continuously on its own clock.")
    frame_rate_hz: float | None = Field(None, gt=0, description="Camera frame rate (default: the camera's).")


Trigger = Annotated[HardwareTrigger | SoftwareTrigger | FreeRun, Field(discriminator="mode")]


class Roi(BaseModel):
    """Sensor region read out by the camera (pixels)."""

    model_config = ConfigDict(extra="forbid")

    x: int = Field(0, ge=0, description="Left edge (OffsetX), px.")
    y: int = Field(0, ge=0, description="Top edge (OffsetY), px.")
    width: int = Field(..., gt=0, description="Width, px.")
    height: int = Field(..., gt=0, description="Height, px.")


class Acquisition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: Trigger = Field(
        default_factory=lambda: SoftwareTrigger(mode=TriggerMode.SOFTWARE),
        description="What starts an exposure: hardware (input line), software, or free_run.",
    )
    exposure_us: float | None = Field(None, gt=0, description="Exposure time in microseconds (default: the camera's).")
    gain_db: float | None = Field(None, description="Analog gain in dB (default: the camera's).")
    roi: Roi | None = Field(None, description="Sensor region of interest (default: the camera's).")
    pixel_format: str | None = Field(
        None, description="SDK pixel format name, e.g. Mono8, BGR8, RGB8, BayerRG8 (default: the camera's)."
    )


class QueueFullPolicy(StrEnum):
    """What happens to a frame when the inspection queue is full."""

    UNDECIDED_NEW = "undecided_new"  # the new frame is not queued; its part gets an undecided result
    UNDECIDED_OLDEST = "undecided_oldest"  # the oldest queued part gets an undecided result; the new one waits
    DROP_OLDEST = "drop_oldest"  # free run only: the oldest frame is discarded (counted)


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(4, ge=1, le=1000, description="Frames that may wait for inspection.")
    full_policy: QueueFullPolicy | None = Field(
        None,
        description="What a full queue does: undecided_new / undecided_oldest (the part is rejected as undecided) "
        "or drop_oldest (free run only). Default: undecided_new when triggered, drop_oldest in free run.",
    )


class Reconnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_ms: int = Field(250, gt=0, description="First wait after losing the camera, ms.")
    max_ms: int = Field(10_000, gt=0, description="Longest wait between reconnect attempts, ms (doubling from min_ms).")

    @model_validator(mode="after")
    def _order(self) -> Reconnect:
        if self.max_ms < self.min_ms:
            raise ValueError(f"max_ms ({self.max_ms}) must be >= min_ms ({self.min_ms})")
        return self


class HealthSettings(BaseModel):
    """When the camera's frames become an alarm (line/camera_health.py)."""

    model_config = ConfigDict(extra="forbid")

    implausible_alarm_after: int = Field(
        3,
        ge=1,
        le=10_000,
        description="Implausible frames in a row that raise the camera's alarm (cleared by the next plausible frame).",
    )
    drift_warn_share: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Warn when the camera's focus, brightness or noise (averaged over recent frames) moves more than "
        "this share away from the taught baseline's median: a fouling lens or an ageing light, before parts fail.",
    )
    drift_window_frames: int = Field(
        50, ge=1, le=100_000, description="Frames the drift average spans (exponential, this many frames' weight)."
    )


class CameraConfig(BaseModel):
    """Contents of cameras/<id>.yaml."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., pattern=CAMERA_ID_PATTERN, description="Camera id; the file name without .yaml.")
    description: str = Field("", description="Where the camera looks, for people.")
    source: CameraSource = Field(..., description="Which device: a `backend` and how to find the device.")
    acquisition: Acquisition = Field(default_factory=Acquisition, description="Trigger, exposure, gain, ROI.")
    recipe: str | None = Field(
        None, description="Recipe this camera's parts are inspected with (default: the station's)."
    )
    reject_output: str | None = Field(None, description="Reject output this camera's verdicts feed (an actuator id).")
    grab_timeout_ms: int = Field(
        1000, gt=0, description="A triggered part without an image after this long gets an undecided result."
    )
    liveness_check_ms: int = Field(
        2000, gt=0, description="While no images arrive, ask the device this often whether it is still there."
    )
    reconnect: Reconnect = Field(default_factory=Reconnect, description="Backoff between reconnect attempts.")
    queue: QueueSettings = Field(default_factory=QueueSettings, description="Frames waiting for inspection.")
    frame: FrameLimits | None = Field(
        None,
        description="Frame plausibility limits of this camera, over the recipe's and the model card's (e.g. its own "
        "min_focus); width_px/height_px default to acquisition.roi's size. A frame outside them is undecided.",
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings, description="Implausible-frame alarm and drift warning of this camera."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        mode = self.trigger_mode
        if self.source.backend in ("opencv", "folder", "replay") and mode is TriggerMode.HARDWARE:
            raise ValueError(f"backend {self.source.backend} has no input lines; use trigger mode software or free_run")
        if mode is not TriggerMode.FREE_RUN and self.queue.full_policy is QueueFullPolicy.DROP_OLDEST:
            raise ValueError(
                "queue.full_policy drop_oldest would silently lose triggered parts; "
                "use undecided_new or undecided_oldest"
            )
        return self

    def frame_limits(self) -> FrameLimits | None:
        """The camera's plausibility overrides, its configured frame size (acquisition.roi) included; None: none."""
        given = self.frame.model_dump(exclude_unset=True) if self.frame is not None else {}
        roi = self.acquisition.roi
        if roi is not None:
            given.setdefault("width_px", roi.width)
            given.setdefault("height_px", roi.height)
        return FrameLimits(**given) if given else None

    @property
    def trigger_mode(self) -> TriggerMode:
        return TriggerMode(self.acquisition.trigger.mode)

    @property
    def full_policy(self) -> QueueFullPolicy:
        if self.queue.full_policy is not None:
            return self.queue.full_policy
        return (
            QueueFullPolicy.DROP_OLDEST if self.trigger_mode is TriggerMode.FREE_RUN else QueueFullPolicy.UNDECIDED_NEW
        )


def parse_camera(raw: Any, source: str, camera_id: str) -> CameraConfig:
    """Validate one camera definition; `source` names the file in errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping (source, acquisition, ...), got {type(raw).__name__}")
    if "id" in raw and raw["id"] != camera_id:
        raise ConfigError(f"{source}: id '{raw['id']}' differs from the file name; the camera id is '{camera_id}'")
    raw = {**raw, "id": camera_id}
    return validate_mapping(CameraConfig, raw, source, ConfigError, "camera definition", expected="camera fields")


def load_cameras(station_dir: Path) -> list[CameraConfig]:
    """All cameras/<id>.yaml of a station, sorted by id; a bad file raises ConfigError naming file and field.

    Relative paths in a definition (folder, video file, emulation images) are made absolute
    against the station directory, so the station works from any current directory.
    """
    folder = station_dir / CAMERAS_DIR
    if not folder.is_dir():
        return []
    cameras = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        config = parse_camera(read_yaml(path, ConfigError), str(path), path.stem)
        cameras.append(_resolve_paths(config, station_dir))
    return cameras


def _resolve_paths(config: CameraConfig, station_dir: Path) -> CameraConfig:
    src = config.source
    updates: dict[str, Path] = {}
    for name in ("path", "file", "image_path"):
        value = getattr(src, name, None)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (station_dir / value).resolve()
    if not updates:
        return config
    return config.model_copy(update={"source": src.model_copy(update=updates)})


def cameras_json_schema() -> dict[str, Any]:
    return CameraConfig.model_json_schema()
