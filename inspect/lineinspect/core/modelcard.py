"""Model card: what a model expects and how to read its outputs (`models/<name>/model.yaml`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lineinspect.core.plausibility import FrameBaseline
from lineinspect.errors import ModelError
from lineinspect.yamlfile import read_yaml, validate_mapping

CARD_FILE = "model.yaml"
MODEL_FILE = "model.onnx"

AdapterKind = Literal["anomaly", "segmentation", "yolo", "classification"]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="ONNX input name; default: the model's first input.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Tensor layout of the input.")
    width: int = Field(..., gt=0, description="Input width in pixels.")
    height: int = Field(..., gt=0, description="Input height in pixels.")
    color: Literal["RGB", "BGR", "GRAY"] = Field("RGB", description="Channel order the model expects.")
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="stretch to the input size, or letterbox (keep aspect, pad)."
    )
    pad_value: int = Field(114, ge=0, le=255, description="Grey level of letterbox padding.")
    scale: float = Field(1.0 / 255.0, description="Pixel values are multiplied by this first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Subtracted per channel after scaling.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Divisor per channel after the mean.")

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3


class AnomalyCalibration(BaseModel):
    """Raw-score normalisation of an anomaly model: 0.5 sits on the threshold."""

    model_config = ConfigDict(extra="forbid")

    image_threshold: float = Field(..., description="Raw image score at which a part is anomalous.")
    pixel_threshold: float = Field(..., description="Raw anomaly-map value at which a pixel is defective.")
    score_min: float = Field(0.0, description="Raw score mapped to 0 (typical good part).")
    score_max: float = Field(..., description="Raw score mapped to 1 (clear defect).")
    map_output: str | None = Field(None, description="Name of the anomaly-map output, if not standard.")
    score_output: str | None = Field(None, description="Name of the image-score output, if not standard.")

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyCalibration:
        if not self.score_min < self.score_max:
            raise ValueError("score_min must be below score_max")
        return self


class Quantization(BaseModel):
    """How a quantized model was made from its float model (`lineinspect quantize`)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["int8-qdq"] = Field(..., description="int8-qdq: static int8, QuantizeLinear/DequantizeLinear.")
    from_model: str = Field(..., description="Name of the float model it was made from.")
    from_sha256: str = Field(..., description="SHA-256 of the float model.onnx it was made from.")
    calibration_images: int = Field(..., gt=0, description="Good images its activation ranges were calibrated on.")
    details: dict[str, object] = Field(
        default_factory=dict,
        description="How: date, calibration folder and method, layers made int8, per-channel weights, nodes left "
        "float, and int8 vs float scores and verdicts on the calibration images.",
    )


class RemoteRuntime(BaseModel):
    """A KServe v2 inference server (Triton, OpenVINO Model Server) that runs this card's model.onnx."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        ..., description="host:port of the server's HTTP or gRPC endpoint (no scheme), e.g. 10.0.4.20:8001."
    )
    model: str = Field(..., min_length=1, description="The model's name on the server.")
    protocol: Literal["http", "grpc"] = Field("grpc", description="KServe v2 over HTTP/REST or gRPC.")
    version: str = Field("", description="The model version on the server; empty: the server's choice.")
    http_binary: bool = Field(
        True,
        description="http: tensors in KServe's binary data extension (Triton, OpenVINO Model Server); false: "
        "JSON, for servers without it (MLServer).",
    )
    timeout_ms: float | None = Field(
        None,
        gt=0,
        description="Longest wait for one inference; a later or failed answer makes the part undecided. "
        "Absent or longer than the part's budget: that budget (station.yaml line.budget_ms, or "
        "reject.inspection_budget_ms).",
    )

    @field_validator("url")
    @classmethod
    def _host_port(cls, url: str) -> str:
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^/:\s\[\]]+):[0-9]{1,5}", url):
            raise ValueError(f"'{url}' is not host:port; write e.g. 10.0.4.20:8001 (no scheme: that is `protocol`)")
        return url


class CardRuntime(BaseModel):
    """Where and how the model runs: in the station's onnxruntime (absent), or on an inference server."""

    model_config = ConfigDict(extra="forbid")

    remote: RemoteRuntime | None = Field(
        None, description="Send the preprocessed tensor to a KServe v2 server; the station keeps the rest."
    )
    onnxruntime_nchwc: bool = Field(
        True,
        description="Let onnxruntime rewrite convolutions into its blocked NCHWc layout (CPU). It speeds up wide "
        "convolutions (detectors, classifiers) and slows graphs of single-channel filters: lineinspect's "
        "filter-bank models run about 1.8x faster without it, and teach writes false for them.",
    )
    nchwc_after: str | None = Field(
        None,
        min_length=1,
        description="With onnxruntime_nchwc false: the tensor after which the graph may use the NCHWc layout "
        "again. The station then runs the graph in two onnxruntime sessions, up to this tensor without it and "
        "the rest with it (featnet: its filter bank, then its network).",
    )

    @model_validator(mode="after")
    def _nchwc_after_needs_nchwc_off(self) -> CardRuntime:
        if self.nchwc_after is not None and self.onnxruntime_nchwc:
            raise ValueError(
                f"nchwc_after '{self.nchwc_after}' only applies with onnxruntime_nchwc: false (with true the whole "
                "graph already uses the NCHWc layout); set onnxruntime_nchwc: false or leave nchwc_after out"
            )
        return self


