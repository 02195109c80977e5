"""Each adapter against a real ONNX graph run by onnxruntime (no mocked sessions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.frame import Frame
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.result import Verdict
from lineinspect.errors import ModelError
from tests.helpers.graphs import brightness_anomaly, constant_output_graph, red_segmentation, save_model

OPTIONS = RuntimeOptions(intra_op_threads=1)


def _infer(model_dir: Path, image: np.ndarray):
    return Model.load(model_dir, OPTIONS).infer(image).output


# ---------------------------------------------------------------- anomaly


def test_anomaly_defect_lands_on_the_bright_patch_when_image_is_not_square(tmp_path: Path) -> None:
    image = np.full((120, 240, 3), 30, np.uint8)
    image[40:60, 150:200] = 250
    out = _infer(brightness_anomaly(tmp_path / "m"), image)
    assert out.score == pytest.approx(250 / 255, abs=1e-3)
    assert len(out.defects) == 1
    box = out.defects[0].box
    assert box.x0 == pytest.approx(150, abs=3) and box.x1 == pytest.approx(200, abs=3)
    assert box.y0 == pytest.approx(40, abs=3) and box.y1 == pytest.approx(60, abs=3)
    assert out.defect_map is not None and out.defect_map.shape == (120, 240)


def test_anomaly_score_comes_from_map_when_model_has_no_score_output(tmp_path: Path) -> None:
    image = np.full((64, 64, 3), 60, np.uint8)
    out = _infer(brightness_anomaly(tmp_path / "m", with_score=False), image)
    # raw max 60/255 = 0.235, threshold 0.5, range 1 → 0.235 - 0.5 + 0.5
    assert out.score == pytest.approx(60 / 255, abs=0.01)
    assert out.defects == []


def test_anomaly_runs_anomalib_v2_export_layout_when_outputs_are_named_as_anomalib(tmp_path: Path) -> None:
    # anomalib v2 exports: input `input` [B,3,H,W] RGB 0-1; outputs pred_score, pred_label, anomaly_map, pred_mask.
    amap = np.zeros((1, 1, 32, 32), np.float32)
    amap[0, 0, 4:8, 10:20] = 0.9
    graph = constant_output_graph(
        "anomalib",
        [1, 3, 32, 32],
        {
            "pred_score": np.array([0.9], np.float32),
            "pred_label": np.array([1.0], np.float32),
            "anomaly_map": amap,
            "pred_mask": (amap > 0.5).astype(np.float32),
        },
    )
    card = {
        "name": "anomalib",
        "adapter": "anomaly",
        "input": {"width": 32, "height": 32, "color": "RGB"},
        "anomaly": {"image_threshold": 0.5, "pixel_threshold": 0.5, "score_min": 0.0, "score_max": 1.0},
    }
    out = _infer(save_model(graph, tmp_path / "anomalib", card), np.zeros((64, 64, 3), np.uint8))
    assert out.score == pytest.approx(0.9)
    assert len(out.defects) == 1
    assert out.defects[0].box.x0 == pytest.approx(20, abs=2) and out.defects[0].box.x1 == pytest.approx(40, abs=2)


def _score_without_map_pixels(tmp_path: Path, amap: np.ndarray, score: float) -> Path:
    graph = constant_output_graph(
        "head", [1, 1, 32, 32], {"pred_score": np.array([score], np.float32), "anomaly_map": amap}
    )
    card = {
        "name": "head",
        "adapter": "anomaly",
        "input": {"width": 32, "height": 32, "color": "GRAY"},
        "anomaly": {"image_threshold": 2.0, "pixel_threshold": 3.0, "score_min": 0.0, "score_max": 4.0},
    }
    return save_model(graph, tmp_path / "head", card)


def test_anomaly_image_score_over_threshold_fails_the_part_at_the_maps_peak_when_no_pixel_reaches(
    tmp_path: Path,
) -> None:
    # A model with an image head: the image score (2.8) reaches its threshold (2.0), the map
    # (peak 2.6) stays under the pixel threshold (3.0). The part must not pass for want of pixels.
    amap = np.full((1, 1, 32, 32), 0.5, np.float32)
    amap[0, 0, 8:12, 20:24] = 2.6
    model_dir = _score_without_map_pixels(tmp_path, amap, 2.8)
    out = _infer(model_dir, np.zeros((64, 64, 3), np.uint8))
    assert out.score == pytest.approx(0.7)
    assert len(out.defects) == 1 and out.defects[0].score == pytest.approx(0.7)
    box = out.defects[0].box
    assert box.x0 == pytest.approx(40, abs=3) and box.x1 == pytest.approx(48, abs=3)
    assert box.y0 == pytest.approx(16, abs=3) and box.y1 == pytest.approx(24, abs=3)
    result = single_model_inspector(model_dir, OPTIONS).inspect(Frame(np.full((64, 64, 3), 128, np.uint8)))
    assert result.verdict is Verdict.FAIL


def test_anomaly_image_score_under_threshold_and_quiet_map_pass(tmp_path: Path) -> None:
    amap = np.full((1, 1, 32, 32), 0.5, np.float32)
    out = _infer(_score_without_map_pixels(tmp_path, amap, 1.5), np.zeros((64, 64, 3), np.uint8))
    assert out.score == pytest.approx(0.375)
    assert out.defects == []


def test_anomaly_model_is_refused_when_it_has_no_known_output(tmp_path: Path) -> None:
    graph = constant_output_graph("odd", [1, 3, 8, 8], {"logits": np.zeros((1, 2), np.float32)})
    card = {
        "name": "odd",
        "adapter": "anomaly",
        "input": {"width": 8, "height": 8},
        "anomaly": {"image_threshold": 0.5, "pixel_threshold": 0.5, "score_max": 1.0},
    }
    with pytest.raises(ModelError, match=r"outputs \['logits'\]; expected 'anomaly_map'"):
        Model.load(save_model(graph, tmp_path / "odd", card), OPTIONS)


# ---------------------------------------------------------------- segmentation


def test_segmentation_finds_each_red_region_as_a_component(tmp_path: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[5:15, 5:20] = (0, 0, 255)
    image[40:60, 40:44] = (0, 0, 255)
    out = _infer(red_segmentation(tmp_path / "seg"), image)
    assert sorted(d.area_px for d in out.defects) == [80, 150]
    assert {d.class_name for d in out.defects} == {"red"}


@pytest.mark.parametrize("activation", ["softmax", "none"])
def test_segmentation_applies_card_activation_when_outputs_are_logits(tmp_path: Path, activation: str) -> None:
    logits = np.zeros((1, 3, 16, 16), np.float32)
    logits[0, 0] = 5.0  # background everywhere
    logits[0, 2, 2:6, 2:6] = 9.0  # class "dent" in a square
    graph = constant_output_graph("seg", [1, 3, 16, 16], {"logits": logits})
    card = {
        "name": "seg",
        "adapter": "segmentation",
        "input": {"width": 16, "height": 16},
        "labels": ["ok", "scratch", "dent"],
        "background_class": "ok",
        "activation": activation,
        "thresholds": {"*": 0.5},
    }
    out = _infer(save_model(graph, tmp_path / "seg", card), np.zeros((16, 16, 3), np.uint8))
    if activation == "softmax":
        assert [d.class_name for d in out.defects] == ["dent"]
        assert out.defects[0].score == pytest.approx(np.exp(9) / (np.exp(9) + np.exp(5) + 1), abs=1e-3)
    else:  # raw logits are >= 0.5 already: still one dent component, score is the raw value
        assert [d.class_name for d in out.defects] == ["dent"]


def test_segmentation_accepts_class_id_maps_when_argmax_is_in_the_graph(tmp_path: Path) -> None:
    ids = np.zeros((1, 16, 16), np.int64)
    ids[0, 8:10, 8:12] = 1
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["input"], ["shape"]),
            helper.make_node("Identity", ["ids_value"], ["ids"]),
        ],
        "ids",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16, 16])],
        initializer=[numpy_helper.from_array(ids, "ids_value")],
    )
    card = {"name": "ids", "adapter": "segmentation", "input": {"width": 16, "height": 16}, "labels": ["bg", "pit"]}
    out = _infer(save_model(graph, tmp_path / "ids", card), np.zeros((32, 32, 3), np.uint8))
    assert len(out.defects) == 1 and out.defects[0].area_px == pytest.approx(32, abs=4)


# ---------------------------------------------------------------- yolo

YOLO_META = {"names": "{0: 'scratch', 1: 'dent'}", "imgsz": "[64, 64]", "task": "detect", "stride": "32"}


def _yolo_card(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "adapter": "yolo",
        "input": {"width": 64, "height": 64, "resize": "letterbox"},
        "thresholds": {"*": 0.25},
        **extra,
    }


def _v8_rows(anchors: int, nc: int, dets: list[tuple[float, float, float, float, int, float]], extra: int = 0):
    pred = np.zeros((1, 4 + nc + extra, anchors), np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(dets):
        pred[0, :4, a] = (cx, cy, w, h)
        pred[0, 4 + cls, a] = score
    return pred


def test_yolo_detect_undoes_letterbox_when_image_is_wide(tmp_path: Path) -> None:
    # 128x64 image → scale 0.5, 64x32 content, 16 px padding top and bottom.
    pred = _v8_rows(8, 2, [(32, 32, 16, 8, 1, 0.9), (32.5, 32, 16, 8, 1, 0.8), (10, 20, 4, 4, 0, 0.1)])
    graph = constant_output_graph("y", [1, 3, 64, 64], {"output0": pred})
    model = save_model(graph, tmp_path / "y", _yolo_card("y"), YOLO_META)
    out = _infer(model, np.zeros((64, 128, 3), np.uint8))
    assert len(out.defects) == 1, "NMS keeps one of two overlapping boxes; the 0.1 score is below threshold"
    d = out.defects[0]
    assert d.class_name == "dent" and d.score == pytest.approx(0.9)
    assert (d.box.x0, d.box.y0, d.box.x1, d.box.y1) == pytest.approx((48, 24, 80, 40), abs=0.5)


def test_yolo_segment_gives_mask_area_when_prototypes_are_present(tmp_path: Path) -> None:
    pred = _v8_rows(4, 2, [(32, 32, 32, 32, 0, 0.95)], extra=32)
    pred[0, 4 + 2 + 0, 0] = 1.0  # coefficient 0 → prototype 0
    protos = np.full((1, 32, 16, 16), -10.0, np.float32)
    protos[0, 0, 6:10, 6:10] = 10.0  # a 4x4 cell at 1/4 scale = 16x16 input px
    graph = constant_output_graph("s", [1, 3, 64, 64], {"output0": pred, "output1": protos})
    meta = {**YOLO_META, "task": "segment"}
    out = _infer(save_model(graph, tmp_path / "s", _yolo_card("s"), meta), np.zeros((64, 64, 3), np.uint8))
    assert len(out.defects) == 1
    assert out.defects[0].mask is not None
    assert out.defects[0].area_px == pytest.approx(256, rel=0.25)


def test_yolo_reads_v5_layout_with_objectness(tmp_path: Path) -> None:
    pred = np.zeros((1, 3, 5 + 2), np.float32)
    pred[0, 0] = (20, 20, 10, 10, 0.9, 0.1, 0.8)  # dent: 0.9*0.8
    pred[0, 1] = (40, 40, 10, 10, 0.1, 0.9, 0.1)  # scratch: 0.09 < 0.25
    graph = constant_output_graph("v5", [1, 3, 64, 64], {"output0": pred})
    out = _infer(save_model(graph, tmp_path / "v5", _yolo_card("v5"), YOLO_META), np.zeros((64, 64, 3), np.uint8))
    assert [(d.class_name, round(d.score, 2)) for d in out.defects] == [("dent", 0.72)]


def test_yolo_model_is_refused_when_card_size_differs_from_export(tmp_path: Path) -> None:
    graph = constant_output_graph("y", [1, 3, 64, 64], {"output0": _v8_rows(4, 2, [])})
    meta = {**YOLO_META, "imgsz": "[640, 640]"}
    with pytest.raises(ModelError, match=r"exported at imgsz \[640, 640\]"):
        Model.load(save_model(graph, tmp_path / "y", _yolo_card("y"), meta), OPTIONS)


def test_yolo_model_is_refused_when_it_has_no_class_names(tmp_path: Path) -> None:
    graph = constant_output_graph("y", [1, 3, 64, 64], {"output0": _v8_rows(4, 2, [])})
    with pytest.raises(ModelError, match="no class names"):
        Model.load(save_model(graph, tmp_path / "y", _yolo_card("y")), OPTIONS)


def test_yolo_result_is_undecided_when_output_shape_fits_no_layout(tmp_path: Path) -> None:
    graph = constant_output_graph("y", [1, 3, 64, 64], {"output0": np.zeros((1, 9, 9), np.float32)})
    # The warm-up inference fails and says why.
    with pytest.raises(ModelError, match="fits neither"):
        Model.load(save_model(graph, tmp_path / "y", _yolo_card("y"), YOLO_META), OPTIONS)


# ---------------------------------------------------------------- classification


def _classifier(tmp_path: Path, logits: list[float], **card_extra: object) -> Path:
    graph = constant_output_graph("c", [1, 3, 16, 16], {"logits": np.array([logits], np.float32)})
    card = {
        "name": "c",
        "adapter": "classification",
        "input": {"width": 16, "height": 16},
        "labels": ["good", "crack", "stain"],
        "background_class": "good",
        "activation": "softmax",
        **card_extra,
    }
    return save_model(graph, tmp_path / "c", card)


def test_classification_reports_whole_image_defect_when_top_class_is_not_good(tmp_path: Path) -> None:
    inspector = single_model_inspector(_classifier(tmp_path, [0.0, 4.0, 0.0]), OPTIONS)
    result = inspector.inspect(Frame(np.full((30, 40), 128, np.uint8)))
    assert result.verdict is Verdict.FAIL
    assert [f.defect.class_name for f in result.findings] == ["crack"]
    assert result.findings[0].defect.box.x1 == 40 and result.findings[0].defect.box.y1 == 30


def test_classification_passes_when_top_class_is_good(tmp_path: Path) -> None:
    inspector = single_model_inspector(_classifier(tmp_path, [4.0, 0.0, 0.0]), OPTIONS)
    result = inspector.inspect(Frame(np.full((30, 40, 3), 128, np.uint8)))
    assert result.verdict is Verdict.PASS
    assert result.score == pytest.approx(1 - np.exp(4) / (np.exp(4) + 2), abs=1e-4)


def test_classification_model_is_refused_when_labels_do_not_match_outputs(tmp_path: Path) -> None:
    graph = constant_output_graph("c", [1, 3, 16, 16], {"logits": np.zeros((1, 5), np.float32)})
    card = {"name": "c", "adapter": "classification", "input": {"width": 16, "height": 16}, "labels": ["good", "b"]}
    with pytest.raises(ModelError, match="has 5 scores; the card lists 2 labels"):
        Model.load(save_model(graph, tmp_path / "c", card), OPTIONS)
