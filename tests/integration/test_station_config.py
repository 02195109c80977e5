"""What `lineinspect run` says about a station it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lineinspect.cli import main
from tests.helpers.station_runtime import write_line_station


def test_run_refuses_a_camera_whose_recipe_the_station_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_line_station(tmp_path, 1, camera={"recipe": "lid"})
    assert main(["run", "--station-dir", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cameras' / 'cam1.yaml'}: recipe 'lid' is not in station.yaml; recipes: ['part']" in err


def test_run_refuses_two_cameras_feeding_one_reject_station(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reject = {
        "mode": "timed",
        "backend": {"type": "dry_run"},
        "inspection_budget_ms": 100,
        "line_rate_parts_per_min": 60,
        "delay_ms": 200,
    }
    write_line_station(tmp_path, 1, camera={"reject_output": "ejector1"}, reject=reject)
    second = yaml.safe_load((tmp_path / "cameras" / "cam1.yaml").read_text())
    (tmp_path / "cameras" / "cam2.yaml").write_text(yaml.safe_dump(second))
    assert main(["run", "--station-dir", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "reject: cameras ['cam1', 'cam2'] all feed the reject station" in err
    assert "Set reject_output on one camera definition only" in err


def test_run_refuses_a_duration_that_is_not_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_line_station(tmp_path, 1)
    assert main(["run", "--station-dir", str(tmp_path), "--port", "0", "--duration-s", "0"]) == 2
    assert "--duration-s 0.0: give a positive number of seconds" in capsys.readouterr().err


def test_line_budget_is_the_reject_budget_when_a_reject_station_exists(tmp_path: Path) -> None:
    from lineinspect.config import load_station

    reject = {
        "mode": "timed",
        "backend": {"type": "dry_run"},
        "inspection_budget_ms": 120,
        "line_rate_parts_per_min": 60,
        "delay_ms": 200,
    }
    write_line_station(tmp_path, 1, line={"budget_ms": 900}, reject=reject)
    assert load_station(tmp_path).budget_ms == 120
