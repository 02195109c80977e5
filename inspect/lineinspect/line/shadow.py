"""Shadow models: a new model tried on live parts without letting it reject anything.

A recipe may name a `shadow` model. After a part's production result is out (stored for the MES, its
verdict handed to the reject station), the fanout hands the result and its frame to `ShadowRunner`,
which inspects the same frame with the recipe's rules and the shadow model on its own thread, and
keeps both verdicts side by side in `ShadowStore` (SQLite, `var/shadow.sqlite`). The shadow never
actuates and never delays a part: when the station is busy (frames waiting for inspection) or the
shadow's queue is full, the part is skipped and counted. `report()` answers `GET /v1/shadow/report`
and `lineinspect shadow report`: agreement, production vs shadow verdicts, per defect class, and
the parts they disagree on (with the archive's image reference where the frame was kept).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lineinspect.core.clock import iso_utc, utc_now_iso
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import Result, Verdict
from lineinspect.errors import LineinspectError
from lineinspect.line.sqlite_file import OpenProblem, open_problem

log = logging.getLogger(__name__)

SHADOW_FILE = Path("var/shadow.sqlite")


class ShadowError(LineinspectError):
    """The shadow store cannot be opened or read."""


@dataclass(frozen=True, slots=True)
class ShadowCounts:
    compared: int = 0
    skipped_busy: int = 0  # the station had frames waiting, or the shadow's queue was full
    failed: int = 0


def _classes(result: Result) -> list[str]:
    """The defect classes that counted against the part (what made it fail)."""
    return sorted({f.defect.class_name for f in result.findings if f.counts})


class ShadowStore:
    """Production and shadow verdicts of the same parts, side by side (append-only, WAL, readable while written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS shadow (result_id TEXT PRIMARY KEY, compared_at TEXT NOT NULL,"
                " decided_at TEXT NOT NULL, camera_id TEXT, part_id TEXT, recipe_id TEXT, production_model TEXT,"
                " production_sha256 TEXT, production_verdict TEXT NOT NULL, production_classes TEXT NOT NULL,"
                " production_score REAL, shadow_model TEXT NOT NULL, shadow_sha256 TEXT NOT NULL,"
                " shadow_verdict TEXT NOT NULL, shadow_classes TEXT NOT NULL, shadow_score REAL,"
                " shadow_reason TEXT NOT NULL, image_ref TEXT)"
            )
        except (sqlite3.Error, OSError) as exc:
            raise ShadowError(_explain(path, exc)) from exc

    def add(self, production: Result, shadow: Result) -> None:
        row = (
            production.result_id,
            utc_now_iso(),
            iso_utc(production.decided_at),
            production.camera_id,
            production.part_id,
            production.recipe_id,
            production.model_id,
            production.model_sha256,
            production.verdict.value,
            ",".join(_classes(production)),
            production.score,
            shadow.model_id or "",
            shadow.model_sha256 or "",
            shadow.verdict.value,
            ",".join(_classes(shadow)),
            shadow.score,
            shadow.reason,
            production.image_ref,
        )
        with self._lock:
            self._conn.execute(f"INSERT OR REPLACE INTO shadow VALUES ({','.join('?' * len(row))})", row)

    def report(
        self, *, recipe: str | None = None, since: datetime | None = None, disagreements_max: int = 100
    ) -> dict[str, Any]:
        """Agreement, production × shadow verdicts, per class, and the latest parts they disagree on."""
        where, args = ["1=1"], []
        if recipe is not None:
            where.append("recipe_id = ?")
            args.append(recipe)
        if since is not None:
            where.append("decided_at >= ?")
            args.append(iso_utc(since))
        sql = f"FROM shadow WHERE {' AND '.join(where)}"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT production_verdict, shadow_verdict, production_classes, shadow_classes {sql}", args
            ).fetchall()
            worst = self._conn.execute(
                "SELECT result_id, decided_at, camera_id, part_id, recipe_id, production_verdict, shadow_verdict,"
                f" production_classes, shadow_classes, shadow_reason, image_ref {sql}"
                " AND production_verdict != shadow_verdict ORDER BY decided_at DESC LIMIT ?",
                [*args, disagreements_max],
            ).fetchall()
            models = self._conn.execute(
                f"SELECT DISTINCT recipe_id, production_model, production_sha256, shadow_model, shadow_sha256 {sql}",
                args,
            ).fetchall()
        verdicts = [v.value for v in Verdict]
        confusion = {p: dict.fromkeys(verdicts, 0) for p in verdicts}
        per_class: dict[str, dict[str, int]] = {}
        agree = 0
        for prod, shad, prod_classes, shad_classes in rows:
            confusion[prod][shad] += 1
            agree += prod == shad
            pc, sc = set(filter(None, prod_classes.split(","))), set(filter(None, shad_classes.split(",")))
            for name in pc | sc:
                entry = per_class.setdefault(name, {"both": 0, "production_only": 0, "shadow_only": 0})
                entry["both" if name in pc and name in sc else "production_only" if name in pc else "shadow_only"] += 1
        keys = (
            "result_id",
            "decided_at",
            "camera_id",
            "part_id",
            "recipe_id",
            "production_verdict",
            "shadow_verdict",
            "production_classes",
            "shadow_classes",
            "shadow_reason",
            "image_ref",
        )
        return {
            "parts": len(rows),
            "agreement": None if not rows else round(agree / len(rows), 4),
            "confusion": confusion,  # production verdict → shadow verdict → parts
            "classes": per_class,
            "models": [
                {"recipe": r, "production": {"id": pm, "sha256": ps}, "shadow": {"id": sm, "sha256": ss}}
                for r, pm, ps, sm, ss in models
            ],
            "disagreements": [dict(zip(keys, row, strict=True)) for row in worst],
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass
class ShadowRunner:
    """Runs recipes' shadow models after the production verdict (see the module docstring).

    current: the station's loaded setup now (`RecipeBook.current`).
    """

    current: Callable[[], Inspector]
    store: ShadowStore
    max_waiting: int = 8
    _waiting: queue.Queue[tuple[Result, Frame] | None] = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _counts: dict[str, int] = field(default_factory=lambda: {"compared": 0, "skipped_busy": 0, "failed": 0}, init=False)
    _shadow_of: tuple[Inspector, Inspector] | None = field(default=None, init=False)  # (setup, its shadow)

    def __post_init__(self) -> None:
        self._waiting = queue.Queue(maxsize=self.max_waiting)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._waiting.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self.store.close()

    def after_verdict(self, result: Result, frame: Frame | None, *, busy: bool) -> None:
        """A part's production result is out (the worker calls this). Never blocks, never raises.

        busy: frames are waiting for their production inspection; the shadow then stands aside.
        """
        if frame is None or result.recipe_id is None:
            return
        recipe = self.current().recipes.get(result.recipe_id)
        if recipe is None or recipe.shadow is None:
            return
        if busy:
            self._count("skipped_busy")
            return
        try:
            self._waiting.put_nowait((result, frame))
        except queue.Full:
            self._count("skipped_busy")

    def counts(self) -> ShadowCounts:
        with self._lock:
            return ShadowCounts(**self._counts)

    def _run(self) -> None:
        while (item := self._waiting.get()) is not None:
            production, frame = item
            try:
                shadow = self._shadow_inspector(self.current()).inspect(frame, production.recipe_id)
                self.store.add(production, shadow)
                self._count("compared")
            except Exception:  # a shadow problem is the shadow's; production goes on untouched
                log.exception("shadow inspection of result %s failed", production.result_id)
                self._count("failed")

    def _shadow_inspector(self, inspector: Inspector) -> Inspector:
        """The setup's recipes with each one's shadow model in place of its production model."""
        if self._shadow_of is None or self._shadow_of[0] is not inspector:  # a reload brings a new setup
            recipes = {
                rid: r.model_copy(update={"model": r.shadow, "shadow": None})
                for rid, r in inspector.recipes.items()
                if r.shadow is not None
            }
            self._shadow_of = (
                inspector,
                Inspector(inspector.models, recipes, next(iter(recipes)), inspector.calibrations),
            )
        return self._shadow_of[1]

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def _explain(path: Path, exc: BaseException) -> str:
    if isinstance(exc, sqlite3.Error) and open_problem(exc) is OpenProblem.NOT_A_DATABASE:
        return f"shadow store {path} is not a readable database ({exc}); move it aside, a new one is created"
    return f"shadow store {path}: cannot open ({exc}); check the path and its permissions"
