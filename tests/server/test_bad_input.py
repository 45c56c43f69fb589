"""Bad input never makes a 500: every refusal is a 4xx with the contract's error body
``{"error": {"code", "message", "details"}}``, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio

from tests.server.conftest import API_KEY, API_SECRET, Stack
from tests.server.test_capabilities import shared_stack

EXISTING = "/v1/calls/livestream/existing"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with shared_stack(request, tmp_path_factory) as running:
        created = await running.http.post(EXISTING, headers=running.auth("hostess"))
        assert created.status_code == 201, created.text
        yield running


pytestmark = pytest.mark.asyncio(loop_scope="module")


def assert_error(answer: httpx.Response, statuses: tuple[int, ...], code: str) -> None:
    assert answer.status_code in statuses, (answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    as_user: str = "hostess"
    statuses: tuple[int, ...] = (400, 422)
    code: str = "invalid_request"

    def __str__(self) -> str:
        return self.name


def new_call() -> str:
    return f"/v1/calls/livestream/new-{random.getrandbits(48):012x}"


def create(name: str, body: Any) -> Case:
    return Case(name, "POST", "/v1/calls/livestream/fresh-call", json=body)


def raw(name: str, content: bytes, method: str = "POST", path: str = EXISTING) -> Case:
    return Case(name, method, path, content=content)


def settings(name: str, override: Any) -> Case:
    return Case(name, "PATCH", EXISTING, json={"settings_override": override})


def query(name: str, **params: str) -> Case:
    return Case(name, "GET", "/v1/calls", params=params)


CASES = [
    # Malformed JSON
    raw("truncated json", b'{"custom": {'),
    raw("json with trailing garbage", b"{} {}"),
    raw("single quotes", b"{'custom': {}}"),
    raw("not utf-8", b'{"custom": {"n": "\xff"}}'),
    raw("absurdly deep json", b"[" * 100_000 + b"]" * 100_000),
    raw("empty patch body", b"", method="PATCH"),
    raw("top-level NaN", b"NaN"),
    raw("NaN in custom", b'{"custom": {"n": NaN}}'),
    raw("Infinity in custom", b'{"custom": {"n": -Infinity}}'),
    raw("lone surrogate in custom", b'{"custom": {"n": "\\ud800"}}'),
    raw("lone surrogate in a custom key", b'{"custom": {"\\udfff": 1}}'),
    raw("NaN in settings", b'{"settings_override": {"limits": {"max_participants": NaN}}}'),
    raw("huge junk", b"x" * 5_000_000),
    # Wrong JSON types
    create("body is a list", []),
    create("body is a string", "members"),
    create("body is a number", 7),
    create("members is a string", {"members": "alice"}),
    create("member is null", {"members": [None]}),
    create("member user_id is a number", {"members": [{"user_id": 5}]}),
    create("member role unknown", {"members": [{"user_id": "a", "role": "owner"}]}),
    create("custom is a list", {"custom": []}),
    create("custom is a string", {"custom": "x"}),
    create("settings_override is a list", {"settings_override": []}),
    create("starts_at is a number", {"starts_at": 1_800_000_000}),
    create("starts_at is a bool", {"starts_at": True}),
    create("starts_at is words", {"starts_at": "tomorrow"}),
    Case("go-live flag is words", "POST", f"{EXISTING}/go-live", json={"start_hls": "soon"}),
    Case("join create is words", "POST", f"{EXISTING}/join", json={"create": "perhaps"}),
    Case("upsert is an object", "POST", f"{EXISTING}/members", json={"upsert": {}}),
    Case("remove is a string", "POST", f"{EXISTING}/members", json={"remove": "alice"}),
    # Extra fields
    create("extra top-level field", {"colour": "red"}),
    create("extra member field", {"members": [{"user_id": "a", "admin": True}]}),
    Case("extra patch field", "PATCH", EXISTING, json={"ends_at": "2030-01-01T00:00:00Z"}),
    Case("extra members field", "POST", f"{EXISTING}/members", json={"add": ["a"]}),
    Case("extra go-live field", "POST", f"{EXISTING}/go-live", json={"now": True}),
    Case("extra join field", "POST", f"{EXISTING}/join", json={"as": "host"}),
    settings("extra settings section", {"lighting": {"on": True}}),
    settings("extra settings key", {"backstage": {"enabled": True, "curtain": "red"}}),
    # Naive and impossible timestamps
    create("naive starts_at", {"starts_at": "2026-11-24T10:00:00"}),
    create("naive starts_at with a space", {"starts_at": "2026-11-24 10:00:00"}),
    create("date-only starts_at", {"starts_at": "2026-11-24"}),
    create("month 13", {"starts_at": "2026-13-01T00:00:00Z"}),
    create("year 1 east of UTC", {"starts_at": "0001-01-01T00:00:00+14:00"}),
    create("year 9999 west of UTC", {"starts_at": "9999-12-31T23:59:59-12:00"}),
    Case("naive starts_at on patch", "PATCH", EXISTING, json={"starts_at": "2030-01-01T00:00"}),
    Case(
        "naive starts_at on join",
        "POST",
        "/v1/calls/livestream/fresh-call/join",
        json={"create": True, "starts_at": "2030-01-01T00:00:00"},
    ),
    # Negative or absurd settings
    settings("join-ahead -1", {"backstage": {"join_ahead_time_seconds": -1}}),
    settings("join-ahead 10**9", {"backstage": {"join_ahead_time_seconds": 10**9}}),
    settings("join-ahead 10**30", {"backstage": {"join_ahead_time_seconds": 10**30}}),
    settings("join-ahead fractional", {"backstage": {"join_ahead_time_seconds": 1.5}}),
    settings("join-ahead words", {"backstage": {"join_ahead_time_seconds": "soon"}}),
    settings("backstage is a number", {"backstage": 5}),
    settings("max_participants 0", {"limits": {"max_participants": 0}}),
    settings("max_participants -1", {"limits": {"max_participants": -1}}),
    settings("max_duration 0", {"limits": {"max_duration_seconds": 0}}),
    settings("recording mode unknown", {"recording": {"mode": "sometimes"}}),
    settings("1 px video", {"video": {"target_resolution": {"width": 1}}}),
    create("bad settings on create", {"settings_override": {"limits": {"max_participants": 0}}}),
    Case(
        "bad settings on join-create",
        "POST",
        "/v1/calls/livestream/fresh-call/join",
        json={"create": True, "settings_override": {"backstage": {"enabled": "maybe"}}},
    ),
    # Over-long and illegal ids
    Case("call id of 65 chars", "POST", "/v1/calls/livestream/" + "a" * 65),
    Case("call id with a space", "POST", "/v1/calls/livestream/bad%20id"),
    Case("call id with a dot", "GET", "/v1/calls/livestream/a.b"),
    Case("call id with a colon", "GET", "/v1/calls/livestream/a:b"),
    Case("call id with unicode", "GET", "/v1/calls/livestream/caf%C3%A9"),
    Case("call id with NUL", "GET", "/v1/calls/livestream/a%00b"),
    Case("call type with a bang", "POST", "/v1/calls/live!/x"),
    Case("call type of 65 chars", "POST", "/v1/calls/" + "t" * 65 + "/x"),
    Case("user id of 129 chars", "GET", "/v1/users/" + "u" * 129),
    Case("user id with a space", "PUT", "/v1/users/a%20b", json={}, as_user="server"),
    Case("user id with unicode", "GET", "/v1/users/%C3%BC"),
    create("member user id of 129 chars", {"members": [{"user_id": "u" * 129}]}),
    create("member user id empty", {"members": [{"user_id": ""}]}),
    create("member user id with a slash", {"members": [{"user_id": "a/b"}]}),
    Case("remove a bad user id", "POST", f"{EXISTING}/members", json={"remove": ["a b"]}),
    create("too many members", {"members": [{"user_id": f"u{n}"} for n in range(1001)]}),
    create("too many custom keys", {"custom": {f"k{n}": n for n in range(65)}}),
    create("custom nested 40 deep", {"custom": {"x": nested(40)}}),
    create("custom nested 500 deep", {"custom": {"x": nested(500)}}),
    create("custom of 2 MB", {"custom": {"x": "y" * 2_000_000}}),
    create("5 MB of members", {"members": [{"user_id": "u" * 128}] * 30_000}),
    # Users and call types (server token)
    Case(
        "user name of 257 chars", "PUT", "/v1/users/bob", json={"name": "n" * 257}, as_user="server"
    ),
    Case("user name with NUL", "PUT", "/v1/users/bob", json={"name": "a\x00b"}, as_user="server"),
    Case("user image with NUL", "PUT", "/v1/users/bob", json={"image": "\x00"}, as_user="server"),
    Case("user role unknown", "PUT", "/v1/users/bob", json={"role": "root"}, as_user="server"),
    Case("user extra field", "PUT", "/v1/users/bob", json={"email": "x"}, as_user="server"),
    Case(
        "user custom NaN",
        "PUT",
        "/v1/users/bob",
        content=b'{"custom": {"n": NaN}}',
        as_user="server",
    ),
    Case("call type without grants", "PUT", "/v1/call-types/t1", json={}, as_user="server"),
    Case(
        "call type unknown role",
        "PUT",
        "/v1/call-types/t1",
        json={"grants": {"owner": ["read-call"]}},
        as_user="server",
    ),
    Case(
        "call type unknown capability",
        "PUT",
        "/v1/call-types/t1",
        json={"grants": {"host": ["fly"]}},
        as_user="server",
    ),
    Case(
        "call type bad settings",
        "PUT",
        "/v1/call-types/t1",
        json={"grants": {}, "settings": {"limits": {"max_participants": 0}}},
        as_user="server",
    ),
    # Query parameters and cursors
    query("limit 0", limit="0"),
    query("limit 101", limit="101"),
    query("limit -1", limit="-1"),
    query("limit words", limit="ten"),
    query("limit fractional", limit="1.5"),
    query("live maybe", live="maybe"),
    query("type with a bang", type="live!"),
    query("created_by with a space", created_by="a b"),
    query("next garbage", next="!!!not-base64!!!"),
    query("next base64 of junk", next=base64.urlsafe_b64encode(b"\xff\xfe junk").decode()),
    query("next too long", next="A" * 513),
    query("next an object", next=cursor({"a": 1, "b": 2})),
    query("next three items", next=cursor(["2026-11-24T12:00:00+00:00", "livestream:a", 3])),
    query("next numbers", next=cursor([1, 2])),
    query("next naive time", next=cursor(["2026-11-24T12:00:00", "livestream:a"])),
    query("next non-UTC time", next=cursor(["2026-11-24T12:00:00+05:00", "livestream:a"])),
    query("next out of range", next=cursor(["9999-12-31T23:59:59-12:00", "livestream:a"])),
    query("next cid with NUL", next=cursor(["2026-11-24T12:00:00+00:00", "livestream:a\x00"])),
    query("next cid a list", next=cursor(["2026-11-24T12:00:00+00:00", ["livestream:a"]])),
    # Unknown call types, routes and methods
    Case(
        "get-or-create an unknown type",
        "POST",
        "/v1/calls/nope/x",
        statuses=(404,),
        code="not_found",
    ),
    Case("get an unknown type", "GET", "/v1/calls/nope/x", statuses=(404,), code="not_found"),
    Case(
        "patch an unknown type",
        "PATCH",
        "/v1/calls/nope/x",
        json={"custom": {}},
        statuses=(404,),
        code="not_found",
    ),
    Case(
        "join an unknown type", "POST", "/v1/calls/nope/x/join", statuses=(404,), code="not_found"
    ),
    Case(
        "join-create an unknown type",
        "POST",
        "/v1/calls/nope/x/join",
        json={"create": True},
        statuses=(404,),
        code="not_found",
    ),
    Case(
        "members of an unknown type",
        "GET",
        "/v1/calls/nope/x/members",
        statuses=(404,),
        code="not_found",
    ),
    Case("an unknown call type", "GET", "/v1/call-types/nope", statuses=(404,), code="not_found"),
    Case(
        "an unknown call",
        "GET",
        "/v1/calls/livestream/nobody-made-this",
        statuses=(404,),
        code="not_found",
    ),
    Case("an unknown user", "GET", "/v1/users/nobody", statuses=(404,), code="not_found"),
    Case("an unknown route", "GET", "/v1/nothing-here", statuses=(404,), code="not_found"),
    Case("a wrong method", "DELETE", EXISTING, statuses=(405,), code="method_not_allowed"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_bad_input_is_a_4xx_with_the_error_body(shared: Stack, case: Case) -> None:
    headers = shared.auth(case.as_user)
    if case.content is not None:
        headers["content-type"] = "application/json"
    answer = await shared.http.request(
        case.method,
        case.path,
        headers=headers,
        json=case.json,
        content=case.content,
        params=case.params,
    )
    assert_error(answer, case.statuses, case.code)
    # Nothing was created by the refused request.
    if case.path.startswith("/v1/calls/livestream/fresh-call"):
        probe = await shared.http.get("/v1/calls/livestream/fresh-call", headers=headers)
        assert probe.status_code == 404


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b'{"custom": {}}'), ("application/x-www-form-urlencoded", b"custom=1")],
)
async def test_bodies_that_are_not_json(shared: Stack, content_type: str, body: bytes) -> None:
    headers = {**shared.auth("hostess"), "content-type": content_type}
    answer = await shared.http.patch(EXISTING, headers=headers, content=body)
    assert_error(answer, (400, 415, 422), "invalid_request")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u" * 129},
        {"sub": "bad user"},
        {"sub": "nul\x00"},
        {"sub": "ünïcode"},
        {"sub": "alice", "call_cids": ["livestream:a\x00"]},
        {"sub": "alice", "call_cids": ["x" * 200]},
    ],
    ids=repr,
)
async def test_tokens_with_impossible_claims_are_unauthenticated(
    shared: Stack, claims: dict[str, Any]
) -> None:
    """Tokens are trusted for who they name, but what they name must be a possible id."""
    token = jwt.encode(
        {"iss": API_KEY, "exp": int(time.time()) + 600, **claims}, API_SECRET, algorithm="HS256"
    )
    headers = {"authorization": f"Bearer {token}"}
    for method, path in [("POST", new_call()), ("GET", "/v1/calls"), ("GET", EXISTING)]:
        answer = await shared.http.request(method, path, headers=headers)
        assert_error(answer, (401,), "unauthenticated")


@pytest.mark.parametrize(
    "starts_at",
    ["2026-11-24T10:00:00Z", "2026-11-24T10:00:00+00:00", "2026-11-24T15:30:00+05:30"],
)
async def test_timestamps_are_accepted_with_a_zone_and_answered_in_utc(
    shared: Stack, starts_at: str
) -> None:
    path = new_call()
    created = await shared.http.post(path, headers=shared.auth("h"), json={"starts_at": starts_at})
    assert created.status_code == 201, created.text
    assert created.json()["call"]["starts_at"] == "2026-11-24T10:00:00Z"


async def test_a_cursor_from_the_api_still_works(shared: Stack) -> None:
    """The stricter cursor check accepts what the API hands out."""
    host = shared.auth("pager")
    for _ in range(3):
        await shared.http.post(new_call(), headers=host)
    first = await shared.http.get(
        "/v1/calls", headers=host, params={"limit": 1, "created_by": "pager"}
    )
    token = first.json()["next"]
    assert token
    second = await shared.http.get(
        "/v1/calls", headers=host, params={"limit": 1, "created_by": "pager", "next": token}
    )
    assert second.status_code == 200, second.text
    assert second.json()["calls"][0]["call"]["cid"] != first.json()["calls"][0]["call"]["cid"]


# A small fuzz: valid bodies with one field replaced by something strange.

STRANGE: list[Any] = [
    None,
    True,
    0,
    -1,
    10**20,
    -(10**20),
    1.5,
    "",
    "x" * 5000,
    "\x00",
    "\ud800",
    "2026-11-24T10:00:00",
    "9999-99-99T99:99:99Z",
    [],
    [None],
    {},
    {"": None},
    nested(60),
    float("nan"),
    float("inf"),
]
PATHS: list[tuple[str, ...]] = [
    ("starts_at",),
    ("custom",),
    ("custom", "k"),
    ("members",),
    ("members", "0"),
    ("members", "0", "user_id"),
    ("members", "0", "role"),
    ("settings_override",),
    ("settings_override", "backstage"),
    ("settings_override", "backstage", "join_ahead_time_seconds"),
    ("settings_override", "limits", "max_participants"),
    ("settings_override", "video", "target_resolution", "width"),
    ("settings_override", "recording", "mode"),
]


def mutated(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "starts_at": "2026-11-24T13:00:00Z",
        "custom": {"k": "v"},
        "members": [{"user_id": "fuzzer", "role": "host"}],
        "settings_override": {"backstage": {"join_ahead_time_seconds": 60}},
    }
    path = rng.choice(PATHS)
    target: Any = body
    for key in path[:-1]:
        target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
    value = rng.choice(STRANGE)
    if isinstance(target, list):
        target[int(path[-1])] = value
    else:
        target[path[-1]] = value
    return body


async def test_fuzzed_bodies_never_make_a_500(shared: Stack) -> None:
    rng = random.Random(20261124)
    host = {**shared.auth("fuzzer"), "content-type": "application/json"}
    for n in range(80):
        body = mutated(rng)
        content = json.dumps(body, allow_nan=True).encode()
        method, suffix = rng.choice([("POST", ""), ("PATCH", ""), ("POST", "/join")])
        path = f"/v1/calls/livestream/fuzz-{n}"
        if method == "PATCH":
            await shared.http.post(path, headers=host)
            body.pop("members")
            content = json.dumps(body, allow_nan=True).encode()
        if suffix == "/join":
            body["create"] = True
            content = json.dumps(body, allow_nan=True).encode()
        answer = await shared.http.request(method, path + suffix, headers=host, content=content)
        assert answer.status_code < 500, (body, answer.text[:300])
        if answer.status_code >= 400:
            assert_error(answer, (answer.status_code,), answer.json()["error"]["code"])
        else:
            answer.json()  # a success is valid JSON too


async def test_the_server_is_still_healthy(shared: Stack) -> None:
    assert (await shared.http.get(EXISTING, headers=shared.auth("hostess"))).status_code == 200
    assert (await shared.http.get("/readyz")).status_code == 200
