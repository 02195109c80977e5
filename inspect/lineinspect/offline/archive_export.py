"""`lineinspect archive export`: archived production parts written as the folders teach, retune and evaluate read.

```
OUT/good/<result_id>.png                     teach --good, retune --good, evaluate --good
OUT/defects/<class>/<result_id>.png          evaluate --defects, teach --method featnet --defects
OUT/defects/<class>/<result_id>_mask.png     the defect's region (where one is known)
OUT/manifest.json                            every part: result id, verdict, reviews, model sha256, mask source
```

The parts come labelled (the line's archive decides what each one is: `line/archive/reviews.py`); this
module only writes them, so an evaluation on the folder can be traced back to the production parts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from lineinspect.core.clock import utc_now_iso
from lineinspect.errors import LineinspectError

GOOD_FOLDER = "good"
DEFECTS_FOLDER = "defects"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "lineinspect.archive-export/1"


class ExportError(LineinspectError):
    """The export cannot be written (folder not empty, frame missing); the message says what to do."""


class LabelledPart(Protocol):
    """One part with its label, as the archive gives it (`line.archive.reviews.DatasetPart`)."""

    @property
    def result_id(self) -> str: ...
    @property
    def class_name(self) -> str: ...  # "good" or a defect class
    @property
    def image_path(self) -> Path: ...
    @property
    def mask(self) -> np.ndarray | None: ...  # (H, W) bool
    @property
    def record(self) -> dict[str, Any]: ...


@dataclass
class ExportSummary:
    out: Path
    good: int = 0
    defects: dict[str, int] = field(default_factory=dict)
    masks: int = 0
    missing: list[str] = field(default_factory=list)  # result ids whose frame file was gone

    def line(self) -> str:
        classes = ", ".join(f"{n} {c}" for c, n in sorted(self.defects.items())) or "none"
        gone = f"; {len(self.missing)} frame(s) gone from the archive meanwhile" if self.missing else ""
        return (
            f"exported {self.good} good and {sum(self.defects.values())} defective part(s) ({classes}; "
            f"{self.masks} with a mask) to {self.out}{gone}"
        )


def check_out_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out}: exists and is not an empty folder; give a new folder for the export")


def write_export(parts: Iterable[LabelledPart], out: Path, *, query: dict[str, Any]) -> ExportSummary:
    """Write every part and the manifest; `query` (the command's filters) goes into the manifest."""
    check_out_folder(out)
    summary = ExportSummary(out)
    entries = []
    for part in parts:
        is_good = part.class_name == GOOD_FOLDER
        folder = out / GOOD_FOLDER if is_good else out / DEFECTS_FOLDER / part.class_name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{part.result_id}.png"
        try:
            shutil.copyfile(part.image_path, target)
        except FileNotFoundError:  # evicted between the look-up and the copy
            summary.missing.append(part.result_id)
            continue
        entry = {**part.record, "file": str(target.relative_to(out))}
        if is_good:
            summary.good += 1
        else:
            summary.defects[part.class_name] = summary.defects.get(part.class_name, 0) + 1
            if part.mask is not None:
                mask_path = folder / f"{part.result_id}_mask.png"
                if not cv2.imwrite(str(mask_path), part.mask.astype(np.uint8) * 255):
                    raise ExportError(f"{mask_path}: cannot be written; check the --out folder")
                entry["mask_file"] = str(mask_path.relative_to(out))
                summary.masks += 1
        entries.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    models = sorted({str(e["model"]["sha256"]) for e in entries if e.get("model") and e["model"].get("sha256")})
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "exported_at": utc_now_iso("seconds"),
        "query": query,
        "counts": {"good": summary.good, "defects": summary.defects, "masks": summary.masks},
        "model_sha256": models,
        "missing": summary.missing,
        "parts": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return summary
