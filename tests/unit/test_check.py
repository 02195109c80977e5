"""check.py: which files are inspected, the rows and summary, the report formats, the exit status."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.inspector import Inspector, UnknownRecipe
from lineinspect.core.model import RuntimeOptions
from lineinspect.offline.check import CheckUsageError, check_images, check_report_path, collect_images, write_report
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.station_dir import bad_part, good_part


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    model = brightness_anomaly(tmp_path_factory.mktemp("models") / "bright")
    return single_model_inspector(model, RuntimeOptions(intra_op_threads=1))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "line2").mkdir(parents=True)
    cv2.imwrite(str(folder / "a_good.png"), good_part())
    cv2.imwrite(str(folder / "b_bad.jpg"), bad_part())
    cv2.imwrite(str(folder / "line2" / "c_good.bmp"), good_part())
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_collect_images_finds_images_recursively_in_folder_and_skips_other_files(images: Path) -> None:
    found = collect_images([str(images)])
    assert [p.relative_to(images).as_posix() for p in found] == ["a_good.png", "b_bad.jpg", "line2/c_good.bmp"]


def test_collect_images_expands_globs_and_drops_duplicates(images: Path) -> None:
    found = collect_images([str(images / "*.png"), str(images / "a_good.png"), str(images / "**" / "*.bmp")])
    assert [p.name for p in found] == ["a_good.png", "c_good.bmp"]


def test_collect_images_keeps_named_file_whatever_its_suffix(images: Path) -> None:
    assert collect_images([str(images / "notes.txt")]) == [images / "notes.txt"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("missing.png", "missing.png: no such file or folder"),
        ("*.gif", "*.gif: the pattern matches no files"),
        ("empty", "empty: the folder holds no images (.bmp, .jpeg, .jpg"),
    ],
)
def test_collect_images_refuses_argument_when_it_yields_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckUsageError) as raised:
        collect_images([argument])
    assert message in str(raised.value)


def test_check_images_gives_a_row_per_image_with_verdict_score_and_defects(inspector: Inspector, images: Path) -> None:
    report = check_images(inspector, collect_images([str(images)]))
    by_name = {Path(r.path).name: r for r in report.rows}
    assert {n: r.verdict.value for n, r in by_name.items()} == {
        "a_good.png": "pass",
        "b_bad.jpg": "fail",
        "c_good.bmp": "pass",
    }
    bad = by_name["b_bad.jpg"]
    assert bad.score == pytest.approx(1.0)
    [defect] = bad.defects
    assert defect["class"] == "anomaly" and defect["counts"] is True
    assert defect["box_px"] == pytest.approx([40, 20, 56, 36], abs=2)
    assert report.summary.by_verdict == {"pass": 2, "fail": 1, "undecided": 0}
    assert report.summary.images == 3 and report.summary.images_per_s > 0
    assert report.exit_status == 1


def test_check_images_exit_status_is_0_when_every_image_passes(inspector: Inspector, images: Path) -> None:
    report = check_images(inspector, [images / "a_good.png", images / "line2" / "c_good.bmp"])
    assert report.exit_status == 0
    assert report.summary.line().endswith("2 pass, 0 fail, 0 undecided")


def test_check_images_counts_undecodable_file_as_undecided_with_reason(inspector: Inspector, images: Path) -> None:
    truncated = images / "cut.jpg"
    truncated.write_bytes((images / "b_bad.jpg").read_bytes()[:-100])
    report = check_images(inspector, [images / "notes.txt", truncated, images / "gone.png", images / "a_good.png"])
    rows = report.rows
    assert [r.verdict.value for r in rows] == ["undecided", "undecided", "undecided", "pass"]
    assert rows[0].error is not None and "notes.txt: not an image" in rows[0].error
    assert rows[1].reason.endswith("cut.jpg: the JPEG data is truncated (no end-of-image marker)")
    assert "gone.png: cannot read: No such file or directory" in rows[2].reason
    assert report.exit_status == 1


def test_check_images_refuses_unknown_recipe_before_inspecting(inspector: Inspector, images: Path) -> None:
    with pytest.raises(UnknownRecipe, match="unknown recipe 'nope'; this station has \\['bright-default'\\]"):
        check_images(inspector, [images / "a_good.png"], recipe_id="nope")


def test_write_report_json_holds_rows_and_summary(inspector: Inspector, images: Path, tmp_path: Path) -> None:
    report = check_images(inspector, collect_images([str(images)]))
    out = tmp_path / "report.json"
    write_report(report, out)
    document = json.loads(out.read_text())
    assert document["summary"]["by_verdict"] == {"pass": 2, "fail": 1, "undecided": 0}
    assert [Path(r["path"]).name for r in document["rows"]] == ["a_good.png", "b_bad.jpg", "c_good.bmp"]
    bad = document["rows"][1]
    assert bad["verdict"] == "fail" and bad["defect_count"] == 1 and bad["model"] == "bright"
    assert bad["error"] is None


def test_write_report_csv_has_one_row_per_image(inspector: Inspector, images: Path, tmp_path: Path) -> None:
    report = check_images(inspector, [images / "b_bad.jpg", images / "notes.txt"])
    out = tmp_path / "report.csv"
    write_report(report, out)
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == ["fail", "undecided"]
    assert rows[0]["defect_count"] == "1"
    assert rows[0]["defects"].startswith("anomaly 1.000 [40, 20, 56, 36]")
    assert rows[1]["score"] == "" and "not an image" in rows[1]["reason"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("report.txt", "must end in .json or .csv"), ("nowhere/report.json", "does not exist")],
)
def test_report_path_is_refused_when_unusable(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(CheckUsageError, match=message):
        check_report_path(tmp_path / name)
