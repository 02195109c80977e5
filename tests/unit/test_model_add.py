"""`lineinspect model add`: each kind of export added with one command, loaded and run; bad input told plainly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lineinspect.cli import main
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe
from lineinspect.core.result import Verdict
from lineinspect.errors import ModelError
from tests.helpers.exports import (
    anomalib_export,
    export_file,
    lineinspect_teach_export,
    ultralytics_classify,
    ultralytics_detect,
    ultralytics_metadata,
    ultralytics_obb,
    ultralytics_pose,
    ultralytics_segment,
)
from tests.helpers.graphs import constant_output_graph, save_model

OPTIONS = RuntimeOptions(intra_op_threads=1)


@pytest.fixture
def station(tmp_path: Path) -> Path:
    """A station folder with models/ and one grey sample part in sample_images/good/."""
    (tmp_path / "models").mkdir()
    (tmp_path / "sample_images" / "good").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "sample_images" / "good" / "part.png"), np.full((64, 64, 3), 128, np.uint8))
    return tmp_path


def add(capsys: pytest.CaptureFixture[str], station: Path, *argv: str) -> tuple[int, str, str]:
    status = main(["model", "add", *argv, "--models-dir", str(station / "models")])
    out, err = capsys.readouterr()
    return status, out, err


def card_of(station: Path, name: str) -> dict:
    return yaml.safe_load((station / "models" / name / "model.yaml").read_text())


# ---------------------------------------------------------------- each export, one command


EXPORTS: list[tuple[str, Callable[[Path], Path], str, dict, str]] = [
    # (kind, writer, what it is taken for, card fields, what the sample run prints)
    (
        "detect",
        ultralytics_detect,
        "Ultralytics detect export (task detect, 2 classes, imgsz 64x64)",
        {"adapter": "yolo", "labels": ["scratch", "dent"], "resize": "letterbox", "name_in": "images"},
        "fail (image score 0.90): 1 defect: dent",
    ),
    (
        "segment",
        ultralytics_segment,
        "Ultralytics segment export",
        {"adapter": "yolo", "labels": ["scratch", "dent"], "resize": "letterbox", "name_in": "images"},
        "fail (image score 0.95): 1 defect: scratch",
    ),
    (
        "obb",
        ultralytics_obb,
        "Ultralytics obb export",
        {"adapter": "yolo", "labels": ["scratch", "dent"], "resize": "letterbox", "name_in": "images"},
        "fail (image score 0.80): 1 defect: dent 20 px",
    ),
    (
        "pose",
        ultralytics_pose,
        "Ultralytics pose export (task pose, 1 classes",
        {"adapter": "yolo", "labels": ["burr"], "resize": "letterbox", "name_in": "images"},
        "fail (image score 0.70): 1 defect: burr",
    ),
    (
        "classify",
        ultralytics_classify,
        "Ultralytics classify export (task classify, 3 classes, imgsz 32x32)",
        {
            "adapter": "classification",
            "labels": ["good", "scratch", "dent"],
            "resize": "stretch",
            "name_in": "images",
            "background_class": "good",
        },
        "fail (image score 0.90): 1 defect: scratch",
    ),
    (
        "padim",
        lambda p: anomalib_export(p, "Padim"),
        "anomalib Padim export (outputs pred_score, pred_label, anomaly_map, pred_mask)",
        {"adapter": "anomaly", "labels": [], "resize": "stretch", "name_in": "input"},
        "fail (image score 0.90): 1 defect: anomaly",
    ),
    (
        "patchcore",
        lambda p: anomalib_export(p, "Patchcore"),
        "anomalib Patchcore export",
        {"adapter": "anomaly", "labels": [], "resize": "stretch", "name_in": "input"},
        "fail (image score 0.90): 1 defect: anomaly",
    ),
]


@pytest.mark.parametrize(("kind", "write", "taken_for", "fields", "sample"), EXPORTS, ids=[e[0] for e in EXPORTS])
def test_export_is_added_with_one_command_and_runs_when_it_is_a_known_kind(
    station: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    write: Callable[[Path], Path],
    taken_for: str,
    fields: dict,
    sample: str,
) -> None:
    onnx_file = write(tmp_path / "export" / f"{kind}.onnx")
    status, out, err = add(capsys, station, str(onnx_file), "--name", kind)
    assert status == 0, err
    assert taken_for in out
    assert sample in out, out
    card = card_of(station, kind)
    assert card["adapter"] == fields["adapter"]
    assert card["labels"] == fields["labels"]
    assert card["input"]["resize"] == fields["resize"] and card["input"]["name"] == fields["name_in"]
    assert card["input"]["color"] == "RGB" and card["input"]["scale"] == pytest.approx(1 / 255)
    assert card.get("background_class") == fields.get("background_class")
    # What was written loads through the station's own loader (sha256 checked) and sees the same part.
    model = Model.load(station / "models" / kind, OPTIONS)
    assert (station / "models" / kind / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert model.infer(np.full((64, 64, 3), 128, np.uint8)).output.defects


def test_yolo_detect_card_proposes_ultralytics_confidence_and_its_image_size(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = add(capsys, station, str(ultralytics_detect(tmp_path / "d.onnx")), "--name", "d")
    assert status == 0
    card = card_of(station, "d")
    assert card["thresholds"] == {"*": 0.25}
    assert (card["input"]["width"], card["input"]["height"], card["input"]["pad_value"]) == (64, 64, 114)
    assert "letterbox (keep aspect, grey 114 padding)" in out


def test_obb_defect_box_is_the_upright_box_around_the_rotated_one(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(capsys, station, str(ultralytics_obb(tmp_path / "o.onnx")), "--name", "o")[0] == 0
    box = Model.load(station / "models" / "o", OPTIONS).infer(np.zeros((64, 64, 3), np.uint8)).output.defects[0].box
    assert (box.width, box.height) == pytest.approx((4, 20), abs=0.5)


def test_dry_run_prints_the_card_and_writes_nothing(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = add(capsys, station, str(ultralytics_detect(tmp_path / "d.onnx")), "--name", "d", "--dry-run")
    assert status == 0
    assert "adapter: yolo" in out and "dry run: nothing written" in out
    assert "1 defect: dent" in out
    assert list((station / "models").iterdir()) == []


def test_sample_image_given_with_image_is_the_one_run(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "mine.png"
    cv2.imwrite(str(image), np.full((48, 80), 90, np.uint8))
    status, out, _ = add(
        capsys, station, str(ultralytics_detect(tmp_path / "d.onnx")), "--name", "d", "--image", str(image)
    )
    assert status == 0 and f"sample {image}: fail" in out


# ---------------------------------------------------------------- what the file cannot say


def test_anomalib_export_with_dynamic_size_asks_for_size_then_takes_it(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = anomalib_export(tmp_path / "a.onnx", dynamic=True)
    status, _, err = add(capsys, station, str(onnx_file), "--name", "a")
    assert status == 2
    assert "has no fixed height and width; give --size WIDTHxHEIGHT" in err
    assert not (station / "models" / "a").exists()
    status, _, err = add(capsys, station, str(onnx_file), "--name", "a", "--size", "32x32")
    assert status == 0, err
    assert (card_of(station, "a")["input"]["width"], card_of(station, "a")["input"]["height"]) == (32, 32)


def test_classifier_without_a_good_class_is_refused_naming_the_flags(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = ultralytics_classify(tmp_path / "c.onnx", names={0: "bracket_a", 1: "bracket_b", 2: "crack"})
    status, _, err = add(capsys, station, str(onnx_file), "--name", "c")
    assert status == 2
    assert "no class of ['bracket_a', 'bracket_b', 'crack'] means a good part" in err
    assert "--good-class" in err and "--defect-classes" in err


def test_classifier_with_defect_classes_passes_a_part_whose_top_class_is_no_defect_and_says_which(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = ultralytics_classify(
        tmp_path / "c.onnx", names={0: "bracket_a", 1: "bracket_b", 2: "crack"}, probs=[0.15, 0.8, 0.05]
    )
    status, out, err = add(capsys, station, str(onnx_file), "--name", "c", "--defect-classes", "crack")
    assert status == 0, err
    assert card_of(station, "c")["defect_classes"] == ["crack"]
    assert "pass (image score 0.05): no defect found; top class 'bracket_b' (0.80) is not a defect class" in out


def test_lineinspect_teach_model_takes_its_thresholds_from_the_card_beside_it(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = lineinspect_teach_export(tmp_path / "taught" / "model.onnx")
    status, _, err = add(capsys, station, str(onnx_file), "--name", "t")
    assert status == 2
    assert "give --image-threshold and --score-max" in err
    status, out, err = add(
        capsys, station, str(onnx_file), "--name", "t", "--image-threshold", "6", "--score-max", "10"
    )
    assert status == 0, err
    assert "lineinspect teach model" in out
    assert card_of(station, "t")["anomaly"] == {
        "image_threshold": 6.0,
        "pixel_threshold": 6.0,
        "score_min": 0.0,
        "score_max": 10.0,
    }
    # Re-adding from the teach folder itself (model.onnx + model.yaml) keeps the taught card.
    status, out, err = add(capsys, station, str(station / "models" / "t" / "model.onnx"), "--name", "t2")
    assert status == 0, err
    assert "from the card teach wrote beside it" in out
    assert card_of(station, "t2")["anomaly"] == card_of(station, "t")["anomaly"]


# ---------------------------------------------------------------- bad input


def test_a_file_that_is_not_onnx_is_refused_naming_it(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a model\n")
    status, _, err = add(capsys, station, str(text), "--name", "n")
    assert status == 2
    assert f"{text}: not an ONNX model" in err
    assert not (station / "models" / "n").exists()


def test_an_unknown_layout_is_refused_listing_what_the_file_has_and_the_flag(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = export_file(
        tmp_path / "odd.onnx", input_name="x", input_shape=[1, 3, 16, 16], outputs={"logits": np.zeros((1, 4))}
    )
    status, _, err = add(capsys, station, str(onnx_file), "--name", "odd")
    assert status == 2
    assert "cannot tell what kind of model this is (inputs x [1, 3, 16, 16]; outputs logits [1, 4]" in err
    assert "give --adapter (anomaly, segmentation, yolo, classification)" in err


def test_an_unknown_layout_is_added_when_adapter_and_labels_are_given(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = export_file(
        tmp_path / "odd.onnx",
        input_name="x",
        input_shape=[1, 3, 16, 16],
        outputs={"logits": np.array([[0.7, 0.1, 0.1, 0.1]])},
    )
    argv = [str(onnx_file), "--name", "odd", "--adapter", "classification", "--labels", "ok,crack,stain,burr"]
    status, out, err = add(capsys, station, *argv)
    assert status == 0, err
    assert card_of(station, "odd")["background_class"] == "ok"
    assert "pass" in out


def test_labels_that_disagree_with_the_exports_names_are_refused_showing_both(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = ultralytics_detect(tmp_path / "d.onnx")
    status, _, err = add(capsys, station, str(onnx_file), "--name", "d", "--labels", "dent,scratch")
    assert status == 2
    assert "--labels: yolo adapter: the card's labels ['dent', 'scratch'] differ from" in err
    assert "metadata ['scratch', 'dent']" in err


def test_a_name_already_taken_is_refused_and_the_folder_kept(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = ultralytics_detect(tmp_path / "d.onnx")
    assert add(capsys, station, str(onnx_file), "--name", "d")[0] == 0
    before = (station / "models" / "d" / "model.yaml").read_text()
    status, _, err = add(capsys, station, str(onnx_file), "--name", "d")
    assert status == 2
    assert f"--name d: {station / 'models' / 'd'} already exists; choose another --name" in err
    assert (station / "models" / "d" / "model.yaml").read_text() == before


def test_a_name_that_is_no_folder_name_is_refused(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = add(capsys, station, str(ultralytics_detect(tmp_path / "d.onnx")), "--name", "../elsewhere")
    assert status == 2 and "a model name is a folder name" in err


def test_a_missing_file_is_refused_naming_it(station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = add(capsys, station, str(tmp_path / "nowhere.onnx"), "--name", "n")
    assert status == 2 and "nowhere.onnx: no such file" in err


# ---------------------------------------------------------------- labels at load, from the card and the metadata


YOLO_META = ultralytics_metadata("detect", {0: "scratch", 1: "dent"}, 64)


def test_yolo_card_whose_labels_disagree_with_the_metadata_is_refused_at_load_showing_both(tmp_path: Path) -> None:
    graph = constant_output_graph("y", [1, 3, 64, 64], {"output0": np.zeros((1, 6, 4), np.float32)})
    card = {
        "name": "y",
        "adapter": "yolo",
        "input": {"width": 64, "height": 64, "resize": "letterbox"},
        "labels": ["scratch", "crack"],
    }
    with pytest.raises(ModelError, match=r"labels \['scratch', 'crack'\] differ .* metadata \['scratch', 'dent'\]"):
        Model.load(save_model(graph, tmp_path / "y", card, YOLO_META), OPTIONS)


def test_classifier_card_without_labels_takes_the_names_from_the_metadata(tmp_path: Path) -> None:
    graph = constant_output_graph("c", [1, 3, 32, 32], {"output0": np.array([[0.1, 0.2, 0.7]], np.float32)})
    meta = ultralytics_metadata("classify", {0: "good", 1: "scratch", 2: "dent"}, 32)
    card = {"name": "c", "adapter": "classification", "input": {"width": 32, "height": 32}}
    model = Model.load(save_model(graph, tmp_path / "c", card, meta), OPTIONS)
    assert model.labels == ["good", "scratch", "dent"]
    assert [d.class_name for d in model.infer(np.zeros((32, 32, 3), np.uint8)).output.defects] == ["dent"]


def test_classifier_card_whose_labels_disagree_with_the_metadata_is_refused_showing_both(tmp_path: Path) -> None:
    graph = constant_output_graph("c", [1, 3, 32, 32], {"output0": np.array([[0.1, 0.2, 0.7]], np.float32)})
    meta = ultralytics_metadata("classify", {0: "good", 1: "scratch", 2: "dent"}, 32)
    card = {
        "name": "c",
        "adapter": "classification",
        "input": {"width": 32, "height": 32},
        "labels": ["good", "x", "y"],
    }
    with pytest.raises(ModelError, match=r"\['good', 'x', 'y'\] differ .* metadata \['good', 'scratch', 'dent'\]"):
        Model.load(save_model(graph, tmp_path / "c", card, meta), OPTIONS)


def test_classifier_card_with_no_good_class_is_refused_naming_its_classes(tmp_path: Path) -> None:
    graph = constant_output_graph("c", [1, 3, 16, 16], {"output0": np.zeros((1, 2), np.float32)})
    card = {"name": "c", "adapter": "classification", "input": {"width": 16, "height": 16}, "labels": ["cat", "dog"]}
    with pytest.raises(ModelError, match=r"no class of \['cat', 'dog'\] means a good part.*background_class"):
        Model.load(save_model(graph, tmp_path / "c", card), OPTIONS)


# ---------------------------------------------------------------- anomaly reasons


def _anomaly(tmp_path: Path, score: float, peak: float) -> Inspector:
    amap = np.zeros((1, 1, 32, 32), np.float32)
    amap[0, 0, 10:14, 10:14] = peak
    graph = constant_output_graph(
        "a", [1, 3, 32, 32], {"pred_score": np.array([score], np.float32), "anomaly_map": amap}
    )
    card = {
        "name": "a",
        "adapter": "anomaly",
        "input": {"width": 32, "height": 32},
        "anomaly": {"image_threshold": 0.5, "pixel_threshold": 0.5, "score_min": 0.0, "score_max": 1.0},
    }
    model = Model.load(save_model(graph, tmp_path / "a", card), OPTIONS)
    recipe = Recipe(id="r", model="a")
    return Inspector({"a": model}, {"r": recipe}, "r")


def test_anomaly_reason_says_the_map_decides_when_the_image_score_is_under_its_threshold(tmp_path: Path) -> None:
    result = _anomaly(tmp_path, score=0.44, peak=0.62).inspect(Frame(np.full((64, 64, 3), 128, np.uint8)))
    assert result.verdict is Verdict.FAIL and result.score == pytest.approx(0.44)
    assert result.reason.startswith("1 defect: anomaly")
    assert (
        "image score 0.44 < 0.5, but the anomaly map reaches 0.62 ≥ 0.5 in 1 region: the map decides" in result.reason
    )


def test_anomaly_reason_says_the_image_score_decides_when_no_map_pixel_reaches(tmp_path: Path) -> None:
    result = _anomaly(tmp_path, score=0.8, peak=0.3).inspect(Frame(np.full((64, 64, 3), 128, np.uint8)))
    assert result.verdict is Verdict.FAIL
    assert "image score 0.80 ≥ 0.5 though no anomaly-map pixel reaches 0.5 (map peak 0.30)" in result.reason


def test_anomaly_reason_adds_nothing_when_score_and_map_agree(tmp_path: Path) -> None:
    result = _anomaly(tmp_path, score=0.2, peak=0.3).inspect(Frame(np.full((64, 64, 3), 128, np.uint8)))
    assert result.verdict is Verdict.PASS and result.reason == "no defect found"


# ---------------------------------------------------------------- the card's schema


def test_schema_model_prints_the_cards_schema_with_every_field_described(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "model"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "lineinspect model card"
    assert {"adapter", "input", "labels", "anomaly", "defect_classes", "sha256", "schema"} <= set(schema["properties"])
    undescribed = [
        f"{where}.{name}"
        for where, part in [("card", schema), *schema["$defs"].items()]
        for name, prop in part.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []
