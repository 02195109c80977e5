"""Every result the Inspector makes validates against the shipped JSON Schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.frame import Frame
from lineinspect.core.model import RuntimeOptions
from lineinspect.core.part import PartRef
from lineinspect.core.recipe import Recipe
from lineinspect.core.result import SCHEMA_ID, Result, UndecidedKind, Verdict, result_schema
from tests.helpers.graphs import brightness_anomaly


def test_pass_fail_and_undecided_payloads_validate(tmp_path: Path) -> None:
    inspector = single_model_inspector(brightness_anomaly(tmp_path / "m"), RuntimeOptions(intra_op_threads=1))
    validator = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())
    good = np.full((50, 60, 3), 10, np.uint8)
    bad = good.copy()
    bad[10:20, 10:20] = 255
    part = PartRef("cam1", trigger_id=7, trigger_ns=0, part_id="P-1")
    provenance = inspector.provenance(None)
    results = [
        inspector.inspect(Frame(good, camera_id="cam1", frame_id=3, part=part)),
        inspector.inspect(Frame(bad)),
        Result.undecided(None, UndecidedKind.TIMEOUT, "timed out", frame=Frame(good), provenance=provenance),
        Result.undecided(part, UndecidedKind.NO_IMAGE, "no image"),
    ]
    assert [r.verdict.value for r in results] == ["pass", "fail", "undecided", "undecided"]
    assert [r.to_payload()["undecided_kind"] for r in results] == [None, None, "timeout", "no_image"]
    for result in results:
        payload = json.loads(result.to_json())
        validator.validate(payload)
        assert payload["schema"] == SCHEMA_ID
        assert payload["captured_at"].endswith("Z") and payload["decided_at"].endswith("Z")
    assert results[0].to_payload()["trigger_id"] == 7 and results[0].to_payload()["part_id"] == "P-1"
    assert results[3].to_payload()["camera_id"] == "cam1" and results[3].to_payload()["trigger_id"] == 7


def test_the_schema_lists_every_undecided_kind_and_ties_it_to_the_verdict() -> None:
    schema = result_schema()
    assert schema["properties"]["undecided_kind"]["enum"] == [None, *(k.value for k in UndecidedKind)]
    validator = jsonschema.Draft202012Validator(schema)
    payload = Result.undecided(None, UndecidedKind.LATE, "late").to_payload()
    validator.validate(payload)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**payload, "undecided_kind": None})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**payload, "verdict": "pass"})


def test_a_result_refuses_a_kind_that_does_not_fit_its_verdict() -> None:
    late = Result.undecided(None, UndecidedKind.LATE, "late")
    with pytest.raises(ValueError, match="does not fit verdict"):
        dataclasses.replace(late, verdict=Verdict.PASS)
    with pytest.raises(ValueError, match="does not fit verdict"):
        dataclasses.replace(late, undecided_kind=None)


def test_roi_outside_image_gives_undecided_with_reason(tmp_path: Path) -> None:
    recipe = Recipe(id="r", model="m", roi={"x": 50, "y": 0, "width": 100, "height": 10})
    inspector = single_model_inspector(brightness_anomaly(tmp_path / "m"), RuntimeOptions(intra_op_threads=1), recipe)
    result = inspector.inspect(Frame(np.zeros((40, 60), np.uint8)))
    assert result.verdict.value == "undecided"
    assert result.undecided_kind is UndecidedKind.ROI_OUTSIDE
    assert "ROI 50,0 100x10 lies outside the 60x40 image" in result.reason


def test_roi_defects_are_reported_in_full_image_coordinates(tmp_path: Path) -> None:
    recipe = Recipe(id="r", model="m", roi={"x": 100, "y": 50, "width": 64, "height": 64})
    inspector = single_model_inspector(brightness_anomaly(tmp_path / "m"), RuntimeOptions(intra_op_threads=1), recipe)
    image = np.full((200, 300), 40, np.uint8)  # a dark, even part (a black frame is implausible)
    image[60:70, 110:120] = 255  # inside the ROI
    image[0:10, 0:10] = 255  # outside: not inspected
    result = inspector.inspect(Frame(image))
    boxes = [f.defect.box for f in result.findings]
    assert len(boxes) == 1
    assert (boxes[0].x0, boxes[0].y0) == (110, 60)
