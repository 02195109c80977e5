"""An Inspector with two recipes on one real model, for changeover tests."""

from __future__ import annotations

from pathlib import Path

from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe

OPTIONS = RuntimeOptions(intra_op_threads=1)


def two_recipes(model_dir: Path) -> Inspector:
    """`strict` (default: any counted defect fails) and `lenient` (version 3: up to 5 tolerated)."""
    model = Model.load(model_dir, OPTIONS)
    recipes = {
        "strict": Recipe(id="strict", model=model.id),
        "lenient": Recipe(id="lenient", version="3", model=model.id, max_defects=5),
    }
    return Inspector({model.id: model}, recipes, "strict")
