"""`lineinspect model add`: an exported ONNX file → `models/<name>/` with a card that loads and runs.

The graph is read (inputs, outputs, shapes, metadata_props, producer), the export recognised
(Ultralytics detect / segment / classify / OBB / pose, anomalib v2, lineinspect's own `teach`),
and a card proposed from what the export says. What the file cannot say (a dynamic input size, the
class that means good, raw anomaly thresholds, an unknown layout) is asked for by naming the
command-line flag. The model is then loaded through the station's own loader and run once on a
sample image, so a card that is written is a card that works.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import onnx

from lineinspect.core.adapters import AdapterError
from lineinspect.core.adapters.classification import good_like_label
from lineinspect.core.adapters.export_metadata import model_labels, parse_metadata
from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions, open_session
from lineinspect.core.modelcard import (
    CARD_FILE,
    MODEL_FILE,
    AdapterKind,
    AnomalyCalibration,
    InputSpec,
    ModelCard,
    card_yaml,
    file_sha256,
    load_card,
    write_card,
)
from lineinspect.core.recipe import Recipe
from lineinspect.core.result import Result
from lineinspect.errors import LineinspectError, ModelError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ULTRALYTICS_YOLO_TASKS = ("detect", "segment", "obb", "pose")
ANOMALIB_OUTPUTS = ("pred_score", "pred_label", "anomaly_map", "pred_mask")
LINEINSPECT_PRODUCER = "lineinspect teach"
YOLO_DEFAULT_CONFIDENCE = 0.25  # Ultralytics' own default `conf` at predict time


@dataclass(frozen=True, slots=True)
class AnomalyThresholds:
    """Raw-score thresholds of an anomaly model whose export does not carry them (`--image-threshold` …)."""

    image_threshold: float | None = None
    pixel_threshold: float | None = None
    score_min: float | None = None
    score_max: float | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.image_threshold, self.pixel_threshold, self.score_min, self.score_max))


@dataclass(frozen=True, slots=True)
class AddRequest:
    """What the user asked for on the command line; None: let the export decide."""

    source: Path
    name: str
    models_dir: Path
    adapter: AdapterKind | None = None
    labels: list[str] | None = None
    size: tuple[int, int] | None = None  # (width, height) in pixels
    color: str | None = None
    good_class: str | None = None
    defect_classes: list[str] | None = None
    anomaly: AnomalyThresholds = field(default_factory=AnomalyThresholds)
    image: Path | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class TensorFacts:
    """One graph input or output: its name and shape (int: fixed; str/None: dynamic)."""

    name: str
    shape: tuple[int | str | None, ...]

    def shown(self) -> str:
        return f"{self.name} [{', '.join('?' if d is None else str(d) for d in self.shape)}]"


@dataclass(frozen=True, slots=True)
class GraphFacts:
    """What an ONNX file says about itself."""

    path: Path
    producer: str
    inputs: tuple[TensorFacts, ...]
    outputs: tuple[TensorFacts, ...]
    metadata: dict[str, str]
    initializer_names: frozenset[str]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def describe(self) -> str:
        inputs = ", ".join(i.shown() for i in self.inputs)
        outputs = ", ".join(o.shown() for o in self.outputs)
        keys = ", ".join(sorted(self.metadata)) or "none"
        return f"inputs {inputs}; outputs {outputs}; metadata keys {keys}; producer '{self.producer or '?'}'"


@dataclass(frozen=True, slots=True)
class Proposal:
    """The card proposed for an export, what the export was taken for, and what was assumed."""

    card: ModelCard
    export: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddReport:
    proposal: Proposal
    folder: Path | None  # None: dry run, nothing written
    sample: Path | None
    result: Result | None

    def lines(self) -> list[str]:
        card = self.proposal.card
        out = [f"{self.proposal.export}", "card:", card_yaml(card).rstrip()]
        out += ["notes:", *(f"  - {n}" for n in self.proposal.notes)]
        if self.folder is None:
            out.append("dry run: nothing written; the card above was checked against the model and run once")
        else:
            out.append(
                f"written: {self.folder / MODEL_FILE} (sha256 {card.sha256}) and {self.folder / CARD_FILE}; "
                "loaded through the station's loader (sha256 checked, warmed up)"
            )
        if self.result is None:
            out.append("no sample image found (give --image IMG): only the warm-up frame was run")
        else:
            findings = ", ".join(
                f"{f.defect.class_name} {f.defect.score:.2f}{'' if f.counts else ' (not counted)'}"
                for f in self.result.findings
            )
            score = "n/a" if self.result.score is None else f"{self.result.score:.2f}"
            out.append(f"sample {self.sample}: {self.result.verdict.value} (image score {score}): {self.result.reason}")
            if findings:
                out.append(f"  defects: {findings}")
        if self.folder is not None:
            out.append(f"recipes use it as `model: {card.name}`")
        return out


def read_graph(path: Path) -> GraphFacts:
    """The ONNX file's inputs, outputs, metadata and producer; a file that is not ONNX: ModelError naming it."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file; give the .onnx file your exporter wrote")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise ModelError(f"{path}: not an ONNX model (onnx cannot read it: {exc})") from exc
    graph = model.graph
    if not graph.output or not graph.input:
        raise ModelError(f"{path}: not an ONNX model (no graph inputs or outputs in it)")
    initializers = frozenset(i.name for i in graph.initializer)
    inputs = tuple(_tensor(v) for v in graph.input if v.name not in initializers)
    return GraphFacts(
        path=path,
        producer=model.producer_name,
        inputs=inputs,
        outputs=tuple(_tensor(v) for v in graph.output),
        metadata={p.key: p.value for p in model.metadata_props},
        initializer_names=initializers,
    )


