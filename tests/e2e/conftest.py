"""Fixtures for the end-to-end tests (the stack itself is in ``tests/e2e/stack.py``)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.bus.redis import RedisBus
from tests.e2e.stack import Embedded, run_embedded
from tests.server.conftest import postgres_template
from tests.support import REDIS_URL, port_open, require

__all__ = ["postgres_template"]


@pytest.fixture(params=["memory", "redis"])
async def any_bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """The in-process bus, and the real Redis one in a namespace of its own."""
    instance: Bus
    if request.param == "redis":
        require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
        instance = RedisBus(REDIS_URL, namespace=f"e2e-{uuid.uuid4().hex[:12]}")
    else:
        instance = MemoryBus()
    yield instance
    await instance.close()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Embedded]:
    """The embedded server on SQLite with the in-process bus."""
    async with run_embedded(tmp_path) as running:
        yield running


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """``closing(x)`` registers a connection, viewer or peer connection to close at the end
    of the test, whatever happens; returns ``x``."""
    items: list[Any] = []

    def add(item: Any) -> Any:
        items.append(item)
        return item

    yield add
    await asyncio.wait_for(
        asyncio.gather(*(_close(item) for item in reversed(items)), return_exceptions=True), 20
    )


async def _close(item: Any) -> None:
    result = item.close()
    if asyncio.iscoroutine(result):
        await result


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a leaked resource's warning names its test."""
    yield
    gc.collect()
