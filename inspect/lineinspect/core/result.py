"""Result: the verdict plus everything needed to trust it later (the MES payload).

Payload format `lineinspect.result/1`; its JSON Schema ships in
`lineinspect/schemas/result-1.schema.json`. Fields follow the OPC UA Machine
Vision result type where one exists (result id, part id, verdict, processing
times).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from lineinspect.core.recipe import Finding, Verdict

SCHEMA_ID = "lineinspect.result/1"


def new_result_id() -> str:
    return str(uuid.uuid4())


def result_schema() -> dict[str, Any]:
    text = resources.files("lineinspect").joinpath("schemas/result-1.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True, slots=True)
class Result:
    result_id: str
    verdict: Verdict
    reason: str
    score: float | None
    findings: tuple[Finding, ...]
    captured_at: datetime
    decided_at: datetime
    recipe_id: str | None
    recipe_version: str | None
    model_id: str | None
    model_sha256: str | None
    calibration_id: str | None = None
    camera_id: str | None = None
    frame_id: int | None = None
    trigger_id: int | None = None
    part_id: str | None = None
    encoder_count: int | None = None
    image_width: int | None = None
    image_height: int | None = None
    image_ref: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, float | None] = field(default_factory=dict)
    simulated: bool = False
    station: str | None = None
    sequence: int | None = None

    def to_payload(self) -> dict[str, Any]:
        defects = []
        for f in self.findings:
            d = f.defect
            defects.append(
                {
                    "class": d.class_name,
                    "score": _round(d.score),
                    "counts": f.counts,
                    "why": f.why,
                    "box_px": [_round(d.box.x0, 1), _round(d.box.y0, 1), _round(d.box.x1, 1), _round(d.box.y1, 1)],
                    "area_px": _round(d.area_px, 1),
                    "length_px": _round(d.length_px, 2),
                    "width_px": _round(d.width_px, 2),
                    "box_mm": None if d.box_mm is None else [_round(v, 3) for v in d.box_mm],
                    "area_mm2": _round(d.area_mm2, 4),
                    "length_mm": _round(d.length_mm, 4),
                    "width_mm": _round(d.width_mm, 4),
                }
            )
        return {
            "schema": SCHEMA_ID,
            "result_id": self.result_id,
            "sequence": self.sequence,
            "station": self.station,
            "camera_id": self.camera_id,
            "part_id": self.part_id,
            "frame_id": self.frame_id,
            "trigger_id": self.trigger_id,
            "encoder_count": self.encoder_count,
            "captured_at": _iso(self.captured_at),
            "decided_at": _iso(self.decided_at),
            "verdict": self.verdict.value,
            "reason": self.reason,
            "score": _round(self.score),
            "defects": defects,
            "measurements": {k: _round(v, 6) for k, v in self.measurements.items()},
            "recipe": None if self.recipe_id is None else {"id": self.recipe_id, "version": self.recipe_version},
            "model": None if self.model_id is None else {"id": self.model_id, "sha256": self.model_sha256},
            "calibration_id": self.calibration_id,
            "image": {"width": self.image_width, "height": self.image_height, "ref": self.image_ref},
            "timings_ms": {k: _round(v, 3) for k, v in self.timings_ms.items()},
            "simulated": self.simulated,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_payload(), ensure_ascii=False, separators=(",", ":"))
