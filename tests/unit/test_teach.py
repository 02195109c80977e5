"""`lineinspect teach`: a model from good images only that passes good parts and fails defective ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.cli import main
from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import MODEL_FILE, ModelCard, file_sha256, load_card
from lineinspect.core.recipe import ClassRule, Recipe
from lineinspect.core.result import Verdict
from lineinspect.offline.synthetic import write_sample_set
from lineinspect.teach.common import TeachOptions
from lineinspect.teach.good_folder import find_good_images
from lineinspect.teach.stats import teach_stats

# Half-size parts (320x240) keep the test quick; 8 px here is the demo recipe's 30 px at 640x480.
W, H = 320, 240
MIN_AREA_PX = 8


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard, Path]:
    """(model folder, its card, a held-out sample folder) — taught once for this module."""
    root = tmp_path_factory.mktemp("teach")
    write_sample_set(root / "train", good=30, defective=0, seed=11, width=W, height=H)
    write_sample_set(root / "held_out", good=6, defective=4, seed=12, width=W, height=H)
    options = TeachOptions(name="bracket", width=W, height=H, progress=False)
    card = teach_stats(find_good_images(root / "train" / "good", minimum=8), root / "model", options)
    return root / "model", card, root / "held_out"


def test_taught_model_loads_and_its_card_checks_out(taught: tuple[Path, ModelCard, Path]) -> None:
    model_dir, card, _ = taught
    model = Model.load(model_dir, RuntimeOptions(intra_op_threads=1))
    on_disk = load_card(model_dir)
    assert on_disk == card
    assert card.sha256 == file_sha256(model_dir / MODEL_FILE)
    assert card.adapter == "anomaly" and card.anomaly is not None
    assert card.anomaly.score_min < card.anomaly.image_threshold < card.anomaly.score_max
    assert card.anomaly.pixel_threshold > 0
    assert {"method", "date_utc", "images", "target_false_reject"} <= set(card.trained)
    assert card.trained["images"] == 30 and card.trained["pretrained_weights"] is None
    # The frame plausibility baseline is taught with the model, from every good image given.
    assert card.frame_baseline is not None and card.frame_baseline.images == 30
    assert card.frame_baseline.focus.low > 0 and card.frame_baseline.limits().min_focus is not None
    assert set(model.output_names) == {"anomaly_map", "pred_score"}
    # A filter bank: the station runs it without onnxruntime's NCHWc layout (test_model_runtime.py).
    assert card.runtime is not None and card.runtime.onnxruntime_nchwc is False and card.runtime.remote is None
    # Small enough to commit: statistics at half resolution in float16.
    assert (model_dir / MODEL_FILE).stat().st_size < 1_000_000


def test_taught_model_passes_good_parts_and_fails_defective_ones(taught: tuple[Path, ModelCard, Path]) -> None:
    model_dir, _, held_out = taught
    recipe = Recipe(id="bracket", model="bracket", classes={"*": ClassRule(min_area_px=MIN_AREA_PX)})
    inspector = single_model_inspector(model_dir, RuntimeOptions(intra_op_threads=1), recipe)
    verdicts = {}
    for label in ("good", "defective"):
        for path in sorted((held_out / label).glob("*.png")):
            result = inspector.inspect(Frame(read_image_file(str(path))))
            verdicts[path.name] = (label, result.verdict, result.reason)
    wrong = {name: v for name, v in verdicts.items() if (v[1] is Verdict.PASS) != (v[0] == "good")}
    assert not wrong, wrong


def test_taught_model_takes_grayscale_and_other_sizes(taught: tuple[Path, ModelCard, Path]) -> None:
    import cv2

    model_dir, _, held_out = taught
    model = Model.load(model_dir, RuntimeOptions(intra_op_threads=1))
    image = read_image_file(str(held_out / "defective" / "defective_000.png"))
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (400, 300))
    inference = model.infer(gray)
    assert inference.output.defect_map is not None and inference.output.defect_map.shape == (300, 400)


def test_teach_cli_writes_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=160, height=120)
    out = tmp_path / "models" / "tiny"
    argv = ["teach", "--method", "stats", "--good", str(tmp_path / "s" / "good"), "--out", str(out), "--size", "64x48"]
    assert main(argv) == 0
    assert load_card(out).name == "tiny"
    printed = capsys.readouterr()
    assert "model 'tiny' written" in printed.out
    # 8 images, 3 held back (the least teach keeps): far too few for the default 0.5 %, and teach says so.
    assert (
        "note: the thresholds come from 3 held-back good images (--holdout), too few to show a 0.5 % false-reject rate "
        "(that needs 200)" in printed.err
    )


def test_teach_says_nothing_of_the_target_when_the_held_back_images_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sample_set(tmp_path / "s", good=10, defective=0, seed=3, width=160, height=120)
    argv = ["teach", "--method", "stats", "--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m"),
            "--size", "64x48", "--holdout", "0.5", "--target-false-reject", "0.2"]  # fmt: skip
    assert main(argv) == 0
    assert "note:" not in capsys.readouterr().err


def _teach_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["teach", *args]) == 2
    return capsys.readouterr().err


def test_teach_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _teach_error(["--good", str(tmp_path / "nope"), "--out", str(tmp_path / "m")], capsys)
    assert "nope: folder not found" in err


def test_teach_refuses_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _teach_error(["--good", str(tmp_path), "--out", str(tmp_path / "m")], capsys)
    assert "the folder is empty" in err


def test_teach_refuses_a_folder_without_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("shift 2")
    (tmp_path / "parts.csv").write_text("a,b")
    err = _teach_error(["--good", str(tmp_path), "--out", str(tmp_path / "m")], capsys)
    assert "no image files among its 2 files" in err and "notes.txt" in err


def test_teach_refuses_too_few_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=3, defective=0, seed=3, width=160, height=120)
    err = _teach_error(["--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m")], capsys)
    assert "3 good image(s) found; teach needs at least 8" in err


def test_teach_lists_every_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=160, height=120)
    good = tmp_path / "s" / "good"
    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (good / "report.jpg").write_bytes(b"%PDF-1.4 not a photo")
    err = _teach_error(["--good", str(good), "--out", str(tmp_path / "m")], capsys)
    assert "2 of 10 image(s) cannot be read" in err
    assert "broken.png" in err and "report.jpg" in err and "PDF" in err
    assert not (tmp_path / "m").exists()


def test_teach_refuses_a_holdout_share_outside_0_to_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=160, height=120)
    err = _teach_error(
        ["--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m"), "--holdout", "1.5"], capsys
    )
    assert "--holdout 1.5: give a fraction between 0 and 1" in err
