"""The whole livestream lifecycle over HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from tests.server.conftest import Stack
from tests.server.helpers import error_code, report, wait_for


async def test_livestream_lifecycle(stack: Stack) -> None:
    http, host, viewer = stack.http, stack.auth("hostess"), stack.auth("viewer-1")
    starts_at = stack.clock.now + timedelta(minutes=10)
    created = await http.post(
        "/v1/calls/livestream/show-1",
        headers=host,
        json={
            "starts_at": starts_at.isoformat(),
            "settings_override": {"backstage": {"join_ahead_time_seconds": 120}},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    call = body["call"]
    assert body["created"] is True
    assert call["cid"] == "livestream:show-1" and call["backstage"] is True
    assert call["created_by"]["id"] == "hostess"
    assert call["settings"]["backstage"] == {"enabled": True, "join_ahead_time_seconds": 120}
    assert call["session"] is None
    assert call["ingress"]["whip"]["url"].endswith("/v1/calls/livestream/show-1/whip")
    assert body["members"][0]["user_id"] == "hostess" and body["members"][0]["role"] == "host"
    assert "go-live" in body["own_capabilities"]

    # The same request again finds the call.
    again = await http.post("/v1/calls/livestream/show-1", headers=host, json={})
    assert again.status_code == 200 and again.json()["created"] is False

    # A viewer sees the call but may not act on it.
    seen = await http.get("/v1/calls/livestream/show-1", headers=viewer)
    assert seen.status_code == 200
    assert sorted(seen.json()["own_capabilities"]) == ["create-call", "join-call", "read-call"]
    refused = await http.post("/v1/calls/livestream/show-1/join", headers=viewer)
    assert refused.status_code == 403 and error_code(refused) == "call_in_backstage"
    assert refused.json()["error"]["details"]["join_ahead_time_seconds"] == 120

    # The host joins in backstage.
    joined = await http.post("/v1/calls/livestream/show-1/join", headers=host)
    assert joined.status_code == 200, joined.text
    host_credentials = joined.json()["credentials"]
    assert host_credentials["ws_url"].startswith("ws://")
    host_grant = stack.keyring.sfu_grant(host_credentials["token"])
    assert host_grant.cid == "livestream:show-1" and host_grant.role == "host"
    assert host_grant.can_send_video and host_grant.backstage_allowed
    await report(stack.bus, stack.keyring, host_credentials["token"], "participant_joined")
    state = await wait_for(
        http,
        "/v1/calls/livestream/show-1",
        host,
        # The count and the start time commit together, but one GET may read them apart.
        lambda b: (
            (b["call"]["session"] or {}).get("participant_count") == 1
            and b["call"]["session"]["started_at"] is not None
        ),
    )
    assert state["call"]["session"]["participant_count_by_role"] == {"host": 1}
    assert state["call"]["session"]["started_at"] is not None

    # Inside the join-ahead window a viewer may wait in backstage, without media.
    stack.clock.advance(10 * 60 - 119)
    early = await http.post("/v1/calls/livestream/show-1/join", headers=viewer)
    assert early.status_code == 200, early.text
    viewer_grant = stack.keyring.sfu_grant(early.json()["credentials"]["token"])
    assert not viewer_grant.backstage_allowed and not viewer_grant.can_send_video
    assert viewer_grant.session_id == host_grant.session_id
    await report(
        stack.bus, stack.keyring, early.json()["credentials"]["token"], "participant_joined"
    )
    state = await wait_for(
        http,
        "/v1/calls/livestream/show-1/participants",
        host,
        lambda b: b["session"]["participant_count"] == 2,
    )
    assert state["session"]["waiting_count"] == 1
    assert state["session"]["participant_count_by_role"] == {"host": 1, "user": 1}

    # Go live: viewers are no longer waiting.
    live = await http.post("/v1/calls/livestream/show-1/go-live", headers=host)
    assert live.status_code == 200, live.text
    assert live.json()["call"]["backstage"] is False
    assert live.json()["call"]["live_started_at"] is not None
    assert live.json()["call"]["session"]["waiting_count"] == 0
    assert (
        await http.post("/v1/calls/livestream/show-1/go-live", headers=viewer)
    ).status_code == 403
    listed = await http.get("/v1/calls?type=livestream&live=true", headers=viewer)
    assert [c["call"]["cid"] for c in listed.json()["calls"]] == ["livestream:show-1"]

    # A late viewer joins a live call directly; then leaves.
    late = await http.post("/v1/calls/livestream/show-1/join", headers=stack.auth("viewer-2"))
    assert late.status_code == 200
    late_token = late.json()["credentials"]["token"]
    await report(stack.bus, stack.keyring, late_token, "participant_joined")
    await wait_for(
        http,
        "/v1/calls/livestream/show-1/participants",
        host,
        lambda b: b["session"]["participant_count"] == 3,
    )
    await report(stack.bus, stack.keyring, late_token, "participant_left")
    await wait_for(
        http,
        "/v1/calls/livestream/show-1/participants",
        host,
        lambda b: b["session"]["participant_count"] == 2,
    )

    # Stop live: back to backstage; the waiting viewer is waiting again.
    stopped = await http.post("/v1/calls/livestream/show-1/stop-live", headers=host)
    assert stopped.status_code == 200 and stopped.json()["call"]["backstage"] is True
    assert stopped.json()["call"]["session"]["waiting_count"] == 1

    # End: everyone is out; only join-ended-call may still join.
    ended = await http.post("/v1/calls/livestream/show-1/end", headers=host)
    assert ended.status_code == 200, ended.text
    assert ended.json()["call"]["ended_at"] is not None
    assert ended.json()["call"]["session"]["participant_count"] == 0
    gone = await http.post("/v1/calls/livestream/show-1/join", headers=viewer)
    assert gone.status_code == 409 and error_code(gone) == "call_ended"
    relive = await http.post("/v1/calls/livestream/show-1/go-live", headers=host)
    assert relive.status_code == 409 and error_code(relive) == "call_ended"
    assert (await http.post("/v1/calls/livestream/show-1/join", headers=host)).status_code == 200


async def test_update_members_and_settings(stack: Stack) -> None:
    http, host = stack.http, stack.auth("hostess")
    assert (await http.post("/v1/calls/livestream/s2", headers=host)).status_code == 201
    changed = await http.post(
        "/v1/calls/livestream/s2/members",
        headers=host,
        json={
            "upsert": [{"user_id": "cohost", "role": "host"}, {"user_id": "fan", "role": "user"}]
        },
    )
    assert changed.status_code == 200, changed.text
    roles = {m["user_id"]: m["role"] for m in changed.json()["members"]}
    assert roles == {"hostess": "host", "cohost": "host", "fan": "user"}
    cohost_view = await http.get("/v1/calls/livestream/s2", headers=stack.auth("cohost"))
    assert "go-live" in cohost_view.json()["own_capabilities"]

    removed = await http.post(
        "/v1/calls/livestream/s2/members", headers=host, json={"remove": ["cohost"]}
    )
    assert {m["user_id"] for m in removed.json()["members"]} == {"hostess", "fan"}
    members = await http.get("/v1/calls/livestream/s2/members", headers=host)
    assert {m["user_id"] for m in members.json()["members"]} == {"hostess", "fan"}

    patched = await http.patch(
        "/v1/calls/livestream/s2",
        headers=host,
        json={
            "starts_at": "2026-11-24T13:00:00Z",
            "settings_override": {"limits": {"max_participants": 1}},
            "custom": {"title": "Launch"},
        },
    )
    assert patched.status_code == 200, patched.text
    call = patched.json()["call"]
    assert call["starts_at"].startswith("2026-11-24T13:00:00")
    assert call["settings"]["limits"]["max_participants"] == 1
    assert call["custom"] == {"title": "Launch"}
    # Overrides merge key by key: the earlier backstage setting is kept.
    patched = await http.patch(
        "/v1/calls/livestream/s2",
        headers=host,
        json={"settings_override": {"backstage": {"join_ahead_time_seconds": 30}}},
    )
    assert patched.json()["call"]["settings"]["limits"]["max_participants"] == 1
    assert patched.json()["call"]["settings"]["backstage"]["join_ahead_time_seconds"] == 30

    # The one participant place is taken by the host: the call is full.
    token = (await http.post("/v1/calls/livestream/s2/join", headers=host)).json()["credentials"][
        "token"
    ]
    await report(stack.bus, stack.keyring, token, "participant_joined")
    await wait_for(
        http,
        "/v1/calls/livestream/s2",
        host,
        lambda b: (b["call"]["session"] or {}).get("participant_count") == 1,
    )
    assert (await http.post("/v1/calls/livestream/s2/go-live", headers=host)).status_code == 200
    full = await http.post("/v1/calls/livestream/s2/join", headers=stack.auth("cohost"))
    assert full.status_code == 503 and error_code(full) == "capacity_exhausted"
    assert full.json()["error"]["details"]["reason"] == "max_participants"


async def test_join_without_a_media_node_is_capacity_exhausted(stack: Stack) -> None:
    await stack.bus.delete_key("nodes/sfu-test")
    host = stack.auth("hostess")
    await stack.http.post("/v1/calls/default/meet", headers=host)
    answer = await stack.http.post("/v1/calls/default/meet/join", headers=host)
    assert answer.status_code == 503 and error_code(answer) == "capacity_exhausted"
    assert answer.json()["error"]["details"]["reason"] == "no_sfu_capacity"


async def test_query_pages_through_calls(stack: Stack) -> None:
    host = stack.auth("hostess")
    for n in range(7):
        await stack.http.post(f"/v1/calls/default/c{n}", headers=host)
        stack.clock.advance(1)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"next": cursor} if cursor else {})}
        page = (await stack.http.get("/v1/calls", headers=host, params=params)).json()
        seen += [item["call"]["id"] for item in page["calls"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == [f"c{n}" for n in reversed(range(7))]
