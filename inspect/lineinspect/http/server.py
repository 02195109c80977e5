"""Serving an app with uvicorn on a socket bound beforehand.

Binding first lets port 0 (any free port) work and lets the caller print the
real URL before serving.
"""

from __future__ import annotations

import signal
import socket
import threading

import uvicorn
from fastapi import FastAPI

from lineinspect.errors import ConfigError


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one). Raises ConfigError naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, not when uvicorn starts: a client that connects as soon as the URL is
        # printed waits in the backlog instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port / http.port "
            "or stop the program using it"
        ) from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def make_server(app: FastAPI, *, log_level: str = "info", access_log: bool = True) -> uvicorn.Server:
    """A uvicorn server for `app`; `server.run(sockets=[sock])` serves until SIGINT/SIGTERM or should_exit."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def serve(server: uvicorn.Server, sock: socket.socket) -> signal.Signals | None:
    """Serve on `sock` until SIGINT/SIGTERM (or `server.should_exit`); the signal that stopped it.

    uvicorn shuts down gracefully on either signal and then re-raises it to
    the handler it found; the handler installed here only records it, so the
    caller returns normally (exit status 0) after a requested stop.
    """
    received: list[int] = []

    def record(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return signal.Signals(received[0]) if received else None
