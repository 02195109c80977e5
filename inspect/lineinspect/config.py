"""station.yaml: one file, validated, every field described.

`lineinspect schema` prints the JSON Schema of this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect.core.recipe import Recipe
from lineinspect.errors import ConfigError
from lineinspect.line.archive.settings import ArchiveSettings
from lineinspect.line.mqtt import MqttSettings
from lineinspect.line.opcua_results.settings import OpcUaServerSettings
from lineinspect.line.plc_trigger.settings import PlcTriggerSettings
from lineinspect.line.reject.settings import RejectSettings
from lineinspect.line.sparkplug.settings import SparkplugSettings
from lineinspect.yamlfile import read_yaml, validate_mapping

STATION_FILE = "station.yaml"
STATION_DIR_ENV = "LINEINSPECT_STATION_DIR"


class UnsPath(BaseModel):
    """ISA-95 unified namespace position of the station."""

    model_config = ConfigDict(extra="forbid")

    enterprise: str = Field("acme", min_length=1, description="Enterprise (company).")
    site: str = Field("plant1", min_length=1, description="Site (plant).")
    area: str = Field("area1", min_length=1, description="Area (hall, department).")
    line: str = Field("line1", min_length=1, description="Production line.")
    cell: str = Field("cell1", min_length=1, description="Work cell on the line.")


class StationSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field("station1", pattern=r"^[A-Za-z0-9_.-]+$", description="Station id, unique on the line.")
    uns: UnsPath = Field(default_factory=UnsPath, description="Where the station sits in the plant.")

    @property
    def path(self) -> str:
        u = self.uns
        return f"{u.enterprise}/{u.site}/{u.area}/{u.line}/{u.cell}/lineinspect/{self.id}"


class RuntimeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in order of preference "
        "(e.g. CUDAExecutionProvider, TensorrtExecutionProvider, OpenVINOExecutionProvider); "
        "ones not installed are skipped with a warning, CPU is always the fallback.",
    )
    intra_op_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=0,
        description="Threads one inference may use (0: onnxruntime decides). Default: the CPU cores shared out "
        "among line.inspection_threads (cores // inspection_threads, at least 1), so that the parts inspected at "
        "once never ask for more threads than there are cores.",
    )
    opencv_threads: int = Field(
        1,
        ge=0,
        description="Threads one OpenCV call may use (resize, undistortion, connected components). 1 (or 0): each "
        "call runs on the thread that makes it, beside onnxruntime's threads instead of fighting them for the "
        "cores; raise it only where cores are left over.",
    )
    inter_op_threads: int = Field(1, ge=0, description="Threads for parallel graph branches.")
    allow_spinning: bool = Field(
        False, description="Let onnxruntime threads busy-wait between runs (lower latency, burns CPU)."
    )


class HttpSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all interfaces).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    api_key_env: str = Field(
        "LINEINSPECT_API_KEY",
        description="Environment variable holding the API key that mutating endpoints require; "
        "when it is unset or empty no key is required.",
    )
    max_upload_bytes: int = Field(25_000_000, gt=0, description="Largest accepted upload in bytes (413 above).")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest accepted image in pixels (width × height).")
    inference_workers: int = Field(2, ge=1, le=64, description="Uploads inspected at once.")
    max_waiting: int = Field(32, ge=0, description="Uploads allowed to wait for a worker before 503.")
    inference_timeout_ms: int = Field(
        10_000, gt=0, description="An upload not inspected within this time gets an undecided result."
    )
    decode_budget_pixels: int = Field(
        48_000_000,
        gt=0,
        description="Pixels the upload workers may decode at once, shared among them: one upload may decode at "
        "most decode_budget_pixels / inference_workers (and never more than max_pixels). Decoding costs about "
        "3 bytes of memory per pixel whatever the file's size (a 128 kB PNG can hold 40 MP), so this bounds "
        "the memory uploads can take.",
    )
    upload_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="The whole upload body must arrive within this time (408 otherwise): a client that stops "
        "sending mid-upload does not hold a connection for ever.",
    )


class LineSection(BaseModel):
    """How parts reach the station's cameras, and how long one may take (the `run` command)."""

    model_config = ConfigDict(extra="forbid")

    budget_ms: float = Field(
        1000.0,
        gt=0,
        description="Time from a part's trigger (or its image, without a trigger) to its verdict; a part not "
        "decided by then is undecided (rejected). With a `reject:` section, reject.inspection_budget_ms is "
        "used instead.",
    )
    inspection_threads: int = Field(
        2, ge=1, le=64, description="Parts inspected at once per camera (onnxruntime runs them in parallel)."
    )
    trigger_rate_parts_per_min: float | None = Field(
        None,
        gt=0,
        le=60_000,
        description="Demo and commissioning: the station itself triggers every software-triggered camera at this "
        "rate (a simulated line). null: software triggers come from outside (Station.trigger, a PLC input).",
    )
    pending_parts_max: int = Field(
        1024,
        ge=1,
        description="Skipped parts (no image, camera lost, queue full) waiting to get their undecided result; "
        "beyond this the camera thread publishes them itself (slower, never dropped).",
    )
    drain_timeout_s: float = Field(
        5.0, ge=0, le=300, description="On stop: longest wait for parts already triggered to be decided."
    )


