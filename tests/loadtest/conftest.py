"""The embedded server (``create_embedded_app`` under uvicorn) on a pre-bound loopback port,
in this process, for ``stagecast loadtest`` runs (which go in subprocesses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sfu.ice import reset_host_candidates
from stagecast.bus.memory import MemoryBus
from stagecast.embedded import create_embedded_app
from stagecast.settings import Settings
from tests.support import loopback_socket, serve, socket_url

API_KEY = "loadtest-key"
API_SECRET = "loadtest-secret-0123456789abcdef-0123456789abcdef"


@dataclass
class Server:
    url: str
    api_key: str = API_KEY
    api_secret: str = API_SECRET


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    sock = loopback_socket()
    url = socket_url(sock)
    settings = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        data_dir=tmp_path / "data",
        dev_mode=True,
        public_url=url,
        sfu_announced_address="127.0.0.1",
        node_heartbeat_seconds=0.5,
    )
    bus = MemoryBus()
    app = create_embedded_app(settings, bus=bus)
    try:
        async with serve(app, sock), httpx.AsyncClient(base_url=url) as http:
            for _ in range(400):
                ready = app.state.sfu_node.started
                if ready and (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the embedded server never became ready")
            yield Server(url)
    finally:
        await bus.close()
        sock.close()
        reset_host_candidates()
