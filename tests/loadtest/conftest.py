"""The embedded server (``create_embedded_app`` under uvicorn) on a pre-bound loopback port,
in this process, for ``stagecast loadtest`` runs (which go in subprocesses)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from sfu.ice import reset_host_candidates
from stagecast.bus.memory import MemoryBus
from stagecast.embedded import create_embedded_app
from stagecast.settings import Settings

API_KEY = "loadtest-key"
API_SECRET = "loadtest-secret-0123456789abcdef-0123456789abcdef"


@dataclass
class Server:
    url: str
    api_key: str = API_KEY
    api_secret: str = API_SECRET


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
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
    config = uvicorn.Config(
        app, log_config=None, lifespan="on", ws="websockets-sansio", timeout_graceful_shutdown=3
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(400):
                if task.done():
                    task.result()
                ready = uv.started and app.state.sfu_node.started
                if ready and (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the embedded server never became ready")
        yield Server(url)
    finally:
        uv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        await bus.close()
        sock.close()
        reset_host_candidates()
