"""The events WebSocket ``/v1/events``: authentication, watching, the events of a call's life,
health checks, coalesced participant counts, and two coordinators sharing one Redis bus."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.events import EventHub
from stagecast.bus.memory import MemoryBus
from stagecast.bus.redis import RedisBus
from stagecast.protocol import EVENTS
from stagecast.settings import ApiKey
from stagecast.tokens import KeyRing, SfuGrant
from tests.server.conftest import Stack, run_stack
from tests.server.helpers import report, wait_for
from tests.support import REDIS_URL, port_open, require

# For what does not depend on the database, SQLite is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


@asynccontextmanager
async def events_socket(
    stack: Stack, token: str | None = None, *, query: bool = False, ok: bool = True
) -> AsyncIterator[ClientConnection]:
    """An events WebSocket; with ``ok``, ``connection.ok`` has been read already."""
    url = stack.url.replace("http://", "ws://", 1) + "/v1/events"
    headers = {}
    if token is not None and query:
        url += f"?token={token}"
    elif token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        if ok:
            first = await receive(ws)
            assert first["type"] == "connection.ok", first
        yield ws


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def next_of(
    ws: ClientConnection, event_type: str, timeout: float = 5.0, seen: list[str] | None = None
) -> dict[str, Any]:
    """The next message of ``event_type``; the types skipped on the way go to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {event_type} within {timeout} s; saw {seen}")
        message = await receive(ws, left)
        if message["type"] == event_type:
            return message
        if seen is not None:
            seen.append(message["type"])


async def send(ws: ClientConnection, message: Any) -> None:
    await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))


async def watch(ws: ClientConnection, *cids: str) -> dict[str, Any]:
    await send(ws, {"type": "watch", "cids": list(cids)})
    return await next_of(ws, "watch.ok")


def assert_envelope(event: dict[str, Any], event_type: str, cid: str) -> None:
    assert event["type"] == event_type, event
    assert event["cid"] == cid, event
    assert isinstance(event["created_at"], str) and RFC3339_UTC.match(event["created_at"]), event


async def create_call(stack: Stack, cid: str, user: str = "hostess") -> None:
    call_type, call_id = cid.split(":")
    created = await stack.http.post(f"/v1/calls/{call_type}/{call_id}", headers=stack.auth(user))
    assert created.status_code == 201, created.text


# Connecting


@sqlite_only
async def test_token_in_header_or_query(stack: Stack) -> None:
    token = stack.token("viewer")
    ids = []
    for query in (False, True):
        async with events_socket(stack, token, query=query, ok=False) as ws:
            first = await receive(ws)
            assert first["type"] == "connection.ok"
            assert isinstance(first["connection_id"], str) and first["connection_id"]
            ids.append(first["connection_id"])
    assert ids[0] != ids[1]


@sqlite_only
async def test_bad_token_gets_an_error_then_close(stack: Stack) -> None:
    wrong_secret = KeyRing([ApiKey("test-key", "x" * 40)]).user_token("viewer")
    sfu_token = stack.keyring.sfu_token(
        SfuGrant("livestream:x", "viewer", "s", "p", "user", frozenset()), 60
    )
    base = stack.url.replace("http://", "ws://", 1) + "/v1/events"
    cases: list[tuple[str, dict[str, str], str]] = [
        (base, {}, "unauthenticated"),
        (base + "?token=not-a-jwt", {}, "unauthenticated"),
        (base + f"?token={wrong_secret}", {}, "unauthenticated"),
        (base, {"authorization": f"Bearer {wrong_secret}"}, "unauthenticated"),
        (base, {"authorization": "Basic dXNlcjpwYXNz"}, "unauthenticated"),
        (base + f"?token={sfu_token}", {}, "unauthenticated"),
        (base + f"?token={stack.token('viewer', ttl_seconds=-60)}", {}, "token_expired"),
    ]
    for url, headers, code in cases:
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            message = await receive(ws)
            assert message["type"] == "error", message
            assert message["error"]["code"] == code, (url, message)
            assert message["error"]["message"]
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            assert ws.close_code == 4401


# Watching