def _tensor(value: onnx.ValueInfoProto) -> TensorFacts:
    dims: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorFacts(value.name, tuple(dims))


def propose(facts: GraphFacts, request: AddRequest) -> Proposal:
    """The card for this export as far as the file and the request tell; what they cannot: ModelError naming a flag."""
    if facts.producer == LINEINSPECT_PRODUCER and request.adapter in (None, "anomaly"):
        return _lineinspect_card(facts, request)
    meta = parse_metadata(facts.metadata)
    task = meta.get("task")
    if isinstance(task, str) and "names" in meta and request.adapter is None:
        return _ultralytics_card(facts, request, task, meta)
    if any(o in facts.output_names for o in ANOMALIB_OUTPUTS) and request.adapter in (None, "anomaly"):
        return _anomalib_card(facts, request)
    if request.adapter is None:
        raise ModelError(
            f"{facts.path}: cannot tell what kind of model this is ({facts.describe()}): not an Ultralytics export "
            "(no task/names metadata), nor anomalib or lineinspect (no pred_score/anomaly_map output); give --adapter "
            f"({', '.join(get_args(AdapterKind))}) and, for classes, --labels"
        )
    return _generic_card(facts, request, request.adapter)


# ---------------------------------------------------------------- per export


def _ultralytics_card(facts: GraphFacts, request: AddRequest, task: str, meta: dict[str, object]) -> Proposal:
    if task not in (*ULTRALYTICS_YOLO_TASKS, "classify"):
        raise ModelError(
            f"{facts.path}: an Ultralytics export of task '{task}', which lineinspect does not read "
            f"(it reads {', '.join(ULTRALYTICS_YOLO_TASKS)} and classify)"
        )
    imgsz = meta.get("imgsz")
    exported = (int(imgsz[1]), int(imgsz[0])) if isinstance(imgsz, list | tuple) and len(imgsz) == 2 else None
    adapter: AdapterKind = "classification" if task == "classify" else "yolo"
    labels = _labels(facts, request, adapter)
    notes = [f"labels from the export's metadata `names`: {', '.join(labels)}"]
    spec, input_notes = _input_spec(
        facts, request, exported=exported, resize="classify-stretch" if task == "classify" else "letterbox"
    )
    notes += input_notes
    card: dict[str, Any] = {"name": request.name, "adapter": adapter, "input": spec, "labels": labels}
    if adapter == "yolo":
        card["thresholds"] = {"*": YOLO_DEFAULT_CONFIDENCE}
        notes.append(f"thresholds '*': {YOLO_DEFAULT_CONFIDENCE} (Ultralytics' default confidence); retune in the card")
        if task == "obb":
            notes.append("OBB: each defect's box is the upright box around the rotated one")
        if task == "pose":
            notes.append("pose: the boxes are the defects; keypoints are not read")
    else:
        card.update(_classes_of_classifier(facts, request, labels))
        card["thresholds"] = {"*": 0.5}
        card["activation"] = "none"
        notes.append("activation none: Ultralytics classify exports end in a softmax; thresholds '*': 0.5")
    detail = f"task {task}, {len(labels)} classes" + (f", imgsz {exported[0]}x{exported[1]}" if exported else "")
    version = facts.metadata.get("version")
    card["description"] = f"Ultralytics {task} export ({detail})" + (f", ultralytics {version}" if version else "")
    return Proposal(_validated(card, facts), f"{facts.path}: Ultralytics {task} export ({detail})", tuple(notes))


