"""Webhooks: every event POSTed once to each configured URL, HMAC-signed with the API secret,
retried with backoff, dropped (and logged) after the last attempt; the secret is never logged."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import server.events
from server.events import EventHub
from stagecast.bus.memory import MemoryBus
from stagecast.bus.redis import RedisBus
from stagecast.logs import JsonFormatter
from tests.server.conftest import API_SECRET, Stack, run_stack, serve
from tests.support import REDIS_URL, port_open, require

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Delivery:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class Receiver:
    """A webhook endpoint that records what it gets and answers ``statuses`` in turn
    (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.deliveries.append(Delivery(time.monotonic(), dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)

    def types(self) -> list[str]:
        return [delivery.event["type"] for delivery in self.deliveries]


@asynccontextmanager
async def receiver(statuses: list[int] | None = None) -> AsyncIterator[Receiver]:
    hook = Receiver(statuses=list(statuses or []))
    app = Starlette(routes=[Route("/hook", hook.endpoint, methods=["POST"])])
    async with serve(app) as url:
        hook.url = url + "/hook"
        yield hook


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_signed(delivery: Delivery, secret: str = API_SECRET) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["x-stagecast-signature"] == expected
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["x-stagecast-event"] == delivery.event["type"]


async def lifecycle(stack: Stack, call_id: str) -> None:
    """call.created, call.live_started, call.live_stopped, call.ended."""
    host = stack.auth("hostess")
    path = f"/v1/calls/livestream/{call_id}"
    assert (await stack.http.post(path, headers=host)).status_code == 201
    for action in ("go-live", "stop-live", "end"):
        answer = await stack.http.post(f"{path}/{action}", headers=host)
        assert answer.status_code == 200, answer.text


LIFECYCLE = ["call.created", "call.live_started", "call.live_stopped", "call.ended"]


async def test_every_event_is_posted_once_to_every_url_and_signed(database_url: str) -> None:
    async with (
        receiver() as first,
        receiver() as second,
        run_stack(database_url, webhook_urls=[first.url, second.url]) as stack,
    ):
        await lifecycle(stack, "hooked")
        for hook in (first, second):
            await until(lambda hook=hook: "call.ended" in hook.types())  # type: ignore[misc]
        await asyncio.sleep(0.3)  # a duplicate would arrive by now
        for hook in (first, second):
            assert sorted(hook.types()) == sorted(LIFECYCLE), hook.types()
            for delivery in hook.deliveries:
                assert_signed(delivery)
                event = delivery.event
                assert event["cid"] == "livestream:hooked"
                assert event["created_at"].startswith("2026-11-24T12:00:00")
                assert event["call"]["cid"] == "livestream:hooked"
            # A forged body does not match the signature.
            forged = hook.deliveries[0].body.replace(b"hooked", b"forged")
            assert hook.deliveries[0].headers["x-stagecast-signature"] != (
                "sha256=" + hmac.new(API_SECRET.encode(), forged, hashlib.sha256).hexdigest()
            )
        # Both URLs got the same signed bytes.
        assert {d.body for d in first.deliveries} == {d.body for d in second.deliveries}


@sqlite_only
async def test_retried_with_backoff_until_accepted(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(server.events, "WEBHOOK_BACKOFF_START_SECONDS", 0.1)
    async with (
        receiver(statuses=[500, 500]) as hook,
        run_stack(database_url, webhook_urls=[hook.url]) as stack,
    ):
        assert (
            await stack.http.post("/v1/calls/default/retry", headers=stack.auth("h"))
        ).status_code == 201
        await until(lambda: len(hook.deliveries) == 3)
        await asyncio.sleep(0.3)
        assert len(hook.deliveries) == 3, hook.types()
        # The same signed event each time.
        assert len({d.body for d in hook.deliveries}) == 1
        for delivery in hook.deliveries:
            assert_signed(delivery)
        first_wait = hook.deliveries[1].at - hook.deliveries[0].at
        second_wait = hook.deliveries[2].at - hook.deliveries[1].at
        assert first_wait >= 0.09 and second_wait >= 0.18, (first_wait, second_wait)
    failures = [r for r in caplog.records if r.getMessage() == "webhook delivery failed"]
    assert [(r.attempt, r.reason) for r in failures] == [(1, "HTTP 500"), (2, "HTTP 500")]
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


@sqlite_only
async def test_dropped_after_the_last_attempt_and_logged(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(server.events, "WEBHOOK_BACKOFF_START_SECONDS", 0.02)
    async with (
        receiver(statuses=[503] * 3) as hook,
        run_stack(database_url, webhook_urls=[hook.url], webhook_max_attempts=3) as stack,
    ):
        await stack.http.post("/v1/calls/default/dropped", headers=stack.auth("h"))
        await until(
            lambda: any(r.getMessage() == "webhook dropped after retries" for r in caplog.records)
        )
        dropped = next(
            r for r in caplog.records if r.getMessage() == "webhook dropped after retries"
        )
        assert dropped.levelno == logging.ERROR
        assert dropped.url == hook.url and dropped.type == "call.created"  # type: ignore[attr-defined]
        assert len(hook.deliveries) == 3
        # Not retried any more; the next event is delivered normally.
        await stack.http.patch("/v1/calls/default/dropped", headers=stack.auth("h"), json={})
        await until(lambda: "call.updated" in hook.types())
        await asyncio.sleep(0.2)
        assert hook.types() == ["call.created"] * 3 + ["call.updated"]


@sqlite_only
async def test_the_secret_never_appears_in_logs(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(server.events, "WEBHOOK_BACKOFF_START_SECONDS", 0.01)
    unreachable = f"http://127.0.0.1:{closed_port()}/hook"
    async with (
        receiver(statuses=[500]) as hook,
        run_stack(
            database_url, webhook_urls=[hook.url, unreachable], webhook_max_attempts=2
        ) as stack,
    ):
        await lifecycle(stack, "logged")
        await until(lambda: hook.types().count("call.ended") == 1)
        await until(
            lambda: (
                sum(r.getMessage() == "webhook dropped after retries" for r in caplog.records)
                == len(LIFECYCLE)
            )
        )
    assert any(getattr(r, "reason", None) == "ConnectError" for r in caplog.records)
    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record)
        assert API_SECRET not in line, line
        assert API_SECRET not in repr(record.__dict__), record


async def test_two_coordinators_deliver_each_event_once(database_url: str) -> None:
    require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    bus_a = RedisBus(REDIS_URL, namespace=namespace)
    bus_b = RedisBus(REDIS_URL, namespace=namespace)
    try:
        async with (
            receiver() as hook,
            run_stack(database_url, bus=bus_a, webhook_urls=[hook.url]) as a,
            run_stack(database_url, bus=bus_b, webhook_urls=[hook.url]) as b,
        ):
            for n in range(3):
                await lifecycle(a if n % 2 else b, f"twice-{n}")
            await until(lambda: len(hook.deliveries) >= 3 * len(LIFECYCLE))
            await asyncio.sleep(0.5)
            seen = Counter((d.event["type"], d.event["cid"]) for d in hook.deliveries)
            assert len(seen) == 3 * len(LIFECYCLE) and set(seen.values()) == {1}, seen
    finally:
        await bus_a.close()
        await bus_b.close()


async def test_a_job_retried_for_long_is_not_taken_by_another_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a coordinator waits between attempts, its lease covers the wait: another
    coordinator must not deliver the same event meanwhile."""
    monkeypatch.setattr(server.events, "WEBHOOK_LEASE_SECONDS", 0.2)
    monkeypatch.setattr(server.events, "WEBHOOK_BACKOFF_START_SECONDS", 0.3)
    bus = MemoryBus()
    async with receiver(statuses=[500]) as hook:
        hubs = [
            EventHub(bus, [hook.url], API_SECRET, 3, now_iso=lambda: "2026-11-24T12:00:00Z")
            for _ in range(2)
        ]
        workers = [asyncio.create_task(hub.run_webhooks()) for hub in hubs]
        try:
            await hubs[0].emit("call.updated", "default:lease")
            await until(lambda: len(hook.deliveries) == 2)
            await asyncio.sleep(0.5)
            assert len(hook.deliveries) == 2, [d.at for d in hook.deliveries]
        finally:
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
    await bus.close()
