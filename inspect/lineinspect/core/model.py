"""A loaded model: its onnxruntime session (or two, or an inference server's), its card, its adapter."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

from lineinspect.core.adapters import Adapter, AdapterError, ModelOutput, make_adapter
from lineinspect.core.modelcard import MODEL_FILE, CardRuntime, ModelCard, file_sha256, load_card
from lineinspect.core.preprocess import Geometry, preprocess
from lineinspect.core.remote import RemoteOutages, RemoteSession
from lineinspect.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """onnxruntime settings. Threads: 0 lets onnxruntime choose.

    remote_budget_ms: the part's budget, the longest a card with `runtime.remote` may wait for its server.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    inter_op_threads: int = 1
    allow_spinning: bool = False
    remote_budget_ms: float = 1000.0


class Session(Protocol):
    """What a Model needs of its session: onnxruntime's `InferenceSession`, or a `RemoteSession`."""

    def get_inputs(self) -> Sequence[Any]: ...

    def get_outputs(self) -> Sequence[Any]: ...

    def get_modelmeta(self) -> Any: ...

    def run(self, output_names: list[str], input_feed: Mapping[str, np.ndarray]) -> Sequence[Any]: ...


def choose_providers(requested: tuple[str, ...]) -> list[str]:
    """Requested providers that this onnxruntime build has, CPU always last."""
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available and p != "CPUExecutionProvider"]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning(
            "execution providers %s are not installed (available: %s); using %s",
            missing,
            available,
            [*chosen, "CPUExecutionProvider"],
        )
    return [*chosen, "CPUExecutionProvider"]


@dataclass(frozen=True, slots=True)
class Inference:
    """One model run with its stage times in milliseconds."""

    output: ModelOutput
    geometry: Geometry
    preprocess_ms: float
    infer_ms: float
    postprocess_ms: float


class Model:
    """A model folder (`model.onnx` + `model.yaml`) ready to run. Thread-safe."""

    def __init__(self, path: Path, card: ModelCard, session: Session) -> None:
        self.path = path
        self.card = card
        self.session = session
        inputs = session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = card.input.name or names[0]
        if self.input_name not in names:
            raise ModelError(f"{path}: the card names input '{self.input_name}' but the model has {names}")
        self.output_names = [o.name for o in session.get_outputs()]
        _check_input_shape(path, card, next(i for i in inputs if i.name == self.input_name).shape)
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        try:
            self.adapter: Adapter = make_adapter(card, self.output_names, metadata)
        except AdapterError as exc:
            raise ModelError(f"{path}: {exc}") from exc

    @property
    def id(self) -> str:
        return self.card.name

    @property
    def sha256(self) -> str:
        return self.card.sha256

    @property
    def labels(self) -> list[str]:
        return list(getattr(self.adapter, "labels", self.card.labels))

    @classmethod
    def load(cls, model_dir: Path, options: RuntimeOptions | None = None) -> Model:
        """Load, verify the checksum, create the session, warm it up."""
        options = options or RuntimeOptions()
        model_dir = Path(model_dir)
        card = load_card(model_dir)
        onnx_path = model_dir / MODEL_FILE
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: model file not found")
        actual = file_sha256(onnx_path)
        if actual != card.sha256:
            raise ModelError(
                f"{onnx_path}: sha256 is {actual} but {model_dir / 'model.yaml'} says {card.sha256}; "
                "the model file was changed or the card belongs to another model"
            )
        session = open_remote(onnx_path, card, options) or open_session(onnx_path, options, card.runtime)
        model = cls(model_dir, card, session)
        model.warm_up()
        return model

    @property
    def remote_outages(self) -> RemoteOutages | None:
        """A remote model's outages (its server stopped / started answering); None: it runs in the station."""
        return self.session.outages if isinstance(self.session, RemoteSession) else None

    def close(self) -> None:
        """Let go of the session's connections (a remote model); an onnxruntime session needs nothing."""
        if isinstance(self.session, RemoteSession):
            self.session.close()

    def warm_up(self) -> None:
        spec = self.card.input
        blank = np.full((spec.height, spec.width, 3), 128, dtype=np.uint8)
        try:
            self.infer(blank)
        except Exception as exc:
            raise ModelError(f"{self.path}: the warm-up inference failed: {exc}") from exc

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: tensor})
        return dict(zip(self.output_names, values, strict=True))

    def infer(self, image: np.ndarray, *, stretched: np.ndarray | None = None) -> Inference:
        """image: (H, W) gray or (H, W, 3) BGR uint8.

        stretched: `preprocess.stretch(image, input width, input height)` where the caller has it (the Inspector's
        plausibility measures): a stretch card then does not resize the frame a second time.
        """
        t0 = time.monotonic_ns()
        tensor, geometry = preprocess(image, self.card.input, stretched=stretched)
        t1 = time.monotonic_ns()
        outputs = self.run(tensor)
        t2 = time.monotonic_ns()
        output = self.adapter.decode(outputs, geometry)
        t3 = time.monotonic_ns()
        return Inference(output, geometry, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6)


# onnxruntime's name for its NCHWc layout rewrite (an unknown name would be ignored without a word:
# tests/unit/test_model_runtime.py checks that this one takes effect).
NCHWC_OPTIMIZER = "NchwcTransformer"