class StationConfig(BaseModel):
    """Contents of station.yaml."""

    model_config = ConfigDict(extra="forbid")

    station: StationSection = Field(default_factory=StationSection, description="Identity of the station.")
    runtime: RuntimeSection = Field(default_factory=RuntimeSection, description="onnxruntime settings.")
    recipes: list[Recipe] = Field(..., min_length=1, description="Products this station inspects.")
    default_recipe: str | None = Field(None, description="Recipe used when none is named; default: the first.")
    http: HttpSection = Field(default_factory=HttpSection, description="HTTP API for uploads and status.")
    mqtt: MqttSettings | None = Field(
        None,
        description="MQTT broker for results and status; absent: the demo starts an embedded broker on loopback.",
    )
    reject: RejectSettings | None = Field(None, description="Reject station (ejector / PLC verdict); null: none.")
    line: LineSection = Field(
        default_factory=LineSection, description="Triggering, time budget and threads of `lineinspect run`."
    )
    archive: ArchiveSettings | None = Field(
        None,
        description="Image archive: the frames of failed, undecided and sampled passed parts, for review and "
        "for datasets (`lineinspect archive export`); null: no frame is kept.",
    )
    plc_triggers: list[PlcTriggerSettings] = Field(
        default_factory=list,
        description="Parts announced by the PLC: per software-triggered camera a trigger bit (Modbus coil / "
        "discrete input, OPC UA node), the part id and product code read at the edge, product code → recipe.",
    )
    opcua_server: OpcUaServerSettings | None = Field(
        None, description="OPC UA server where the MES reads each camera's latest result (OPC 40100); null: none."
    )
    sparkplug: SparkplugSettings | None = Field(
        None, description="Sparkplug B edge node for SCADA, one device per camera (a live view); null: none."
    )

    @model_validator(mode="after")
    def _threads_fit_the_cores(self) -> StationConfig:
        # The rule (docs/architecture.md, Threads): inspection threads × intra-op threads = cores.
        if "intra_op_threads" not in self.runtime.model_fields_set:
            cores = os.cpu_count() or 1
            self.runtime.intra_op_threads = max(1, cores // self.line.inspection_threads)
        return self

    @model_validator(mode="after")
    def _recipes_consistent(self) -> StationConfig:
        ids = [r.id for r in self.recipes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"recipe ids must be unique; repeated: {dupes}")
        if self.default_recipe is not None and self.default_recipe not in ids:
            raise ValueError(f"default_recipe '{self.default_recipe}' is not a recipe id; recipes: {ids}")
        return self

    @model_validator(mode="after")
    def _plc_triggers_consistent(self) -> StationConfig:
        ids = {r.id for r in self.recipes}
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.plc_triggers):
            if entry.camera in seen:
                raise ValueError(
                    f"plc_triggers[{i}].camera '{entry.camera}' is already triggered by "
                    f"plc_triggers[{seen[entry.camera]}]; one PLC trigger per camera"
                )
            seen[entry.camera] = i
            for code, recipe in entry.product_codes.items():
                if recipe not in ids:
                    raise ValueError(
                        f"plc_triggers[{i}].product_codes: code {code!r} names recipe '{recipe}', which is not in "
                        f"recipes; recipes: {sorted(ids)}"
                    )
        return self

    @property
    def default_recipe_id(self) -> str:
        return self.default_recipe or self.recipes[0].id

    @property
    def budget_ms(self) -> float:
        """Trigger → verdict budget of one part: the reject station's when there is one."""
        return self.reject.inspection_budget_ms if self.reject is not None else self.line.budget_ms


def station_dir_from(arg: str | None) -> Path:
    """--station-dir, else $LINEINSPECT_STATION_DIR, else the current directory."""
    return Path(arg or os.environ.get(STATION_DIR_ENV) or ".").resolve()


def parse_station(raw: Any, source: str) -> StationConfig:
    expected = "sections (station, recipes, ...)"
    return validate_mapping(StationConfig, raw, source, ConfigError, "configuration", expected=expected)


def load_station(station_dir: Path) -> StationConfig:
    path = station_dir / STATION_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found. The station directory holds station.yaml, models/, cameras/ and "
            f"calibration/; pass --station-dir or set {STATION_DIR_ENV}"
        )
    return parse_station(read_yaml(path, ConfigError), str(path))


def station_json_schema() -> dict[str, Any]:
    return StationConfig.model_json_schema()
