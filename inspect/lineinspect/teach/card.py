"""The model card every teach method writes beside its model.onnx: what it is, how it was taught."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lineinspect.core.modelcard import MODEL_FILE, AnomalyCalibration, InputSpec, ModelCard, file_sha256, write_card


def write_anomaly_card(
    out_dir: Path,
    *,
    name: str,
    description: str,
    method: str,
    spec: InputSpec,
    calibration: AnomalyCalibration,
    held_back_scores: np.ndarray,
    target_false_reject: float,
    started_ns: int,
    counts: dict[str, int],
    details: dict[str, Any] | None = None,
) -> ModelCard:
    """Card for the anomaly model already saved as out_dir/model.onnx (sha256 taken from the file).

    held_back_scores: raw image scores of the good images kept out of teaching (what set the
    threshold); counts: images, images_learned, images_held_back and the like; started_ns:
    time.monotonic_ns() when teaching began.
    """
    card = ModelCard(
        name=name,
        description=description,
        adapter="anomaly",
        input=spec,
        anomaly=calibration,
        sha256=file_sha256(out_dir / MODEL_FILE),
        trained={
            "method": method,
            "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **counts,
            **(details or {}),
            "target_false_reject": target_false_reject,
            "held_back_scores": {
                "median": round(float(np.median(held_back_scores)), 4),
                "max": round(float(held_back_scores.max()), 4),
                "over_threshold": int((held_back_scores >= calibration.image_threshold).sum()),
            },
            "seconds": round((time.monotonic_ns() - started_ns) / 1e9, 1),
            "pretrained_weights": None,
        },
    )
    write_card(card, out_dir)
    return card
