"""Recipe rules → verdicts and the reasons an operator reads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lineinspect.core.defects import Box, Defect
from lineinspect.core.recipe import ClassRule, Recipe, decide
from lineinspect.core.result import Verdict


def defect(cls: str = "scratch", score: float = 0.9, area: float = 100, length: float = 20) -> Defect:
    return Defect(cls, score, Box(0, 0, length, 5), area_px=area, length_px=length, width_px=5)


def recipe(**kw: object) -> Recipe:
    return Recipe.model_validate({"id": "r", "model": "m", **kw})


def test_part_passes_when_no_defect_is_found() -> None:
    d = decide([], 0.1, recipe(), {})
    assert (d.verdict, d.reason) == (Verdict.PASS, "no defect found")


def test_part_fails_and_reason_lists_defects_when_over_limits() -> None:
    d = decide([defect(), defect("dent", 0.7, length=8)], 0.9, recipe(), {})
    assert d.verdict is Verdict.FAIL
    assert d.reason == "2 defects: scratch 20 px (score 0.90), dent 8 px (score 0.70)"


def test_defect_below_card_threshold_is_not_reported() -> None:
    d = decide([defect(score=0.4)], 0.4, recipe(), {"scratch": 0.5})
    assert d.verdict is Verdict.PASS and d.findings == ()


def test_recipe_min_score_overrides_card_threshold() -> None:
    d = decide([defect(score=0.4)], 0.4, recipe(classes={"scratch": {"min_score": 0.3}}), {"scratch": 0.5})
    assert d.verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("rule", "why", "reason"),
    [
        ({"min_area_px": 200}, "area 100 px < 200 px", "1 defect below the size limits: area 100 px < 200 px"),
        ({"min_length_px": 25}, "length 20.0 px < 25 px", "1 defect below the size limits: length 20.0 px < 25 px"),
        ({"reject": False}, "class does not reject", "1 defect of a class that never rejects: scratch"),
    ],
)
def test_small_defect_is_reported_but_part_passes_when_under_size_limit(rule: dict, why: str, reason: str) -> None:
    d = decide([defect()], 0.9, recipe(classes={"*": rule}), {})
    assert d.verdict is Verdict.PASS
    assert [(f.counts, f.why) for f in d.findings] == [(False, why)]
    assert d.reason == reason  # a high score next to `pass` explains itself


def test_several_defects_below_the_size_limits_are_listed_in_the_reason() -> None:
    defects = [replace(defect(), area_px=a) for a in (25, 12, 8, 5)]
    d = decide(defects, 0.9, recipe(classes={"*": {"min_area_px": 30}}), {})
    assert d.verdict is Verdict.PASS
    assert d.reason == (
        "4 defects below the size limits: area 25 px < 30 px, area 12 px < 30 px, area 8 px < 30 px and 1 more"
    )


def test_mm_limit_applies_when_defect_is_measured() -> None:
    measured = replace(defect(), length_mm=0.8, area_mm2=0.2)
    d = decide([measured], 0.9, recipe(classes={"*": {"min_length_mm": 1.0}}), {})
    assert d.verdict is Verdict.PASS
    assert d.findings[0].why == "length 0.80 mm < 1 mm"


def test_mm_limit_counts_defect_when_camera_is_not_calibrated() -> None:
    # A part is never passed because a defect could not be measured.
    d = decide([defect()], 0.9, recipe(classes={"*": {"min_length_mm": 1.0}}), {})
    assert d.verdict is Verdict.FAIL
    assert d.findings[0].why == "mm limit not checkable (camera not calibrated)"


def test_tolerated_defects_pass_when_under_max_defects() -> None:
    d = decide([defect()], 0.9, recipe(max_defects=1), {})
    assert d.verdict is Verdict.PASS and d.reason == "1 tolerated (max_defects 1)"


def test_image_score_limit_fails_part_without_localised_defect() -> None:
    d = decide([], 0.8, recipe(max_image_score=0.7), {})
    assert (d.verdict, d.reason) == (Verdict.FAIL, "image score 0.80 ≥ 0.7")


def test_class_rule_falls_back_to_star_then_defaults() -> None:
    r = recipe(classes={"*": {"min_area_px": 5}, "dent": {"min_area_px": 50}})
    assert r.rule_for("dent").min_area_px == 50
    assert r.rule_for("crack").min_area_px == 5
    assert recipe().rule_for("crack") == ClassRule()
