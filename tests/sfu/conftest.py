"""Fixtures for the SFU tests: loopback ICE and a harness that cleans up after itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from peers import Harness

from sfu.ice import configure_host_candidates, reset_host_candidates


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    """Gather only 127.0.0.1 host candidates (aioice skips loopback by default)."""
    configure_host_candidates(["127.0.0.1"])
    yield
    reset_host_candidates()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        await asyncio.wait_for(h.close(), 15)
