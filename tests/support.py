"""Helpers the test modules share: the real services they run against, and the rule for a
missing one (skipped with the reason; under CI, ``CI=true``, a failure)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

# Debian's Chromium, driven by Playwright (never a downloaded browser), with fake camera and
# microphone; loopback ICE candidates need --allow-loopback-in-peer-connection.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]

REDIS_URL = os.environ.get("STAGECAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "STAGECAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def require(available: bool, reason: str) -> None:
    """Skip (or, under CI, fail) a test whose real dependency is missing."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(reason)


def require_chromium() -> None:
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port: bind first when the app must know its own
    URL before it serves (the SFU's ``ws_url``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def socket_url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def serve(
    app: Any, sock: socket.socket | None = None, *, lifespan: str = "on"
) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn in this event loop on ``sock`` (or a free loopback port);
    yields its base URL and stops the server on exit."""
    own_socket = sock is None
    sock = sock or loopback_socket()
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan=lifespan,  # type: ignore[arg-type]
        ws="websockets-sansio",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        if own_socket:
            sock.close()
