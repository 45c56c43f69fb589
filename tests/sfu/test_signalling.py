"""The signalling WebSocket: authentication, refusals and garbage never crash the node."""

from __future__ import annotations

import asyncio
import json
import random
import socket

import pytest
import websockets
from nodeharness import KEYRING, grant, host_token, running_node, token, viewer_token

from stagecast.bus import Bus
from stagecast.client import SfuConnection, SignallingError, SyntheticVideoTrack, ToneAudioTrack
from stagecast.settings import ApiKey
from stagecast.tokens import KeyRing


async def _refusal(ws_url: str, tok: str) -> tuple[dict[str, object], int | None]:
    async with websockets.connect(f"{ws_url}?token={tok}") as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        return message, ws.close_code


async def test_bad_tokens_are_refused_with_a_reason(bus: Bus) -> None:
    async with running_node(bus) as rn:
        good = viewer_token()
        cases = {
            "missing": ("", "unauthenticated"),
            "garbage": ("not-a-jwt", "unauthenticated"),
            "tampered": (
                good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
                "unauthenticated",
            ),
            "other secret": (
                KeyRing([ApiKey("k", "x" * 32)]).sfu_token(grant(), 60),
                "unauthenticated",
            ),
            "expired": (token(grant(), ttl=-60), "token_expired"),
            "api token": (KEYRING.user_token("alice"), "unauthenticated"),
        }
        for name, (tok, code) in cases.items():
            message, close_code = await _refusal(rn.ws_url, tok)
            assert message["type"] == "error", name
            assert message["code"] == code, name
            assert message["message"], name
            assert close_code == 4001, name
        assert rn.node.load == 0


async def test_capability_decides_publishing(bus: Bus) -> None:
    async with running_node(bus) as rn:
        audio_only = token(grant(user="speaker", caps=frozenset({"send-audio"})))
        speaker = await SfuConnection.connect(rn.ws_url, audio_only)
        viewer = await SfuConnection.connect(rn.ws_url, viewer_token())
        try:
            assert speaker.joined["can_publish"] == {"audio": True, "video": False}
            with pytest.raises(SignallingError) as refused:
                await speaker.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            assert refused.value.code == "forbidden"
            assert refused.value.details["missing_capability"] == "send-video"
            with pytest.raises(SignallingError) as refused_viewer:
                await viewer.publish(ToneAudioTrack())
            assert refused_viewer.value.details["missing_capability"] == "send-audio"
            sub = await viewer.subscribe(mode="thin")
            await asyncio.sleep(1.0)
            room = rn.node.rooms["livestream:test"].room
            assert room.publications == []
            assert sub.rtp["video"].packets == 0 and sub.rtp["audio"].packets == 0
            # the same speaker may publish what it is allowed to
            await speaker.publish(ToneAudioTrack())
            await sub.wait_packets("audio", 20)
            assert sub.rtp["video"].packets == 0
        finally:
            await asyncio.gather(speaker.close(), viewer.close())


