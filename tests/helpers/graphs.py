"""Small real ONNX graphs for tests, written with onnx.helper and run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lineinspect.core.modelcard import MODEL_FILE, ModelCard, file_sha256, write_card

OPSET = 17


def save_model(graph: onnx.GraphProto, model_dir: Path, card: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write model.onnx + model.yaml (sha256 filled in) into model_dir."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_dir / MODEL_FILE))
    card = {**card, "sha256": file_sha256(model_dir / MODEL_FILE)}
    write_card(ModelCard.model_validate(card), model_dir)
    return model_dir


def brightness_anomaly(model_dir: Path, size: int = 64, with_score: bool = True) -> Path:
    """Anomaly = brightness: anomaly_map = max over RGB of the input (0–1)."""
    nodes = [helper.make_node("ReduceMax", ["input"], ["anomaly_map"], axes=[1], keepdims=1)]
    outputs = [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size])]
    if with_score:
        nodes.append(helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0))
        outputs.append(helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(
        nodes, "brightness", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])], outputs
    )
    card = {
        "name": model_dir.name,
        "adapter": "anomaly",
        "input": {"width": size, "height": size, "color": "RGB"},
        "anomaly": {"image_threshold": 0.5, "pixel_threshold": 0.5, "score_min": 0.0, "score_max": 1.0},
    }
    return save_model(graph, model_dir, card)


def red_segmentation(model_dir: Path, size: int = 64) -> Path:
    """Two classes [good, red]: P(red) = R channel, P(good) = 1 - R. Input RGB NCHW 0–1."""
    r = helper.make_tensor("r_idx", TensorProto.INT64, [1], [0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Gather", ["input", "r_idx"], ["red"], axis=1),
        helper.make_node("Sub", ["one", "red"], ["good"]),
        helper.make_node("Concat", ["good", "red"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "redseg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, size, size])],
        initializer=[r, one],
    )
    card = {
        "name": model_dir.name,
        "adapter": "segmentation",
        "input": {"width": size, "height": size, "color": "RGB"},
        "labels": ["good", "red"],
        "background_class": "good",
        "thresholds": {"red": 0.5},
    }
    return save_model(graph, model_dir, card)


def constant_output_graph(name: str, input_shape: list[int], outputs: dict[str, np.ndarray]) -> onnx.GraphProto:
    """Outputs fixed tensors, made to depend on the input (x * 0 added) so nothing folds away."""
    nodes = [helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0)]
    nodes.append(helper.make_node("Mul", ["total", "zero"], ["nothing"]))
    inits = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    infos = []
    for out, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{out}_value"))
        nodes.append(helper.make_node("Add", [f"{out}_value", "nothing"], [out]))
        infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(value.shape)))
    return helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)], infos, initializer=inits
    )


def slow_brightness_anomaly(model_dir: Path, size: int = 64, matmuls: int = 40, side: int = 512) -> Path:
    """brightness_anomaly that also does `matmuls` (side × side) matrix products first (for timeout tests).

    The products depend on the input, so onnxruntime cannot fold them away, and
    their result is multiplied by 0, so the outputs equal brightness_anomaly's.
    """
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["brightest"], keepdims=0),
        helper.make_node("Mul", ["eye", "brightest"], ["m0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "eye"], [f"m{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"m{matmuls}"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("ReduceMax", ["input"], ["brightness"], axes=[1], keepdims=1),
        helper.make_node("Add", ["brightness", "nothing"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.eye(side, dtype=np.float32), "eye"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "slow_brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size]),
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1]),
        ],
        initializer=inits,
    )
    card = {
        "name": model_dir.name,
        "adapter": "anomaly",
        "input": {"width": size, "height": size, "color": "RGB"},
        "anomaly": {"image_threshold": 0.5, "pixel_threshold": 0.5, "score_min": 0.0, "score_max": 1.0},
    }
    return save_model(graph, model_dir, card)
