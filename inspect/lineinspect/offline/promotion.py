"""`lineinspect model promote` and `rollback`: a recipe's shadow model becomes its production model, and back.

Both edit the recipe in station.yaml (round-trip: the plant's comments and layout stay), check the
edited file the way the station would load it (a file that would not load is never written), keep an
audit record in `var/promotions.jsonl`, and leave the switch itself to a reload (`POST /v1/reload`,
the MQTT command `reload`, or SIGHUP), which swaps the models at a part boundary.

promote: `model: OLD, shadow: NEW` → `model: NEW` (OLD is named in the audit record, its folder stays).
rollback: undoes the recipe's latest promotion not yet rolled back → `model: OLD, shadow: NEW` again.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from lineinspect.config import STATION_FILE, load_station
from lineinspect.core.clock import utc_now_iso
from lineinspect.errors import LineinspectError

PROMOTIONS_FILE = Path("var/promotions.jsonl")


class PromotionError(LineinspectError):
    """A promotion or rollback that cannot be done; station.yaml is unchanged."""


@dataclass(frozen=True, slots=True)
class Promotion:
    action: str  # "promote" or "rollback"
    recipe: str
    model: str  # what the recipe runs after this
    previous_model: str  # what it ran before
    shadow: str | None  # the recipe's shadow after this
    at: str = field(default_factory=utc_now_iso)

    def line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def promote(station_dir: Path, model: str, recipe_id: str) -> Promotion:
    """Make recipe `recipe_id`'s shadow `model` its production model."""

    def change(recipe: Any) -> Promotion:
        shadow = recipe.get("shadow")
        if shadow != model:
            raise PromotionError(
                f"recipe '{recipe_id}' has shadow {shadow!r}, not '{model}': promote the model the recipe runs as "
                f"its shadow (set `shadow: {model}` in station.yaml, reload, compare with `lineinspect shadow report`)"
            )
        previous = str(recipe["model"])
        recipe["model"] = model
        del recipe["shadow"]
        return Promotion("promote", recipe_id, model, previous, None)

    return _edit(station_dir, recipe_id, change)


def rollback(station_dir: Path, recipe_id: str) -> Promotion:
    """Undo recipe `recipe_id`'s latest promotion that was not rolled back yet."""
    open_promotions: list[Promotion] = []
    for record in _history(station_dir):
        if record.recipe != recipe_id:
            continue
        if record.action == "promote":
            open_promotions.append(record)
        elif open_promotions:
            open_promotions.pop()
    if not open_promotions:
        raise PromotionError(
            f"recipe '{recipe_id}' has no promotion to roll back ({station_dir / PROMOTIONS_FILE} lists none)"
        )
    last = open_promotions[-1]

    def change(recipe: Any) -> Promotion:
        if recipe["model"] != last.model:
            raise PromotionError(
                f"recipe '{recipe_id}' runs '{recipe['model']}', not the promoted '{last.model}' (station.yaml was "
                "edited since); set its model by hand"
            )
        recipe["model"] = last.previous_model
        recipe["shadow"] = last.model  # back to where it was: still compared, never actuating
        return Promotion("rollback", recipe_id, last.previous_model, last.model, last.model)

    return _edit(station_dir, recipe_id, change)


def _edit(station_dir: Path, recipe_id: str, change: Any) -> Promotion:
    path = station_dir / STATION_FILE
    yaml = YAML()  # round-trip: comments, order and quoting are kept
    before = path.read_text(encoding="utf-8")
    document = yaml.load(before)
    recipes = document.get("recipes") or []
    recipe = next((r for r in recipes if r.get("id") == recipe_id), None)
    if recipe is None:
        known = [r.get("id") for r in recipes]
        raise PromotionError(f"{path}: no recipe '{recipe_id}'; recipes: {known}")
    promotion: Promotion = change(recipe)
    out = io.StringIO()
    yaml.dump(document, out)
    _replace(path, out.getvalue())
    try:
        load_station(station_dir)  # as the station will read it at the reload
    except Exception as exc:
        _replace(path, before)
        raise PromotionError(f"{path} would not load after the {promotion.action} ({exc}); it is unchanged") from exc
    record = station_dir / PROMOTIONS_FILE
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a", encoding="utf-8") as f:
        f.write(promotion.line() + "\n")
    return promotion


def _replace(path: Path, text: str) -> None:
    """Write the whole file or nothing (a reload or a crash never reads half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _history(station_dir: Path) -> list[Promotion]:
    path = station_dir / PROMOTIONS_FILE
    if not path.is_file():
        return []
    return [Promotion(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
