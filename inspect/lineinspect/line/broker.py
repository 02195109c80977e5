"""The demo's embedded MQTT broker: loopback only, in-process, for a station with no broker configured.

Choice: amqtt (a pure-Python MQTT 3.1.1 broker, installed by pip with
lineinspect) running on its own asyncio loop in one thread of the station
process. Not a mosquitto subprocess: `make run` must work with pip installs
alone, one code path is easier to trust than two, and an in-process broker
dies with the station, so a killed demo leaves no orphan listening on a port.
It is a demo and test convenience, not a production broker: it keeps sessions
and retained messages in memory only. Production points `mqtt:` in
station.yaml at Mosquitto, EMQX or HiveMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from lineinspect.errors import LineinspectError

log = logging.getLogger(__name__)


class BrokerError(LineinspectError):
    """The embedded broker could not start."""


class EmbeddedBroker:
    """An MQTT broker on `host:port` (port 0: a free one, see `port` after `start`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            # Anonymous and unencrypted: it must never be reachable from the plant network.
            raise BrokerError(f"the embedded broker listens on loopback only, not {host!r}")
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start listening; returns when clients can connect. Raises BrokerError if it cannot."""
        if self._thread is not None:
            raise RuntimeError("embedded broker already started")
        if self.port:
            self._check_port_free()
        # amqtt logs every connection at INFO; a station log should show ours, not the broker's chatter.
        for name in ("amqtt", "transitions"):
            chatty = logging.getLogger(name)
            if chatty.level == logging.NOTSET:
                chatty.setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            self.stop()
            raise BrokerError(f"embedded MQTT broker did not start within {timeout_s} s")
        if self._error is not None:
            error = self._error
            self._thread.join(timeout=5)
            self._thread = None
            raise BrokerError(
                f"embedded MQTT broker could not listen on {self.host}:{self.port}: {error}. "
                f"Is another broker using the port? Point `mqtt:` in station.yaml at it instead"
            ) from error
        log.info("embedded MQTT broker (demo) listening on %s:%d", self.host, self.port)

    def _check_port_free(self) -> None:
        # Asked first so a taken port is one clear line, not amqtt's start-up traceback.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise BrokerError(
                    f"embedded MQTT broker could not listen on {self.host}:{self.port}: {exc.strerror}. "
                    f"Is another broker using the port? Point `mqtt:` in station.yaml at it instead"
                ) from None

    def stop(self) -> None:
        """Close every connection and the listener; joins the broker thread."""
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished on its own meanwhile
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.error("embedded MQTT broker did not stop within 10 s")
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            if self._started.is_set():
                log.error("embedded MQTT broker stopped: %s", exc)
            self._error = exc
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        from amqtt.broker import Broker  # imported here: only the demo needs it

        self._stop = asyncio.Event()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous access; no $SYS publisher, no packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        try:
            server = broker._servers["default"].instance  # amqtt has no public accessor for the bound port
            self.port = int(server.sockets[0].getsockname()[1])
        except (KeyError, AttributeError, IndexError):
            pass
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await broker.shutdown()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