async def test_watch_receives_the_events_of_a_call(stack: Stack) -> None:
    cid, path = "livestream:ev", "/v1/calls/livestream/ev"
    http, host = stack.http, stack.auth("hostess")
    await create_call(stack, cid)
    async with events_socket(stack, stack.token("fan"), query=True) as ws:
        await send(ws, {"type": "watch", "cids": [cid]})
        assert (await receive(ws)) == {"type": "watch.ok", "cids": [cid]}

        async def expect(event_type: str) -> dict[str, Any]:
            event = await next_of(ws, event_type)
            assert_envelope(event, event_type, cid)
            return event

        assert (await http.patch(path, headers=host, json={"custom": {"t": 1}})).status_code == 200
        updated = await expect("call.updated")
        assert updated["call"]["custom"] == {"t": 1} and updated["call"]["cid"] == cid

        members = f"{path}/members"
        upsert = {"upsert": [{"user_id": "cohost", "role": "host"}]}
        assert (await http.post(members, headers=host, json=upsert)).status_code == 200
        added = await expect("call.member_added")
        assert added["member"] == {"user_id": "cohost", "role": "host"}
        upsert = {"upsert": [{"user_id": "cohost", "role": "moderator"}]}
        assert (await http.post(members, headers=host, json=upsert)).status_code == 200
        assert (await expect("call.member_updated"))["member"]["role"] == "moderator"
        remove = {"remove": ["cohost"]}
        assert (await http.post(members, headers=host, json=remove)).status_code == 200
        assert (await expect("call.member_removed"))["member"]["user_id"] == "cohost"

        joined = await http.post(f"{path}/join", headers=host)
        assert joined.status_code == 200, joined.text
        sfu_token = joined.json()["credentials"]["token"]
        session_id = stack.keyring.sfu_grant(sfu_token).session_id
        await report(stack.bus, stack.keyring, sfu_token, "participant_joined")
        started = await expect("call.session_started")
        assert started["session_id"] == session_id
        participant = await expect("call.session_participant_joined")
        assert participant["session_id"] == session_id
        assert participant["participant"]["user_id"] == "hostess"
        assert participant["participant"]["role"] == "host"
        count = await expect("call.participant_count_updated")
        assert count["participant_count"] == 1
        assert count["participant_count_by_role"] == {"host": 1}

        assert (await http.post(f"{path}/go-live", headers=host)).status_code == 200
        live = await expect("call.live_started")
        assert live["call"]["backstage"] is False and live["call"]["live_started_at"]
        assert (await http.post(f"{path}/stop-live", headers=host)).status_code == 200
        assert (await expect("call.live_stopped"))["call"]["backstage"] is True

        await report(stack.bus, stack.keyring, sfu_token, "participant_left")
        left = await expect("call.session_participant_left")
        assert left["participant"]["user_id"] == "hostess" and left["reason"] == "left"
        # Coalesced: the next count goes out a second after the previous one.
        assert (await expect("call.participant_count_updated"))["participant_count"] == 0

        assert (await http.post(f"{path}/end", headers=host)).status_code == 200
        ended = await expect("call.ended")
        assert ended["call"]["ended_at"] is not None
        assert (await expect("call.session_ended"))["session_id"] == session_id


@sqlite_only
async def test_server_token_watches_every_call(stack: Stack) -> None:
    async with events_socket(stack, stack.keyring.server_token()) as ws:
        assert (await watch(ws, "*"))["cids"] == []
        await create_call(stack, "default:any-1")
        created = await next_of(ws, "call.created")
        assert_envelope(created, "call.created", "default:any-1")
        assert created["members"] == [{"user_id": "hostess", "role": "host"}]
    # A user may not watch everything.
    async with events_socket(stack, stack.token("fan")) as ws:
        await send(ws, {"type": "watch", "cids": ["*"]})
        assert (await next_of(ws, "error"))["error"]["code"] == "invalid_request"
        await create_call(stack, "default:any-2")
        assert (await next_of(ws, "watch.ok"))["cids"] == []
        await fence_nothing_else(stack, ws)


async def fence_nothing_else(stack: Stack, ws: ClientConnection) -> None:
    """Assert the socket receives nothing but a marker event sent through the bus now:
    events reach a watcher in order, so anything published before shows up first."""
    marker = f"default:fence-{uuid.uuid4().hex[:8]}"
    await create_call(stack, marker)
    await send(ws, {"type": "watch", "cids": [marker]})
    await stack.http.patch(
        f"/v1/calls/{marker.replace(':', '/')}", headers=stack.auth("hostess"), json={}
    )
    while True:
        message = await receive(ws)
        if message["type"] == "watch.ok" and marker in message["cids"]:
            continue
        assert message["type"] == "call.updated" and message["cid"] == marker, message
        return


