"""An int8 copy of a model, calibrated on good parts (`lineinspect quantize`, `lineinspect teach --quantize int8`).

Static quantization with onnxruntime's own tools, in QDQ form (QuantizeLinear /
DequantizeLinear pairs around the quantized nodes, which onnxruntime fuses into
int8 kernels at load):

1. The float model is prepared by `onnxruntime.quantization.shape_inference.quant_pre_process`
   (shape inference and graph optimisation, so that the calibration sees the graph that runs).
2. Activation ranges are calibrated (min/max) on good images, each preprocessed exactly as
   the station does it (`core.preprocess` with the card's input spec): up to `images` of the
   calibration folder, spread evenly over it by name. Each range is then widened by `headroom`
   times its span on either side (default 1: three times as wide, about 1.6 of int8's 8 bits):
   a defect's activations lie beyond every good part's, and ranges of good parts alone clip the
   very response that rejects a part (measured: the int8 copy of a brightness model calibrated on
   good plates alone passed every plate with a bright blob; the test keeps it from coming back).
   Memory grows with the images in a chunk (8) times the model's quantized activations.
3. Which nodes become int8 (`layers`):
   - `dense` (default): convolutions with at least `DENSE_MIN_CHANNELS` input channels per group,
     matrix products whose constant operand is at least that wide both ways, and the Relu right
     after such a node. Weights per output channel (`per_channel`), in 7 bits of int8's range
     (`reduce_range`, see 4.). Everything else stays float:
     single-channel filters (the filter bank in front of every `teach` model, 1xK and Kx1
     kernels) run faster in onnxruntime's float kernels than in its int8 ones, and quantizing
     what a z-score divides by a small good-part spread multiplies the rounding error.
   - `all`: every node onnxruntime can quantize (measured: slower and less exact on `teach`
     models; kept for models built elsewhere, and for `bench/bench_quantize.py`).
4. Weights use 7 bits (-64…63), always: x86 CPUs with AVX2 but without VNNI (many line PCs)
   multiply uint8 activations by int8 weights with an instruction that adds pairs of products in
   16 bits and saturates (VPMADDUBSW), so two large activations times two large weights are cut
   off. The model file must give the same answers on every CPU it is copied to, so the range that
   cannot saturate is used everywhere (measured on such a CPU: a bright blob that the float model
   scored 0.89 came out 0.46 through onnxruntime's int8 kernels, and 0.74, the clipped range top,
   through its reference QDQ arithmetic; the test compares both ways of running the int8 model).
5. The new folder gets model.onnx and a card: the float card with the new sha256, the name
   of the folder and a `quantized` section (format `int8-qdq`, the float model's sha256 and
   name, the number of calibration images, and how: layers, per-channel, nodes left float,
   date, and how far the int8 raw scores lie from the float ones on the calibration images).
   Thresholds and the frame baseline are kept from the float card: the preprocessing and the
   frames are the same, and the thresholds came from held-back good parts that the calibration
   folder need not hold. Where the score shift printed matters, run `lineinspect retune` on the
   int8 model with good parts it did not learn from.

The folder is written under a temporary name beside `out` and renamed when the int8 model has
loaded through `Model.load` (sha256 checked, warm-up run), so a failure leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    quantize_static,
)
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from lineinspect.core.adapters import ModelOutput
from lineinspect.core.clock import utc_now_iso
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import MODEL_FILE, InputSpec, ModelCard, Quantization, file_sha256, write_card
from lineinspect.core.preprocess import preprocess
from lineinspect.core.recipe import Recipe, decide
from lineinspect.core.result import Verdict
from lineinspect.errors import LineinspectError
from lineinspect.offline.datasets import DatasetError, LabelledImage, find_good, read_labelled

QUANTIZED_FORMAT = "int8-qdq"
DEFAULT_CALIBRATION_IMAGES = 100
DENSE_MIN_CHANNELS = 8
DEFAULT_HEADROOM = 1.0
CALIBRATION_CHUNK_IMAGES = 8
DENSE_OPS = frozenset({"Conv", "MatMul", "Gemm"})
Layers = Literal["dense", "all"]
LAYERS: tuple[Layers, ...] = ("dense", "all")


class QuantizeError(LineinspectError):
    """An int8 model cannot be made from what was given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    """images: calibration images used at most. layers: which nodes become int8 (module docstring).

    per_channel: weight scales per output channel (else one per tensor). name: the new model's id
    (default: the output folder's name). headroom: each activation range is widened by this many times
    its good-part span on either side (module docstring).
    """

    images: int = DEFAULT_CALIBRATION_IMAGES
    headroom: float = DEFAULT_HEADROOM
    layers: Layers = "dense"
    per_channel: bool = True
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Quantized:
    """The int8 model's folder and card, and how it compares with the float model on the calibration images."""

    out_dir: Path
    card: ModelCard
    calibration_images: int
    int8_nodes: int
    float_nodes: int
    verdicts_agreeing: int
    score_shift_median: float  # int8 − float image score, in the card's raw score units
    score_shift_max_abs: float

    def summary(self) -> str:
        n = self.calibration_images
        return (
            f"int8 model '{self.card.name}' written to {self.out_dir} ({QUANTIZED_FORMAT}; {self.int8_nodes} nodes "
            f"int8, {self.float_nodes} left float), calibrated on {n} good images; on them int8 and float agree "
            f"on {self.verdicts_agreeing}/{n} verdicts, image score int8 − float: median "
            f"{self.score_shift_median:+.4g}, largest {self.score_shift_max_abs:.4g} (raw units); "
            "thresholds and frame baseline kept from the float card"
        )


class StationImages(CalibrationDataReader):
    """Calibration feed: good images read one at a time and preprocessed as the station does (`core.preprocess`)."""

    def __init__(self, items: Sequence[LabelledImage], spec: InputSpec, input_name: str) -> None:
        self._items = list(items)
        self._spec = spec
        self._input_name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._items):
            return None
        image, _ = read_labelled(self._items[self._next])
        self._next += 1
        return {self._input_name: preprocess(image, self._spec)[0]}

    def rewind(self) -> None:
        self._next = 0


def default_out(model_dir: Path) -> Path:
    """Where the int8 copy of model_dir goes by default: the sibling folder `<name>-int8`."""
    return model_dir.with_name(f"{model_dir.name}-int8")


def check_out_free(out_dir: Path) -> None:
    """QuantizeError when out_dir exists already (an int8 model is never written over a folder)."""
    if out_dir.exists():
        raise QuantizeError(f"--out {out_dir}: the folder exists; give another --out or remove it first")


def calibration_items(folder: Path, limit: int) -> list[LabelledImage]:
    """Up to `limit` good images of folder (recursively), spread evenly over them in name order."""
    if limit < 1:
        raise QuantizeError(f"--images {limit}: calibrate on at least 1 image (100 or more work best)")
    if not folder.exists():
        raise QuantizeError(f"--calibration {folder}: folder not found; give a folder of images of good parts")
    if not folder.is_dir():
        raise QuantizeError(f"--calibration {folder}: not a folder; give a folder of images of good parts")
    try:
        items = find_good(folder)
    except DatasetError:
        raise QuantizeError(
            f"--calibration {folder}: no images in it (PNG, JPEG, BMP, TIFF, in sub-folders too); "
            "give a folder of images of good parts, taken as the line camera takes them"
        ) from None
    if len(items) <= limit:
        return items
    picked = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picked]


def quantize_model(source_dir: Path, calibration: Path, out_dir: Path, options: QuantizeOptions) -> Quantized:
    """Write an int8 copy of the model in source_dir to out_dir, calibrated on the good images of calibration."""
    check_out_free(out_dir)
    float_model = Model.load(source_dir, RuntimeOptions(intra_op_threads=0))
    items = calibration_items(calibration, options.images)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        int8_nodes, float_nodes = _quantize_file(float_model, items, work, options)
        card = _int8_card(float_model.card, work, out_dir, calibration, len(items), options, float_nodes)
        write_card(card, work)
        int8_model = Model.load(work, RuntimeOptions(intra_op_threads=0))
        agreeing, shifts = _compare(float_model, int8_model, items)
        card = card.model_copy(deep=True)
        assert card.quantized is not None
        card.quantized.details.update(
            {
                "calibration_verdicts_agreeing": agreeing,
                "calibration_score_shift_median": round(float(np.median(shifts)), 6),
                "calibration_score_shift_max_abs": round(float(np.abs(shifts).max()), 6),
            }
        )
        write_card(card, work)
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Quantized(
        out_dir,
        card,
        len(items),
        int8_nodes,
        float_nodes,
        agreeing,
        float(np.median(shifts)),
        float(np.abs(shifts).max()),
    )


