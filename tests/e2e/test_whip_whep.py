"""WHIP publishing and WHEP playback over the coordinator's HTTP endpoints, with aiortc
peers as the WHIP/WHEP clients (``docs/api.md``, Media)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from sfu.ice import rtc_configuration
from stagecast.client import SyntheticVideoTrack, ToneAudioTrack, Viewer
from tests.e2e.stack import CALL_TYPE, Embedded, run_embedded

WIDTH, HEIGHT = 320, 240
SDP = {"content-type": "application/sdp"}


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=embedded.url, timeout=30) as client:
        yield client


def path(call_id: str, direction: str) -> str:
    return f"/v1/calls/{CALL_TYPE}/{call_id}/{direction}"


def bearer(server: Embedded, user: str) -> dict[str, str]:
    return {**SDP, **server.auth(user)}


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"]
    result: dict[str, Any] = body["error"]
    return result


async def publisher_offer(
    closing: Callable[[Any], Any],
    *,
    video_codec: str | None = None,
    audio_codec: str | None = None,
) -> RTCPeerConnection:
    """An aiortc WHIP client with its offer set (candidates included: aiortc gathers
    before ``setLocalDescription`` returns)."""
    pc = RTCPeerConnection(rtc_configuration())
    closing(pc)
    audio = pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    video = pc.addTransceiver(SyntheticVideoTrack(WIDTH, HEIGHT, 30), direction="sendonly")
    for transceiver, kind, codec in ((audio, "audio", audio_codec), (video, "video", video_codec)):
        if codec is not None:
            caps = RTCRtpSender.getCapabilities(kind).codecs
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() == f"{kind}/{codec.lower()}"]
                + [c for c in caps if c.mimeType.lower() == "video/rtx"]
            )
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def whip(
    http: httpx.AsyncClient, server: Embedded, closing: Callable[[Any], Any], call_id: str
) -> tuple[RTCPeerConnection, str]:
    pc = await publisher_offer(closing)
    response = await http.post(
        path(call_id, "whip"), content=pc.localDescription.sdp, headers=bearer(server, "host")
    )
    assert response.status_code == 201, response.text
    await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    return pc, response.headers["location"]


async def whep(
    http: httpx.AsyncClient,
    server: Embedded,
    closing: Callable[[Any], Any],
    call_id: str,
    user: str,
) -> tuple[Viewer, httpx.Response]:
    viewer = closing(Viewer(RTCPeerConnection(rtc_configuration()), "decode"))
    offer = await viewer.create_offer()
    response = await http.post(path(call_id, "whep"), content=offer, headers=bearer(server, user))
    if response.status_code == 201:
        await viewer.accept_answer(response.text)
    return viewer, response


async def test_whip_and_whep_through_the_coordinator(
    embedded: Embedded, http: httpx.AsyncClient, closing: Callable[[Any], Any]
) -> None:
    server = embedded
    call_id, host_api = await server.new_show("host")

    # WHIP in backstage (the host may publish before going live)
    pc = await publisher_offer(closing)
    response = await http.post(
        path(call_id, "whip"), content=pc.localDescription.sdp, headers=bearer(server, "host")
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp")
    location = response.headers["location"]
    assert location.startswith(path(call_id, "whip") + "/")  # relative, on the coordinator
    assert "a=candidate:" in response.text and "a=recvonly" in response.text
    await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    await host_api.go_live(CALL_TYPE, call_id)

    # WHEP viewers decode
    viewers = []
    for user in ("fan1", "fan2"):
        viewer, response = await whep(http, server, closing, call_id, user)
        assert response.status_code == 201, response.text
        assert "a=candidate:" in response.text and "a=sendonly" in response.text
        viewers.append((viewer, response.headers["location"]))
    for viewer, _ in viewers:
        await viewer.wait_video_frames(10, timeout=15)
        await viewer.wait_audio_frames(10, timeout=15)
        assert viewer.sizes == {(WIDTH, HEIGHT): viewer.video_frames}
    # they are participants like any other
    await server.wait_count(call_id, 3)
    call = (await server.api().get_call(CALL_TYPE, call_id))["call"]
    assert call["session"]["participant_count_by_role"] == {"host": 1, "user": 2}

    # trickle (RFC 8840 fragment) is accepted; the wrong media type is not
    fan_location = viewers[0][1]
    frag = (
        "a=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0"
        "\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    headers = {**server.auth("fan1"), "content-type": "application/trickle-ice-sdpfrag"}
    response = await http.patch(fan_location, content=frag, headers=headers)
    assert response.status_code == 204, response.text
    response = await http.patch(fan_location, content=frag, headers=bearer(server, "fan1"))
    assert response.status_code == 415
    # only the owner (or a server token) may end or change a session
    response = await http.patch(
        fan_location, content=frag, headers={**headers, **server.auth("fan2")}
    )
    assert response.status_code == 403 and error(response)["code"] == "forbidden"
    response = await http.delete(fan_location, headers=server.auth("fan2"))
    assert response.status_code == 403 and error(response)["code"] == "forbidden"
    await viewers[1][0].wait_video_frames(viewers[1][0].video_frames + 5)

    # DELETE by the owner: 204, gone from the count; again: 404
    response = await http.delete(fan_location, headers=server.auth("fan1"))
    assert response.status_code == 204
    await server.wait_count(call_id, 2)
    response = await http.delete(fan_location, headers=server.auth("fan1"))
    assert response.status_code == 404
    # a server token may end anyone's session
    response = await http.delete(viewers[1][1], headers=server.auth("server"))
    assert response.status_code == 204
    await server.wait_count(call_id, 1)
    response = await http.delete(location, headers=server.auth("host"))
    assert response.status_code == 204
    await server.wait_count(call_id, 0)


async def test_whep_in_backstage_waits_for_go_live(
    embedded: Embedded, http: httpx.AsyncClient, closing: Callable[[Any], Any]
) -> None:
    server = embedded
    # no join-ahead: refused until live
    closed_id, _ = await server.new_show("host")
    _, response = await whep(http, server, closing, closed_id, "early")
    assert response.status_code == 403
    assert error(response)["code"] == "call_in_backstage"
    assert error(response)["details"]["join_ahead_time_seconds"] == 0

    # inside the join-ahead window: admitted, fed nothing, media from go-live on
    starts_at = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    call_id, host_api = await server.new_show(
        "host",
        starts_at=starts_at,
        settings_override={"backstage": {"join_ahead_time_seconds": 600}},
    )
    await whip(http, server, closing, call_id)
    viewer, response = await whep(http, server, closing, call_id, "early")
    assert response.status_code == 201, response.text
    await server.wait_count(call_id, 2)
    await asyncio.sleep(1.5)
    assert viewer.pc.connectionState == "connected"
    assert viewer.rtp["video"].packets == 0 and viewer.rtp["audio"].packets == 0
    await host_api.go_live(CALL_TYPE, call_id)
    await viewer.wait_video_frames(10, timeout=10)
    await viewer.wait_audio_frames(10, timeout=10)

    # ended: no more WHIP or WHEP
    await host_api.end_call(CALL_TYPE, call_id)
    _, response = await whep(http, server, closing, call_id, "late")
    assert response.status_code == 409 and error(response)["code"] == "call_ended"
    pc = await publisher_offer(closing)
    response = await http.post(
        path(call_id, "whip"), content=pc.localDescription.sdp, headers=bearer(server, "host")
    )
    assert response.status_code == 409 and error(response)["code"] == "call_ended"


async def test_whip_whep_refusals(
    embedded: Embedded, http: httpx.AsyncClient, closing: Callable[[Any], Any]
) -> None:
    server = embedded
    call_id, host_api = await server.new_show("host")
    await host_api.go_live(CALL_TYPE, call_id)
    offer = (await publisher_offer(closing)).localDescription.sdp
    whip_path = path(call_id, "whip")

    # a bad token is 401 whatever the body, even garbage
    for headers in (
        SDP,
        {**SDP, "authorization": "Bearer not-a-jwt"},
        {"content-type": "text/plain", "authorization": "Bearer x.y.z"},
    ):
        for body in (offer, b"\x00\xff garbage", b""):
            for direction in ("whip", "whep"):
                response = await http.post(path(call_id, direction), content=body, headers=headers)
                assert response.status_code == 401, (headers, body[:10], response.text)
                assert error(response)["code"] == "unauthenticated"
    expired = server.keyring.user_token("host", ttl_seconds=-60)
    response = await http.post(
        whip_path, content=offer, headers={**SDP, "authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401 and error(response)["code"] == "token_expired"

    # a viewer may not publish
    response = await http.post(whip_path, content=offer, headers=bearer(server, "fan"))
    assert response.status_code == 403
    assert error(response)["code"] == "forbidden"
    assert error(response)["details"]["missing_capability"] == "send-video"

    # malformed SDP: 400 (at the coordinator, or from the node's parser)
    for body in ("hello", "v=0\r\nm=video\r\n", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n"):
        response = await http.post(whip_path, content=body, headers=bearer(server, "host"))
        assert response.status_code == 400, (body, response.text)
        assert error(response)["code"] == "invalid_request"
        response = await http.post(
            path(call_id, "whep"), content=body, headers=bearer(server, "fan")
        )
        assert response.status_code == 400, (body, response.text)
    response = await http.post(
        whip_path, content=offer, headers={**server.auth("host"), "content-type": "text/plain"}
    )
    assert response.status_code == 415 and error(response)["code"] == "invalid_request"

    # no usable codec: 422; a refused offer leaves no trace
    pcmu = await publisher_offer(closing, audio_codec="PCMU")
    response = await http.post(
        whip_path, content=pcmu.localDescription.sdp, headers=bearer(server, "host")
    )
    assert response.status_code == 422 and error(response)["code"] == "no_compatible_codec"
    # the room's video codec is fixed by its first publisher (VP8); WHEP asking only for
    # H.264 has nothing to receive
    await whip(http, server, closing, call_id)
    h264_only = closing(RTCPeerConnection(rtc_configuration()))
    h264_only.addTransceiver("audio", direction="recvonly")
    transceiver = h264_only.addTransceiver("video", direction="recvonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    )
    await h264_only.setLocalDescription(await h264_only.createOffer())
    response = await http.post(
        path(call_id, "whep"),
        content=h264_only.localDescription.sdp,
        headers=bearer(server, "fan"),
    )
    assert response.status_code == 422 and error(response)["code"] == "no_compatible_codec"
    await server.wait_count(call_id, 1)  # only the WHIP publisher

    # unknown call: 404; unknown resource: 404
    response = await http.post(
        path(f"nope-{uuid.uuid4().hex[:6]}", "whep"), content=offer, headers=bearer(server, "fan")
    )
    assert response.status_code == 404
    response = await http.delete(f"{whip_path}/{uuid.uuid4().hex}", headers=server.auth("host"))
    assert response.status_code == 404


async def test_a_full_node_says_why(tmp_path: Path, closing: Callable[[Any], Any]) -> None:
    """The node refuses (its registry entry still shows room: heartbeats are slow here);
    the coordinator's 503 carries the node's ``details.reason`` as the contract says."""
    async with (
        run_embedded(
            tmp_path, sfu_capacity=1, node_heartbeat_seconds=60, node_ttl_seconds=120
        ) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        call_id, api = await server.new_show("host")
        await api.go_live(CALL_TYPE, call_id)
        await whip(http, server, closing, call_id)
        _, response = await whep(http, server, closing, call_id, "fan")
        assert response.status_code == 503, response.text
        assert error(response)["code"] == "capacity_exhausted"
        assert error(response)["details"]["reason"] == "node_full"
