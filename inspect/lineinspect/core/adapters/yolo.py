"""Ultralytics YOLO exports (detect, segment, OBB, pose) and the YOLOv5 layout.

- detect:  output0 [1, 4+nc, A]: cx, cy, w, h in input pixels, then class scores
  (no objectness).
- segment: output0 [1, 4+nc+32, A] (32 mask coefficients after the scores) and
  output1 [1, 32, H/4, W/4] mask prototypes.
- obb:     output0 [1, 4+nc+1, A]: the rotation angle (radians) last; a defect's box is the
  upright box around the rotated one.
- pose:    output0 [1, 4+nc+K*D, A] (kpt_shape [K, D] in the metadata); keypoints are not read.
- YOLOv5:  [1, N, 5+nc]: cx, cy, w, h, objectness, class scores.

Class names, image size and task come from the ONNX metadata_props that
Ultralytics writes (values are Python literals, e.g. "{0: 'scratch'}"), unless
the card lists labels. Letterboxing is undone so boxes land on the original image.
"""

from __future__ import annotations

import cv2
import numpy as np

from lineinspect.core.adapters.base import AdapterError, ModelOutput, sigmoid
from lineinspect.core.adapters.export_metadata import model_labels, parse_metadata
from lineinspect.core.defects import Box, Defect
from lineinspect.core.modelcard import ModelCard
from lineinspect.core.preprocess import Geometry

MASK_DIM = 32
MAX_DETECTIONS = 300


def extra_columns(task: str, kpt_shape: object) -> int:
    """Columns after the class scores in output0 for an Ultralytics task (detect 0, segment 32, obb 1, pose K*D)."""
    if task == "segment":
        return MASK_DIM
    if task == "obb":
        return 1
    if task == "pose":
        if isinstance(kpt_shape, list | tuple) and len(kpt_shape) == 2:
            return int(kpt_shape[0]) * int(kpt_shape[1])
        return 17 * 3  # Ultralytics' default (COCO keypoints, x y visibility)
    return 0


class YoloAdapter:
    def __init__(self, card: ModelCard, output_names: list[str], metadata: dict[str, str]) -> None:
        self.card = card
        meta = parse_metadata(metadata)
        names = model_labels(card.labels, metadata, "yolo")
        if not names:
            raise AdapterError(
                "yolo adapter: no class names: list 'labels' in the card or export with Ultralytics "
                "(which writes 'names' into the ONNX metadata)"
            )
        self.labels: list[str] = [str(n) for n in names]
        imgsz = meta.get("imgsz")
        exported = (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, list | tuple) and len(imgsz) == 2 else None
        if exported is not None and (card.input.height, card.input.width) != exported:
            raise AdapterError(
                f"yolo adapter: the card's input is {card.input.width}x{card.input.height} but the "
                f"model was exported at imgsz {list(exported)} (height, width); fix input.width/height"
            )
        self.task = str(meta.get("task", "segment" if len(output_names) > 1 else "detect"))
        if self.task not in ("detect", "segment", "obb", "pose"):
            raise AdapterError(
                f"yolo adapter: the model's metadata says task '{self.task}'; the yolo adapter reads detect, segment, "
                "obb and pose exports (a classify export takes adapter: classification)"
            )
        self.extra = extra_columns(self.task, meta.get("kpt_shape"))
        self.output = output_names[0]
        self.protos = output_names[1] if len(output_names) > 1 else None
        self.min_score = min([card.threshold_for(n, 0.25) for n in self.labels])

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput:
        pred = np.asarray(outputs[self.output], dtype=np.float32)
        if pred.ndim != 3:
            raise AdapterError(f"yolo adapter: output '{self.output}' has shape {pred.shape}; expected 3 dims")
        pred = pred[0]
        nc = len(self.labels)
        coeffs = None
        if pred.shape[0] in (4 + nc, 4 + nc + MASK_DIM, 4 + nc + self.extra) and pred.shape[1] != 5 + nc:
            rows = pred.T  # (A, 4+nc[+extra])
            xywh, scores = rows[:, :4], rows[:, 4 : 4 + nc]
            if self.task == "obb" and rows.shape[1] == 4 + nc + 1:
                xywh = _upright(xywh, rows[:, 4 + nc])
            elif rows.shape[1] == 4 + nc + MASK_DIM and self.task != "pose":
                coeffs = rows[:, 4 + nc :]
        elif pred.shape[1] == 5 + nc:
            xywh, scores = pred[:, :4], pred[:, 5 : 5 + nc] * pred[:, 4:5]
        else:
            raise AdapterError(
                f"yolo adapter: output '{self.output}' has shape [1, {pred.shape[0]}, {pred.shape[1]}], "
                f"which fits neither [1, 4+{nc}(+{self.extra or 32}), A] nor [1, N, 5+{nc}] for {nc} classes "
                f"(task {self.task})"
            )
        class_ids = scores.argmax(axis=1)
        conf = scores[np.arange(len(scores)), class_ids]
        keep = conf >= self.min_score
        xywh, class_ids, conf = xywh[keep], class_ids[keep], conf[keep]
        if coeffs is not None:
            coeffs = coeffs[keep]
        if len(conf) == 0:
            return ModelOutput(score=0.0)
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        picked = _nms_per_class(xyxy, conf, class_ids, self.card.iou_threshold)[:MAX_DETECTIONS]
        masks_in = None
        if coeffs is not None and self.protos is not None:
            masks_in = _proto_masks(coeffs[picked], np.asarray(outputs[self.protos], dtype=np.float32)[0])
        defects = []
        best = 0.0
        for k, i in enumerate(picked):
            name = self.labels[int(class_ids[i])]
            score = float(conf[i])
            if score < self.card.threshold_for(name, 0.25):
                continue
            best = max(best, score)
            x0, y0 = geometry.to_image(xyxy[i, 0], xyxy[i, 1])
            x1, y1 = geometry.to_image(xyxy[i, 2], xyxy[i, 3])
            box = Box(float(x0), float(y0), float(x1), float(y1)).clipped(geometry.image_width, geometry.image_height)
            if masks_in is None:
                defects.append(Defect.from_box(name, score, box))
            else:
                defects.append(_masked_defect(name, score, box, masks_in[k], geometry))
        return ModelOutput(score=best, defects=defects)


