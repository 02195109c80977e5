"""Small ONNX files shaped like real exports: the same input and output names, shapes and metadata_props.

Ultralytics (`yolo export format=onnx`): input `images` [1, 3, H, W] RGB 0–1; outputs `output0`
(and `output1` prototypes for segment); metadata_props description, author, version, stride, task,
batch, imgsz, names, (kpt_shape for pose), each value written with str(). anomalib v2
(`engine.export(export_type="onnx")`): input `input`, outputs pred_score, pred_label, anomaly_map,
pred_mask, producer pytorch, the model's buffers kept as initializers (Padim's gaussian mean and
inverse covariance, Patchcore's memory bank). lineinspect teach: producer "lineinspect teach",
input `input` [batch, C, H, W], outputs anomaly_map and pred_score. The outputs are fixed tensors
that depend on the input, so onnxruntime runs the graph but cannot fold it away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def export_file(
    path: Path,
    *,
    input_name: str,
    input_shape: list[int | str],
    outputs: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
    producer: str = "pytorch",
    buffers: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write an ONNX file whose outputs are the given fixed tensors (+ 0 x the input's sum)."""
    nodes = [
        helper.make_node("ReduceSum", [input_name], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    for name, value in (buffers or {}).items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
    infos = []
    for out, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{out}_value"))
        nodes.append(helper.make_node("Add", [f"{out}_value", "nothing"], [out]))
        infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes,
        "export",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        infos,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = 8
    for key, text in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def ultralytics_metadata(task: str, names: dict[int, str], imgsz: int, **extra: str) -> dict[str, str]:
    """metadata_props as Ultralytics' exporter writes them (values are str() of Python values)."""
    return {
        "description": f"Ultralytics YOLO11n-{task} model trained on parts.yaml",
        "author": "Ultralytics",
        "date": "2025-01-01T00:00:00.000000",
        "version": "8.3.40",
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": "32",
        "task": task,
        "batch": "1",
        "imgsz": str([imgsz, imgsz]),
        "names": str(names),
        "args": "{'batch': 1, 'half': False, 'dynamic': False, 'simplify': True, 'opset': 17}",
        "channels": "3",
        **extra,
    }


def _rows(nc: int, extra: int, dets: list[tuple[float, float, float, float, int, float]], anchors: int = 8):
    """output0 [1, 4+nc+extra, anchors] with one anchor per detection (cx, cy, w, h, class, score)."""
    pred = np.zeros((1, 4 + nc + extra, anchors), np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(dets):
        pred[0, :4, a] = (cx, cy, w, h)
        pred[0, 4 + cls, a] = score
    return pred


SIZE = 64
NAMES = {0: "scratch", 1: "dent"}


def ultralytics_detect(path: Path) -> Path:
    """One dent (score 0.9) at the centre, 16 x 8 input px."""
    return export_file(
        path,
        input_name="images",
        input_shape=[1, 3, SIZE, SIZE],
        outputs={"output0": _rows(2, 0, [(32, 32, 16, 8, 1, 0.9)])},
        metadata=ultralytics_metadata("detect", NAMES, SIZE),
    )


def ultralytics_segment(path: Path) -> Path:
    """One scratch (0.95) whose mask is prototype 0: a 16 x 16 px square at the centre."""
    pred = _rows(2, 32, [(32, 32, 32, 32, 0, 0.95)])
    pred[0, 4 + 2 + 0, 0] = 1.0
    protos = np.full((1, 32, SIZE // 4, SIZE // 4), -10.0, np.float32)
    protos[0, 0, 6:10, 6:10] = 10.0
    return export_file(
        path,
        input_name="images",
        input_shape=[1, 3, SIZE, SIZE],
        outputs={"output0": pred, "output1": protos},
        metadata=ultralytics_metadata("segment", NAMES, SIZE),
    )


def ultralytics_obb(path: Path) -> Path:
    """One dent (0.8), 20 x 4 px, turned by 90°: its upright box is 4 wide and 20 high."""
    pred = _rows(2, 1, [(32, 32, 20, 4, 1, 0.8)])
    pred[0, 4 + 2, 0] = np.pi / 2
    return export_file(
        path,
        input_name="images",
        input_shape=[1, 3, SIZE, SIZE],
        outputs={"output0": pred},
        metadata=ultralytics_metadata("obb", NAMES, SIZE),
    )


def ultralytics_pose(path: Path) -> Path:
    """One burr (0.7) with 3 keypoints of (x, y, visibility) after its score."""
    pred = _rows(1, 9, [(20, 20, 10, 10, 0, 0.7)])
    pred[0, 5:14, 0] = (18, 18, 1.0, 22, 22, 1.0, 20, 20, 1.0)
    return export_file(
        path,
        input_name="images",
        input_shape=[1, 3, SIZE, SIZE],
        outputs={"output0": pred},
        metadata=ultralytics_metadata("pose", {0: "burr"}, SIZE, kpt_shape="[3, 3]"),
    )


def ultralytics_classify(path: Path, names: dict[int, str] | None = None, probs: list[float] | None = None) -> Path:
    """Softmax probabilities [1, nc]; by default good/scratch/dent with scratch on top (0.8)."""
    names = names or {0: "good", 1: "scratch", 2: "dent"}
    values = np.array([probs or [0.1, 0.8, 0.1]], np.float32)
    return export_file(
        path,
        input_name="images",
        input_shape=[1, 3, 32, 32],
        outputs={"output0": values},
        metadata=ultralytics_metadata("classify", names, 32),
    )


def anomalib_export(path: Path, method: str = "Padim", *, dynamic: bool = False, score: float = 0.9) -> Path:
    """anomalib v2: normalised pred_score (0.5 = its threshold), a map with one hot 4 x 10 region."""
    amap = np.zeros((1, 1, 32, 32), np.float32)
    amap[0, 0, 4:8, 10:20] = 0.9
    buffers = (
        {"model.memory_bank": np.zeros((16, 8), np.float32)}
        if method == "Patchcore"
        else {
            "model.gaussian.mean": np.zeros((8, 16), np.float32),
            "model.gaussian.inv_covariance": np.zeros((16, 8, 8), np.float32),
        }
    )
    return export_file(
        path,
        input_name="input",
        input_shape=[1, 3, "height", "weight"] if dynamic else [1, 3, 32, 32],
        outputs={
            "pred_score": np.array([score], np.float32),
            "pred_label": np.array([1.0 if score >= 0.5 else 0.0], np.float32),
            "anomaly_map": amap,
            "pred_mask": (amap > 0.5).astype(np.float32),
        },
        buffers=buffers,
    )


def lineinspect_teach_export(path: Path) -> Path:
    """The layout teach writes: raw anomaly_map [batch, 1, 32, 32] and pred_score [batch]."""
    amap = np.zeros((1, 1, 32, 32), np.float32)
    amap[0, 0, 10:14, 10:14] = 9.0
    return export_file(
        path,
        input_name="input",
        input_shape=["batch", 3, 32, 32],
        outputs={"anomaly_map": amap, "pred_score": np.array([9.0], np.float32)},
        producer="lineinspect teach",
    )
