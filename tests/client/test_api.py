"""ApiClient: paths, bodies, and errors decoded into ApiError (against a mock transport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from stagecast.client import ApiClient, ApiError, Credentials


def _recorder(
    calls: list[httpx.Request], answer: dict[str, Any] | None = None, status: int = 200
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json=answer if answer is not None else {"ok": True})

    return httpx.MockTransport(handle)


async def test_requests_follow_the_contract() -> None:
    calls: list[httpx.Request] = []
    async with ApiClient("http://sc.test/", "tok", transport=_recorder(calls)) as api:
        await api.get_or_create_call(
            "livestream", "abc", members=[{"user_id": "a", "role": "host"}]
        )
        await api.get_call("livestream", "abc")
        await api.update_call("livestream", "abc", custom={"x": 1})
        await api.go_live("livestream", "abc", start_hls=True)
        await api.stop_live("livestream", "abc")
        await api.end_call("livestream", "abc")
        await api.join("livestream", "abc", create=True)
        await api.members("livestream", "abc", limit=5)
        await api.update_members("livestream", "abc", remove=["b"])
        await api.participants("livestream", "abc")
        await api.query_calls(call_type="livestream", live=True)
        await api.call_types()
        await api.get_call_type("livestream")
        await api.upsert_user("alice@x.org", name="Alice")
        await api.get_user("alice@x.org")
    seen = [(r.method, r.url.path, r.url.query.decode()) for r in calls]
    assert seen == [
        ("POST", "/v1/calls/livestream/abc", ""),
        ("GET", "/v1/calls/livestream/abc", ""),
        ("PATCH", "/v1/calls/livestream/abc", ""),
        ("POST", "/v1/calls/livestream/abc/go-live", ""),
        ("POST", "/v1/calls/livestream/abc/stop-live", ""),
        ("POST", "/v1/calls/livestream/abc/end", ""),
        ("POST", "/v1/calls/livestream/abc/join", ""),
        ("GET", "/v1/calls/livestream/abc/members", "limit=5"),
        ("POST", "/v1/calls/livestream/abc/members", ""),
        ("GET", "/v1/calls/livestream/abc/participants", ""),
        ("GET", "/v1/calls", "type=livestream&live=true"),
        ("GET", "/v1/call-types", ""),
        ("GET", "/v1/call-types/livestream", ""),
        ("PUT", "/v1/users/alice@x.org", ""),
        ("GET", "/v1/users/alice@x.org", ""),
    ]
    assert all(r.headers["authorization"] == "Bearer tok" for r in calls)
    assert json.loads(calls[0].content) == {"members": [{"user_id": "a", "role": "host"}]}
    assert json.loads(calls[3].content) == {"start_hls": True}
    assert json.loads(calls[6].content) == {"create": True}


async def test_errors_become_api_errors() -> None:
    body = {
        "error": {
            "code": "forbidden",
            "message": "nope",
            "details": {"missing_capability": "go-live"},
        }
    }
    async with ApiClient("http://sc.test", "t", transport=_recorder([], body, 403)) as api:
        with pytest.raises(ApiError) as failed:
            await api.go_live("livestream", "abc")
    assert failed.value.status == 403
    assert failed.value.code == "forbidden"
    assert failed.value.details == {"missing_capability": "go-live"}

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    async with ApiClient("http://sc.test", transport=httpx.MockTransport(not_json)) as api:
        with pytest.raises(ApiError) as failed:
            await api.get_call("livestream", "abc")
    assert failed.value.status == 502 and failed.value.code == "http_error"


def test_credentials_from_a_join_answer() -> None:
    creds = ApiClient.credentials(
        {
            "credentials": {
                "sfu_url": "http://h/sfu",
                "ws_url": "ws://h/sfu/ws",
                "token": "jwt",
                "ice_servers": [{"urls": "stun:s", "username": None}],
            }
        }
    )
    assert creds == Credentials.from_dict(
        {
            "sfu_url": "http://h/sfu",
            "ws_url": "ws://h/sfu/ws",
            "token": "jwt",
            "ice_servers": [{"urls": ["stun:s"]}],
        }
    )
    assert creds.ice_servers[0].urls == ["stun:s"]
