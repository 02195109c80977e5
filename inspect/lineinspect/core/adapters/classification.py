"""Classification models: [1, nc] scores → at most one whole-image defect."""

from __future__ import annotations

import numpy as np

from lineinspect.core.adapters.base import AdapterError, ModelOutput, activate
from lineinspect.core.defects import Box, Defect
from lineinspect.core.modelcard import ModelCard
from lineinspect.core.preprocess import Geometry


class ClassificationAdapter:
    def __init__(self, card: ModelCard, output_names: list[str]) -> None:
        self.card = card
        self.output = output_names[0]
        bg = card.background_class
        if bg is not None and bg not in card.labels:
            raise AdapterError(f"classification adapter: background_class '{bg}' is not in labels {card.labels}")
        self.background = card.labels.index(bg) if bg is not None else None

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput:
        raw = np.asarray(outputs[self.output], dtype=np.float32).reshape(-1)
        if raw.size != len(self.card.labels):
            raise AdapterError(
                f"classification adapter: output '{self.output}' has {raw.size} scores; "
                f"the card lists {len(self.card.labels)} labels"
            )
        probs = activate(raw, self.card.activation, axis=0)
        top = int(probs.argmax())
        # Image score: how much the model doubts the part is good.
        score = float(1.0 - probs[self.background]) if self.background is not None else float(probs[top])
        if top == self.background:
            return ModelOutput(score=score)
        box = Box(0.0, 0.0, float(geometry.image_width), float(geometry.image_height))
        name = self.card.labels[top]
        return ModelOutput(score=score, defects=[Defect.from_box(name, float(probs[top]), box)])
