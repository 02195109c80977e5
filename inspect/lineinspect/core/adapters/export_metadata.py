"""What exporters write into an ONNX model's metadata_props, and the class names a model runs with.

Ultralytics writes `task`, `names`, `imgsz`, `stride`, `batch`, `kpt_shape` (pose) and more, each
value a Python literal as text, e.g. names "{0: 'scratch', 1: 'dent'}", imgsz "[640, 640]".
"""

from __future__ import annotations

import ast

from lineinspect.core.adapters.base import AdapterError

ULTRALYTICS_KEYS = ("names", "imgsz", "task", "stride", "kpt_shape", "batch", "channels")


def parse_metadata(metadata: dict[str, str]) -> dict[str, object]:
    """Ultralytics metadata_props → python values (names as a list by index, imgsz as [h, w])."""
    parsed: dict[str, object] = {}
    for key in ULTRALYTICS_KEYS:
        if key not in metadata:
            continue
        try:
            parsed[key] = ast.literal_eval(metadata[key])
        except (ValueError, SyntaxError):
            parsed[key] = metadata[key]
    names = parsed.get("names")
    if isinstance(names, dict):
        parsed["names"] = [str(names[k]) for k in sorted(names)]
    elif isinstance(names, list | tuple):
        parsed["names"] = [str(n) for n in names]
    else:
        parsed.pop("names", None)
    return parsed


def metadata_labels(metadata: dict[str, str]) -> list[str]:
    """Class names the export wrote into its metadata (Ultralytics `names`); [] when it wrote none."""
    names = parse_metadata(metadata).get("names")
    return list(names) if isinstance(names, list) else []


def model_labels(card_labels: list[str], metadata: dict[str, str], adapter: str) -> list[str]:
    """The labels a model runs with: the card's, else its metadata's; a card that disagrees is refused."""
    exported = metadata_labels(metadata)
    if card_labels and exported and card_labels != exported:
        raise AdapterError(
            f"{adapter} adapter: the card's labels {card_labels} differ from the class names in the model's "
            f"metadata {exported}; remove 'labels' from the card to use the model's names, or export the model again"
        )
    return list(card_labels or exported)