def open_session(
    onnx_path: Path, options: RuntimeOptions, runtime: CardRuntime | None = None
) -> ort.InferenceSession | SplitSession:
    """An onnxruntime session of one model file with the station's settings; a file it cannot load: ModelError.

    runtime: the card's `runtime` section. `onnxruntime_nchwc: false` leaves onnxruntime's NCHWc layout
    rewrite out; with `nchwc_after: TENSOR` only up to that tensor, the graph after it running in a second
    session with it (`SplitSession`).
    """
    if runtime is None or runtime.onnxruntime_nchwc:
        return _session(onnx_path, str(onnx_path), options, nchwc=True)
    if runtime.nchwc_after is None:
        return _session(onnx_path, str(onnx_path), options, nchwc=False)
    head, tail = split_graph(onnx_path, runtime.nchwc_after)
    return SplitSession(
        _session(onnx_path, head, options, nchwc=False),
        _session(onnx_path, tail, options, nchwc=True),
        runtime.nchwc_after,
    )


def _session(onnx_path: Path, model: str | bytes, options: RuntimeOptions, *, nchwc: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if options.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model,
            sess_options=so,
            providers=choose_providers(options.providers),
            disabled_optimizers=[] if nchwc else [NCHWC_OPTIMIZER],
        )
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"{onnx_path}: onnxruntime cannot load it: {exc}") from exc


def split_graph(onnx_path: Path, tensor: str) -> tuple[bytes, bytes]:
    """(head, tail): the graph from its inputs to `tensor`, and from `tensor` to its outputs, serialized.

    ModelError (naming the card's `runtime.nchwc_after`) when no node makes that tensor, or when an
    output does not depend on the graph's inputs through it alone.
    """
    where = f"{onnx_path.parent / 'model.yaml'}: runtime.nchwc_after '{tensor}'"
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:
        raise ModelError(f"{onnx_path}: not a readable ONNX file: {exc}") from exc
    made = [out for node in model.graph.node for out in node.output]
    if tensor not in made:
        raise ModelError(f"{where}: no node of {onnx_path.name} makes that tensor ({len(made)} tensors do)")
    constants = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    outputs = [o.name for o in model.graph.output]
    try:
        model = onnx.shape_inference.infer_shapes(model)
        if tensor not in {v.name for v in model.graph.value_info}:  # inference stopped short of it: float, any shape
            model.graph.value_info.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
        extractor = onnx.utils.Extractor(model)
        head, tail = extractor.extract_model(inputs, [tensor]), extractor.extract_model([tensor], outputs)
    except Exception as exc:
        raise ModelError(f"{where}: the graph cannot be cut there ({type(exc).__name__}: {exc})") from None
    if {name for node in tail.graph.node for name in node.input} & set(inputs):
        raise ModelError(
            f"{where}: does not cut {onnx_path.name} in two: its outputs {outputs} also use the input "
            f"{inputs} by another way; name a tensor every path from the input to the outputs passes through"
        )
    for part in (head, tail):  # export metadata (labels, strides) travels with the graph
        part.ClearField("metadata_props")
        part.metadata_props.extend(model.metadata_props)
    return head.SerializeToString(), tail.SerializeToString()


class SplitSession:
    """One graph run as two onnxruntime sessions that meet at one tensor (the card's `runtime.nchwc_after`):
    a filter bank without the NCHWc layout, which slows its single-channel filters, and the network after it
    with it, which speeds up its wide convolutions. Thread-safe, as onnxruntime's sessions are."""

    def __init__(self, head: ort.InferenceSession, tail: ort.InferenceSession, tensor: str) -> None:
        self.head = head
        self.tail = tail
        self.tensor = tensor

    def get_inputs(self) -> Sequence[Any]:
        return self.head.get_inputs()

    def get_outputs(self) -> Sequence[Any]:
        return self.tail.get_outputs()

    def get_modelmeta(self) -> Any:
        return self.head.get_modelmeta()

    def run(self, output_names: list[str], input_feed: Mapping[str, np.ndarray]) -> Sequence[Any]:
        (middle,) = self.head.run([self.tensor], dict(input_feed))
        values: Sequence[Any] = self.tail.run(output_names, {self.tensor: middle})
        return values


def open_remote(onnx_path: Path, card: ModelCard, options: RuntimeOptions) -> RemoteSession | None:
    """The card's inference server session (None: the card runs the model in the station); ModelError: why not."""
    remote = card.runtime.remote if card.runtime is not None else None
    if remote is None:
        return None
    timeout_ms = min(remote.timeout_ms or options.remote_budget_ms, options.remote_budget_ms)
    if remote.timeout_ms is not None and remote.timeout_ms > options.remote_budget_ms:
        log.warning(
            "%s: runtime.remote.timeout_ms %g is longer than the part's budget; waiting %g ms at most",
            onnx_path.parent / "model.yaml",
            remote.timeout_ms,
            timeout_ms,
        )
    return RemoteSession.open(onnx_path, card, timeout_ms=timeout_ms)


def _check_input_shape(path: Path, card: ModelCard, shape: list[object]) -> None:
    spec = card.input
    if len(shape) != 4:
        raise ModelError(f"{path}: the model input has shape {shape}; lineinspect needs a 4-D image input")
    expected = (
        [None, spec.channels, spec.height, spec.width]
        if spec.layout == "NCHW"
        else [None, spec.height, spec.width, spec.channels]
    )
    for got, want in zip(shape[1:], expected[1:], strict=True):
        if isinstance(got, int) and got != want:
            raise ModelError(
                f"{path}: the model input has shape {shape} but the card says {spec.layout} "
                f"{spec.channels}x{spec.height}x{spec.width} ({spec.color}); fix the card's input section"
            )