class ModelCard(BaseModel):
    """A model card (`models/<name>/model.yaml`): how to feed a model and how to read its outputs."""

    model_config = ConfigDict(extra="forbid", title="lineinspect model card")

    schema_: Literal["lineinspect.model/1"] = Field(
        "lineinspect.model/1", alias="schema", description="Card format version."
    )
    name: str = Field(..., description="Model id, as recipes refer to it.")
    version: str = Field("1", description="Model version, free text.")
    description: str = Field("", description="What the model inspects, how it was built.")
    adapter: AdapterKind = Field(..., description="How outputs are turned into defects.")
    input: InputSpec = Field(..., description="Input tensor: size, layout, colours, normalisation.")
    labels: list[str] = Field(
        default_factory=list,
        description="Class names by output index. yolo and classification: read from the ONNX metadata "
        "(Ultralytics `names`) when empty; when both are there they must agree.",
    )
    background_class: str | None = Field(
        None,
        description="segmentation/classification: the class that means 'no defect' (e.g. good). classification: "
        "default a label named like good (good, ok, pass, normal, no_defect).",
    )
    defect_classes: list[str] | None = Field(
        None,
        description="classification: the classes that fail a part (a top class outside them passes it). "
        "Needed when no class means good; absent: every class but the background class.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Default per-class score thresholds (0–1); '*' applies to any other class.",
    )
    anomaly: AnomalyCalibration | None = Field(None, description="anomaly adapter: raw-score scaling.")
    activation: Literal["none", "softmax", "sigmoid"] = Field(
        "none",
        description="segmentation/classification: activation to apply to the raw outputs "
        "(none when the model already outputs probabilities).",
    )
    iou_threshold: float = Field(0.5, ge=0, le=1, description="yolo: NMS IoU threshold.")
    frame_baseline: FrameBaseline | None = Field(
        None,
        description="What good parts' frames looked like at teach/retune time (brightness, contrast, focus, noise); "
        "the frame plausibility limits are taught from it. Absent: fixed conservative limits (black, saturated, "
        "too small) only.",
    )
    sha256: str = Field(..., description="SHA-256 of model.onnx; checked at load.")
    trained: dict[str, object] = Field(default_factory=dict, description="Training provenance.")
    quantized: Quantization | None = Field(
        None, description="Set on a quantized copy of a model: its format and the float model it came from."
    )
    runtime: CardRuntime | None = Field(
        None, description="Where the model runs; absent: in the station (onnxruntime, station.yaml runtime)."
    )

    @model_validator(mode="after")
    def _adapter_needs(self) -> ModelCard:
        if self.adapter == "anomaly" and self.anomaly is None:
            raise ValueError("an anomaly model card needs an 'anomaly' section (thresholds)")
        if self.adapter == "segmentation" and not self.labels:
            raise ValueError("a segmentation model card needs 'labels'")
        if self.defect_classes and self.adapter != "classification":
            raise ValueError(f"defect_classes is for classification models; this card's adapter is {self.adapter}")
        if self.background_class is not None and self.background_class in (self.defect_classes or []):
            raise ValueError(f"background_class '{self.background_class}' cannot also be in defect_classes")
        n = self.input.channels
        for key in ("mean", "std"):
            values = getattr(self.input, key)
            if len(values) not in (1, n):
                raise ValueError(f"input.{key} has {len(values)} values; the input has {n} channels")
        if any(s == 0 for s in self.input.std):
            raise ValueError("input.std must not contain 0")
        return self

    def threshold_for(self, class_name: str, default: float = 0.5) -> float:
        return self.thresholds.get(class_name, self.thresholds.get("*", default))


def model_card_schema() -> dict[str, Any]:
    """The JSON Schema of model.yaml, from the card's own definition (every field described)."""
    schema: dict[str, Any] = ModelCard.model_json_schema(by_alias=True)
    return schema


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(model_dir: Path) -> ModelCard:
    """Read and validate `model.yaml` in `model_dir`; errors name the file and field."""
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise ModelError(f"{path}: model card not found (a model folder holds model.onnx and model.yaml)")
    raw = read_yaml(path, ModelError)
    return validate_mapping(ModelCard, raw, str(path), ModelError, "model card", expected="card fields")


def card_yaml(card: ModelCard) -> str:
    """The card as model.yaml holds it."""
    data = card.model_dump(mode="json", by_alias=True, exclude_none=True)
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return text


def write_card(card: ModelCard, model_dir: Path) -> Path:
    path = model_dir / CARD_FILE
    path.write_text(card_yaml(card), encoding="utf-8")
    return path
