"""Result: the verdict plus everything needed to trust it later (the MES payload).

Payload format `lineinspect.result/1`; its JSON Schema ships in
`lineinspect/schemas/result-1.schema.json`. Fields follow the OPC UA Machine
Vision result type where one exists (result id, part id, verdict, processing
times).

A result is made in one of two ways: the Inspector's judgement of a frame, or
`Result.undecided(part, kind, reason)` for a part that got none. On its way out
it changes only by `overruled` (judged, but too late: undecided), `stamped`
(what the station adds: its UNS path and the runtime's timings) and the
outbox's `sequence`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.core.defects import Defect
from lineinspect.core.frame import Frame
from lineinspect.core.part import PartRef

log = logging.getLogger(__name__)

SCHEMA_ID = "lineinspect.result/1"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNDECIDED = "undecided"  # no pass/fail could be given; rejected by default (fail-safe)


class UndecidedKind(StrEnum):
    """Why a part is undecided, as a field of its result (`undecided_kind`): the MES and /metrics count these.

    The reason text says the same for a person; the kind never depends on its wording.
    """

    LATE = "late"  # past the part's deadline (trigger + budget), inspected or not
    TIMEOUT = "timeout"  # an upload's inspection did not finish within http.inference_timeout_ms
    QUEUE_FULL = "queue_full"  # the camera's inspection queue was full
    NO_IMAGE = "no_image"  # triggered (or numbered by the camera) but no image arrived
    IMAGE_BROKEN = "image_broken"  # the image arrived incomplete (lost packets, broken buffer)
    CAMERA_LOST = "camera_lost"  # the camera was not connected or was lost with the part pending
    TRIGGER_FAILED = "trigger_failed"  # the software trigger could not be sent
    STOPPED = "stopped"  # the station or camera stopped before the part was inspected
    RESTARTED = "restarted"  # the process died with the part in flight; issued from the part journal at restart
    ROI_OUTSIDE = "roi_outside"  # the recipe's ROI does not fit the frame
    PLAUSIBILITY = "plausibility"  # the frame is not a plausible image of a part (size, black, blurred, ...)
    INFERENCE = "inference"  # the model or the inspection failed on this frame
    OUTBOX_REFUSED = "outbox_refused"  # the result could not be stored for the MES (disk full, database error)

    @property
    def inspected(self) -> bool:
        """False where the part never reached the model (skipped): no image, no slot, no camera, no time."""
        return self in (
            UndecidedKind.LATE,
            UndecidedKind.PLAUSIBILITY,
            UndecidedKind.INFERENCE,
            UndecidedKind.OUTBOX_REFUSED,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """A reported defect and whether it counts against the part."""

    defect: Defect
    counts: bool
    why: str


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a part is (or would have been) judged with: recipe and model, with their versions."""

    recipe_id: str
    recipe_version: str
    model_id: str
    model_sha256: str


def new_result_id() -> str:
    return str(uuid.uuid4())


