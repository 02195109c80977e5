"""RecipeBook: the active recipe of each camera and the loaded recipes and models, changed at run time.

Product changeover (`select`) and model reload (`reload`) come from HTTP, MQTT commands, a PLC
product code or SIGHUP, with the same rules everywhere:

- A part is inspected with what was active at its trigger: the camera supervisor asks
  `selection(camera_id)` when it makes the part's `PartRef`, and the worker inspects with
  `inspector_for(part.selection)`. A changeover or reload takes effect from the next trigger;
  parts in flight finish with the recipe and models they were triggered with.
- An unknown recipe, or a reload whose models do not load (bad card, wrong sha256, wrong input
  shape) or that drops a recipe a camera is running, is refused with a message and nothing changes.
- Each loaded set of recipes and models is a *setup* (an immutable `Inspector`) with a number; the
  last few are kept so parts triggered before a reload are inspected with theirs.
- Every change, accepted or refused, is an audit record (append-only JSON lines) and an MQTT event
  (`<prefix>/changeover`); the retained status and `/v1/status` show the active recipe per camera.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lineinspect.core.clock import utc_now_iso
from lineinspect.core.inspector import Inspector
from lineinspect.core.part import Selection
from lineinspect.core.result import Provenance

log = logging.getLogger(__name__)

# Setups kept for parts still in flight after a reload (a part waits seconds at most; reloads are rare).
SETUPS_KEPT = 8


@dataclass(frozen=True, slots=True)
class Change:
    """One changeover or reload, as audited and announced."""

    action: str  # "select", "reload", or "start" (the recipes a run starts with)
    ok: bool
    message: str
    source: str  # http, mqtt, plc, sighup, start
    camera_id: str | None = None
    recipe_id: str | None = None
    previous_recipe_id: str | None = None
    setup: int | None = None
    models: dict[str, str] = field(default_factory=dict)  # model id → sha256 of the setup now active
    request_id: str | None = None
    at: str = field(default_factory=utc_now_iso)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


class ChangeListener(Protocol):
    """Who hears of every change (the station's event channel)."""

    def changeover(self, change: Change, active: Mapping[str, str | None]) -> None: ...


class ChangeoverAudit:
    """Append-only JSON lines, flushed per record (it survives a crash, like the reject audit)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, change: Change) -> None:
        with self._lock:
            self._file.write(json.dumps(change.to_payload(), separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class RecipeBook:
    """See the module docstring. Thread-safe; `selection` is called on every trigger and is cheap.

    inspector: the setup loaded at start (setup 1). cameras: each camera's recipe at start (None: the
    station's default recipe). load: builds a fresh Inspector from the station directory (for reload).
    """

    def __init__(
        self,
        inspector: Inspector,
        cameras: Mapping[str, str | None],
        *,
        load: Callable[[], Inspector] | None = None,
        audit: ChangeoverAudit | None = None,
        listener: ChangeListener | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._setups: dict[int, Inspector] = {1: inspector}
        self._current = 1
        self._active: dict[str, Selection] = {
            cam: Selection(recipe or inspector.default_recipe, 1) for cam, recipe in cameras.items()
        }
        self._load = load
        self._audit = audit
        self._listener = listener
        self._reload_lock = threading.Lock()  # one reload at a time; triggers go on meanwhile

    # --- the hot path --------------------------------------------------------------------------
    def selection(self, camera_id: str) -> Selection:
        """What a part triggered now on this camera is inspected with."""
        with self._lock:
            found = self._active.get(camera_id)
            return found if found is not None else Selection(self._setups[self._current].default_recipe, self._current)

    def inspector_for(self, selection: Selection | None) -> Inspector:
        """The setup a part was triggered with (the current one when it is no longer kept, or for None)."""
        with self._lock:
            if selection is not None and selection.setup in self._setups:
                return self._setups[selection.setup]
            return self._setups[self._current]

    def provenance(self, selection: Selection | None) -> Provenance | None:
        inspector = self.inspector_for(selection)
        return inspector.provenance(selection.recipe_id if selection is not None else None)

    @property
    def current(self) -> Inspector:
        with self._lock:
            return self._setups[self._current]

    def active(self) -> dict[str, str | None]:
        """Each camera's active recipe id."""
        with self._lock:
            return self._active_ids()

    @property
    def setup(self) -> int:
        with self._lock:
            return self._current

    # --- changes ---------------------------------------------------------------------------------
    def announce_start(self) -> None:
        """At start-up: the recipes each camera starts with, audited and announced like any change (so the
        retained status shows them from the first message on)."""
        with self._lock:
            inspector = self._setups[self._current]
            change = Change(
                "start",
                True,
                f"recipes at start: {self._active_ids()}",
                "start",
                setup=self._current,
                models=_models(inspector),
            )
        self._announce(change)

    def _active_ids(self) -> dict[str, str | None]:
        """Each camera's active recipe id; the caller holds the lock."""
        return {cam: sel.recipe_id for cam, sel in self._active.items()}

    def select(self, camera_id: str, recipe_id: str, *, source: str, request_id: str | None = None) -> Change:
        """Make `recipe_id` the active recipe of `camera_id` from its next trigger on."""
        with self._lock:
            inspector = self._setups[self._current]
            previous = self._active.get(camera_id)
            if previous is None:
                change = Change(
                    "select",
                    False,
                    f"no camera '{camera_id}'; this station has {sorted(self._active)}",
                    source,
                    camera_id,
                    recipe_id,
                    request_id=request_id,
                )
            elif recipe_id not in inspector.recipes:
                change = Change(
                    "select",
                    False,
                    f"unknown recipe '{recipe_id}'; this station has {sorted(inspector.recipes)} "
                    "(add it to station.yaml and reload first)",
                    source,
                    camera_id,
                    recipe_id,
                    previous.recipe_id,
                    request_id=request_id,
                )
            else:
                self._active[camera_id] = Selection(recipe_id, self._current)
                same = previous.recipe_id == recipe_id
                message = (
                    f"camera '{camera_id}' already runs recipe '{recipe_id}'"
                    if same
                    else f"camera '{camera_id}': recipe '{previous.recipe_id}' → '{recipe_id}' from the next part"
                )
                change = Change(
                    "select",
                    True,
                    message,
                    source,
                    camera_id,
                    recipe_id,
                    previous.recipe_id,
                    self._current,
                    _models(inspector),
                    request_id,
                )
        self._announce(change)
        return change

    def reload(self, *, source: str, request_id: str | None = None) -> Change:
        """Load station.yaml's recipes and the models anew, beside the running ones; swap them in if they all
        load and every camera's active recipe is still there; else keep what runs and say why."""
        if self._load is None:
            change = Change("reload", False, "this station cannot reload (no loader)", source, request_id=request_id)
            self._announce(change)
            return change
        with self._reload_lock:
            try:
                fresh = self._load()  # loads and warms up every model; seconds, off the hot path
            except Exception as exc:
                change = Change(
                    "reload",
                    False,
                    f"reload refused, the running recipes and models stay: {exc}",
                    source,
                    setup=self.setup,
                    models=_models(self.current),
                    request_id=request_id,
                )
                self._announce(change)
                return change
            with self._lock:
                gone = {cam: sel.recipe_id for cam, sel in self._active.items() if sel.recipe_id not in fresh.recipes}
                if gone:
                    change = Change(
                        "reload",
                        False,
                        f"reload refused: cameras run recipes the new station.yaml lacks {gone}; select other "
                        "recipes first; the running recipes and models stay",
                        source,
                        setup=self._current,
                        models=_models(self._setups[self._current]),
                        request_id=request_id,
                    )
                else:
                    setup = self._current + 1
                    self._setups[setup] = fresh
                    for old in sorted(self._setups)[:-SETUPS_KEPT]:
                        _let_go(self._setups.pop(old), kept=self._setups.values())
                    self._current = setup
                    # Each camera keeps its recipe id, now from the new setup (a changed recipe applies too).
                    self._active = {cam: Selection(sel.recipe_id, setup) for cam, sel in self._active.items()}
                    change = Change(
                        "reload",
                        True,
                        f"setup {setup} active from the next part: models {_models(fresh)}",
                        source,
                        setup=setup,
                        models=_models(fresh),
                        request_id=request_id,
                    )
        self._announce(change)
        return change

    def _announce(self, change: Change) -> None:
        (log.info if change.ok else log.warning)(
            "changeover (%s, %s): %s", change.action, change.source, change.message
        )
        if self._audit is not None:
            try:
                self._audit.record(change)
            except OSError:
                log.exception("changeover audit could not be written")
        if self._listener is not None:
            try:
                self._listener.changeover(change, self.active())
            except Exception:
                log.exception("announcing a changeover failed")

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()


def _let_go(dropped: Inspector, *, kept: Iterable[Inspector]) -> None:
    """Close the models of a setup no part can be triggered with any more (a remote model's connections), unless
    a kept setup holds the same object. A part still in flight on it is SETUPS_KEPT reloads old: there is none."""
    in_use = {id(model) for inspector in kept for model in inspector.models.values()}
    for model in dropped.models.values():
        if id(model) not in in_use:
            model.close()


def _models(inspector: Inspector) -> dict[str, str]:
    return {model_id: model.sha256 for model_id, model in inspector.models.items()}
