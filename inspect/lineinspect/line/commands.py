"""StationCommands: commands to the station over MQTT, answered on `<prefix>/command/response`.

A command is a JSON object published on `<prefix>/command/<name>` (`recipe`: `{"request_id",
"camera", "recipe"}`; `reload`: `{"request_id"}`; `reset_alarms`: `{"request_id", "operator"?}`, the reject
station's operator reset). Messages arrive on paho's network thread; they are
queued (bounded) and run on the station's own `commands` thread, so a slow command (a reload loads
and warms up models) never holds up MQTT. Every command gets exactly one answer `{"request_id",
"command", "ok", "message", "at"}`, also when it is malformed, unknown or the queue is full.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from lineinspect.core.clock import utc_now_iso

log = logging.getLogger(__name__)

# (ok, message) for the answer.
Handler = Callable[[dict[str, Any]], tuple[bool, str]]


class StationCommands:
    def __init__(self, respond: Callable[[dict[str, Any]], None], *, max_waiting: int = 16) -> None:
        """respond: publishes one answer (the MQTT publisher's `command/response`)."""
        self._respond = respond
        self._handlers: dict[str, Handler] = {}
        self._waiting: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None

    def on(self, name: str, handler: Handler) -> None:
        """Run `handler` for `<prefix>/command/<name>`."""
        self._handlers[name] = handler

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._waiting.put(None)
        self._thread.join(timeout=30)
        self._thread = None

    def submit(self, topic: str, payload: bytes) -> None:
        """paho's thread: one message on `<prefix>/command/<name>`; parsed and queued, never run here."""
        name = topic.rsplit("/", 1)[-1]
        if name == "response":
            return  # our own answers, when the station is subscribed to the whole command tree
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self._answer(name, {}, False, f"command '{name}' is not a JSON object ({exc}): send e.g. "
                         '{"request_id": "r1", "camera": "cam1", "recipe": "bracket"}')  # fmt: skip
            return
        if name not in self._handlers:
            self._answer(name, body, False, f"unknown command '{name}'; this station knows {sorted(self._handlers)}")
            return
        try:
            self._waiting.put_nowait((name, body))
        except queue.Full:
            self._answer(name, body, False, f"busy: {self._waiting.qsize()} commands waiting; send it again shortly")

    def _run(self) -> None:
        while (item := self._waiting.get()) is not None:
            name, body = item
            try:
                ok, message = self._handlers[name](body)
            except Exception as exc:
                log.exception("command %s failed", name)
                ok, message = False, f"command '{name}' failed: {type(exc).__name__}: {exc}"
            self._answer(name, body, ok, message)

    def _answer(self, name: str, body: dict[str, Any], ok: bool, message: str) -> None:
        answer = {"request_id": body.get("request_id"), "command": name, "ok": ok, "message": message}
        try:
            self._respond({**answer, "at": utc_now_iso("milliseconds")})
        except Exception:
            log.exception("answering command %s failed", name)


def required(body: dict[str, Any], field: str) -> str:
    """A command's text field, or a ValueError saying which one is missing."""
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field '{field}' missing or not a text")
    return value
