"""An SFU node end to end: real aiortc peers over the signalling WebSocket, a real bus."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

import aioice.ice
import httpx
import pytest
import uvicorn
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from nodeharness import HOST_CAPS, KEYRING, grant, host_token, running_node, token, viewer_token

from sfu.ice import rtc_configuration
from sfu.node import DrainingServer, SfuNode, create_sfu_app
from stagecast import nodes, protocol
from stagecast.bus import Bus
from stagecast.client import (
    SfuConnection,
    SignallingError,
    SyntheticVideoTrack,
    ToneAudioTrack,
    Viewer,
)
from stagecast.settings import Settings


async def test_host_publishes_three_viewers_decode(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        viewers = [
            await SfuConnection.connect(rn.ws_url, viewer_token(user=f"v{i}")) for i in range(3)
        ]
        try:
            assert host.joined["can_publish"] == {"audio": True, "video": True}
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240, 30))
            subs = await asyncio.gather(*(v.subscribe() for v in viewers))
            for sub in subs:
                await sub.wait_video_frames(10, timeout=10)
                await sub.wait_audio_frames(10, timeout=10)
                assert (sub.width, sub.height) == (320, 240)
                assert sub.last_counter is not None and sub.last_counter > 0
        finally:
            await asyncio.gather(host.close(), *(v.close() for v in viewers))


CID = "livestream:test"


async def test_backstage_viewer_gets_media_from_go_live_without_rejoining(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        fan = await SfuConnection.connect(rn.ws_url, viewer_token(backstage=False))
        try:
            assert fan.joined["call"] == {"live": False, "ended": False}
            assert fan.joined["receiving"] is False
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await fan.subscribe()
            await asyncio.sleep(1.5)  # connected, but fed nothing in backstage
            assert sub.pc.connectionState == "connected"
            assert sub.rtp["video"].packets == 0 and sub.rtp["audio"].packets == 0

            await rn.bus.publish(protocol.CONTROL, {"type": "live_started", "cid": CID})
            state = await fan.wait_for("call_state", lambda m: m["live"])
            assert state["receiving"] is True
            await sub.wait_video_frames(10)
            await sub.wait_audio_frames(10)
            assert (sub.width, sub.height) == (320, 240)

            await rn.bus.publish(protocol.CONTROL, {"type": "live_stopped", "cid": CID})
            await fan.wait_for("call_state", lambda m: not m["live"])
            await asyncio.sleep(0.3)
            stopped_at = sub.rtp["video"].packets
            await asyncio.sleep(1.0)
            assert sub.rtp["video"].packets == stopped_at
            # the host keeps receiving nothing of its own and stays connected
            assert host.closed.is_set() is False
        finally:
            await asyncio.gather(host.close(), fan.close())


async def test_call_state_is_read_when_the_room_opens(bus: Bus) -> None:
    await bus.set_key(protocol.call_state_key(CID), {"live": True, "ended": False}, 60)
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        fan = await SfuConnection.connect(rn.ws_url, viewer_token(backstage=False))
        try:
            assert fan.joined["call"]["live"] is True and fan.joined["receiving"] is True
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await fan.subscribe(mode="thin")
            await sub.wait_packets("video", 30)
        finally:
            await asyncio.gather(host.close(), fan.close())
    await bus.set_key(protocol.call_state_key(CID), {"live": False, "ended": True}, 60)
    async with running_node(bus) as rn:
        with pytest.raises(SignallingError) as refused:
            await SfuConnection.connect(rn.ws_url, viewer_token())
        assert refused.value.code == "call_ended"
        # a host allowed to join ended calls may
        host = await SfuConnection.connect(
            rn.ws_url,
            token(grant(CID, "host", caps=HOST_CAPS | {"join-ended-call"}, role="host")),
        )
        await host.close()


async def test_ended_disconnects_everyone(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        viewers = [
            await SfuConnection.connect(rn.ws_url, viewer_token(user=f"v{i}")) for i in range(2)
        ]
        other = await SfuConnection.connect(rn.ws_url, viewer_token("livestream:other"))
        try:
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await viewers[0].subscribe(mode="thin")
            await sub.wait_packets("video", 10)
            await rn.bus.publish(protocol.CONTROL, {"type": "ended", "cid": CID})
            for conn in (host, *viewers):
                await asyncio.wait_for(conn.closed.wait(), 5)
                assert conn.goodbye == {"type": "goodbye", "reason": "call_ended"}
                assert conn.close_code == 4009
                assert conn.received("call_state")[-1]["ended"] is True
            assert CID not in rn.node.rooms
            assert rn.node.load == 1  # the other call is untouched
            assert not other.closed.is_set()
        finally:
            await asyncio.gather(host.close(), other.close(), *(v.close() for v in viewers))


async def test_joins_and_leaves_are_reported_even_when_a_viewer_vanishes(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_node(bus) as rn:
        seen: list[dict[str, Any]] = []
        host = await SfuConnection.connect(rn.ws_url, host_token())
        fan = await SfuConnection.connect(rn.ws_url, viewer_token(user="fan"))
        egress = await SfuConnection.connect(
            rn.ws_url, token(grant(CID, "egress", hidden=True, role="egress"))
        )
        try:
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await fan.subscribe(mode="thin")
            await sub.wait_packets("video", 10)
            fan_id = fan.joined["participant_id"]
            joined = await rn.wait_event(seen, "participant_joined", participant_id=fan_id)
            assert joined["cid"] == CID and joined["user_id"] == "fan"
            assert joined["session_id"] == "sess-1" and joined["role"] == "user"
            assert joined["node_id"] == rn.node.node_id and joined["hidden"] is False
            assert joined["at"].endswith("Z") and joined["name"] == "Fan"
            published = await rn.wait_event(seen, "track_published", kind="video")
            assert published["codec"] in ("VP8", "H264") and published["muted"] is False
            hidden = await rn.wait_event(seen, "participant_joined", user_id="egress")
            assert hidden["hidden"] is True
            # hidden participants are not shown to clients
            assert all(
                m["participant"]["user_id"] != "egress" for m in host.received("participant_joined")
            )
            assert any(
                m["participant"]["user_id"] == "fan" for m in host.received("participant_joined")
            )

            await host.mute("video", True)
            muted = await rn.wait_event(seen, "mute_changed", kind="video")
            assert muted["muted"] is True

            # the fan's process dies: no leave, no close frame, no DTLS close
            _abort_udp(sub.pc)
            fan.ws.transport.abort()
            left = await rn.wait_event(seen, "participant_left", participant_id=fan_id)
            assert left["reason"] == "disconnected"
            await host.wait_for("participant_left", lambda m: m["participant_id"] == fan_id)
        finally:
            await asyncio.gather(host.close(), fan.close(), egress.close())


def _abort_udp(pc: Any) -> None:
    """Silence a client peer connection as if its process had died."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for proto in list(connection._protocols):
            if proto.transport is not None:
                proto.transport.abort()


