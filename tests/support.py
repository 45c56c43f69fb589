"""Helpers the test modules share: the real services they run against, and the rule for a
missing one (skipped with the reason; under CI, ``CI=true``, a failure)."""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("STAGECAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "STAGECAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def require(available: bool, reason: str) -> None:
    """Skip (or, under CI, fail) a test whose real dependency is missing."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
