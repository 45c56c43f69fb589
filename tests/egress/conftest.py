"""Fixtures for the egress tests: the embedded server (with or without its egress worker),
a host publishing synthetic media, ffprobe."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sfu.ice import reset_host_candidates
from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.client import ApiClient, SfuConnection, SyntheticVideoTrack, ToneAudioTrack
from stagecast.embedded import create_embedded_app
from stagecast.protocol import EVENTS
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys
from tests.support import loopback_socket, require, serve, socket_url

WIDTH, HEIGHT = 640, 360
API_KEY = "egress-key"
API_SECRET = "egress-secret-0123456789abcdef-0123456789abcdef"
CALL_TYPE = "livestream"


@dataclass
class Embedded:
    """A running embedded server and what a test needs to drive it."""

    url: str
    settings: Settings
    keyring: KeyRing
    bus: Bus
    clients: list[ApiClient] = field(default_factory=list)

    def api(self, user_id: str = "server") -> ApiClient:
        """An API client for ``user_id`` (a server token for ``"server"``); closed at the end."""
        token = (
            self.keyring.server_token() if user_id == "server" else self.keyring.user_token(user_id)
        )
        client = ApiClient(self.url, token, timeout=30)
        self.clients.append(client)
        return client

    async def new_show(self, host: str = "host") -> tuple[str, ApiClient]:
        call_id = f"show-{uuid.uuid4().hex[:10]}"
        client = self.api(host)
        await client.get_or_create_call(CALL_TYPE, call_id)
        return call_id, client

    async def connect(self, user_id: str, call_id: str) -> SfuConnection:
        answer = await self.api(user_id).join(CALL_TYPE, call_id)
        credentials = ApiClient.credentials(answer)
        return await SfuConnection.connect(credentials.ws_url, credentials.token)


async def wait_ready(url: str, node: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=url) as http:
        while not ((await http.get("/readyz")).status_code == 200 and node.started):
            if loop.time() > deadline:
                raise RuntimeError("the embedded server never became ready")
            await asyncio.sleep(0.05)


def need_ffprobe() -> None:
    require(
        shutil.which("ffprobe") is not None and shutil.which("ffmpeg") is not None,
        "ffprobe/ffmpeg are not installed",
    )


def ffprobe_sync(target: str | Path, *extra: str) -> dict[str, Any]:
    """ffprobe's JSON view of a file or URL (streams and format)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            *extra,
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def decodes_sync(target: str | Path) -> int:
    """Decode every video frame with ffmpeg; returns how many (errors fail)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.split()[0].strip(","))


@asynccontextmanager
async def run_stack(
    data_dir: Path, *, bus: Bus | None = None, egress_worker: bool = True
) -> AsyncIterator[Embedded]:
    sock = loopback_socket()
    url = socket_url(sock)
    config = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        data_dir=data_dir,
        dev_mode=True,
        public_url=url,
        sfu_announced_address="127.0.0.1",
        node_heartbeat_seconds=0.5,
        rtmp_port=0,
    )
    the_bus = bus or MemoryBus()
    app = create_embedded_app(config, bus=the_bus, egress_worker=egress_worker)
    embedded = Embedded(
        url=url,
        settings=config,
        keyring=KeyRing(load_api_keys(config)),
        bus=the_bus,
    )
    try:
        async with serve(app, sock):
            await wait_ready(url, app.state.sfu_node)
            yield embedded
    finally:
        await asyncio.gather(*(c.aclose() for c in embedded.clients), return_exceptions=True)
        sock.close()
        reset_host_candidates()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Embedded]:
    need_ffprobe()
    async with run_stack(tmp_path) as running:
        yield running


class EventLog:
    """Every API event on the bus while it runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == event_type]

    async def wait(self, event_type: str, count: int = 1, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.of(event_type)) < count:
            if loop.time() > deadline:
                seen = [e["type"] for e in self.events]
                raise AssertionError(f"no {count}x {event_type} within {timeout} s: {seen}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def event_log(bus: Bus) -> AsyncIterator[EventLog]:
    log = EventLog()
    async with bus.subscribe(EVENTS) as subscription:

        async def read() -> None:
            async for _, message in subscription:
                log.events.append(message)

        task = asyncio.create_task(read())
        try:
            yield log
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def publish_host(stack: Embedded, call_id: str, codec: str = "H264") -> SfuConnection:
    conn = await stack.connect("host", call_id)
    await conn.publish(
        audio=ToneAudioTrack(), video=SyntheticVideoTrack(WIDTH, HEIGHT), video_codec=codec
    )
    return conn


async def wait_status(
    stack: Embedded, call_id: str, kind: str, status: str, timeout: float = 20.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await stack.api().get_call("livestream", call_id)
        egress: dict[str, Any] = body["call"]["egress"]
        if egress[kind]["status"] == status:
            return egress
        if loop.time() > deadline:
            raise AssertionError(f"{kind} status stayed {egress[kind]['status']}, not {status}")
        await asyncio.sleep(0.1)


async def ffprobe(target: str | Path, *extra: str) -> dict[str, Any]:
    """:func:`ffprobe_sync` off the event loop (the server under test runs on it)."""
    return await asyncio.to_thread(ffprobe_sync, target, *extra)


async def decodes(target: str | Path) -> int:
    return await asyncio.to_thread(decodes_sync, target)
