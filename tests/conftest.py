"""Shared fixtures: the real services the tests run against.

PostgreSQL and Redis are product paths, so the tests use them for real. On a machine that
lacks one, the tests that need it are skipped with the reason; under CI (``CI=true``) a
missing part fails the run instead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from stagecast.bus import Bus
from stagecast.bus.memory import MemoryBus
from stagecast.bus.redis import RedisBus
from tests.support import REDIS_URL, port_open, require


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """Each bus implementation, the Redis one against the real Redis in its own namespace."""
    instance: Bus
    if request.param == "redis":
        require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
        instance = RedisBus(REDIS_URL, namespace=f"test-{uuid.uuid4().hex[:12]}")
    else:
        instance = MemoryBus()
    yield instance
    await instance.close()