def _upright(xywh: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """Rotated boxes (A, 4) cx, cy, w, h with angles (A,) in radians → the upright boxes around them (A, 4)."""
    cos, sin = np.abs(np.cos(angle_rad)), np.abs(np.sin(angle_rad))
    w, h = xywh[:, 2], xywh[:, 3]
    return np.stack([xywh[:, 0], xywh[:, 1], w * cos + h * sin, w * sin + h * cos], axis=1)


def _nms_per_class(xyxy: np.ndarray, conf: np.ndarray, class_ids: np.ndarray, iou: float) -> list[int]:
    # Offsetting boxes by class keeps NMS from suppressing across classes.
    offset = class_ids[:, None].astype(np.float32) * (float(xyxy.max()) + 1.0)
    boxes = xyxy + offset
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), conf.tolist(), 0.0, iou)
    order = np.asarray(idx, dtype=np.int64).reshape(-1)
    return sorted(order.tolist(), key=lambda i: -conf[i])


def _proto_masks(coeffs: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """coeffs (n, 32), protos (32, mh, mw) → (n, mh, mw) mask probabilities."""
    c, mh, mw = protos.shape
    return sigmoid(coeffs @ protos.reshape(c, -1)).reshape(-1, mh, mw)


def _masked_defect(name: str, score: float, box: Box, proto_mask: np.ndarray, geometry: Geometry) -> Defect:
    # Prototype masks cover the whole (letterboxed) input at 1/4 resolution.
    in_w = round(geometry.pad_x * 2 + geometry.image_width * geometry.scale_x)
    in_h = round(geometry.pad_y * 2 + geometry.image_height * geometry.scale_y)
    up = cv2.resize(proto_mask, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    full = geometry.map_to_image(up)
    x0, y0 = int(box.x0), int(box.y0)
    x1, y1 = max(x0 + 1, int(np.ceil(box.x1))), max(y0 + 1, int(np.ceil(box.y1)))
    crop = full[y0:y1, x0:x1] > 0.5
    area = float(crop.sum())
    if area >= 2:
        points = np.argwhere(crop)[:, ::-1].astype(np.float32)
        (_, _), (rw, rh), _ = cv2.minAreaRect(points)
        length, width = max(rw, rh) + 1.0, min(rw, rh) + 1.0
    else:
        length, width = max(box.width, box.height), min(box.width, box.height)
    return Defect(name, score, box, area, float(length), float(width), mask=crop)
