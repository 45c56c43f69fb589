"""Driving the coordinator the way an app and an SFU node do."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from stagecast.bus import Bus
from stagecast.protocol import SFU_EVENTS
from stagecast.tokens import KeyRing


async def report(
    bus: Bus,
    keyring: KeyRing,
    sfu_token: str,
    kind: str,
    node_id: str = "sfu-test",
    **extra: Any,
) -> None:
    """Send the report an SFU node sends when the holder of ``sfu_token`` joins or leaves."""
    grant = keyring.sfu_grant(sfu_token)
    await bus.enqueue(
        SFU_EVENTS,
        {
            "type": kind,
            "cid": grant.cid,
            "session_id": grant.session_id,
            "participant_id": grant.participant_id,
            "user_id": grant.user_id,
            "role": grant.role,
            "hidden": grant.hidden,
            "node_id": node_id,
            **extra,
        },
    )


async def wait_for(
    http: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    predicate: Any,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll ``GET path`` until ``predicate(body)`` holds; the body, or AssertionError."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await http.get(path, headers=headers)
        body: dict[str, Any] = response.json()
        if response.status_code == 200 and predicate(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never matched; last answer: {body}")
        await asyncio.sleep(0.05)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["code"])
