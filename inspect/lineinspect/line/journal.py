"""The part journal: every triggered part ends as exactly one result, even when the process dies.

A part is journaled (`PartJournal.entered`, the camera supervisor's `on_part` hook, before the
trigger id goes back to the PLC or HTTP caller and before the reject tracker hears of it) in the
outbox's database, and its entry is closed in the same transaction that stores its result. At the
next start `recover()` turns every entry left open into an `undecided` result ("restarted"),
carrying the run id and trigger id of the run that triggered it, so the MES can tell the part apart
from the new run's parts with the same trigger id.

Cost: one SQLite commit (fsync) per trigger on the trigger or camera thread (bench/chaos.py measures
it against the same station without a journal).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from lineinspect.core.clock import utc_now
from lineinspect.core.part import PartRef
from lineinspect.core.result import Provenance, Result, UndecidedKind
from lineinspect.line.outbox import OpenPart, Outbox, OutboxError

log = logging.getLogger(__name__)

JOURNAL_ALARM = "journal_refused"


def new_run_id() -> str:
    """`20261202T074512Z-3f9a1c`: when this run started (UTC, sortable) and 24 random bits."""
    return f"{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


class PartJournal:
    """Open parts of this run in the outbox's database; see the module docstring.

    on_alarm / on_clear: the station's alarm table (`StationEvents.station_alarm` / `clear_alarm`), for a
    journal that cannot be written. A part's recipe is the one fixed into it at its trigger.
    """

    def __init__(
        self,
        outbox: Outbox,
        run_id: str,
        *,
        on_alarm: Callable[[str, str], None],
        on_clear: Callable[[str, str, str], None],
    ) -> None:
        self.outbox = outbox
        self.run_id = run_id
        self._on_alarm = on_alarm
        self._on_clear = on_clear
        self._failing = False

    def entered(self, part: PartRef) -> None:
        """A part passed a trigger: journal it. Never raises (the part goes on; a failure is an alarm)."""
        try:
            self.outbox.record_part(
                run_id=self.run_id,
                camera_id=part.camera_id,
                trigger_id=part.trigger_id,
                part_id=part.part_id,
                encoder_count=part.encoder_count,
                recipe_id=part.selection.recipe_id if part.selection is not None else None,
            )
        except OutboxError as exc:
            log.error("%s", exc)
            self._failing = True
            self._on_alarm(JOURNAL_ALARM, str(exc))
            return
        if self._failing:
            self._failing = False
            self._on_clear("station", JOURNAL_ALARM, "parts are journaled again")

    def recover(self, provenance: Callable[[str | None], Provenance | None]) -> list[Result]:
        """The open parts of earlier runs as `undecided` results, oldest first (each closes its entry when stored).

        provenance: the recipe and model a recipe id stands for now (the Inspector's), for the record.
        """
        results = []
        for entry in self.outbox.open_parts():
            if entry.run_id == self.run_id:
                continue  # a part of this run is still on its way
            results.append(_restarted(entry, provenance(entry.recipe_id)))
        if results:
            log.warning(
                "part journal: %d part(s) triggered before the last stop had no result; each is now undecided "
                "('restarted') and rejected where the reject rules can still reach it",
                len(results),
            )
        return results


def _restarted(entry: OpenPart, provenance: Provenance | None) -> Result:
    part = PartRef(entry.camera_id, entry.trigger_id, 0, part_id=entry.part_id, encoder_count=entry.encoder_count)
    reason = (
        f"not inspected: the station restarted before a verdict (run {entry.run_id}, trigger {entry.trigger_id}, "
        f"triggered {entry.triggered_at})"
    )
    return Result.undecided(part, UndecidedKind.RESTARTED, reason, provenance=provenance, run_id=entry.run_id)