async def test_watching_a_call_the_token_may_not_read(stack: Stack) -> None:
    await create_call(stack, "livestream:secret")
    await create_call(stack, "livestream:open")
    token = stack.token("fan", call_cids=["livestream:open"])
    async with events_socket(stack, token) as ws:
        await send(ws, {"type": "watch", "cids": ["livestream:secret", "livestream:open"]})
        error = await receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "forbidden", error
        assert error["error"]["details"]["cid"] == "livestream:secret"
        assert (await receive(ws)) == {"type": "watch.ok", "cids": ["livestream:open"]}
        # Outside its calls, the token learns nothing, not even whether a call exists.
        await send(ws, {"type": "watch", "cids": ["livestream:nope", "no-colon"]})
        assert (await receive(ws))["error"]["code"] == "forbidden"
        assert (await receive(ws))["error"]["code"] == "invalid_request"
        assert (await receive(ws))["type"] == "watch.ok"

        host = stack.auth("hostess")
        await stack.http.post("/v1/calls/livestream/secret/go-live", headers=host)
        await stack.http.post("/v1/calls/livestream/open/go-live", headers=host)
        # The refused call's event never arrives; the allowed call's does.
        event = await receive(ws)
        assert event["type"] == "call.live_started" and event["cid"] == "livestream:open", event
    async with events_socket(stack, stack.token("fan")) as ws:
        await send(ws, {"type": "watch", "cids": ["livestream:nope"]})
        assert (await receive(ws))["error"]["code"] == "not_found"


@sqlite_only
async def test_unwatch_stops_the_events(stack: Stack) -> None:
    await create_call(stack, "livestream:a")
    await create_call(stack, "livestream:b")
    host = stack.auth("hostess")
    async with events_socket(stack, stack.token("fan")) as ws:
        assert (await watch(ws, "livestream:a", "livestream:b"))["cids"] == [
            "livestream:a",
            "livestream:b",
        ]
        await stack.http.post("/v1/calls/livestream/a/go-live", headers=host)
        assert (await receive(ws))["cid"] == "livestream:a"
        await send(ws, {"type": "unwatch", "cids": ["livestream:a"]})
        assert (await receive(ws)) == {"type": "unwatch.ok", "cids": ["livestream:b"]}
        await stack.http.post("/v1/calls/livestream/a/stop-live", headers=host)
        await stack.http.post("/v1/calls/livestream/b/go-live", headers=host)
        event = await receive(ws)
        assert event["type"] == "call.live_started" and event["cid"] == "livestream:b", event


GARBAGE: list[str | bytes] = [
    "not json",
    "[1, 2]",
    "42",
    "null",
    '{"cids": ["livestream:g"]}',
    '{"type": "dance"}',
    '{"type": ["watch"]}',
    '{"type": "watch", "cids": "livestream:g"}',
    '{"type": "watch", "cids": [1]}',
    "x" * (64 * 1024 + 1),
    b"\x00\x01binary",
]


@sqlite_only
async def test_garbage_gets_an_error_and_the_connection_stays_up(stack: Stack) -> None:
    await create_call(stack, "livestream:g")
    async with events_socket(stack, stack.token("fan")) as ws:
        for garbage in GARBAGE:
            await send(ws, garbage)
            error = await receive(ws)
            assert error["type"] == "error", (garbage, error)
            assert error["error"]["code"] == "invalid_request", (garbage, error)
            assert error["error"]["message"]
        assert (await watch(ws, "livestream:g"))["cids"] == ["livestream:g"]
        await stack.http.post("/v1/calls/livestream/g/go-live", headers=stack.auth("hostess"))
        assert (await next_of(ws, "call.live_started"))["cid"] == "livestream:g"


