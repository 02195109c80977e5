"""Small real `Result`s for tests that move results around (outbox, MQTT)."""

from __future__ import annotations

from datetime import UTC, datetime

from lineinspect.core.result import Result, Verdict, new_result_id


def make_result(part_no: int, station: str = "acme/plant1/area1/line1/cell1/lineinspect/station1") -> Result:
    """A pass/fail result for part number `part_no` (every 7th part fails)."""
    now = datetime.now(UTC)
    return Result(
        result_id=new_result_id(),
        verdict=Verdict.FAIL if part_no % 7 == 0 else Verdict.PASS,
        reason="test",
        score=0.1,
        findings=(),
        captured_at=now,
        decided_at=now,
        recipe_id="bracket",
        recipe_version="1",
        model_id="default",
        model_sha256="0" * 64,
        camera_id="cam1",
        frame_id=part_no,
        part_id=f"part-{part_no}",
        station=station,
    )
