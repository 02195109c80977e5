"""`lineinspect retune`: thresholds from good parts at a target false-reject rate, written to the card only."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import MODEL_FILE, file_sha256, load_card
from lineinspect.offline.datasets import find_defects, find_good
from lineinspect.offline.evaluate import evaluate
from lineinspect.offline.retune import retune
from lineinspect.offline.thresholds import ThresholdError, level_for
from tests.helpers.graphs import brightness_anomaly, red_segmentation


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _good_plates(folder: Path, levels: list[int]) -> None:
    """Plain gray plates; the brightness model scores each level/255 (a lamp that drifts)."""
    for i, level in enumerate(levels):
        _write(folder / f"g{i:03d}.png", np.full((40, 56), level, np.uint8))


@pytest.fixture()
def bright_model(tmp_path: Path) -> Path:
    return brightness_anomaly(tmp_path / "models" / "bright")


def test_level_lets_through_exactly_the_allowed_number_of_good_scores() -> None:
    scores = np.arange(1.0, 201.0)  # 200 good parts
    level, k = level_for(scores, 0.01)
    assert k == 2
    assert (scores >= level).sum() == 2  # 200 and 199 rejected, 198 passes
    level, k = level_for(scores, 0.0)
    assert k == 0 and (scores >= level).sum() == 0 and 200.0 < level < 200.1


def test_retune_moves_an_anomaly_cards_threshold_above_the_good_parts_and_keeps_the_model(
    tmp_path: Path, bright_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Good parts of this plant are brighter than the card expects (threshold 0.5 = grey 128):
    # with the old card every one is rejected; after retune none are, and a brighter spot still is.
    levels = [150 + i for i in range(20)]
    _good_plates(tmp_path / "good", levels)
    sha_before = file_sha256(bright_model / MODEL_FILE)
    argv = ["retune", "--model", str(bright_model), "--good", str(tmp_path / "good"),
            "--target-false-reject", "0", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "threshold 0.5 -> " in printed and "0/20 good images reach the new threshold" in printed
    assert "can only show a false-reject rate of 0 or >= 5.00%" in printed
    card = load_card(bright_model)
    assert card.anomaly is not None
    assert 169 / 255 < card.anomaly.image_threshold < 170 / 255
    assert card.anomaly.pixel_threshold == pytest.approx(card.anomaly.image_threshold)
    assert card.anomaly.score_min == pytest.approx(np.median(levels) / 255, abs=1e-6)
    assert card.sha256 == sha_before == file_sha256(bright_model / MODEL_FILE)
    assert card.trained["retuned"]["images"] == 20  # type: ignore[index]

    spot = np.full((40, 56), 160, np.uint8)
    cv2.circle(spot, (28, 20), 5, 230, cv2.FILLED)
    _write(tmp_path / "defects" / "spot" / "s.png", spot)
    model = Model.load(bright_model, RuntimeOptions(intra_op_threads=1))  # loads: the sha256 still matches
    report = evaluate(model, find_good(tmp_path / "good") + find_defects(tmp_path / "defects")).report()
    assert report["confusion"] == {"true_reject": 1, "escape": 0, "false_reject": 0, "true_pass": 20}


def test_retune_allows_the_target_share_of_false_rejects(tmp_path: Path, bright_model: Path) -> None:
    _good_plates(tmp_path / "good", [100 + i for i in range(40)])
    model = Model.load(bright_model, RuntimeOptions(intra_op_threads=1))
    retuned = retune(model, tmp_path / "good", 0.05)
    assert retuned.allowed_false_rejects == 2
    assert retuned.false_rejects == 2  # the two brightest plates


def test_dry_run_leaves_the_card_as_it_was(
    tmp_path: Path, bright_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _good_plates(tmp_path / "good", [150 + i for i in range(12)])
    before = (bright_model / "model.yaml").read_text()
    argv = ["retune", "--model", str(bright_model), "--good", str(tmp_path / "good"), "--dry-run", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "dry run: the card was not changed" in printed.out
    assert (bright_model / "model.yaml").read_text() == before
    # 12 good plates cannot show the default 0.5 %: retune says so, as teach does.
    assert "note: the thresholds come from 12 good images, too few to show a 0.5 % false-reject rate" in printed.err


def test_retune_sets_every_defect_class_threshold_of_a_segmentation_card(tmp_path: Path) -> None:
    model_dir = red_segmentation(tmp_path / "models" / "red")
    for i in range(12):  # good parts carry a reddish mark the old threshold rejects: P(red) = (140 + i) / 255
        image = np.zeros((32, 32, 3), np.uint8)
        image[10:14, 10:14, 2] = 140 + i
        _write(tmp_path / "good" / f"g{i}.png", image)
    assert main(["retune", "--model", str(model_dir), "--good", str(tmp_path / "good"), "--target-false-reject",
                 "0", "--threads", "1"]) == 0  # fmt: skip
    card = load_card(model_dir)
    model = Model.load(model_dir, RuntimeOptions(intra_op_threads=1))
    report = evaluate(model, find_good(tmp_path / "good")).report()
    highest = max(r["score"] for r in report["rows"])
    assert 0.5 < highest < card.thresholds["red"] < highest + 0.01
    assert report["confusion"]["false_reject"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-false-reject", "0.7"], "--target-false-reject 0.7: give a rate from 0 up to (not) 0.5"),
        (["--good", "{tmp}/nowhere"], "nowhere: folder not found"),
        (["--good", "{tmp}/few"], "3 good images; a threshold needs at least 10"),
        (["--model", "{tmp}/no-model"], "neither a model folder nor"),
    ],
)
def test_retune_refusals_exit_2_and_say_what_to_change(
    tmp_path: Path, bright_model: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    _good_plates(tmp_path / "good", [100 + i for i in range(12)])
    _good_plates(tmp_path / "few", [100, 101, 102])
    given = {"--model": str(bright_model), "--good": str(tmp_path / "good")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value.format(tmp=tmp_path)
    argv = ["retune", "--threads", "1", *[x for pair in given.items() for x in pair]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lineinspect retune: ") and message in err


def test_level_for_refuses_a_rate_of_one_half_or_more() -> None:
    with pytest.raises(ThresholdError, match=r"0\.5"):
        level_for(np.arange(10.0), 0.5)
