"""Who may do what: every built-in call type's roles against every call action, the join
rules around backstage and join-ahead, and the tokens the API refuses.

The expectations are written from the contract (docs/api.md), not read from the server's
grant tables, so a change to a built-in type's grants shows up here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import pytest
import pytest_asyncio

from server.db import upgrade
from tests.server.conftest import API_KEY, API_SECRET, Stack, _postgres_admin, run_stack
from tests.server.helpers import error_code
from tests.support import POSTGRES_URL

# Shared stacks: one coordinator per database for a whole module, each case on its own call.


@asynccontextmanager
async def shared_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A coordinator on ``request.param`` ("sqlite" or "postgres") for many tests at once."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'stagecast.db'}"
        await asyncio.to_thread(upgrade, url)
        async with run_stack(url) as running:
            await running.register_node()
            yield running
        return
    template = request.getfixturevalue("postgres_template")
    name = f"stagecast_test_{uuid.uuid4().hex[:10]}"
    await _postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        async with run_stack(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name) as running:
            await running.register_node()
            yield running
    finally:
        await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with shared_stack(request, tmp_path_factory) as running:
        yield running


on_shared_stack = pytest.mark.asyncio(loop_scope="module")


# The contract's grants, per call type and call-level role.

HOST = frozenset(
    {
        "read-call",
        "join-call",
        "join-backstage",
        "join-ended-call",
        "update-call",
        "update-call-settings",
        "update-call-members",
        "send-audio",
        "send-video",
        "screenshare",
        "go-live",
        "end-call",
        "start-record-call",
        "stop-record-call",
        "list-recordings",
        "start-broadcast-call",
        "stop-broadcast-call",
        "mute-users",
        "remove-call-member",
    }
)
EVERYTHING = HOST | {"create-call"}  # an app admin, and a server token
VIEWER = frozenset({"create-call", "read-call", "join-call"})
SPEAKER = VIEWER | {"send-audio", "send-video", "screenshare"}
AUDIO_HOST = HOST - {"send-video", "screenshare"}

GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "livestream": {
        "host": HOST,
        "moderator": HOST,
        "user": VIEWER,
        "admin": EVERYTHING,
        "server": EVERYTHING,
    },
    "default": {
        "host": HOST,
        "moderator": HOST,
        "user": SPEAKER,
        "admin": EVERYTHING,
        "server": EVERYTHING,
    },
    "audio_room": {
        "host": AUDIO_HOST,
        "moderator": AUDIO_HOST,
        "user": VIEWER,
        "admin": EVERYTHING,
        "server": EVERYTHING,
    },
}
HAS_BACKSTAGE = {"livestream": True, "default": False, "audio_room": True}
CALL_TYPES = tuple(GRANTS)
ROLES = ("host", "moderator", "user", "admin", "server")
# The role the SFU token names: a server token acts as an admin.
SFU_ROLE = {"host": "host", "moderator": "moderator", "user": "user", "admin": "admin"}
SFU_ROLE["server"] = "admin"


def as_role(stack: Stack, role: str, **token: Any) -> dict[str, str]:
    """Headers for each role in the calls this module makes."""
    user = {"host": "hostess", "moderator": "mod", "user": "viewer", "admin": "root"}
    if role == "server":
        return stack.auth("server")
    if role == "admin":
        return stack.auth("root", role="admin", **token)
    return stack.auth(user[role], **token)


async def new_call(stack: Stack, call_type: str, state: str = "backstage") -> str:
    """A call created by its host with a moderator and a member fan, in ``state``."""
    call_id = f"c-{uuid.uuid4().hex[:12]}"
    path = f"/v1/calls/{call_type}/{call_id}"
    host = as_role(stack, "host")
    members = [
        {"user_id": "hostess", "role": "host"},
        {"user_id": "mod", "role": "moderator"},
        {"user_id": "fan", "role": "user"},
    ]
    created = await stack.http.post(path, headers=host, json={"members": members})
    assert created.status_code == 201, created.text
    if state in ("live", "ended"):
        live = await stack.http.post(f"{path}/go-live", headers=host)
        assert live.status_code == 200, live.text
    if state == "ended":
        ended = await stack.http.post(f"{path}/end", headers=host)
        assert ended.status_code == 200, ended.text
    return path


# The actions: what each needs, and what it answers when allowed.


@dataclass(frozen=True)
class Action:
    name: str
    method: str
    suffix: str
    needs: tuple[str, ...]  # capabilities checked, in order
    state: str = "backstage"  # the call's state before the action
    body: dict[str, Any] | None = None
    status: int = 200  # when allowed
    code: str | None = None  # the error code when allowed but still refused
    changes_call: bool = True  # False: cases may share one call in ``state``


@dataclass(frozen=True)
class Outcome:
    status: int
    code: str | None = None
    missing_capability: str | None = None


ACTIONS = [
    Action("get", "GET", "", ("read-call",), changes_call=False),
    Action("get-or-create existing", "POST", "", ("read-call",), body={}, changes_call=False),
    Action(
        "update starts_at",
        "PATCH",
        "",
        ("update-call",),
        body={"starts_at": "2030-01-01T00:00:00Z"},
    ),
    Action("update custom", "PATCH", "", ("update-call",), body={"custom": {"title": "x"}}),
    Action(
        "update settings",
        "PATCH",
        "",
        ("update-call", "update-call-settings"),
        body={"settings_override": {"backstage": {"join_ahead_time_seconds": 60}}},
    ),
    Action(
        "members upsert",
        "POST",
        "/members",
        ("update-call-members",),
        body={"upsert": [{"user_id": "guest", "role": "moderator"}]},
    ),
    Action(
        "members remove",
        "POST",
        "/members",
        ("update-call-members", "remove-call-member"),
        body={"remove": ["fan"]},
    ),
    Action("members list", "GET", "/members", ("read-call",), changes_call=False),
    Action("go-live", "POST", "/go-live", ("go-live",)),
    Action("go-live when live", "POST", "/go-live", ("go-live",), state="live"),
    Action(
        "go-live with hls",
        "POST",
        "/go-live",
        ("go-live", "start-broadcast-call"),
        body={"start_hls": True},
    ),
    Action(
        "go-live after end",
        "POST",
        "/go-live",
        ("go-live",),
        state="ended",
        status=409,
        code="call_ended",
        changes_call=False,
    ),
    Action("stop-live", "POST", "/stop-live", ("go-live",), state="live"),
    Action("end", "POST", "/end", ("end-call",), state="live"),
    Action("end in backstage", "POST", "/end", ("end-call",)),
    Action("join in backstage", "POST", "/join", ("join-call",), changes_call=False),
    Action("join live", "POST", "/join", ("join-call",), state="live", changes_call=False),
    Action("join ended", "POST", "/join", ("join-call",), state="ended", changes_call=False),
    Action(
        "participants", "GET", "/participants", ("read-call",), state="live", changes_call=False
    ),
    *(
        Action(
            f"{suffix} (egress)",
            method,
            suffix,
            (capability,),
            state="live",
            changes_call=changes,
        )
        for method, suffix, capability, changes in [
            ("POST", "/recordings/start", "start-record-call", True),
            ("POST", "/recordings/stop", "stop-record-call", True),
            ("GET", "/recordings", "list-recordings", False),
            ("POST", "/hls/start", "start-broadcast-call", True),
            ("POST", "/hls/stop", "stop-broadcast-call", True),
        ]
    ),
]


def expected(call_type: str, role: str, action: Action) -> Outcome:
    capabilities = GRANTS[call_type][role]
    for capability in action.needs:
        if capability not in capabilities:
            return Outcome(403, "forbidden", capability)
    backstage = action.name == "join in backstage" and HAS_BACKSTAGE[call_type]
    if backstage and "join-backstage" not in capabilities:
        return Outcome(403, "call_in_backstage")
    if action.name == "join ended" and "join-ended-call" not in capabilities:
        return Outcome(409, "call_ended")
    hls_start = action.name in ("go-live with hls", "/hls/start (egress)")
    if hls_start and call_type != "livestream":  # HLS is off in the other built-in types
        return Outcome(409, "conflict")
    return Outcome(action.status, action.code)


CASES = [
    pytest.param(call_type, role, action, id=f"{call_type}-{role}-{action.name}")
    for call_type in CALL_TYPES
    for role in ROLES
    for action in ACTIONS
]


# Calls that actions which change nothing share, per stack, call type and state.
_SHARED_CALLS: dict[tuple[int, str, str, str], str] = {}


async def snapshot(stack: Stack, path: str) -> dict[str, Any]:
    answer = await stack.http.get(path, headers=stack.auth("server"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return {"call": body["call"], "members": body["members"]}


@on_shared_stack
@pytest.mark.parametrize(("call_type", "role", "action"), CASES)
async def test_capability_matrix(shared: Stack, call_type: str, role: str, action: Action) -> None:
    if action.changes_call:
        path = await new_call(shared, call_type, action.state)
    else:
        key = (id(shared), shared.url, call_type, action.state)
        if key not in _SHARED_CALLS:
            _SHARED_CALLS[key] = await new_call(shared, call_type, action.state)
        path = _SHARED_CALLS[key]
    want = expected(call_type, role, action)
    before = await snapshot(shared, path) if want.code is not None else None

    answer = await shared.http.request(
        action.method, path + action.suffix, headers=as_role(shared, role), json=action.body
    )

    assert answer.status_code == want.status, answer.text
    if want.code is not None:
        assert error_code(answer) == want.code
        details = answer.json()["error"]["details"]
        if want.missing_capability is not None:
            assert details == {"missing_capability": want.missing_capability}
        # Refused means nothing changed (not even updated_at).
        assert await snapshot(shared, path) == before
        return
    body = answer.json()
    capabilities = GRANTS[call_type][role]
    if "own_capabilities" in body:
        assert set(body["own_capabilities"]) == capabilities
    if action.suffix == "/join":
        grant = shared.keyring.sfu_grant(body["credentials"]["token"])
        assert grant.cid == body["call"]["cid"] and grant.role == SFU_ROLE[role]
        assert grant.capabilities == capabilities
        assert grant.can_send_audio == ("send-audio" in capabilities)
        assert grant.can_send_video == ("send-video" in capabilities)
        # Media before go-live (or after stop-live) only with join-backstage.
        assert grant.backstage_allowed == ("join-backstage" in capabilities)


@on_shared_stack
@pytest.mark.parametrize("call_type", CALL_TYPES)
@pytest.mark.parametrize("role", ["user", "admin", "server"])
async def test_creating_calls(shared: Stack, call_type: str, role: str) -> None:
    """Everyone may create calls of the built-in types; a creator naming no members hosts."""
    path = f"/v1/calls/{call_type}/new-{uuid.uuid4().hex[:12]}"
    created = await shared.http.post(path, headers=as_role(shared, role))
    assert created.status_code == 201, created.text
    body = created.json()
    creator = {"user": "viewer", "admin": "root", "server": "server"}[role]
    assert body["created"] is True and body["call"]["created_by"]["id"] == creator
    assert [(m["user_id"], m["role"]) for m in body["members"]] == [(creator, "host")]
    want = GRANTS[call_type]["host" if role == "user" else role]
    assert set(body["own_capabilities"]) == want


@on_shared_stack
async def test_a_member_with_the_user_role_is_a_viewer(shared: Stack) -> None:
    path = await new_call(shared, "livestream")
    fan = shared.auth("fan")
    seen = await shared.http.get(path, headers=fan)
    assert set(seen.json()["own_capabilities"]) == VIEWER
    refused = await shared.http.post(f"{path}/join", headers=fan)
    assert refused.status_code == 403 and error_code(refused) == "call_in_backstage"
    # Promoted to host by the host: the same token now has the host's rights.
    promoted = await shared.http.post(
        f"{path}/members",
        headers=as_role(shared, "host"),
        json={"upsert": [{"user_id": "fan", "role": "host"}]},
    )
    assert promoted.status_code == 200, promoted.text
    assert (await shared.http.post(f"{path}/go-live", headers=fan)).status_code == 200


@on_shared_stack
async def test_an_admin_member_role_does_not_make_an_app_admin(shared: Stack) -> None:
    """The call-level role ``admin`` may be granted; a plain user token is not an app admin."""
    path = await new_call(shared, "livestream")
    other = await new_call(shared, "livestream")
    await shared.http.post(
        f"{path}/members",
        headers=as_role(shared, "host"),
        json={"upsert": [{"user_id": "deputy", "role": "admin"}]},
    )
    deputy = shared.auth("deputy")
    assert set((await shared.http.get(path, headers=deputy)).json()["own_capabilities"]) == (
        EVERYTHING
    )
    elsewhere = await shared.http.post(f"{other}/go-live", headers=deputy)
    assert elsewhere.status_code == 403 and error_code(elsewhere) == "forbidden"


@on_shared_stack
@pytest.mark.parametrize(
    ("role", "status"), [("user", 403), ("host", 403), ("admin", 200), ("server", 200)]
)
async def test_app_level_administration(shared: Stack, role: str, status: int) -> None:
    """Users and call types are managed by server tokens and app admins only."""
    headers = as_role(shared, role)
    user = await shared.http.put("/v1/users/someone", headers=headers, json={"name": "Some One"})
    assert user.status_code == status, user.text
    kind = await shared.http.put(
        "/v1/call-types/custom-type",
        headers=headers,
        json={"grants": {"host": ["read-call"], "user": ["read-call"]}},
    )
    assert kind.status_code == status, kind.text
    if status == 403:
        assert error_code(user) == "forbidden" and error_code(kind) == "forbidden"
    # Everyone with a valid token may read them.
    assert (await shared.http.get("/v1/call-types/livestream", headers=headers)).status_code == 200
    assert (await shared.http.get("/v1/users/hostess", headers=headers)).status_code == 200


# Backstage and join-ahead, on the coordinator's clock.


async def scheduled_show(stack: Stack, starts_in: float, join_ahead: int | None) -> str:
    body: dict[str, Any] = {
        "starts_at": (stack.clock.now + timedelta(seconds=starts_in)).isoformat()
    }
    if join_ahead is not None:
        body["settings_override"] = {"backstage": {"join_ahead_time_seconds": join_ahead}}
    path = f"/v1/calls/livestream/show-{uuid.uuid4().hex[:8]}"
    created = await stack.http.post(path, headers=stack.auth("hostess"), json=body)
    assert created.status_code == 201, created.text
    return path


@pytest.mark.parametrize("join_ahead", [None, 0, 300])
async def test_viewers_join_only_inside_the_join_ahead_window(
    stack: Stack, join_ahead: int | None
) -> None:
    ahead = join_ahead or 0
    path = await scheduled_show(stack, 3600, join_ahead)
    viewer = stack.auth("viewer")
    opens_in = 3600 - ahead

    stack.clock.advance(opens_in - 1)  # 1 s before starts_at - join_ahead
    early = await stack.http.post(f"{path}/join", headers=viewer)
    assert early.status_code == 403 and error_code(early) == "call_in_backstage"
    details = early.json()["error"]["details"]
    assert details["join_ahead_time_seconds"] == ahead
    assert details["starts_at"] == "2026-11-24T13:00:00Z"

    stack.clock.advance(2)  # 1 s after
    admitted = await stack.http.post(f"{path}/join", headers=viewer)
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["call"]["backstage"] is True
    grant = stack.keyring.sfu_grant(admitted.json()["credentials"]["token"])
    # Waiting in backstage: no media until go-live, and nothing to send ever.
    assert not grant.backstage_allowed
    assert not grant.can_send_audio and not grant.can_send_video
    assert "join-backstage" not in grant.capabilities


async def test_without_starts_at_viewers_never_join_backstage(stack: Stack) -> None:
    path = f"/v1/calls/livestream/{uuid.uuid4().hex[:8]}"
    host = stack.auth("hostess")
    await stack.http.post(
        path,
        headers=host,
        json={"settings_override": {"backstage": {"join_ahead_time_seconds": 604800}}},
    )
    viewer = stack.auth("viewer")
    for _ in range(3):
        refused = await stack.http.post(f"{path}/join", headers=viewer)
        assert refused.status_code == 403 and error_code(refused) == "call_in_backstage"
        assert refused.json()["error"]["details"]["starts_at"] is None
        stack.clock.advance(30 * 86400)
    # The host may always prepare in backstage.
    assert (await stack.http.post(f"{path}/join", headers=host)).status_code == 200

    # Live: the viewer joins; back in backstage, refused again.
    await stack.http.post(f"{path}/go-live", headers=host)
    joined = await stack.http.post(f"{path}/join", headers=viewer)
    assert joined.status_code == 200
    grant = stack.keyring.sfu_grant(joined.json()["credentials"]["token"])
    # Joined while live, the viewer must still get nothing after a stop-live.
    assert not grant.backstage_allowed and not grant.can_send_video
    await stack.http.post(f"{path}/stop-live", headers=host)
    again = await stack.http.post(f"{path}/join", headers=viewer)
    assert again.status_code == 403 and error_code(again) == "call_in_backstage"


async def test_moving_starts_at_moves_the_window(stack: Stack) -> None:
    path = await scheduled_show(stack, 600, 60)
    host, viewer = stack.auth("hostess"), stack.auth("viewer")
    stack.clock.advance(600 - 59)
    assert (await stack.http.post(f"{path}/join", headers=viewer)).status_code == 200
    later = (stack.clock.now + timedelta(hours=1)).isoformat()
    moved = await stack.http.patch(path, headers=host, json={"starts_at": later})
    assert moved.status_code == 200, moved.text
    refused = await stack.http.post(f"{path}/join", headers=viewer)
    assert refused.status_code == 403 and error_code(refused) == "call_in_backstage"
    # Clearing starts_at closes the window for good.
    cleared = await stack.http.patch(path, headers=host, json={"starts_at": None})
    assert cleared.status_code == 200 and cleared.json()["call"]["starts_at"] is None
    stack.clock.advance(2 * 3600)
    refused = await stack.http.post(f"{path}/join", headers=viewer)
    assert refused.status_code == 403 and error_code(refused) == "call_in_backstage"


async def test_the_window_does_not_open_an_ended_call(stack: Stack) -> None:
    path = await scheduled_show(stack, 60, 60)
    await stack.http.post(f"{path}/end", headers=stack.auth("hostess"))
    stack.clock.advance(120)
    gone = await stack.http.post(f"{path}/join", headers=stack.auth("viewer"))
    assert gone.status_code == 409 and error_code(gone) == "call_ended"


# Tokens


def forged(claims: dict[str, Any], secret: str = API_SECRET, **kwargs: Any) -> str:
    return jwt.encode(claims, secret, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def good_claims(**extra: Any) -> dict[str, Any]:
    return {"iss": API_KEY, "sub": "viewer", "exp": int(time.time()) + 600, **extra}


def without(claim: str) -> dict[str, Any]:
    return {k: v for k, v in good_claims().items() if k != claim}


@dataclass(frozen=True)
class BadToken:
    name: str
    authorization: str | None
    code: str = "unauthenticated"
    extra_headers: dict[str, str] = field(default_factory=dict)


def bad_tokens() -> list[BadToken]:
    valid = forged(good_claims())
    header, payload, signature = valid.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        BadToken("no authorization", None),
        BadToken("basic scheme", "Basic dmlld2VyOnB3"),
        BadToken("bearer without token", "Bearer"),
        BadToken("garbage", "Bearer garbage"),
        BadToken("tampered signature", f"Bearer {header}.{payload}.{flipped}"),
        BadToken("no signature", f"Bearer {header}.{payload}."),
        BadToken("alg none", "Bearer " + forged(good_claims(), "", algorithm="none")),
        BadToken("missing exp", "Bearer " + forged(without("exp"))),
        BadToken("missing iss", "Bearer " + forged(without("iss"))),
        BadToken("unknown iss", "Bearer " + forged(good_claims(iss="who-knows"))),
        BadToken("wrong secret", "Bearer " + forged(good_claims(), "x" * 40)),
        BadToken(
            "expired", "Bearer " + forged(good_claims(exp=int(time.time()) - 60)), "token_expired"
        ),
        BadToken("bad role claim", "Bearer " + forged(good_claims(role="owner"))),
    ]


_TOKEN_TARGETS: dict[tuple[int, str], str] = {}


async def token_target(stack: Stack) -> str:
    """One call per stack for the token cases: a refused token never reaches it."""
    key = (id(stack), stack.url)
    if key not in _TOKEN_TARGETS:
        _TOKEN_TARGETS[key] = await new_call(stack, "livestream")
    return _TOKEN_TARGETS[key]


@on_shared_stack
@pytest.mark.parametrize("bad", bad_tokens(), ids=lambda bad: bad.name)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("POST", "/join"), ("POST", "/go-live")],
)
async def test_tokens_the_api_refuses(
    shared: Stack, bad: BadToken, method: str, suffix: str
) -> None:
    path = await token_target(shared)
    headers = {} if bad.authorization is None else {"authorization": bad.authorization}
    answer = await shared.http.request(method, path + suffix, headers=headers)
    assert answer.status_code == 401, answer.text
    assert error_code(answer) == bad.code


@on_shared_stack
async def test_sfu_tokens_are_not_api_tokens(shared: Stack) -> None:
    path = await new_call(shared, "livestream", "live")
    joined = await shared.http.post(f"{path}/join", headers=as_role(shared, "host"))
    sfu_token = joined.json()["credentials"]["token"]
    for method, suffix in [("GET", ""), ("POST", "/go-live"), ("POST", "/join")]:
        answer = await shared.http.request(
            method, path + suffix, headers={"authorization": f"Bearer {sfu_token}"}
        )
        assert answer.status_code == 401 and error_code(answer) == "unauthenticated"


@on_shared_stack
async def test_tokens_scoped_to_other_calls_are_forbidden(shared: Stack) -> None:
    path = await new_call(shared, "livestream")
    cid = "livestream:" + path.rsplit("/", 1)[1]
    elsewhere = as_role(shared, "host", call_cids=["livestream:some-other-call"])
    for method, suffix in [
        ("GET", ""),
        ("POST", ""),
        ("PATCH", ""),
        ("POST", "/members"),
        ("GET", "/members"),
        ("POST", "/go-live"),
        ("POST", "/end"),
        ("POST", "/join"),
        ("GET", "/participants"),
        ("POST", "/recordings/start"),
        ("POST", "/hls/start"),
    ]:
        answer = await shared.http.request(method, path + suffix, headers=elsewhere, json={})
        assert answer.status_code == 403, (method, suffix, answer.text)
        assert error_code(answer) == "forbidden"
    # Nor may it create calls outside its scope.
    other = await shared.http.post(
        f"/v1/calls/livestream/{uuid.uuid4().hex[:8]}", headers=elsewhere
    )
    assert other.status_code == 403 and error_code(other) == "forbidden"
    # Scoped to the call, the host's token works there, and lists only that call.
    scoped = as_role(shared, "host", call_cids=[cid])
    assert (await shared.http.get(path, headers=scoped)).status_code == 200
    listed = await shared.http.get("/v1/calls", headers=scoped, params={"limit": 100})
    assert [item["call"]["cid"] for item in listed.json()["calls"]] == [cid]
    assert (await shared.http.post(f"{path}/go-live", headers=scoped)).status_code == 200
    # An app admin's scoped token is scoped too.
    admin_elsewhere = as_role(shared, "admin", call_cids=[])
    answer = await shared.http.get(path, headers=admin_elsewhere)
    assert answer.status_code == 403 and error_code(answer) == "forbidden"


@on_shared_stack
@pytest.mark.parametrize("call_type", CALL_TYPES)
async def test_viewers_sfu_tokens_cannot_publish(shared: Stack, call_type: str) -> None:
    path = await new_call(shared, call_type, "live")
    for user_id in ("viewer", "fan"):
        joined = await shared.http.post(f"{path}/join", headers=shared.auth(user_id))
        assert joined.status_code == 200, joined.text
        grant = shared.keyring.sfu_grant(joined.json()["credentials"]["token"])
        speaks = call_type == "default"  # a meeting: everyone may speak
        assert grant.can_send_audio is speaks and grant.can_send_video is speaks
        assert grant.role == "user"
