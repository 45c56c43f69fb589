"""Service endpoints (``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``) and what the
request logs may not contain."""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from server.app import create_app
from stagecast.logs import ConsoleFormatter, JsonFormatter
from stagecast.settings import Settings
from tests.server.conftest import API_KEY, API_SECRET, Stack, run_stack

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def is_api(path: str) -> bool:
    """Everything but FastAPI's own documentation pages and the web app's files."""
    docs = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    return path not in (*docs, "/") and not path.startswith(("/app/", "/vendor/"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthz_and_readyz(stack: Stack) -> None:
    alive = await stack.http.get("/healthz")
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    ready = await stack.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "bus": "ok", "workers": "ok"},
    }


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/stagecast"
    async with run_stack(url) as stack:
        assert (await stack.http.get("/healthz")).status_code == 200
        answer = await stack.http.get("/readyz")
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "not_ready" and error["message"]
    checks = error["details"]["checks"]
    assert checks["database"] not in ("ok", "") and checks["bus"] == "ok", checks
    assert "postgres" not in str(error)  # names the failure, not the connection string


@sqlite_only
async def test_metrics_are_prometheus_text(stack: Stack) -> None:
    assert (await stack.http.get("/v1/calls", headers=stack.auth("fan"))).status_code == 200
    assert (await stack.http.get("/v1/calls")).status_code == 401
    answer = await stack.http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "# TYPE stagecast_http_requests_total counter" in text
    # Labelled by route template, not by concrete path.
    assert 'stagecast_http_requests_total{method="GET",route="/v1/calls",status="200"}' in text
    assert 'route="/v1/calls",status="401"' in text
    for name in ("stagecast_http_request_seconds", "stagecast_events_total"):
        assert f"# TYPE {name}" in text, name


def _routes(app: Any) -> list[tuple[str, str]]:
    """``(path, method)`` of every route, websockets as ``GET``."""
    try:  # FastAPI >= 0.160 keeps included routers lazily
        from fastapi.routing import iter_route_contexts

        contexts: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        contexts = list(app.routes)
    routes = []
    for route in contexts:
        methods = route.methods or {"GET"}  # a WebSocket route has no methods
        routes += [(route.path, method) for method in methods if method != "HEAD"]
    return routes


@sqlite_only
async def test_openapi_documents_every_route_and_its_errors(stack: Stack) -> None:
    answer = await stack.http.get("/openapi.json")
    assert answer.status_code == 200
    schema = answer.json()
    paths: dict[str, dict[str, Any]] = schema["paths"]
    app = create_app(
        Settings(api_key=API_KEY, api_secret=API_SECRET, database_url="sqlite://", dev_mode=True)
    )
    routes = _routes(app)
    assert ("/v1/events", "GET") in routes
    missing = [
        (path, method)
        for path, method in routes
        if is_api(path) and method.lower() not in paths.get(path, {})
    ]
    assert missing == [], f"routes missing from /openapi.json: {missing}"

    assert "ErrorResponse" in schema["components"]["schemas"]
    error_ref = "#/components/schemas/ErrorResponse"
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            errors = {code: body for code, body in responses.items() if code[0] in "45"}
            if path.startswith("/v1"):
                assert any(code.startswith("4") for code in errors), (method, path)
            for code, body in errors.items():
                ref = body.get("content", {}).get("application/json", {}).get("schema", {})
                assert ref.get("$ref") == error_ref, (method, path, code, body)


@sqlite_only
async def test_plain_get_of_the_events_websocket_is_426(stack: Stack) -> None:
    answer = await stack.http.get("/v1/events")
    assert answer.status_code == 426
    assert answer.headers["upgrade"] == "websocket"
    assert answer.json()["error"]["code"] == "invalid_request"


@sqlite_only
async def test_logs_never_hold_tokens_or_the_secret(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = stack.token("fan")
    server_token = stack.keyring.server_token()
    http = stack.http
    await http.get(f"/v1/calls?token={token}")
    await http.post(f"/v1/calls/default/logged?token={token}&x=1")
    await http.get("/v1/calls/default/logged", headers={"authorization": f"Bearer {token}"})
    await http.get("/v1/calls?token=garbage-token-value")
    await http.put("/v1/users/u1", headers={"authorization": f"Bearer {server_token}"}, json={})
    expired = stack.token("fan", ttl_seconds=-60)
    await http.get(f"/v1/calls?token={expired}")
    ws_base = stack.url.replace("http://", "ws://", 1) + "/v1/events"
    for ws_token in (token, "garbage-token-value"):
        async with connect(f"{ws_base}?token={ws_token}") as ws:
            await ws.recv()
    async with httpx.AsyncClient(base_url=stack.url) as raw:
        await raw.get(f"/healthz?token={token}")

    assert any(r.name == "stagecast.access" for r in caplog.records)
    secrets = (API_SECRET, token, server_token, expired, "garbage-token-value")
    formatters: list[logging.Formatter] = [JsonFormatter(), ConsoleFormatter()]
    # The test's own HTTP and WebSocket clients log their URLs: not the server's logs.
    server_records = [
        r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "websockets"))
    ]
    assert any(r.name == "uvicorn.error" and "WebSocket" in r.getMessage() for r in server_records)
    for record in server_records:
        for formatter in formatters:
            line = formatter.format(record)
            for secret in secrets:
                assert secret not in line, (record.name, line)
            assert "token=" not in line.replace("token=[redacted]", ""), (record.name, line)
