"""`lineinspect evaluate`: the metrics, the folder layouts it reads, and the command end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import load_card, write_card
from lineinspect.offline.datasets import DatasetError, LabelledImage, find_defects, find_good, read_labelled
from lineinspect.offline.evaluate import (
    Confusion,
    auroc,
    average_precision,
    evaluate,
    precision_recall_curve,
    roc_curve,
)
from lineinspect.offline.evaluate_plots import NEEDS_MATPLOTLIB, PLOT_DPI, ROC_SIZE_IN, SCORES_SIZE_IN
from lineinspect.offline.synthetic import write_sample_set
from tests.helpers.graphs import brightness_anomaly

# --- metrics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "defective", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfectly separated
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # perfectly inverted
        ([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1], 0.75),  # pairs (d>g): .4>.1, .9>.1, .9>.6 → 3 of 4
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied: every pair counts half
        ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),  # one tied pair: (1 + 0.5 + 1 + 1) / 4
    ],
)
def test_auroc_matches_pair_counting_by_hand(scores: list[float], defective: list[int], expected: float) -> None:
    assert auroc(scores, [bool(d) for d in defective]) == pytest.approx(expected)


def test_auroc_is_undefined_when_one_class_is_missing() -> None:
    assert auroc([0.1, 0.2], [False, False]) is None
    assert auroc([0.1, 0.2], [True, True]) is None


def test_auroc_agrees_with_brute_force_pair_counting_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 1)  # rounded: many ties
    defective = rng.random(60) < 0.4
    pos, neg = scores[defective], scores[~defective]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auroc(scores, defective) == pytest.approx(brute)


def test_roc_curve_runs_from_origin_to_corner_with_area_equal_to_auroc() -> None:
    scores = np.array([0.1, 0.6, 0.4, 0.9, 0.4])
    defective = np.array([False, False, True, True, False])
    fpr, tpr = roc_curve(scores, defective)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, defective))


def test_precision_recall_curve_and_average_precision_by_hand() -> None:
    # From the top: 0.9 defect, 0.6 good, 0.4 a defect and a good (tied), 0.1 good.
    scores = np.array([0.1, 0.6, 0.4, 0.9, 0.4])
    defective = np.array([False, False, True, True, False])
    recall, precision = precision_recall_curve(scores, defective)
    assert recall.tolist() == pytest.approx([0.0, 0.5, 0.5, 1.0, 1.0])
    assert precision.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.4])
    assert average_precision(scores, defective) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert average_precision([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == pytest.approx(1.0)
    assert average_precision([0.1, 0.2], [False, False]) is None


def test_confusion_precision_is_the_defective_share_of_rejects() -> None:
    assert Confusion(true_reject=3, escape=1, false_reject=1, true_pass=5).precision == pytest.approx(0.75)
    assert Confusion(true_reject=0, escape=2, false_reject=0, true_pass=5).precision is None


def test_confusion_counts_a_score_on_the_threshold_as_defective() -> None:
    scores = np.array([0.2, 0.5, 0.7, 0.49, 0.5])
    defective = np.array([False, False, False, True, True])
    c = Confusion.at(scores, defective, 0.5)
    assert (c.true_reject, c.escape, c.false_reject, c.true_pass) == (1, 1, 2, 1)
    assert c.false_reject_rate == pytest.approx(2 / 3)
    assert c.escape_rate == pytest.approx(1 / 2)


# --- a tiny labelled set: dark plates, defects are bright blobs -----------------


def _plate(width: int, height: int, colour: bool) -> np.ndarray:
    image = np.full((height, width), 40, np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if colour else image


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _blob_image(width: int, height: int, colour: bool, radius: int) -> tuple[np.ndarray, np.ndarray]:
    image = _plate(width, height, colour)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), radius, 255, cv2.FILLED)
    image[mask > 0] = 250
    return image, mask


@pytest.fixture()
def tiny_set(tmp_path: Path) -> Path:
    """good/ (mixed sizes, gray and colour), defects/spot/ with NAME_mask.png, defects/pit/ with masks/."""
    root = tmp_path / "set"
    for i, (w, h) in enumerate([(64, 64), (96, 48), (50, 80), (64, 64)]):
        _write(root / "good" / f"g{i}.png", _plate(w, h, colour=i % 2 == 0))
    for i, (w, h, r) in enumerate([(64, 64, 10), (120, 60, 3)]):
        image, mask = _blob_image(w, h, colour=i == 0, radius=r)
        _write(root / "defects" / "spot" / f"s{i}.png", image)
        _write(root / "defects" / "spot" / f"s{i}_mask.png", mask)
    image, mask = _blob_image(80, 80, colour=False, radius=20)
    _write(root / "defects" / "pit" / "p0.jpg", image)
    _write(root / "defects" / "pit" / "masks" / "p0.png", mask)
    return root


@pytest.fixture()
def bright_model(tmp_path: Path) -> Path:
    return brightness_anomaly(tmp_path / "models" / "bright")


# --- loaders ---------------------------------------------------------------------


def test_defect_folders_give_classes_and_masks_beside_or_in_masks_folder(tiny_set: Path) -> None:
    found = {item.path.name: item for item in find_defects(tiny_set / "defects")}
    assert sorted(found) == ["p0.jpg", "s0.png", "s1.png"]
    assert found["s0.png"].class_name == "spot"
    assert found["s0.png"].mask_path == tiny_set / "defects" / "spot" / "s0_mask.png"
    assert found["p0.jpg"].class_name == "pit"
    assert found["p0.jpg"].mask_path == tiny_set / "defects" / "pit" / "masks" / "p0.png"


def test_samples_layout_finds_masks_next_to_the_defective_folder(tmp_path: Path) -> None:
    write_sample_set(tmp_path / "s", good=1, defective=2, seed=1, width=128, height=96)
    found = find_defects(tmp_path / "s", exclude=tmp_path / "s" / "good")
    assert [(i.path.name, i.class_name, i.mask_path is not None) for i in found] == [
        ("defective_000.png", "defective", True),
        ("defective_001.png", "defective", True),
    ]


def test_magnetic_tile_layout_reads_png_beside_jpeg_as_its_mask(tmp_path: Path) -> None:
    root = tmp_path / "mt"
    image, mask = _blob_image(60, 90, colour=False, radius=5)
    _write(root / "MT_Crack" / "Imgs" / "exp1_num_1.jpg", image)
    _write(root / "MT_Crack" / "Imgs" / "exp1_num_1.png", mask)
    _write(root / "MT_Free" / "Imgs" / "exp1_num_2.jpg", _plate(60, 90, colour=False))
    _write(root / "MT_Free" / "Imgs" / "exp1_num_2.png", np.zeros((90, 60), np.uint8))
    good = find_good(root / "MT_Free")
    defects = find_defects(root, exclude=root / "MT_Free")
    assert [g.path.name for g in good] == ["exp1_num_2.jpg"]
    assert [(d.path.name, d.class_name, d.mask_path) for d in defects] == [
        ("exp1_num_1.jpg", "Crack", root / "MT_Crack" / "Imgs" / "exp1_num_1.png")
    ]
    _, truth = read_labelled(defects[0])
    assert truth is not None and truth.sum() == (mask > 127).sum()


def test_a_defective_image_without_mask_is_read_with_no_mask(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "scratch" / "x.png", _plate(32, 32, colour=True))
    (item,) = find_defects(tmp_path / "d")
    image, mask = read_labelled(item)
    assert item.mask_path is None and mask is None and image.shape == (32, 32, 3)


def test_a_mask_of_the_wrong_size_names_the_file_and_both_sizes(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "spot" / "a.png", _plate(64, 48, colour=False))
    _write(tmp_path / "d" / "spot" / "a_mask.png", np.zeros((40, 40), np.uint8))
    (item,) = find_defects(tmp_path / "d")
    with pytest.raises(DatasetError, match=r"a_mask\.png: the mask is 40x40 px but its image .*a\.png is 64x48 px"):
        read_labelled(item)


def test_an_unreadable_image_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "broken.png").write_bytes(b"not an image at all")
    (item,) = find_good(tmp_path / "good")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        read_labelled(item)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "folder not found"),
        (lambda p: p.write_text("x"), "not a folder"),
        (lambda p: p.mkdir(), "no images in it"),
    ],
)
def test_good_folder_problems_are_named(tmp_path: Path, make, message: str) -> None:
    folder = tmp_path / "good"
    make(folder)
    with pytest.raises(DatasetError, match=f"--good {folder}: {message}"):
        find_good(folder)


# --- evaluate through the production model ----------------------------------------


def test_evaluate_separates_bright_defects_and_measures_pixels(tiny_set: Path, bright_model: Path) -> None:
    model = Model.load(bright_model, RuntimeOptions(intra_op_threads=1))
    items = find_good(tiny_set / "good") + find_defects(tiny_set / "defects")
    result = evaluate(model, items)
    report = result.report()
    assert report["images"] == {"good": 4, "defective": 3, "defective_without_mask": 0}
    assert report["image_auroc"] == 1.0
    assert report["confusion"] == {"true_reject": 3, "escape": 0, "false_reject": 0, "true_pass": 4}
    assert report["false_reject_rate"] == 0.0 and report["escape_rate"] == 0.0
    assert report["pixel_auroc"] > 0.95
    assert 0.3 < report["pixel_iou"] <= 1.0
    assert set(report["classes"]) == {"spot", "pit"}
    assert report["classes"]["spot"]["recall"] == 1.0
    assert report["ms_per_image"]["median"] > 0
    # Every part called right: worst.png and the report show no escape and no false reject.
    assert result.worst_escapes() == [] and result.worst_false_rejects() == []
    assert report["worst_escapes"] == [] and report["worst_false_rejects"] == []


def test_defective_image_without_mask_counts_for_image_figures_only(tmp_path: Path, bright_model: Path) -> None:
    _write(tmp_path / "good" / "g.png", _plate(64, 64, colour=False))
    image, _ = _blob_image(64, 64, colour=False, radius=8)
    _write(tmp_path / "defects" / "spot" / "nomask.png", image)
    model = Model.load(bright_model, RuntimeOptions(intra_op_threads=1))
    report = evaluate(model, find_good(tmp_path / "good") + find_defects(tmp_path / "defects")).report()
    assert report["images"]["defective_without_mask"] == 1
    assert report["image_auroc"] == 1.0
    assert report["pixel_auroc"] is None  # only good pixels have truth: the area is undefined


def test_auroc_ranks_scores_the_anomaly_adapter_clips_to_zero(tmp_path: Path, bright_model: Path) -> None:
    # A card whose typical good score (score_min) lies above every image here: production scores
    # are all clipped to 0, yet the raw map still tells the dim blobs from the plain plates.
    card = load_card(bright_model)
    assert card.anomaly is not None
    card.anomaly = card.anomaly.model_copy(
        update={"image_threshold": 0.75, "pixel_threshold": 0.75, "score_min": 0.5, "score_max": 1.0}
    )
    write_card(card, bright_model)
    for i in range(3):
        _write(tmp_path / "good" / f"g{i}.png", _plate(64, 64, colour=False))
        image = _plate(64, 64, colour=False)
        mask = np.zeros((64, 64), np.uint8)
        cv2.circle(mask, (32, 32), 6 + 2 * i, 255, cv2.FILLED)
        image[mask > 0] = 100  # raw 0.39: under score_min, so 0 once clipped
        _write(tmp_path / "defects" / "dim" / f"d{i}.png", image)
        _write(tmp_path / "defects" / "dim" / f"d{i}_mask.png", mask)
    model = Model.load(bright_model, RuntimeOptions(intra_op_threads=1))
    result = evaluate(model, find_good(tmp_path / "good") + find_defects(tmp_path / "defects"))
    report = result.report()
    assert set(result.scores.tolist()) == {0.0}  # what the station sees: every part passes
    assert report["confusion"]["escape"] == 3
    assert {r.item.path.name for r in result.worst_escapes()} == {"d0.png", "d1.png", "d2.png"}
    assert report["image_auroc"] == 1.0  # ranked on the unclipped scores
    assert report["pixel_auroc"] > 0.95
    assert all(r["rank"] < 0.75 for r in report["rows"])  # raw scores, all under the raw threshold


# --- the command ---------------------------------------------------------------------

REPORT_KEYS = sorted(
    ["schema", "model", "images", "decision", "image_auroc", "pixel_auroc", "pixel_iou", "confusion",
     "false_reject_rate", "escape_rate", "classes", "ms_per_image", "worst_escapes", "worst_false_rejects", "rows"]
)  # fmt: skip


def test_evaluate_cli_writes_report_and_plots(
    tiny_set: Path, bright_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(bright_model), "--good", str(tiny_set / "good"),
            "--defects", str(tiny_set / "defects"), "--out", str(out), "--quiet", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "image AUROC 1.0000" in printed and "false rejects 0/4" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "lineinspect.evaluation/1"
    assert report["decision"]["image_threshold"] == 0.5
    assert sorted(report) == REPORT_KEYS
    assert "plots: roc.png, scores.png, worst.png" in printed
    for name, size_in in (("roc.png", ROC_SIZE_IN), ("scores.png", SCORES_SIZE_IN)):
        plot = cv2.imread(str(out / name))
        assert plot is not None, name
        assert plot.shape == (round(size_in[1] * PLOT_DPI), round(size_in[0] * PLOT_DPI), 3), name
    worst = cv2.imread(str(out / "worst.png"))
    assert worst is not None and worst.shape[0] > 100 and worst.shape[1] > 100


def test_evaluate_cli_without_matplotlib_writes_the_report_and_says_plots_need_the_train_extra(
    tiny_set: Path,
    bright_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import of matplotlib halted: as on the service install
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(bright_model), "--good", str(tiny_set / "good"),
            "--defects", str(tiny_set / "defects"), "--out", str(out), "--quiet", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert NEEDS_MATPLOTLIB in captured.err and "lineinspect[train]" in captured.err
    assert "plots: worst.png" in captured.out
    assert sorted(json.loads((out / "report.json").read_text())) == REPORT_KEYS
    assert (out / "worst.png").is_file()
    assert not (out / "roc.png").exists() and not (out / "scores.png").exists()


def test_evaluate_cli_finds_a_model_by_name_under_the_station(
    tiny_set: Path, bright_model: Path, tmp_path: Path
) -> None:
    argv = ["evaluate", "--model", "bright", "--station-dir", str(tmp_path), "--good", str(tiny_set / "good"),
            "--defects", str(tiny_set / "defects"), "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    assert main(argv) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "missing"}, "--model missing: neither a model folder nor"),
        ({"--good": "empty"}, "--good {root}/empty: no images in it"),
        ({"--defects": "nowhere"}, "--defects {root}/nowhere: folder not found"),
        ({"--defects": "good"}, "this is the --good folder"),
    ],
)
def test_evaluate_cli_usage_errors_exit_2_with_a_message(
    tiny_set: Path,
    bright_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    (tiny_set / "empty").mkdir()
    options = {"--model": str(bright_model), "--good": str(tiny_set / "good"), "--defects": str(tiny_set / "defects")}
    for key, value in change.items():
        options[key] = value if key == "--model" else str(tiny_set / value)
    argv = ["evaluate", "--station-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]
    for key, value in options.items():
        argv += [key, value]
    assert main(argv) == 2
    assert message.format(root=tiny_set) in capsys.readouterr().err


def test_evaluate_cli_names_the_mask_of_the_wrong_size(
    tiny_set: Path, bright_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tiny_set / "defects" / "spot" / "s0_mask.png", np.zeros((10, 10), np.uint8))
    argv = ["evaluate", "--model", str(bright_model), "--good", str(tiny_set / "good"),
            "--defects", str(tiny_set / "defects"), "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "s0_mask.png: the mask is 10x10 px" in capsys.readouterr().err


def test_labelled_image_is_defective_unless_good() -> None:
    assert LabelledImage(Path("a.png"), "good").defective is False
    assert LabelledImage(Path("a.png"), "crack").defective is True


def test_image_auroc_ranks_by_unclipped_score_when_normalised_scores_tie(tmp_path: Path) -> None:
    # A narrow score range clips every image below 0.45 raw to 0.0: the normalised scores all tie,
    # yet the raw scores separate good from defective perfectly. AUROC must see the raw ranking.
    import cv2
    import yaml

    from lineinspect.core.model import Model, RuntimeOptions
    from lineinspect.offline.datasets import LabelledImage
    from lineinspect.offline.evaluate import evaluate
    from tests.helpers.graphs import brightness_anomaly

    model_dir = brightness_anomaly(tmp_path / "narrow")
    card_path = model_dir / "model.yaml"
    card = yaml.safe_load(card_path.read_text())
    card["anomaly"].update(score_min=0.45, score_max=0.55)
    card_path.write_text(yaml.safe_dump(card))
    items = []
    for name, level, cls in [("g1", 25, "good"), ("g2", 50, "good"), ("d1", 75, "crack"), ("d2", 100, "crack")]:
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), np.full((32, 32, 3), level, np.uint8))
        items.append(LabelledImage(path, cls))
    result = evaluate(Model.load(model_dir, RuntimeOptions(intra_op_threads=1)), items)
    assert [r.score for r in result.rows] == [0.0, 0.0, 0.0, 0.0]
    assert result.report()["image_auroc"] == 1.0