def dense_nodes(graph: onnx.GraphProto, min_channels: int = DENSE_MIN_CHANNELS) -> list[str]:
    """Names of the nodes the `dense` rule quantizes (module docstring), in graph order."""
    weights = {init.name: list(init.dims) for init in graph.initializer}
    chosen: list[str] = []
    outputs: set[str] = set()
    for node in graph.node:
        dims = weights.get(node.input[1]) if node.op_type in DENSE_OPS and len(node.input) > 1 else None
        if node.op_type == "Conv" and dims is not None and len(dims) >= 2:
            dense = dims[1] >= min_channels and dims[0] >= 1
        elif dims is not None and len(dims) == 2:
            dense = min(dims) >= min_channels
        else:
            dense = node.op_type == "Relu" and node.input[0] in outputs
        if dense:
            chosen.append(node.name)
            outputs.update(node.output)
    return chosen


def _quantize_file(
    float_model: Model, items: Sequence[LabelledImage], work: Path, options: QuantizeOptions
) -> tuple[int, int]:
    """work/model.onnx: the int8 model; (int8 nodes, float nodes) of the prepared graph."""
    source = onnx.load(str(float_model.path / MODEL_FILE))
    _merge_opset_imports(source)
    named = work / "float-named.onnx"
    prepared = work / "float-prepared.onnx"
    for index, node in enumerate(source.graph.node):  # the quantizer selects nodes by name
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    onnx.save(source, str(named))
    try:
        quant_pre_process(str(named), str(prepared))
    except Exception:  # symbolic shape inference gives up on some graphs; onnx's own inference then
        quant_pre_process(str(named), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    nodes = dense_nodes(graph) if options.layers == "dense" else [n.name for n in graph.node]
    if not nodes:
        convs = sum(n.op_type == "Conv" for n in graph.node)
        raise QuantizeError(
            f"{float_model.path}: no layer of this model gains from int8: its {convs} convolutions have fewer than "
            f"{DENSE_MIN_CHANNELS} input channels (per-channel filters, which onnxruntime runs faster in float) and "
            "it has no wide matrix product; --layers all quantizes them anyway (slower and less exact on teach "
            "models: bench/bench_quantize.py measures it)"
        )
    op_types = sorted({n.op_type for n in graph.node if n.name in set(nodes)})
    ranges = work / "ranges.json"
    try:
        save_tensors_data(calibrated_ranges(prepared, op_types, items, float_model, work, options.headroom), ranges)
        quantize_static(
            str(prepared),
            str(work / MODEL_FILE),
            None,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=options.per_channel,
            reduce_range=True,  # 7-bit weights: no saturation on AVX2 CPUs without VNNI (module docstring, 4.)
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=ranges,
            nodes_to_quantize=nodes if options.layers == "dense" else None,
            op_types_to_quantize=op_types,
        )
    except LineinspectError:
        raise
    except Exception as exc:  # onnxruntime's quantizer raises plain exceptions of several kinds
        raise QuantizeError(f"{float_model.path}: onnxruntime could not quantize it: {exc}") from exc
    finally:
        for intermediate in (named, prepared, ranges, work / "augmented.onnx"):
            intermediate.unlink(missing_ok=True)
        for leftover in work.glob("*.data"):
            leftover.unlink()
    quantized = onnx.load(str(work / MODEL_FILE))
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    inputs_dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8 = sum(1 for n in quantized.graph.node if n.op_type not in qdq and set(n.input) & inputs_dequantized)
    compute = sum(1 for n in quantized.graph.node if n.op_type not in qdq)
    return int8, compute - int8


def calibrated_ranges(
    prepared: Path,
    op_types: Sequence[str],
    items: Sequence[LabelledImage],
    float_model: Model,
    work: Path,
    headroom: float,
) -> TensorsData:
    """Min/max of every tensor onnxruntime would quantize, over the images, widened by `headroom` spans each way
    (not below 0 where the good parts never go below 0).

    Collected CALIBRATION_CHUNK_IMAGES at a time (the calibrator holds every calibrated tensor of a chunk in
    memory; onnxruntime 1.32's own CalibMaxIntermediateOutputs drops data instead of folding it into ranges).
    """
    calibrator = create_calibrator(
        prepared,
        op_types,
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
        providers=["CPUExecutionProvider"],
    )
    for start in range(0, len(items), CALIBRATION_CHUNK_IMAGES):
        chunk = items[start : start + CALIBRATION_CHUNK_IMAGES]
        calibrator.collect_data(StationImages(chunk, float_model.card.input, float_model.input_name))
    good = calibrator.compute_data()
    widened = {}
    for tensor in good:
        low, high = good[tensor].range_value
        span = high - low
        # A tensor that is never negative on good parts (after a Relu, a square, a brightness) stays so:
        # onnxruntime folds a Relu into a range that starts at 0, and drops it into one that does not.
        bottom = low - headroom * span
        widened[tensor] = (np.maximum(bottom, 0.0) if np.all(low >= 0) else bottom, high + headroom * span)
    return TensorsData(CalibrationMethod.MinMax, widened)


def _merge_opset_imports(model: onnx.ModelProto) -> None:
    """One opset entry per domain: graphs merged with onnx.compose can list the default domain twice,
    which onnxruntime runs but its quantizer refuses."""
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in versions.items())


