"""Bad input over the full stack, while another call's viewer keeps decoding.

Malformed SDP, offers with no usable codec, garbage on the signalling WebSocket, forged,
expired and other-call SFU tokens, random bytes to the SFU's UDP ports and a viewer
sending RTP: each gets a clear error or is dropped silently, nothing crashes, and the
canary call (a host publishing to a decoding viewer) never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websockets
from aiortc import RTCPeerConnection

from sfu.ice import rtc_configuration
from stagecast.client import (
    SfuConnection,
    SignallingError,
    SyntheticVideoTrack,
    ToneAudioTrack,
    Viewer,
)
from stagecast.settings import ApiKey
from stagecast.tokens import KeyRing
from tests.e2e.stack import API_KEY, CALL_TYPE, Embedded

WIDTH, HEIGHT = 320, 240


class Canary:
    """A live call whose viewer must keep decoding while the others are abused."""

    def __init__(self, host: SfuConnection, fan: SfuConnection, viewer: Viewer) -> None:
        self.host = host
        self.fan = fan
        self.viewer = viewer

    async def still_decoding(self, frames: int = 5) -> None:
        await self.viewer.wait_video_frames(self.viewer.video_frames + frames, timeout=5)
        assert not self.host.closed.is_set() and not self.fan.closed.is_set()
        assert self.viewer.sizes == {(WIDTH, HEIGHT): self.viewer.video_frames}


@pytest.fixture
async def canary(embedded: Embedded, closing: Callable[[Any], Any]) -> AsyncIterator[Canary]:
    call_id, api = await embedded.new_show("canary-host", "canary")
    host = closing(await embedded.connect("canary-host", call_id))
    await host.publish(ToneAudioTrack(), SyntheticVideoTrack(WIDTH, HEIGHT, 30))
    await api.go_live(CALL_TYPE, call_id)
    fan = closing(await embedded.connect("canary-fan", call_id))
    viewer = await fan.subscribe()
    await viewer.wait_video_frames(10)
    yield Canary(host, fan, viewer)


async def ws_exchange(ws_url: str, token: str) -> websockets.ClientConnection:
    return await websockets.connect(f"{ws_url}?token={token}", max_size=2**22)


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def test_bad_sdp_and_codecs(
    embedded: Embedded, canary: Canary, closing: Callable[[Any], Any]
) -> None:
    server = embedded
    call_id, api = await server.new_show("host")
    await api.go_live(CALL_TYPE, call_id)
    host = closing(await server.connect("host", call_id))
    fan = closing(await server.connect("fan", call_id))
    garbage_sdps = [
        "",
        "hello",
        "v=0\r\nm=video\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\n" + "a=x\r\n" * 5000,
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=rtpmap:96 VP8/90000\r\na=sendonly\r\na=mid:0\r\n",  # no ICE, no DTLS
        "\x00\x01\x02\ufffd" * 100,
    ]
    for sdp in garbage_sdps:
        await host.send({"type": "publish_offer", "sdp": sdp, "id": "bad"})
        reply = await host.wait_for("error", lambda m: m.get("id") == "bad", timeout=10)
        assert reply["code"] in ("invalid_request", "no_compatible_codec"), reply
        host.messages.remove(reply)
        await fan.send({"type": "subscribe_answer", "sdp": sdp, "id": "bad"})
        reply = await fan.wait_for("error", lambda m: m.get("id") == "bad", timeout=10)
        assert reply["code"] in ("invalid_request", "conflict"), reply
        fan.messages.remove(reply)
    await canary.still_decoding()

    # an offer with no usable codec is refused, and the host can still publish after
    pc = closing(RTCPeerConnection(rtc_configuration()))
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    pc.addTransceiver(SyntheticVideoTrack(WIDTH, HEIGHT), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    no_codec = re.sub(r"(?i)(opus|VP8|H264)/", "X-NOPE/", pc.localDescription.sdp)
    with pytest.raises(SignallingError) as refused:
        await host.request({"type": "publish_offer", "sdp": no_codec}, "publish_answer")
    assert refused.value.code == "no_compatible_codec"
    await host.publish(ToneAudioTrack(), SyntheticVideoTrack(WIDTH, HEIGHT, 30))
    sub = await fan.subscribe()
    await sub.wait_video_frames(10)
    await canary.still_decoding()


async def test_garbage_on_the_websocket(embedded: Embedded, canary: Canary) -> None:
    server = embedded
    call_id, api = await server.new_show("host")
    await api.go_live(CALL_TYPE, call_id)
    joined = await server.api("fan").join(CALL_TYPE, call_id)
    ws_url, token = joined["credentials"]["ws_url"], joined["credentials"]["token"]

    async with await ws_exchange(ws_url, token) as ws:
        # before join: only join and ping
        await ws.send(json.dumps({"type": "subscribe", "id": 1}))
        assert (await recv_json(ws))["code"] == "conflict"
        await ws.send(json.dumps({"type": "join"}))
        assert (await recv_json(ws))["type"] == "joined"
        garbage: list[str | bytes] = [
            "not json",
            "[]",
            "null",
            '{"type": 5}',
            '{"no": "type"}',
            json.dumps({"type": "dance"}),
            json.dumps({"type": "trickle", "target": "nowhere", "candidate": "x"}),
            json.dumps({"type": "trickle", "target": "subscriber", "candidate": "garbage"}),
            json.dumps({"type": "mute", "kind": "smell", "muted": True}),
            json.dumps({"type": "mute", "kind": "video", "muted": "yes"}),
            json.dumps({"type": "subscribe_answer", "sdp": "v=0"}),
            json.dumps({"type": "join"}),
            b"\x00\x01binary",
            "x" * 70_000,
            json.dumps({"type": "publish_offer", "sdp": 12}),
        ]
        for frame in garbage:
            await ws.send(frame)
            try:
                reply = await recv_json(ws)
            except TimeoutError:
                raise AssertionError(f"no answer to {frame[:60]!r}") from None
            assert reply["type"] == "error", (frame[:40], reply)
            assert reply["code"] in ("invalid_request", "conflict", "forbidden"), reply
            assert reply["message"]
        # harmless requests are no-ops: unpublishing nothing, a keyframe for nothing
        await ws.send(json.dumps({"type": "unpublish", "kind": "video", "id": "u"}))
        assert (await recv_json(ws)) == {"type": "ack", "ref": "unpublish", "id": "u"}
        await ws.send(json.dumps({"type": "keyframe_request"}))
        await ws.send(json.dumps({"type": "ping", "id": {"nested": ["id"]}}))
        assert (await recv_json(ws))["type"] in ("pong", "error")
        # the connection still works
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        pong = await recv_json(ws)
        assert pong["type"] == "pong" and pong["id"] == "p"
        await canary.still_decoding()
        # past the error budget the socket is closed (1008)
        for _ in range(60):
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send("garbage")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await recv_json(ws)
        assert ws.close_code == 1008
    await canary.still_decoding()

    # a client that connects and says nothing, or drops mid-handshake
    raw = await ws_exchange(ws_url, token)
    raw.transport.abort()
    _, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    writer.write(b"GET /sfu/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x00\xff" * 3)
    await writer.drain()
    writer.close()
    await canary.still_decoding()
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/sfu/healthz")).status_code == 200


async def test_forged_expired_and_other_call_tokens(embedded: Embedded, canary: Canary) -> None:
    server = embedded
    ws_url = server.node.ws_url
    call_id, _ = await server.new_show("host")
    joined = await server.api("host").join(CALL_TYPE, call_id)
    good = server.keyring.sfu_grant(joined["credentials"]["token"])

    forger = KeyRing([ApiKey(API_KEY, "f" * 40)])
    other_key = KeyRing([ApiKey("someone-else", "s" * 40)])
    canary_cid = f"{CALL_TYPE}:canary"
    cases = {
        "forged signature": forger.sfu_token(replace(good, cid=canary_cid), 300),
        "unknown issuer": other_key.sfu_token(good, 300),
        "expired": server.keyring.sfu_token(good, -30),
        "user token": server.keyring.user_token("host"),
        "server token": server.keyring.server_token(),
        "garbage": "a.b.c",
        "empty": "",
    }
    for name, token in cases.items():
        async with await ws_exchange(ws_url, token) as ws:
            reply = await recv_json(ws)
            assert reply["type"] == "error", name
            assert reply["code"] in ("unauthenticated", "token_expired"), (name, reply)
            with pytest.raises(websockets.ConnectionClosed):
                await recv_json(ws)
            assert ws.close_code == 4001, name

    # a valid token for another call reaches that call only
    conn = await SfuConnection.connect(ws_url, joined["credentials"]["token"])
    try:
        assert conn.joined["cid"] == f"{CALL_TYPE}:{call_id}"
        names = {p["user_id"] for p in conn.joined["participants"]}
        assert "canary-host" not in names and "canary-fan" not in names
        assert conn.joined["tracks"] == []
    finally:
        await conn.close()
    # WHIP/WHEP with an SFU token instead of a user token: 401 at the coordinator
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            f"/v1/calls/{CALL_TYPE}/canary/whep",
            content="v=0\r\n",
            headers={
                "authorization": f"Bearer {joined['credentials']['token']}",
                "content-type": "application/sdp",
            },
        )
        assert response.status_code == 401
    await canary.still_decoding()


def _udp_ports(sdp: str) -> set[int]:
    return {int(m) for m in re.findall(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)", sdp)}


async def test_udp_noise_and_a_viewer_sending_rtp(embedded: Embedded, canary: Canary) -> None:
    # every UDP port the SFU gave the canary's peers, plus a fresh viewer's
    server = embedded
    ports = _udp_ports(canary.host.publisher_pc.remoteDescription.sdp)  # type: ignore[union-attr]
    ports |= _udp_ports(canary.viewer.pc.remoteDescription.sdp)
    assert ports
    rng = random.Random(7)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(3):
            for port in ports:
                for size in (1, 2, 12, 20, 100, 1200):
                    sock.sendto(os.urandom(size), ("127.0.0.1", port))
                # things that look like STUN, DTLS, RTP and RTCP
                stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
                dtls = bytes([22, 254, 253]) + os.urandom(40)
                rtp = bytes([0x80, 96]) + os.urandom(1000)
                rtcp = bytes([0x81, 200]) + os.urandom(40)
                for datagram in (stun, dtls, rtp, rtcp):
                    sock.sendto(datagram, ("127.0.0.1", port))
            await asyncio.sleep(0.05 + rng.random() * 0.05)
    finally:
        sock.close()
    await canary.still_decoding(10)

    # a viewer sends SRTP on its receiving connection: dropped, nothing forwarded
    fan = await server.connect("noisy-fan", "canary")
    try:
        viewer = await fan.subscribe()
        await viewer.wait_video_frames(5)
        transport = viewer.pc.getTransceivers()[1].receiver.transport
        for seq in range(200):
            packet = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1234) + os.urandom(500)
            await transport._send_rtp(packet)
        await canary.still_decoding(10)
        room = server.node.rooms[f"{CALL_TYPE}:canary"].room
        assert {p.participant.id for p in room.publications} == {
            canary.host.joined["participant_id"]
        }
        assert canary.viewer.sizes == {(WIDTH, HEIGHT): canary.viewer.video_frames}
    finally:
        await fan.close()
    await canary.still_decoding()
