"""Helpers for the ingest tests: an embedded server (coordinator + SFU + RTMP ingest) on
free loopback ports, and Debian's ffmpeg as the publisher."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ingest import IngestService
from sfu.ice import reset_host_candidates
from stagecast.bus.memory import MemoryBus
from stagecast.client import ApiClient, SfuConnection
from stagecast.embedded import create_embedded_app
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys
from tests.support import loopback_socket, require, serve, socket_url

API_KEY = "ingest-key"
API_SECRET = "ingest-secret-0123456789abcdef-0123456789abcdef"
CALL_TYPE = "livestream"
FFMPEG = shutil.which("ffmpeg")


def free_port() -> int:
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    url: str
    rtmp_port: int
    keyring: KeyRing
    ingest: IngestService
    clients: list[ApiClient] = field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    def api(self, user_id: str = "server") -> ApiClient:
        token = (
            self.keyring.server_token() if user_id == "server" else self.keyring.user_token(user_id)
        )
        client = ApiClient(self.url, token, timeout=30)
        self.clients.append(client)
        return client

    def key(self, user_id: str, call_id: str, **kwargs: Any) -> str:
        return self.keyring.user_token(user_id, call_cids=[f"{CALL_TYPE}:{call_id}"], **kwargs)

    async def new_show(self, host: str = "host", live: bool = True) -> str:
        call_id = f"show-{uuid.uuid4().hex[:10]}"
        client = self.api(host)
        await client.get_or_create_call(CALL_TYPE, call_id)
        if live:
            await client.go_live(CALL_TYPE, call_id)
        return call_id

    async def viewer(self, user_id: str, call_id: str) -> SfuConnection:
        answer = await self.api(user_id).join(CALL_TYPE, call_id)
        credentials = ApiClient.credentials(answer)
        conn = await SfuConnection.connect(
            credentials.ws_url, credentials.token, ice_servers=credentials.ice_servers
        )
        await conn.subscribe(mode="decode")
        return conn

    async def ffmpeg(
        self, key: str, *, size: str = "640x360", video: tuple[str, ...] = (), seconds: int = 30
    ) -> asyncio.subprocess.Process:
        """``ffmpeg -re`` test pattern + sine as H.264/AAC over RTMP (libx264 defaults unless
        ``video`` adds options)."""
        assert FFMPEG is not None
        process = await asyncio.create_subprocess_exec(
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-g",
            "30",
            *video,
            "-c:a",
            "aac",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self.processes.append(process)
        return process


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), 10)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@asynccontextmanager
async def run_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    require(FFMPEG is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    sock = loopback_socket()
    url = socket_url(sock)
    rtmp_port = free_port()
    settings = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        data_dir=tmp_path,
        dev_mode=True,
        public_url=url,
        sfu_announced_address="127.0.0.1",
        node_heartbeat_seconds=0.5,
        rtmp_port=rtmp_port,
    )
    app = create_embedded_app(settings, bus=MemoryBus())
    try:
        async with serve(app, sock):
            node = app.state.sfu_node
            async with httpx.AsyncClient(base_url=url) as http:
                for _ in range(200):
                    if (await http.get("/readyz")).status_code == 200 and node.started:
                        break
                    await asyncio.sleep(0.05)
            ingest: IngestService = app.state.ingest
            assert ingest.port == rtmp_port
            stack = Stack(url, rtmp_port, KeyRing(load_api_keys(settings)), ingest)
            try:
                yield stack
            finally:
                await asyncio.gather(*(stop_process(p) for p in stack.processes))
                await asyncio.gather(*(c.aclose() for c in stack.clients), return_exceptions=True)
    finally:
        sock.close()
        reset_host_candidates()
