"""A typed-enough async client for the REST contract in ``docs/api.md``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx


class ApiError(Exception):
    """An error answer from the API: HTTP status and the ``error`` body."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class IceServer:
    urls: list[str]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class Credentials:
    """What ``join`` hands out for the media connection."""

    sfu_url: str
    ws_url: str
    token: str
    ice_servers: list[IceServer] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Credentials:
        servers = []
        for server in data.get("ice_servers") or []:
            urls = server.get("urls") or []
            servers.append(
                IceServer(
                    urls=[urls] if isinstance(urls, str) else list(urls),
                    username=server.get("username"),
                    credential=server.get("credential"),
                )
            )
        return cls(
            sfu_url=str(data.get("sfu_url", "")),
            ws_url=str(data["ws_url"]),
            token=str(data["token"]),
            ice_servers=servers,
        )


def _call_path(call_type: str, call_id: str) -> str:
    return f"/v1/calls/{quote(call_type, safe='')}/{quote(call_id, safe='')}"


class ApiClient:
    """``ApiClient(base_url, token)``: every method returns the decoded JSON body and raises
    :class:`ApiError` for a 4xx/5xx answer. Use as an async context manager or ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self.http.request(method, path, json=json, params=clean or None)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return {}
        body = response.json()
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "invalid_response", "Expected a JSON object.")
        return body

    # -- calls ------------------------------------------------------------------------------

    async def get_or_create_call(
        self,
        call_type: str,
        call_id: str,
        *,
        members: list[dict[str, Any]] | None = None,
        starts_at: str | None = None,
        settings_override: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _body(
            members=members, starts_at=starts_at, settings_override=settings_override, custom=custom
        )
        return await self.request("POST", _call_path(call_type, call_id), json=body)

    async def get_call(self, call_type: str, call_id: str) -> dict[str, Any]:
        return await self.request("GET", _call_path(call_type, call_id))

    async def update_call(
        self,
        call_type: str,
        call_id: str,
        *,
        starts_at: str | None = None,
        settings_override: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _body(starts_at=starts_at, settings_override=settings_override, custom=custom)
        return await self.request("PATCH", _call_path(call_type, call_id), json=body)

    async def query_calls(
        self,
        *,
        call_type: str | None = None,
        live: bool | None = None,
        created_by: str | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> dict[str, Any]:
        params = {
            "type": call_type,
            "live": None if live is None else str(live).lower(),
            "created_by": created_by,
            "limit": limit,
            "next": next,
        }
        return await self.request("GET", "/v1/calls", params=params)

    async def go_live(
        self,
        call_type: str,
        call_id: str,
        *,
        start_hls: bool | None = None,
        start_recording: bool | None = None,
    ) -> dict[str, Any]:
        body = _body(start_hls=start_hls, start_recording=start_recording)
        return await self.request("POST", _call_path(call_type, call_id) + "/go-live", json=body)

    async def stop_live(self, call_type: str, call_id: str) -> dict[str, Any]:
        return await self.request("POST", _call_path(call_type, call_id) + "/stop-live", json={})

    async def end_call(self, call_type: str, call_id: str) -> dict[str, Any]:
        return await self.request("POST", _call_path(call_type, call_id) + "/end", json={})

    async def join(
        self,
        call_type: str,
        call_id: str,
        *,
        create: bool | None = None,
        members: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``{call, members, own_capabilities, credentials}``; see :meth:`credentials`."""
        body = _body(create=create, members=members)
        return await self.request("POST", _call_path(call_type, call_id) + "/join", json=body)

    @staticmethod
    def credentials(join_response: dict[str, Any]) -> Credentials:
        return Credentials.from_dict(join_response["credentials"])

    async def update_members(
        self,
        call_type: str,
        call_id: str,
        *,
        upsert: list[dict[str, Any]] | None = None,
        remove: list[str] | None = None,
    ) -> dict[str, Any]:
        body = _body(upsert=upsert, remove=remove)
        return await self.request("POST", _call_path(call_type, call_id) + "/members", json=body)

    async def members(
        self, call_type: str, call_id: str, *, limit: int | None = None, next: str | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "GET",
            _call_path(call_type, call_id) + "/members",
            params={"limit": limit, "next": next},
        )

    async def participants(self, call_type: str, call_id: str) -> dict[str, Any]:
        return await self.request("GET", _call_path(call_type, call_id) + "/participants")

    # -- call types and users -----------------------------------------------------------------

    async def call_types(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/call-types")

    async def get_call_type(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/call-types/{quote(name, safe='')}")

    async def put_call_type(
        self, name: str, *, settings: dict[str, Any], grants: dict[str, list[str]]
    ) -> dict[str, Any]:
        return await self.request(
            "PUT",
            f"/v1/call-types/{quote(name, safe='')}",
            json={"settings": settings, "grants": grants},
        )

    async def upsert_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        image: str | None = None,
        role: str | None = None,
        custom: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _body(name=name, image=image, role=role, custom=custom)
        return await self.request("PUT", f"/v1/users/{quote(user_id, safe='')}", json=body)

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/users/{quote(user_id, safe='')}")

    async def dev_token(self, user_id: str) -> str:
        """A user token from the dev-mode endpoint (only when the server runs in dev mode)."""
        body = await self.request("POST", "/v1/dev/tokens", json={"user_id": user_id})
        return str(body["token"])


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _error(response: httpx.Response) -> ApiError:
    code = "http_error"
    message = response.reason_phrase or f"HTTP {response.status_code}"
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        if isinstance(error.get("details"), dict):
            details = error["details"]
    return ApiError(response.status_code, code, message, details)