def _anomalib_card(facts: GraphFacts, request: AddRequest) -> Proposal:
    method = _anomalib_method(facts)
    spec, notes = _input_spec(facts, request, exported=None, resize="stretch")
    what = f"anomalib {method} export" if method else "anomalib export"
    outputs = ", ".join(o for o in facts.output_names if o in ANOMALIB_OUTPUTS)
    if request.anomaly.given():
        calibration = _raw_calibration(facts, request.anomaly)
        notes.append("anomaly thresholds from the command line (raw scores)")
    else:
        calibration = AnomalyCalibration(image_threshold=0.5, pixel_threshold=0.5, score_min=0.0, score_max=1.0)
        notes.append(
            "anomaly: 0.5 thresholds on a 0–1 range: anomalib v2 exports carry their post-processing, so "
            "pred_score and anomaly_map are already normalised with 0.5 on the threshold it fitted (for raw "
            "scores give --image-threshold and --score-max)"
        )
    card = {
        "name": request.name,
        "adapter": "anomaly",
        "input": spec,
        "anomaly": calibration,
        "description": f"{what} (outputs {outputs})",
    }
    return Proposal(_validated(card, facts), f"{facts.path}: {what} (outputs {outputs})", tuple(notes))


def _anomalib_method(facts: GraphFacts) -> str | None:
    """Padim or Patchcore from their buffers' names where the export kept them (torch keeps most)."""
    names = " ".join(facts.initializer_names).lower()
    if "memory_bank" in names:
        return "Patchcore"
    if "inv_covariance" in names or "gaussian" in names:
        return "Padim"
    return None


def _lineinspect_card(facts: GraphFacts, request: AddRequest) -> Proposal:
    beside = facts.path.parent / CARD_FILE
    if beside.is_file() and not request.anomaly.given():
        taught = load_card(facts.path.parent)
        if taught.sha256 != file_sha256(facts.path):
            raise ModelError(
                f"{beside} belongs to another model than {facts.path} (sha256 differs); give the thresholds "
                "with --image-threshold and --score-max (raw scores), or copy the model.yaml teach wrote with it"
            )
        fields = taught.model_copy(update={"name": request.name}).model_dump(by_alias=True)
        taught_note = f"thresholds, input and frame baseline from the card teach wrote beside it ({beside})"
        return Proposal(_validated(fields, facts), f"{facts.path}: lineinspect teach model", (taught_note,))
    if request.anomaly.image_threshold is None or request.anomaly.score_max is None:
        raise ModelError(
            f"{facts.path}: a lineinspect teach model without the model.yaml teach wrote beside it; its raw-score "
            "thresholds are not in the ONNX file: give --image-threshold and --score-max (and --pixel-threshold, "
            "--score-min when they differ), or add the model from its teach folder"
        )
    spec, notes = _input_spec(facts, request, exported=None, resize="stretch")
    card = {
        "name": request.name,
        "adapter": "anomaly",
        "input": spec,
        "anomaly": _raw_calibration(facts, request.anomaly),
        "description": "lineinspect teach model (thresholds from the command line)",
    }
    return Proposal(_validated(card, facts), f"{facts.path}: lineinspect teach model", tuple(notes))


