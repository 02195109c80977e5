"""Results as a line produces them (cameras, verdicts, defects, undecided reasons, uploads) for the
results store, metrics and dashboard tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lineinspect.core.defects import Box, Defect
from lineinspect.core.result import Finding, Result, UndecidedKind, Verdict, new_result_id

STATION_PATH = "acme/s1/a1/l1/cell1/lineinspect/teststation"
T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def finding(class_name: str, *, counts: bool = True, score: float = 0.9) -> Finding:
    defect = Defect(class_name, score, Box(10, 10, 30, 20), area_px=200.0, length_px=20.0, width_px=10.0)
    return Finding(defect, counts, "over the limit" if counts else "within the limits")


def line_result(
    *,
    camera: str | None = "cam1",
    verdict: Verdict = Verdict.PASS,
    reason: str | None = None,
    defects: tuple[Finding, ...] = (),
    decided_at: datetime = T0,
    sequence: int | None = None,
    part_id: str | None = None,
    score: float | None = 0.1,
    timings_ms: dict[str, float] | None = None,
    recipe: str = "bracket",
    kind: UndecidedKind = UndecidedKind.TIMEOUT,
) -> Result:
    """One result; camera=None is an HTTP upload (no camera, no sequence); `kind` for an undecided one."""
    return Result(
        result_id=new_result_id(),
        verdict=verdict,
        undecided_kind=kind if verdict is Verdict.UNDECIDED else None,
        reason=reason or {"pass": "no defect", "fail": "defects over the limit", "undecided": "timed out"}[verdict],
        score=score,
        findings=defects,
        captured_at=decided_at - timedelta(milliseconds=40),
        decided_at=decided_at,
        recipe_id=recipe,
        recipe_version="1",
        model_id="default",
        model_sha256="0" * 64,
        camera_id=camera,
        part_id=part_id,
        image_source=None if camera is not None else "upload.png",
        timings_ms=timings_ms if timings_ms is not None else {"preprocess": 2.0, "infer": 12.0, "total": 15.0},
        station=STATION_PATH,
        sequence=sequence,
    )