async def test_whip_and_whep_over_the_bus(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    # fast ICE consent checks, so a WHEP viewer that vanishes is noticed within seconds
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.3)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    async with running_node(bus) as rn:
        channel = protocol.node_channel(rn.node.node_id)
        seen: list[dict[str, Any]] = []
        publisher = RTCPeerConnection(rtc_configuration())
        whep = Viewer(RTCPeerConnection(rtc_configuration()), "decode")
        try:
            publisher.addTransceiver(ToneAudioTrack(), direction="sendonly")
            publisher.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly")
            await publisher.setLocalDescription(await publisher.createOffer())
            offer = publisher.localDescription.sdp

            # refusals, each with its code
            no_video = token(grant(user="w", caps=frozenset({"send-audio"})))
            refusals = {
                "forbidden": {"type": "whip", "token": no_video, "sdp": offer},
                "unauthenticated": {"type": "whip", "token": "nope", "sdp": offer},
                "invalid_request": {"type": "whip", "token": host_token(), "sdp": "v=0 bad"},
            }
            for code, message in refusals.items():
                reply = await rn.bus.request(channel, message, timeout=10)
                assert reply["error"]["code"] == code, reply
            reply = await rn.bus.request(channel, {"type": "dance"}, timeout=10)
            assert reply["error"]["code"] == "invalid_request"
            assert rn.node.load == 0

            reply = await rn.bus.request(
                channel, {"type": "whip", "token": host_token(), "sdp": offer}, timeout=10
            )
            assert "a=candidate:" in reply["sdp"], "the answer carries the server's candidates"
            await publisher.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
            publisher_id = reply["participant_id"]

            whep_offer = await whep.create_offer()
            reply = await rn.bus.request(
                channel,
                {"type": "whep", "token": viewer_token(user="w"), "sdp": whep_offer},
                timeout=10,
            )
            assert "a=candidate:" in reply["sdp"]
            assert "a=sendonly" in reply["sdp"]
            await whep.accept_answer(reply["sdp"])
            whep_id = reply["participant_id"]
            await whep.wait_video_frames(10)
            await whep.wait_audio_frames(10)
            assert (whep.width, whep.height) == (320, 240)

            # trickle is accepted (a duplicate of a known candidate is harmless)
            frag = "a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            frag += "a=end-of-candidates\r\n"
            reply = await rn.bus.request(
                channel, {"type": "trickle", "participant_id": whep_id, "sdpfrag": frag}
            )
            assert reply == {"ok": True, "participant_id": whep_id}

            # the WHEP viewer vanishes: ICE consent fails, it leaves and is reported
            _abort_udp(whep.pc)
            left = await rn.wait_event(seen, "participant_left", participant_id=whep_id)
            assert left["reason"] == "connection_failed" and left["transport"] == "whep"

            reply = await rn.bus.request(
                channel, {"type": "delete", "participant_id": publisher_id}, timeout=10
            )
            assert reply["ok"] is True
            left = await rn.wait_event(seen, "participant_left", participant_id=publisher_id)
            assert left["reason"] == "left"
            reply = await rn.bus.request(
                channel, {"type": "delete", "participant_id": publisher_id}, timeout=10
            )
            assert reply["error"]["code"] == "not_found"
        finally:
            await whep.close()
            await publisher.close()


