"""The whole product in one process, as ``stagecast serve`` runs it, for end-to-end tests.

``run_embedded`` starts ``create_embedded_app`` (coordinator + SFU node at ``/sfu``) with
uvicorn on a pre-bound loopback port, so the URLs it hands out (``public_url``, the SFU's
``ws_url``) name the port it really listens on. Clients then go through the coordinator
exactly as an app does: REST, join, the signalling WebSocket, WHIP/WHEP over HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.responses import HTMLResponse, Response

from sfu.ice import reset_host_candidates
from sfu.node import SfuNode
from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.client import ApiClient, SfuConnection
from stagecast.embedded import create_embedded_app
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys
from tests.server.conftest import postgres_template
from tests.support import loopback_socket, serve, socket_url

__all__ = ["postgres_template"]

API_KEY = "e2e-key"
API_SECRET = "e2e-secret-0123456789abcdef-0123456789abcdef"
CALL_TYPE = "livestream"


@dataclass
class Embedded:
    """A running embedded server and what a test needs to drive it."""

    url: str
    settings: Settings
    keyring: KeyRing
    bus: Bus
    node: SfuNode
    clients: list[ApiClient] = field(default_factory=list)

    def token(self, user_id: str, **kwargs: Any) -> str:
        return self.keyring.user_token(user_id, **kwargs)

    def api(self, user_id: str = "server") -> ApiClient:
        """An API client for ``user_id`` (a server token for ``"server"``); closed at the end."""
        token = self.keyring.server_token() if user_id == "server" else self.token(user_id)
        client = ApiClient(self.url, token, timeout=30)
        self.clients.append(client)
        return client

    def auth(self, user_id: str) -> dict[str, str]:
        token = self.keyring.server_token() if user_id == "server" else self.token(user_id)
        return {"authorization": f"Bearer {token}"}

    async def new_show(
        self, host: str = "host", call_id: str | None = None, **create: Any
    ) -> tuple[str, ApiClient]:
        """A livestream created by ``host`` (who becomes its host); its id and host client."""
        call_id = call_id or f"show-{uuid.uuid4().hex[:10]}"
        client = self.api(host)
        await client.get_or_create_call(CALL_TYPE, call_id, **create)
        return call_id, client

    async def connect(self, user_id: str, call_id: str, **join: Any) -> SfuConnection:
        """Join through the coordinator and open the signalling WebSocket it names."""
        answer = await self.api(user_id).join(CALL_TYPE, call_id, **join)
        credentials = ApiClient.credentials(answer)
        assert credentials.ws_url.startswith(self.url.replace("http", "ws", 1))
        return await SfuConnection.connect(
            credentials.ws_url, credentials.token, ice_servers=credentials.ice_servers
        )

    async def participant_count(self, call_id: str) -> int:
        body = await self.api().get_call(CALL_TYPE, call_id)
        session = body["call"]["session"]
        return 0 if session is None else int(session["participant_count"])

    async def wait_count(self, call_id: str, expected: int, timeout: float = 10.0) -> None:
        """Poll ``GET call`` until ``session.participant_count`` is ``expected``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (count := await self.participant_count(call_id)) != expected:
            if loop.time() > deadline:
                raise AssertionError(f"participant_count stayed {count}, expected {expected}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def run_embedded(
    data_dir: Path,
    *,
    bus: Bus | None = None,
    database_url: str | None = None,
    serve_pages: bool = False,
    **settings: Any,
) -> AsyncIterator[Embedded]:
    """``stagecast serve`` in this process: coordinator + SFU node, SQLite in ``data_dir``
    unless ``database_url`` is given, the in-process bus unless ``bus`` is given. With
    ``serve_pages``, the test pages of ``tests/e2e/pages`` are served at ``/e2e-pages/``
    (same origin as the API, as a web app would be)."""
    sock = loopback_socket()
    url = socket_url(sock)
    try:
        config = _settings(data_dir, url, database_url, settings)
    except BaseException:
        sock.close()
        raise
    the_bus = bus or MemoryBus()
    app = create_embedded_app(config, bus=the_bus)
    if serve_pages:
        app.add_api_route("/e2e-pages/{name}", _page, include_in_schema=False)
    embedded = Embedded(
        url=url,
        settings=config,
        keyring=KeyRing(load_api_keys(config)),
        bus=the_bus,
        node=app.state.sfu_node,
    )
    try:
        async with serve(app, sock):
            await wait_ready(url, embedded.node)
            yield embedded
    finally:
        await asyncio.gather(*(c.aclose() for c in embedded.clients), return_exceptions=True)
        sock.close()
        reset_host_candidates()


def _settings(
    data_dir: Path, url: str, database_url: str | None, overrides: dict[str, Any]
) -> Settings:
    return Settings(
        **{
            "api_key": API_KEY,
            "api_secret": API_SECRET,
            "data_dir": data_dir,
            "database_url": database_url,
            "dev_mode": True,
            "public_url": url,
            "sfu_announced_address": "127.0.0.1",  # one loopback host candidate each
            "node_heartbeat_seconds": 0.5,
            "rtmp_port": 0,  # no RTMP ingest unless a test asks for it
            **overrides,
        }
    )


PAGES = Path(__file__).parent / "pages"


async def _page(name: str) -> Response:
    path = PAGES / name
    if "/" in name or not path.is_file():
        return Response(status_code=404)
    return HTMLResponse(path.read_text())


async def wait_ready(url: str, node: SfuNode, timeout: float = 10.0) -> None:
    """Until the node is in the registry (the coordinator can place participants)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            ready = (await http.get("/readyz")).status_code == 200
            if ready and node.started:
                return
            if loop.time() > deadline:
                raise RuntimeError("the embedded server never became ready")
            await asyncio.sleep(0.05)


def vanish(conn: SfuConnection) -> None:
    """Kill a client as if its process died: no ``leave``, no WebSocket close frame, no
    DTLS close; its UDP sockets go silent."""
    pcs = [pc for pc in (conn.publisher_pc, conn.viewer.pc if conn.viewer else None) if pc]
    for pc in pcs:
        for transceiver in pc.getTransceivers():
            connection = transceiver.receiver.transport.transport._connection
            for protocol in list(connection._protocols):
                if protocol.transport is not None:
                    protocol.transport.abort()
    conn.ws.transport.abort()
