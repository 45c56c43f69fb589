"""A real coordinator on a loopback port, against SQLite or the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from server.app import create_app
from server.db import upgrade
from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.nodes import NodeInfo, heartbeat
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, load_api_keys
from tests.support import POSTGRES_URL, port_open, require, serve

API_KEY = "test-key"
API_SECRET = "test-secret-0123456789abcdef-0123456789"


class FakeClock:
    """The coordinator's wall clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _admin_dsn(database: str = "postgres") -> str:
    return POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + (
        "/" + database
    )


async def _postgres_admin(sql: str) -> None:
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database migrated once; each test gets a fresh copy of it."""
    require(port_open("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    name = f"stagecast_tmpl_{uuid.uuid4().hex[:10]}"

    def create() -> None:
        asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
        upgrade(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)

    def drop() -> None:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    # Fixtures may be set up while an event loop runs: keep asyncio.run off its thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(create).result()
    yield name
    with ThreadPoolExecutor(1) as pool:
        pool.submit(drop).result()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'stagecast.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    name = f"stagecast_test_{uuid.uuid4().hex[:10]}"
    await _postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    """A running coordinator and what a test needs to drive it."""

    url: str
    http: httpx.AsyncClient
    keyring: KeyRing
    bus: Bus
    clock: FakeClock
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **kwargs: Any) -> str:
        return self.keyring.user_token(user_id, **kwargs)

    def auth(self, user_id: str, **kwargs: Any) -> dict[str, str]:
        token = (
            self.keyring.server_token() if user_id == "server" else self.token(user_id, **kwargs)
        )
        return {"authorization": f"Bearer {token}"}

    async def register_node(self, node_id: str = "sfu-test", capacity: int = 100) -> NodeInfo:
        """Put an SFU node in the registry, as a running node's heartbeat does."""
        node = NodeInfo(
            id=node_id,
            url=f"http://127.0.0.1:1/{node_id}",
            ws_url=f"ws://127.0.0.1:1/{node_id}/ws",
            capacity=capacity,
        )
        await heartbeat(self.bus, node, ttl_seconds=300)
        return node


@asynccontextmanager
async def run_stack(
    database_url: str, bus: Bus | None = None, **settings: Any
) -> AsyncIterator[Stack]:
    the_bus = bus or MemoryBus()
    clock = FakeClock()
    config = Settings(
        api_key=API_KEY,
        api_secret=API_SECRET,
        database_url=database_url,
        dev_mode=True,
        **settings,
    )
    app = create_app(config, bus=the_bus, clock=clock)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Stack(
            url=url,
            http=http,
            keyring=KeyRing(load_api_keys(config)),
            bus=the_bus,
            clock=clock,
            settings=config,
        )


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with run_stack(database_url) as running:
        await running.register_node()
        yield running
