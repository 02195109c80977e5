"""InspectionPool: bounded acceptance, timeouts, slots freed when jobs really end."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from lineinspect.http.pool import InspectionPool, PoolFull, PoolTimeout
from lineinspect.http.server import bind_socket, url_of


def test_pool_refuses_at_once_when_workers_and_waiting_line_are_full() -> None:
    release = threading.Event()
    pool = InspectionPool(workers=1, max_waiting=1)
    try:
        running = pool.submit(lambda: release.wait(5))
        waiting = pool.submit(lambda: "waited")
        with pytest.raises(PoolFull, match="1 uploads are being inspected and 1 are waiting"):
            pool.submit(lambda: "refused")
        assert pool.in_flight == 2
        release.set()
        assert running.result(5) is True
        assert waiting.result(5) == "waited"
        assert pool.submit(lambda: "accepted again").result(5) == "accepted again"
    finally:
        release.set()
        pool.shutdown()
    assert pool.in_flight == 0


def test_pool_run_raises_timeout_and_keeps_slot_until_job_ends() -> None:
    release = threading.Event()
    pool = InspectionPool(workers=1, max_waiting=0)
    try:
        with pytest.raises(PoolTimeout, match="not finished within 20 ms"):
            asyncio.run(pool.run(lambda: release.wait(5), timeout_s=0.02))
        assert pool.in_flight == 1  # still running in its thread
        with pytest.raises(PoolFull):
            pool.submit(lambda: None)
    finally:
        release.set()
        pool.shutdown()
    assert pool.in_flight == 0


def test_pool_run_returns_result_and_passes_on_job_errors() -> None:
    pool = InspectionPool(workers=2, max_waiting=0)
    try:
        assert asyncio.run(pool.run(lambda: 41 + 1, timeout_s=5)) == 42

        def broken() -> None:
            raise ValueError("bad image")

        with pytest.raises(ValueError, match="bad image"):
            asyncio.run(pool.run(broken, timeout_s=5))
        assert pool.in_flight == 0
    finally:
        pool.shutdown()


def test_pool_refuses_jobs_after_shutdown() -> None:
    pool = InspectionPool(workers=1, max_waiting=0)
    pool.shutdown()
    with pytest.raises(PoolFull, match="shutting down"):
        pool.submit(lambda: None)


def test_bound_socket_is_tcp_so_served_connections_get_nodelay() -> None:
    # asyncio sets TCP_NODELAY on accepted connections only for IPPROTO_TCP listeners; without it
    # each keep-alive HTTP response stalls ~40 ms on a delayed ACK.
    with bind_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert url_of(sock).startswith("http://127.0.0.1:")