def result_schema() -> dict[str, Any]:
    text = resources.files("lineinspect").joinpath("schemas/result-1.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else iso_utc(ts)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _identity(
    part: PartRef | None, frame: Frame | None, provenance: Provenance | None, source: str | None
) -> dict[str, Any]:
    """What a result takes from its part, frame and provenance (the one place that maps them)."""
    part = part if part is not None else (frame.part if frame is not None else None)
    image = frame.image if frame is not None else None
    return {
        "captured_at": frame.captured_at if frame is not None else utc_now(),
        "recipe_id": provenance.recipe_id if provenance is not None else None,
        "recipe_version": provenance.recipe_version if provenance is not None else None,
        "model_id": provenance.model_id if provenance is not None else None,
        "model_sha256": provenance.model_sha256 if provenance is not None else None,
        "camera_id": part.camera_id if part is not None else (frame.camera_id if frame is not None else None),
        "frame_id": frame.frame_id if frame is not None else None,
        "trigger_id": part.trigger_id if part is not None else None,
        "part_id": part.part_id if part is not None else None,
        "encoder_count": part.encoder_count if part is not None else None,
        "image_width": image.shape[1] if image is not None else None,
        "image_height": image.shape[0] if image is not None else None,
        "image_source": frame.source if frame is not None else source,
        "simulated": frame.simulated if frame is not None else False,
    }


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
    undecided_kind: UndecidedKind | None = None  # set exactly when verdict is undecided
    camera_id: str | None = None
    frame_id: int | None = None
    trigger_id: int | None = None
    part_id: str | None = None
    encoder_count: int | None = None
    image_width: int | None = None
    image_height: int | None = None
    image_ref: str | None = None  # the image archive's reference; None: not kept
    image_source: str | None = None  # where the image came from: file path, upload name, camera URL
    timings_ms: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, float | None] = field(default_factory=dict)
    simulated: bool = False
    station: str | None = None
    run_id: str | None = None  # the station run that triggered the part: (run_id, camera_id, trigger_id) is unique
    sequence: int | None = None
    # to_json's text, made at its first call: outbox, local store and MQTT share one serialisation. Not an
    # __init__ field, so `dataclasses.replace` (stamped, overruled, the sequence) starts a copy without it.
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.verdict is Verdict.UNDECIDED) != (self.undecided_kind is not None):
            raise ValueError(
                f"result {self.result_id}: undecided_kind {self.undecided_kind} does not fit verdict {self.verdict}"
            )

    @classmethod
    def undecided(
        cls,
        part: PartRef | None,
        kind: UndecidedKind,
        reason: str,
        *,
        frame: Frame | None = None,
        provenance: Provenance | None = None,
        source: str | None = None,
        run_id: str | None = None,
    ) -> Result:
        """The one way to make a result for a part that got no pass/fail (rejected by default).

        part: the part as known at its trigger (None for an upload or a free-running frame); the frame's
        own part where not given. frame: its image where one exists (size, capture time, source).
        provenance: the recipe and model it would have been judged with, where known.
        source: where the image came from, when there is no frame (an upload's file name).
        run_id: the run that triggered the part, when it is not the one sending the result (a restart).
        """
        return cls(
            result_id=new_result_id(),
            verdict=Verdict.UNDECIDED,
            undecided_kind=kind,
            reason=reason,
            score=None,
            findings=(),
            decided_at=utc_now(),
            run_id=run_id,
            **_identity(part, frame, provenance, source),
        )

    @classmethod
    def judged(
        cls,
        frame: Frame,
        verdict: Verdict,
        reason: str,
        *,
        score: float,
        findings: tuple[Finding, ...],
        provenance: Provenance,
        calibration_id: str | None,
        timings_ms: dict[str, float],
        measurements: dict[str, float | None],
    ) -> Result:
        """The Inspector's judgement (pass or fail) of one frame."""
        return cls(
            result_id=new_result_id(),
            verdict=verdict,
            reason=reason,
            score=score,
            findings=findings,
            decided_at=utc_now(),
            calibration_id=calibration_id,
            timings_ms=timings_ms,
            measurements=measurements,
            **_identity(None, frame, provenance, None),
        )

    def overruled(self, kind: UndecidedKind, reason: str) -> Result:
        """This judgement made undecided (e.g. it came too late): score and findings stay for the record."""
        return dataclasses.replace(self, verdict=Verdict.UNDECIDED, undecided_kind=kind, reason=reason)

    def stamped(
        self,
        *,
        station: str | None,
        run_id: str | None = None,
        timings_ms: dict[str, float] | None = None,
        image_ref: str | None = None,
    ) -> Result:
        """What the station adds to every result it sends: its UNS path, its run id (unless the part is of an
        earlier run), the runtime's stage times (ms) and the image archive's reference (None: not kept)."""
        timings = {**self.timings_ms, **(timings_ms or {})}
        return dataclasses.replace(
            self, station=station, run_id=self.run_id or run_id, timings_ms=timings, image_ref=image_ref
        )

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
            "run_id": self.run_id,
            "camera_id": self.camera_id,
            "part_id": self.part_id,
            "frame_id": self.frame_id,
            "trigger_id": self.trigger_id,
            "encoder_count": self.encoder_count,
            "captured_at": _iso(self.captured_at),
            "decided_at": _iso(self.decided_at),
            "verdict": self.verdict.value,
            "undecided_kind": None if self.undecided_kind is None else self.undecided_kind.value,
            "reason": self.reason,
            "score": _round(self.score),
            "defects": defects,
            "measurements": {k: _round(v, 6) for k, v in self.measurements.items()},
            "recipe": None if self.recipe_id is None else {"id": self.recipe_id, "version": self.recipe_version},
            "model": None if self.model_id is None else {"id": self.model_id, "sha256": self.model_sha256},
            "calibration_id": self.calibration_id,
            "image": {
                "width": self.image_width,
                "height": self.image_height,
                "ref": self.image_ref,
                "source": self.image_source,
            },
            "timings_ms": {k: _round(v, 3) for k, v in self.timings_ms.items()},
            "simulated": self.simulated,
        }

    def to_json(self) -> str:
        """The payload as compact JSON; serialised once per result (a result never changes)."""
        if self._json is None:
            object.__setattr__(self, "_json", json.dumps(self.to_payload(), ensure_ascii=False, separators=(",", ":")))
        assert self._json is not None
        return self._json


ResultSink = Callable[[Result], None]


class ResultSinks:
    """The consumers of final results (local store, metrics, status), each isolated from the others.

    A sink that raises is logged and skipped: the next sink, and the part's reject, still happen.
    """

    def __init__(self, sinks: Iterable[ResultSink] = ()) -> None:
        self._sinks = tuple(sinks)

    def __call__(self, result: Result) -> None:
        for sink in self._sinks:
            try:
                sink(result)
            except Exception:
                log.exception("result sink %r failed for result %s", sink, result.result_id)

    def __len__(self) -> int:
        return len(self._sinks)

    def __iter__(self) -> Iterator[ResultSink]:
        return iter(self._sinks)