def _generic_card(facts: GraphFacts, request: AddRequest, adapter: AdapterKind) -> Proposal:
    spec, notes = _input_spec(facts, request, exported=None, resize="stretch")
    card: dict[str, Any] = {"name": request.name, "adapter": adapter, "input": spec}
    if adapter in ("segmentation", "classification", "yolo"):
        labels = _labels(facts, request, adapter)
        if not labels:
            raise ModelError(
                f"{facts.path}: a {adapter} model needs its class names: give --labels a,b,… by output index"
            )
        card["labels"] = labels
    if adapter == "classification":
        card.update(_classes_of_classifier(facts, request, card["labels"]))
    if adapter == "segmentation":
        background = request.good_class or good_like_label(card["labels"]) or card["labels"][0]
        card["background_class"] = background
        notes.append(f"background class '{background}' (the pixels that are not a defect; --good-class to change)")
    if adapter == "anomaly":
        if request.anomaly.image_threshold is None or request.anomaly.score_max is None:
            raise ModelError(
                f"{facts.path}: an anomaly model's raw-score thresholds are not in the file: give --image-threshold "
                "and --score-max (and --pixel-threshold, --score-min when they differ)"
            )
        card["anomaly"] = _raw_calibration(facts, request.anomaly)
    card["description"] = f"{adapter} model added from {facts.path.name}"
    notes.append(f"adapter {adapter} as given (--adapter); outputs {', '.join(facts.output_names)}")
    return Proposal(_validated(card, facts), f"{facts.path}: {adapter} model ({facts.describe()})", tuple(notes))


# ---------------------------------------------------------------- shared pieces


def _labels(facts: GraphFacts, request: AddRequest, adapter: str) -> list[str]:
    try:
        return model_labels(request.labels or [], facts.metadata, adapter)
    except AdapterError as exc:
        raise ModelError(f"--labels: {exc}") from None


def _classes_of_classifier(facts: GraphFacts, request: AddRequest, labels: list[str]) -> dict[str, Any]:
    for option, names in (
        ("--good-class", [request.good_class] if request.good_class else []),
        ("--defect-classes", request.defect_classes or []),
    ):
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ModelError(f"{option}: {unknown} not among the model's classes {labels}")
    good = request.good_class or good_like_label(labels)
    if good is None and not request.defect_classes:
        raise ModelError(
            f"{facts.path}: no class of {labels} means a good part, so every part would fail for its top class; "
            "give --good-class NAME (the class of good parts) or --defect-classes a,b (the classes that fail a part)"
        )
    classes: dict[str, Any] = {}
    if good is not None:
        classes["background_class"] = good
    if request.defect_classes:
        classes["defect_classes"] = list(request.defect_classes)
    return classes


def _input_spec(
    facts: GraphFacts, request: AddRequest, *, exported: tuple[int, int] | None, resize: str
) -> tuple[InputSpec, list[str]]:
    """Input layout, size, colours and scaling from the graph's image input; exported: (width, height) from metadata."""
    if not facts.inputs:
        raise ModelError(f"{facts.path}: the graph has no input tensor")
    first = facts.inputs[0]
    shape = first.shape
    if len(shape) != 4:
        raise ModelError(f"{facts.path}: input {first.shown()} is not a 4-D image tensor [batch, C, H, W]")
    if shape[1] in (1, 3):
        layout, channels, h_dim, w_dim = "NCHW", shape[1], shape[2], shape[3]
    elif shape[3] in (1, 3):
        layout, channels, h_dim, w_dim = "NHWC", shape[3], shape[1], shape[2]
    else:
        raise ModelError(f"{facts.path}: input {first.shown()} has neither 1 nor 3 channels (NCHW or NHWC)")
    notes = []
    fixed = (w_dim, h_dim) if isinstance(w_dim, int) and isinstance(h_dim, int) else None
    size = fixed or exported
    if request.size is not None:
        if fixed is not None and request.size != fixed:
            raise ModelError(
                f"--size {request.size[0]}x{request.size[1]}: the model's input is fixed at {fixed[0]}x{fixed[1]}"
            )
        size = request.size
    if size is None:
        raise ModelError(
            f"{facts.path}: input {first.shown()} has no fixed height and width; give --size WIDTHxHEIGHT "
            "(the size it was trained at)"
        )
    if channels == 1:
        color = "GRAY"
    else:
        color = request.color or "RGB"
        if request.color is None:
            notes.append("colour order RGB (as Ultralytics, anomalib and teach train); --color BGR if yours was not")
    spec: dict[str, Any] = {"name": first.name, "layout": layout, "width": size[0], "height": size[1], "color": color}
    if resize == "letterbox":
        spec.update(resize="letterbox", pad_value=114)
        how = "letterbox (keep aspect, grey 114 padding) as Ultralytics predicts"
    else:
        spec["resize"] = "stretch"
        how = (
            "stretch (Ultralytics classify resizes the short side and crops the centre: frame the part square)"
            if resize == "classify-stretch"
            else "stretch"
        )
    notes.append(f"input {first.name}: {layout} {size[0]}x{size[1]} {color}, {how}, pixels scaled by 1/255")
    return InputSpec.model_validate(spec), notes


