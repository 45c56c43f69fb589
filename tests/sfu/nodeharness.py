"""Run an SfuNode's ASGI app with uvicorn on a free loopback port, and mint SFU tokens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from sfu.node import SfuNode, create_sfu_app
from stagecast import protocol
from stagecast.bus import Bus, Job
from stagecast.settings import ApiKey, Settings
from stagecast.tokens import KeyRing, SfuGrant

HOST_CAPS = frozenset({"send-audio", "send-video", "join-backstage"})
KEYRING = KeyRing([ApiKey("k", "s" * 32)])


def grant(
    cid: str = "livestream:test",
    user: str = "alice",
    *,
    caps: frozenset[str] = frozenset(),
    role: str = "user",
    backstage: bool = True,
    hidden: bool = False,
    participant_id: str | None = None,
) -> SfuGrant:
    return SfuGrant(
        cid=cid,
        user_id=user,
        session_id="sess-1",
        participant_id=participant_id or f"{user}-{uuid.uuid4().hex[:8]}",
        role=role,
        capabilities=caps,
        name=user.title(),
        hidden=hidden,
        backstage_allowed=backstage,
    )


def token(g: SfuGrant, ttl: float = 300, keyring: KeyRing = KEYRING) -> str:
    return keyring.sfu_token(g, ttl)


def host_token(cid: str = "livestream:test", user: str = "host", **kw: Any) -> str:
    return token(grant(cid, user, caps=HOST_CAPS, role="host", **kw))


def viewer_token(cid: str = "livestream:test", user: str = "viewer", **kw: Any) -> str:
    return token(grant(cid, user, **kw))


class RunningNode:
    def __init__(self, node: SfuNode, server: uvicorn.Server, port: int) -> None:
        self.node = node
        self.server = server
        self.port = port
        self.ws_url = node.ws_url
        self.bus = node.bus

    async def events(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Claim (and complete) queued SFU reports until ``count`` are had or time is up."""
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            job: Job | None = await self.bus.claim(protocol.SFU_EVENTS, 30, min(remaining, 0.5))
            if job is not None:
                await self.bus.complete(job)
                out.append(job.payload)
        return out

    async def wait_event(
        self, seen: list[dict[str, Any]], type_: str, timeout: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        """Claim reports into ``seen`` until one of ``type_`` matching ``match`` shows up."""

        def found() -> dict[str, Any] | None:
            for event in seen:
                if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (hit := found()) is None:
            if loop.time() > deadline:
                raise AssertionError(f"no {type_} {match} in {[e['type'] for e in seen]}")
            seen.extend(await self.events(1, 0.5))
        return hit


@asynccontextmanager
async def running_node(bus: Bus, **node_kwargs: Any) -> AsyncIterator[RunningNode]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(
        node_id=f"sfu-test-{uuid.uuid4().hex[:6]}",
        node_heartbeat_seconds=0.2,
        node_ttl_seconds=1.0,
        sfu_capacity=node_kwargs.pop("capacity", 50),
    )
    node = SfuNode(settings, bus, KEYRING, f"http://127.0.0.1:{port}", **node_kwargs)
    app = create_sfu_app(node, lifespan=False)
    config = uvicorn.Config(
        app, log_config=None, lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    await node.start()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        yield RunningNode(node, server, port)
    finally:
        await asyncio.wait_for(node.stop(drain=False), 15)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()
