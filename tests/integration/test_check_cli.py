"""`lineinspect check` through the command line entry: output, report file, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from lineinspect.cli import main
from tests.helpers.station_dir import bad_part, good_part, write_station


@pytest.fixture
def station(tmp_path: Path) -> Path:
    station_dir = write_station(
        tmp_path / "station",
        recipes=[
            {"id": "part", "model": "bright"},
            {"id": "lenient", "model": "bright", "classes": {"*": {"min_area_px": 1000}}},
        ],
    )
    good, bad = station_dir / "images" / "good", station_dir / "images" / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(good / f"g{i}.png"), good_part())
    cv2.imwrite(str(bad / "b0.png"), bad_part())
    (bad / "b1.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return station_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["check", "--quiet", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_exits_1_with_a_line_per_failed_file_and_writes_report(
    station: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = station / "report.json"
    status, out, _ = run(capsys, str(station / "images"), "--station-dir", str(station), "--report", str(report))
    assert status == 1
    lines = out.splitlines()
    assert any(line.startswith("FAIL") and "b0.png: 1 defect: anomaly" in line for line in lines)
    assert any(line.startswith("UNDECIDED") and "b1.jpg: JPEG header is corrupt" in line for line in lines)
    assert not any("g0.png" in line for line in lines)
    assert "checked 5 images in" in out and "images/s): 3 pass, 1 fail, 1 undecided" in out
    document = json.loads(report.read_text())
    assert len(document["rows"]) == 5
    assert document["summary"]["by_verdict"] == {"pass": 3, "fail": 1, "undecided": 1}


def test_check_exits_0_when_all_images_pass(station: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, str(station / "images" / "good" / "*.png"), "--station-dir", str(station))
    assert status == 0
    assert "3 pass, 0 fail, 0 undecided" in out


def test_check_applies_named_recipe(station: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, str(station / "images" / "bad" / "b0.png"), "--station-dir", str(station), "--recipe", "lenient"
    )
    assert status == 0
    assert "1 pass" in out


def test_check_runs_model_folder_without_station_yaml(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = elsewhere / "out.csv"
    status, _, _ = run(
        capsys, str(station / "images"), "--model", str(station / "models" / "bright"), "--report", str(report)
    )
    assert status == 1
    header, *rows = report.read_text().splitlines()
    assert header.startswith("path,verdict,score,defect_count,defects,reason")
    assert len(rows) == 5


def test_check_finds_model_by_name_under_station_models(station: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, str(station / "images" / "good"), "--station-dir", str(station), "--model", "bright")
    assert status == 0, out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{images}/*.gif"], "*.gif: the pattern matches no files"),
        (
            ["{images}", "--recipe", "nope"],
            "--recipe nope: {station}/station.yaml has no such recipe; recipes: ['part',",
        ),
        (["{images}", "--model", "nomodel"], "--model nomodel: neither a model folder nor {station}/models/nomodel"),
        (["{images}", "--model", "{station}/images"], "model card not found"),
        (["{images}", "--report", "out.xlsx"], "--report out.xlsx: the file name must end in .json or .csv"),
        (["{images}", "--station-dir", "{station}/images"], "station.yaml: not found"),
    ],
    ids=["no files", "unknown recipe", "unknown model", "not a model folder", "report format", "no station.yaml"],
)
def test_check_exits_2_with_message_on_usage_error(
    station: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    filled = [a.format(images=station / "images", station=station) for a in argv]
    if "--station-dir" not in filled:
        filled += ["--station-dir", str(station)]
    status, out, err = run(capsys, *filled)
    assert status == 2, out
    assert err.startswith("lineinspect check: ")
    assert message.format(station=station) in err


def test_check_exits_2_when_no_path_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check"])
    assert exited.value.code == 2
    assert "the following arguments are required: PATH" in capsys.readouterr().err