def _raw_calibration(facts: GraphFacts, given: AnomalyThresholds) -> AnomalyCalibration:
    if given.image_threshold is None or given.score_max is None:
        raise ModelError(f"{facts.path}: raw anomaly thresholds need both --image-threshold and --score-max")
    try:
        return AnomalyCalibration(
            image_threshold=given.image_threshold,
            pixel_threshold=given.pixel_threshold if given.pixel_threshold is not None else given.image_threshold,
            score_min=given.score_min if given.score_min is not None else 0.0,
            score_max=given.score_max,
        )
    except ValueError as exc:
        raise ModelError(f"--score-min/--score-max: {exc}") from None


def _validated(card: dict[str, Any], facts: GraphFacts) -> ModelCard:
    fields = {**card, "sha256": file_sha256(facts.path)}
    try:
        return ModelCard.model_validate(fields)
    except ValueError as exc:
        raise ModelError(f"{facts.path}: the proposed card is not valid: {exc}") from None


# ---------------------------------------------------------------- adding


def find_sample_image(request: AddRequest) -> Path | None:
    """--image, else the first image under sample_images/ beside the models folder; None: there is none."""
    if request.image is not None:
        if not request.image.is_file():
            raise LineinspectError(f"--image {request.image}: no such file")
        return request.image
    folder = request.models_dir.parent / "sample_images"
    if not folder.is_dir():
        return None
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "mask" not in p.stem)
    return images[0] if images else None


def add_model(request: AddRequest, options: RuntimeOptions | None = None) -> AddReport:
    """Propose the card, write models/<name>/ (unless dry run), load it as the station would, run one sample."""
    options = options or RuntimeOptions()
    if not NAME_PATTERN.match(request.name):
        raise LineinspectError(
            f"--name {request.name!r}: a model name is a folder name: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    folder = request.models_dir / request.name
    if folder.exists():
        raise LineinspectError(
            f"--name {request.name}: {folder} already exists; choose another --name, or remove that folder first"
        )
    facts = read_graph(request.source)
    proposal = propose(facts, request)
    sample = find_sample_image(request)
    image = read_image_file(str(sample)) if sample is not None else None
    if request.dry_run:
        session = open_session(request.source, options, proposal.card.runtime)
        model = Model(request.source.parent, proposal.card, session)
        model.warm_up()
        return AddReport(proposal, None, sample, _run_once(model, image, sample))
    request.models_dir.mkdir(parents=True, exist_ok=True)
    folder.mkdir()
    try:
        shutil.copyfile(request.source, folder / MODEL_FILE)
        write_card(proposal.card, folder)
        model = Model.load(folder, options)
        result = _run_once(model, image, sample)
    except BaseException:
        shutil.rmtree(folder)  # made by this call: a card that does not load is not left behind
        raise
    return AddReport(proposal, folder, sample, result)


def _run_once(model: Model, image: np.ndarray | None, sample: Path | None) -> Result | None:
    if image is None:
        return None
    recipe = Recipe(id=f"{model.id}-check", model=model.id)
    inspector = Inspector({model.id: model}, {recipe.id: recipe}, recipe.id)
    return inspector.inspect(Frame(image, source=str(sample)))
