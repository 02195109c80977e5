"""A real asyncua OPC UA server on a loopback port, on its own event-loop thread, for the PLC test peers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.helpers.mosquitto import free_port


class OpcUaTestServer:
    """Subclasses add their nodes in `_build` and may run a PLC scan in `_scan` (default: idle until stopped)."""

    thread_name = "test-opcua-server"

    def __init__(self, path: str, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/{path}"
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._nodes: dict[str, Any] = {}

    async def _build(self, server: Any) -> None:
        raise NotImplementedError

    async def _scan(self) -> None:
        assert self._stop is not None
        await self._stop.wait()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        from asyncua import Server

        try:
            self._stop = asyncio.Event()
            server = Server()
            self._server = server
            await server.init()
            server.set_endpoint(self.endpoint)
            await self._build(server)
            async with server:
                ready.set()
                await self._scan()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            raise

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self._serve(ready, failure),),
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(15) or failure:
            raise RuntimeError(f"OPC UA test server did not start: {failure!r}")

    def on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop and wait for it (5 s at most)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def value(self, name: str) -> Any:
        return self.on_loop(self._nodes[name].read_value())

    def end_method_threads(self) -> None:
        """asyncua runs method calls in a thread pool of its own, which its server's stop leaves running: end its
        threads (a fresh pool takes the next call)."""
        if self._server is None:
            return
        service = self._server.iserver.method_service
        old, service._pool = service._pool, ThreadPoolExecutor()
        old.shutdown(wait=True)

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.end_method_threads()
        self._loop.close()
        self._thread = None
