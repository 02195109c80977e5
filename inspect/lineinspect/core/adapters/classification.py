"""Classification models: [1, nc] scores → at most one whole-image defect.

Which classes fail a part: every class but the background class (the card's `background_class`,
else a label named like good), or the card's `defect_classes`. A classifier with neither is
refused: it would fail every part for its top class. Labels come from the card or, when it lists
none, from the export's metadata (Ultralytics `names`).
"""

from __future__ import annotations

import numpy as np

from lineinspect.core.adapters.base import AdapterError, ModelOutput, activate
from lineinspect.core.adapters.export_metadata import model_labels
from lineinspect.core.defects import Box, Defect
from lineinspect.core.modelcard import ModelCard
from lineinspect.core.preprocess import Geometry

GOOD_LIKE_LABELS = ("good", "ok", "pass", "normal", "no_defect", "nodefect", "no-defect", "okay")


def good_like_label(labels: list[str]) -> str | None:
    """The one label whose name means a good part (good, OK, pass, normal, no_defect), else None."""
    found = [name for name in labels if name.strip().lower().replace(" ", "_") in GOOD_LIKE_LABELS]
    return found[0] if len(found) == 1 else None


class ClassificationAdapter:
    def __init__(self, card: ModelCard, output_names: list[str], metadata: dict[str, str]) -> None:
        self.card = card
        self.output = output_names[0]
        self.labels = model_labels(card.labels, metadata, "classification")
        if not self.labels:
            raise AdapterError(
                "classification adapter: no class names: list 'labels' in the card (by output index) or export "
                "with Ultralytics (which writes 'names' into the ONNX metadata)"
            )
        bg = card.background_class if card.background_class is not None else good_like_label(self.labels)
        if bg is not None and bg not in self.labels:
            raise AdapterError(f"classification adapter: background_class '{bg}' is not in labels {self.labels}")
        defect_classes = card.defect_classes or []
        unknown = [c for c in defect_classes if c not in self.labels]
        if unknown:
            raise AdapterError(f"classification adapter: defect_classes {unknown} are not in labels {self.labels}")
        if bg is None and not defect_classes:
            raise AdapterError(
                f"classification adapter: no class of {self.labels} means a good part, so every part would fail "
                "for its top class; set background_class: NAME (the class of good parts) or defect_classes: "
                "[...] (the classes that fail a part) in the card"
            )
        self.background = self.labels.index(bg) if bg is not None else None
        defect_names = defect_classes or [n for n in self.labels if n != bg]
        self.defect_ids = [self.labels.index(n) for n in defect_names]

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput:
        raw = np.asarray(outputs[self.output], dtype=np.float32).reshape(-1)
        if raw.size != len(self.labels):
            source = "the card lists" if self.card.labels else "the model's metadata names"
            raise AdapterError(
                f"classification adapter: output '{self.output}' has {raw.size} scores; "
                f"{source} {len(self.labels)} labels"
            )
        probs = activate(raw, self.card.activation, axis=0)
        top = int(probs.argmax())
        # Image score: how much the model doubts the part is good.
        if self.background is not None:
            score = float(1.0 - probs[self.background])
        else:
            score = float(probs[self.defect_ids].max())
        if top not in self.defect_ids:
            name = self.labels[top]
            note = None if top == self.background else f"top class '{name}' ({probs[top]:.2f}) is not a defect class"
            return ModelOutput(score=score, note=note)
        box = Box(0.0, 0.0, float(geometry.image_width), float(geometry.image_height))
        name = self.labels[top]
        return ModelOutput(score=score, defects=[Defect.from_box(name, float(probs[top]), box)])