@sqlite_only
async def test_health_check_arrives_on_an_idle_connection(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.routers.events

    assert server.routers.events.HEALTH_CHECK_SECONDS == 10.0  # the contract's interval
    monkeypatch.setattr(server.routers.events, "HEALTH_CHECK_SECONDS", 0.2)
    async with events_socket(stack, stack.token("fan"), ok=False) as ws:
        connection_id = (await receive(ws))["connection_id"]
        started = time.monotonic()
        for _ in range(3):
            check = await receive(ws, timeout=2)
            assert check == {"type": "health.check", "connection_id": connection_id}
        assert time.monotonic() - started >= 0.5
        # The client may send one too; it is accepted silently.
        await send(ws, {"type": "health.check"})
        assert (await receive(ws, timeout=2))["type"] == "health.check"


# Participant counts


async def _join_many(stack: Stack, cid: str, n: int) -> list[str]:
    """SFU tokens of ``n`` distinct participants in the call's session."""
    call_type, call_id = cid.split(":")
    joined = await stack.http.post(
        f"/v1/calls/{call_type}/{call_id}/join", headers=stack.auth("hostess")
    )
    assert joined.status_code == 200, joined.text
    grant = stack.keyring.sfu_grant(joined.json()["credentials"]["token"])
    return [
        stack.keyring.sfu_token(
            dataclasses.replace(grant, user_id=f"viewer-{n}", participant_id=f"p-{n}", role="user"),
            600,
        )
        for n in range(n)
    ]


async def test_participant_count_is_coalesced_to_one_a_second(stack: Stack) -> None:
    cid = "livestream:burst"
    await create_call(stack, cid)
    await stack.http.post("/v1/calls/livestream/burst/go-live", headers=stack.auth("hostess"))
    tokens = await _join_many(stack, cid, 30)
    async with events_socket(stack, stack.token("fan")) as ws:
        await watch(ws, cid)
        started = time.monotonic()
        for token in tokens:
            await report(stack.bus, stack.keyring, token, "participant_joined")
        counts: list[tuple[float, int]] = []
        joins = 0
        while True:
            try:
                event = await receive(ws, timeout=1.5)
            except TimeoutError:
                break  # quiet for longer than the coalescing interval: all sent
            if event["type"] == "call.participant_count_updated":
                counts.append((time.monotonic() - started, event["participant_count"]))
            elif event["type"] == "call.session_participant_joined":
                joins += 1
    assert joins == 30
    assert counts, "no count update"
    assert len([at for at, _ in counts if at < 1.2]) <= 2, counts
    assert counts[-1][1] == 30, counts
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(counts)]
    assert all(gap > 0.8 for gap in gaps), counts


async def test_a_count_change_while_the_count_is_sent_is_not_lost() -> None:
    """A change that lands while the coalesced count is being read gets its own update."""
    bus = MemoryBus()
    hub = EventHub(bus, [], "s" * 32, 1, now_iso=lambda: "2026-11-24T12:00:00Z")
    state = {"count": 1}
    reading = asyncio.Event()
    release = asyncio.Event()

    async def counts() -> dict[str, Any]:
        value = state["count"]  # read before the change below commits
        reading.set()
        await release.wait()
        return {"participant_count": value}

    async with bus.subscribe(EVENTS) as subscription:
        hub.count_changed("default:c", counts)
        await asyncio.wait_for(reading.wait(), 2)
        state["count"] = 2  # another participant joins meanwhile
        hub.count_changed("default:c", counts)
        release.set()
        _, first = await subscription.get(timeout=2)
        assert first["participant_count"] == 1
        _, second = await subscription.get(timeout=3)
        assert second["participant_count"] == 2
    await bus.close()


# Two coordinators, one Redis bus, one database


async def test_two_coordinators_share_the_redis_bus(database_url: str) -> None:
    require(port_open("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    bus_a = RedisBus(REDIS_URL, namespace=namespace)
    bus_b = RedisBus(REDIS_URL, namespace=namespace)
    try:
        async with run_stack(database_url, bus=bus_a) as a, run_stack(database_url, bus=bus_b) as b:
            await a.register_node()
            cid = "livestream:shared"
            await create_call(a, cid)
            async with events_socket(b, b.token("fan")) as ws:
                await watch(ws, cid)
                live = await a.http.post(
                    "/v1/calls/livestream/shared/go-live", headers=a.auth("hostess")
                )
                assert live.status_code == 200, live.text
                event = await receive(ws)
                assert_envelope(event, "call.live_started", cid)

                # Each report is applied by exactly one of the two coordinators.
                tokens = await _join_many(a, cid, 6)
                for token in tokens:
                    await report(a.bus, a.keyring, token, "participant_joined")
                # A repeated report changes nothing.
                await report(b.bus, b.keyring, tokens[0], "participant_joined")
                await wait_for(
                    b.http,
                    "/v1/calls/livestream/shared/participants",
                    b.auth("hostess"),
                    lambda body: body["session"]["participant_count"] == 6,
                )
                joined: list[str] = []
                while True:
                    try:
                        message = await receive(ws, timeout=1.2)
                    except TimeoutError:
                        break
                    if message["type"] == "call.session_participant_joined":
                        joined.append(message["participant"]["participant_id"])
                    elif message["type"] == "call.session_started":
                        joined.append("session_started")
                assert sorted(joined) == sorted(
                    ["session_started", *(f"p-{n}" for n in range(6))]
                ), joined
    finally:
        await bus_a.close()
        await bus_b.close()