async def test_a_token_only_reaches_its_own_call(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host_a = await SfuConnection.connect(rn.ws_url, host_token("livestream:a"))
        host_b = await SfuConnection.connect(rn.ws_url, host_token("livestream:b", user="hb"))
        viewer_a = await SfuConnection.connect(rn.ws_url, viewer_token("livestream:a"))
        try:
            await host_b.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await viewer_a.subscribe(mode="thin")
            await asyncio.sleep(1.0)
            assert sub.rtp["video"].packets == 0  # call B's media never reaches call A
            assert viewer_a.joined["cid"] == "livestream:a"
            assert {p["participant_id"] for p in viewer_a.joined["participants"]} == {
                host_a.joined["participant_id"]
            }
            # requests naming another call's participant find nothing
            reply = await rn.bus.request(
                "sfu.node." + rn.node.node_id,
                {
                    "type": "delete",
                    "cid": "livestream:b",
                    "participant_id": viewer_a.joined["participant_id"],
                },
            )
            assert reply["error"]["code"] == "not_found"
            await host_a.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            await sub.wait_packets("video", 30)
        finally:
            await asyncio.gather(host_a.close(), host_b.close(), viewer_a.close())


async def test_garbage_gets_errors_and_the_node_carries_on(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token("livestream:other"))
        viewer = await SfuConnection.connect(rn.ws_url, viewer_token("livestream:other"))
        await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
        sub = await viewer.subscribe(mode="thin")
        await sub.wait_packets("video", 20)
        try:
            async with websockets.connect(f"{rn.ws_url}?token={host_token()}") as ws:
                # before join, only join and ping
                await ws.send(json.dumps({"type": "subscribe"}))
                first = json.loads(await ws.recv())
                assert first["type"] == "error" and first["code"] == "conflict"
                await ws.send(json.dumps({"type": "join"}))
                assert json.loads(await ws.recv())["type"] == "joined"
                garbage: list[str | bytes] = [
                    "not json",
                    "[1, 2, 3]",
                    '{"type": 5}',
                    '{"no_type": true}',
                    '{"type": "explode"}',
                    "x" * 200_000,
                    b"\x00\x01binary",
                    json.dumps({"type": "publish_offer", "sdp": 123}),
                    json.dumps({"type": "publish_offer", "sdp": "v=0 garbage", "id": 7}),
                    json.dumps({"type": "subscribe_answer", "sdp": "v=0"}),
                    json.dumps({"type": "trickle", "target": "moon", "candidate": "x"}),
                    json.dumps({"type": "trickle", "target": "publisher", "candidate": "x"}),
                    json.dumps({"type": "mute", "kind": "video", "muted": "yes"}),
                    json.dumps({"type": "mute", "kind": "smell", "muted": True}),
                    json.dumps({"type": "mute", "kind": "video", "muted": True}),
                    json.dumps({"type": "unpublish", "kind": 3}),
                    json.dumps({"type": "join"}),
                    json.dumps(
                        {
                            "type": "trickle",
                            "target": "subscriber",
                            "sdp_mline_index": "zero",
                            "candidate": None,
                        }
                    ),
                ]
                rng = random.Random(3)
                garbage += [
                    bytes(rng.getrandbits(8) for _ in range(50)).decode("latin-1") for _ in range(5)
                ]
                for item in garbage:
                    await ws.send(item)
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert reply["type"] == "error", (item[:40], reply)
                    assert reply["code"] and reply["message"]
                    if isinstance(item, str) and '"id": 7' in item:
                        assert reply["id"] == 7
                        assert reply["code"] == "invalid_request"
                await ws.send(json.dumps({"type": "ping", "id": "p"}))
                assert json.loads(await ws.recv()) == {"type": "pong", "id": "p"}
            # the other call never noticed
            before = sub.rtp["video"].packets
            await sub.wait_packets("video", before + 30)
            assert rn.node.rooms["livestream:other"].room.publications
        finally:
            await asyncio.gather(host.close(), viewer.close())


async def test_too_many_errors_close_the_socket(bus: Bus) -> None:
    async with running_node(bus) as rn:
        async with websockets.connect(f"{rn.ws_url}?token={viewer_token()}") as ws:
            await ws.send(json.dumps({"type": "join"}))
            assert json.loads(await ws.recv())["type"] == "joined"
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(100):
                    await ws.send("{")
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008
        await _eventually(lambda: rn.node.load == 0)


async def test_random_udp_datagrams_do_not_disturb_media(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        viewer = await SfuConnection.connect(rn.ws_url, viewer_token())
        try:
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await viewer.subscribe()
            await sub.wait_video_frames(5)
            ports = set()
            for participant in rn.node.rooms["livestream:test"].room.participants.values():
                for pc in (participant.publisher_pc, participant.subscriber_pc):
                    if pc is None:
                        continue
                    for t in pc.getTransceivers():
                        connection = t.receiver.transport.transport._connection
                        for protocol in connection._protocols:
                            ports.add(protocol.transport.get_extra_info("sockname")[1])
            assert ports
            rng = random.Random(11)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for i in range(2000):
                    first = rng.choice([0, 1, 20, 22, 63, 128, 129, 200, 255])
                    size = rng.choice([1, 4, 12, 20, 100, 1200])
                    body = bytes([first]) + bytes(rng.getrandbits(8) for _ in range(size - 1))
                    sender.sendto(body, ("127.0.0.1", rng.choice(sorted(ports))))
                    if i % 100 == 0:
                        await asyncio.sleep(0.01)
            finally:
                sender.close()
            before = sub.video_frames
            await sub.wait_video_frames(before + 30)
            assert rn.node.load == 2
        finally:
            await asyncio.gather(host.close(), viewer.close())


async def _eventually(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def test_the_same_token_reconnecting_replaces_the_old_session(bus: Bus) -> None:
    async with running_node(bus) as rn:
        tok = viewer_token()
        first = await SfuConnection.connect(rn.ws_url, tok)
        second = await SfuConnection.connect(rn.ws_url, tok)
        try:
            await asyncio.wait_for(first.closed.wait(), 5)
            assert first.goodbye == {"type": "goodbye", "reason": "replaced"}
            assert first.close_code == 4010
            assert second.joined["participant_id"] == first.joined["participant_id"]
            assert rn.node.load == 1
            await second.send({"type": "ping", "id": 1})
            assert (await second.wait_for("pong"))["id"] == 1
        finally:
            await asyncio.gather(first.close(), second.close())
