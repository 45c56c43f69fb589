"""Racing requests: a call is created once, a session is started once, and an answer is only
sent once what it reports is readable. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from stagecast.bus import Subscription
from stagecast.protocol import EVENTS
from tests.server.conftest import Stack

RACERS = 20


async def events_of(
    subscription: Subscription, event_type: str, cid: str, settle: float = 0.5
) -> list[dict[str, Any]]:
    """Every ``event_type`` event for ``cid`` until none has come for ``settle`` seconds."""
    found: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        wait = settle if found else deadline - asyncio.get_running_loop().time()
        try:
            _, event = await subscription.get(timeout=max(wait, 0.01))
        except TimeoutError:
            return found
        if event.get("type") == event_type and event.get("cid") == cid:
            found.append(event)


async def test_racing_get_or_create_creates_the_call_once(stack: Stack) -> None:
    path, cid = "/v1/calls/livestream/race", "livestream:race"
    async with stack.bus.subscribe(EVENTS) as subscription:
        answers = await asyncio.gather(
            *(
                stack.http.post(
                    path,
                    headers=stack.auth(f"racer-{n}"),
                    json={"custom": {"by": f"racer-{n}"}},
                )
                for n in range(RACERS)
            )
        )
        created = await events_of(subscription, "call.created", cid)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * (RACERS - 1) + [201], [
        a.text for a in answers if a.status_code >= 300
    ]
    [winner] = [answer.json() for answer in answers if answer.status_code == 201]
    creator = winner["call"]["created_by"]["id"]
    assert winner["created"] is True
    assert winner["call"]["custom"] == {"by": creator}
    assert [(m["user_id"], m["role"]) for m in winner["members"]] == [(creator, "host")]
    for n, answer in enumerate(answers):
        body = answer.json()
        assert body["created"] is (answer.status_code == 201)
        # Everyone sees the one call the winner made, and their own rights in it.
        assert body["call"]["created_by"]["id"] == creator
        assert body["call"]["created_at"] == winner["call"]["created_at"]
        assert body["call"]["custom"] == {"by": creator}
        hosts = f"racer-{n}" == creator
        assert ("go-live" in body["own_capabilities"]) is hosts
    assert len(created) == 1, created
    assert created[0]["call"]["created_by"] == creator

    members = await stack.http.get(f"{path}/members", headers=stack.auth("server"))
    assert [m["user_id"] for m in members.json()["members"]] == [creator]
    listed = await stack.http.get("/v1/calls", headers=stack.auth("server"))
    assert [item["call"]["cid"] for item in listed.json()["calls"]] == [cid]


async def test_racing_join_with_create_creates_once_and_starts_one_session(stack: Stack) -> None:
    path, cid = "/v1/calls/default/huddle", "default:huddle"
    async with stack.bus.subscribe(EVENTS) as subscription:
        answers = await asyncio.gather(
            *(
                stack.http.post(
                    f"{path}/join", headers=stack.auth(f"racer-{n}"), json={"create": True}
                )
                for n in range(RACERS)
            )
        )
        created = await events_of(subscription, "call.created", cid)
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert sorted(answer.json()["created"] for answer in answers) == [False] * (RACERS - 1) + [True]
    assert len(created) == 1
    sessions = {
        stack.keyring.sfu_grant(a.json()["credentials"]["token"]).session_id for a in answers
    }
    assert len(sessions) == 1


async def test_racing_first_joins_share_one_session(stack: Stack) -> None:
    host = stack.auth("hostess")
    path = "/v1/calls/livestream/first-joins"
    assert (await stack.http.post(path, headers=host)).status_code == 201
    assert (await stack.http.post(f"{path}/go-live", headers=host)).status_code == 200

    joiners = [host] + [stack.auth(f"viewer-{n}") for n in range(RACERS - 1)]
    answers = await asyncio.gather(
        *(stack.http.post(f"{path}/join", headers=headers) for headers in joiners)
    )
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    grants = [stack.keyring.sfu_grant(answer.json()["credentials"]["token"]) for answer in answers]
    assert len({grant.session_id for grant in grants}) == 1
    assert len({grant.participant_id for grant in grants}) == RACERS
    state = await stack.http.get(path, headers=host)
    assert state.json()["call"]["session"]["id"] == grants[0].session_id


async def test_an_answer_is_sent_only_once_its_change_is_readable(stack: Stack) -> None:
    """Create, then act at once, many times in parallel: the call is always there."""

    async def create_then_act(n: int) -> list[httpx.Response]:
        headers = stack.auth(f"host-{n}")
        path = f"/v1/calls/livestream/rw-{n}"
        created = await stack.http.post(path, headers=headers)
        live = await stack.http.post(f"{path}/go-live", headers=headers)
        seen = await stack.http.get(path, headers=stack.auth(f"viewer-{n}"))
        return [created, live, seen]

    for answers in await asyncio.gather(*(create_then_act(n) for n in range(RACERS))):
        created, live, seen = answers
        assert created.status_code == 201, created.text
        assert live.status_code == 200, live.text
        assert seen.status_code == 200 and seen.json()["call"]["backstage"] is False, seen.text


async def test_racing_member_changes_and_lifecycle_never_fail(stack: Stack) -> None:
    """Concurrent writers on one call: every request succeeds or is refused by a rule."""
    host = stack.auth("hostess")
    path = "/v1/calls/livestream/busy"
    assert (await stack.http.post(path, headers=host)).status_code == 201
    requests = []
    for n in range(RACERS // 2):
        requests.append(
            stack.http.post(
                f"{path}/members",
                headers=host,
                json={"upsert": [{"user_id": f"guest-{n % 5}", "role": "moderator"}]},
            )
        )
        requests.append(stack.http.post(f"{path}/{('go-live', 'stop-live')[n % 2]}", headers=host))
        requests.append(stack.http.patch(path, headers=host, json={"custom": {"n": n}}))
    answers = await asyncio.gather(*requests)
    assert all(answer.status_code == 200 for answer in answers), [
        a.text for a in answers if a.status_code != 200
    ]
    members = await stack.http.get(f"{path}/members", headers=host)
    assert sorted(m["user_id"] for m in members.json()["members"]) == sorted(
        ["hostess", *(f"guest-{n}" for n in range(5))]
    )