def _int8_card(
    card: ModelCard,
    work: Path,
    out_dir: Path,
    calibration: Path,
    images: int,
    options: QuantizeOptions,
    float_nodes: int,
) -> ModelCard:
    name = options.name or out_dir.name
    description = (
        f"{card.description} Quantized to int8 ({QUANTIZED_FORMAT}) from '{card.name}' by lineinspect quantize."
    )
    # The int8 network does not run in the NCHWc layout (only float convolutions do), so nothing is gained by
    # running it in a session of its own; the quantizer's rewrite may also have renamed the tensor between.
    runtime = None if card.runtime is None else card.runtime.model_copy(update={"nchwc_after": None})
    return card.model_copy(
        deep=True,
        update={
            "name": name,
            "description": description.strip(),
            "sha256": file_sha256(work / MODEL_FILE),
            "runtime": runtime,
            "quantized": Quantization(
                format=QUANTIZED_FORMAT,
                from_model=card.name,
                from_sha256=card.sha256,
                calibration_images=images,
                details={
                    "date_utc": utc_now_iso("seconds"),
                    "calibration_folder": str(calibration),
                    "calibration_method": "minmax",
                    "range_headroom_spans": options.headroom,
                    "layers": options.layers,
                    "per_channel": options.per_channel,
                    "activations": "int8",
                    "weights": "int8, 7-bit range (no saturation on AVX2 CPUs without VNNI)",
                    "nodes_left_float": float_nodes,
                    "thresholds": "kept from the float model",
                    "frame_baseline": "kept from the float model",
                },
            ),
        },
    )


def _compare(float_model: Model, int8_model: Model, items: Sequence[LabelledImage]) -> tuple[int, np.ndarray]:
    """(verdicts the two models agree on, int8 − float image scores (n,) in raw units) over the images."""
    agreeing = 0
    shifts = []
    for item in items:
        image, _ = read_labelled(item)
        a, b = float_model.infer(image).output, int8_model.infer(image).output
        agreeing += int(_rejected(float_model.card, a) == _rejected(int8_model.card, b))
        raw_a = a.raw_score if a.raw_score is not None else a.score
        raw_b = b.raw_score if b.raw_score is not None else b.score
        shifts.append(raw_b - raw_a)
    return agreeing, np.asarray(shifts, dtype=np.float64)


def _rejected(card: ModelCard, output: ModelOutput) -> bool:
    """The station's verdict under a recipe with no limits of its own (as `evaluate` calls a part defective)."""
    recipe = Recipe(id=f"{card.name}-quantize", model=card.name)
    return decide(output.defects, output.score, recipe, card.thresholds).verdict == Verdict.FAIL