async def test_whep_offer_without_a_usable_codec(bus: Bus) -> None:
    async with running_node(bus) as rn:
        pc = RTCPeerConnection(rtc_configuration())
        try:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            caps = RTCRtpSender.getCapabilities("video").codecs
            h264 = [c for c in caps if c.mimeType.lower() == "video/h264"]
            transceiver.setCodecPreferences(h264)
            await pc.setLocalDescription(await pc.createOffer())
            # a VP8 publisher fixes the room's codec
            host = await SfuConnection.connect(rn.ws_url, host_token())
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240), video_codec="VP8")
            reply = await rn.bus.request(
                protocol.node_channel(rn.node.node_id),
                {"type": "whep", "token": viewer_token(), "sdp": pc.localDescription.sdp},
            )
            assert reply["error"]["code"] == "no_compatible_codec"
            assert rn.node.load == 1
            await host.close()
        finally:
            await pc.close()


async def test_registry_drain_and_service_endpoints(bus: Bus) -> None:
    async with running_node(bus) as rn:
        node_id = rn.node.node_id
        host = await SfuConnection.connect(rn.ws_url, host_token())
        viewer = await SfuConnection.connect(rn.ws_url, viewer_token())
        try:
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240))
            sub = await viewer.subscribe(mode="thin")
            await sub.wait_packets("video", 30)
            await asyncio.sleep(0.5)  # a heartbeat or two
            infos = {n.id: n for n in await nodes.live_nodes(bus)}
            info = infos[node_id]
            assert info.ws_url == f"ws://127.0.0.1:{rn.port}/ws"
            assert info.url == f"http://127.0.0.1:{rn.port}"
            assert info.load == 2 and info.calls == [CID] and not info.draining
            assert info.capacity == 50

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rn.port}") as http:
                health = (await http.get("/healthz")).json()
                assert health == {"status": "ok", "node_id": node_id, "draining": False}
                assert (await http.get("/readyz")).status_code == 200
                metrics = (await http.get("/metrics")).text
                assert f'stagecast_sfu_participants{{node="{node_id}"}} 2.0' in metrics
                assert f'stagecast_sfu_rooms{{node="{node_id}"}} 1.0' in metrics
                forwarded = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("stagecast_sfu_forwarded_bytes_total")
                ]
                assert forwarded and float(forwarded[0].split()[-1]) > 0

                # drain: clients get goaway, new joins are refused, the node waits for them
                drain = asyncio.create_task(rn.node.stop(drain=True, grace_seconds=10))
                goaway = await viewer.wait_for("goaway")
                assert goaway["reason"] == "draining"
                await host.wait_for("goaway")
                assert (await http.get("/healthz")).json()["draining"] is True
                assert (await http.get("/readyz")).status_code == 503
                with pytest.raises(SignallingError) as refused:
                    await SfuConnection.connect(rn.ws_url, viewer_token(user="late"))
                assert refused.value.code == "capacity_exhausted"
                info = {n.id: n for n in await nodes.live_nodes(bus)}[node_id]
                assert info.draining
                await viewer.leave()
                assert not drain.done()
                await host.leave()
                await asyncio.wait_for(drain, 5)
            assert node_id not in {n.id for n in await nodes.live_nodes(bus)}
        finally:
            await asyncio.gather(host.close(), viewer.close())


async def test_standalone_server_drains_on_sigterm(bus: Bus) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(node_id="sfu-standalone", node_heartbeat_seconds=0.2)
    node = SfuNode(settings, bus, KEYRING, f"http://127.0.0.1:{port}", drain_grace_seconds=10)
    config = uvicorn.Config(create_sfu_app(node), log_config=None, ws="websockets-sansio")
    server = DrainingServer(config, node)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        viewer = await SfuConnection.connect(node.ws_url, viewer_token())
        server.handle_exit(signal.SIGTERM, None)
        await viewer.wait_for("goaway")
        assert not task.done()  # still serving while the client is connected
        await viewer.leave()
        await asyncio.wait_for(task, 10)
        assert node.stopped and "sfu-standalone" not in {n.id for n in await nodes.live_nodes(bus)}
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
