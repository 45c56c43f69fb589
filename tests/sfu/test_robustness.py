"""Authorization refusals, malformed input, and a viewer that sends media."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from aiortc.rtp import RtpPacket
from peers import ClientPublisher, Harness

from sfu import (
    InvalidOffer,
    InvalidState,
    NoCompatibleCodec,
    PublishForbidden,
    SubscribeForbidden,
)


async def test_participant_without_publish_flags_is_refused(harness: Harness) -> None:
    room = harness.room()
    client = ClientPublisher()
    harness.clients.append(client)
    offer = await client.offer()

    guest = room.join("guest")
    with pytest.raises(PublishForbidden) as refused:
        await guest.publish(offer)
    assert refused.value.code == "forbidden"
    assert guest.publisher_pc is None and room.publications == []

    audio_only = room.join("audio-only", can_publish_audio=True)
    with pytest.raises(PublishForbidden) as refused_video:
        await audio_only.publish(offer)
    assert refused_video.value.kind == "video"
    assert refused_video.value.missing_capability == "send-video"

    blind = room.join("blind", can_receive=False)
    with pytest.raises(SubscribeForbidden):
        await blind.subscribe()
    assert room.video_codec is None  # nothing was published


async def test_offer_without_the_room_codec_is_refused(harness: Harness) -> None:
    room = harness.room(video_codec="H264")
    client = ClientPublisher(prefer="VP8")
    harness.clients.append(client)
    host = room.join("host", can_publish_audio=True, can_publish_video=True)
    with pytest.raises(NoCompatibleCodec) as refused:
        await host.publish(await client.offer())
    assert refused.value.kind == "video"
    with pytest.raises(InvalidOffer):
        await host.publish("this is not SDP")
    with pytest.raises(InvalidState):
        await host.set_subscriber_answer("v=0")


async def test_malformed_rtp_does_not_crash_the_loop(harness: Harness) -> None:
    room = harness.room()
    _, client = await harness.publish(room)
    viewer_participant, viewer = await harness.view(room, "v")
    await viewer.wait_frames(5)
    video = room.active_publication("video")
    assert video is not None
    pt = video.media_pt
    rng = random.Random(7)
    sfu_transport = video.receiver.transport

    # 1. raw (already decrypted) garbage straight into the SFU's receive path
    for i in range(400):
        size = rng.choice([0, 1, 5, 11, 12, 13, 40, 300, 1400])
        body = bytes(rng.getrandbits(8) for _ in range(size))
        if i % 2 and size >= 12:
            # plausible header, random SSRC / payload / flags
            body = (
                struct.pack(
                    "!BBHII", 0x80 | rng.getrandbits(6), pt, i, i * 3000, rng.getrandbits(32)
                )
                + body[12:]
            )
        await sfu_transport._handle_rtp_data(body, 0)

    # 2. SRTP-protected garbage from the publisher's own connection
    client_transport = client.pc.getTransceivers()[0].sender.transport
    for i in range(50):
        header = struct.pack("!BBHII", 0x80, pt, 1000 + i, i, rng.getrandbits(32))
        await client_transport._send_rtp(header + bytes(rng.getrandbits(8) for _ in range(100)))

    # 3. malformed payloads on the real SSRC, far behind the live sequence numbers
    media_ssrc = video.forwarder.media_ssrc
    assert media_ssrc is not None
    for payload in (b"", b"\x90", b"\x10", b"\x80\x80", b"\xff" * 3, b"\x7c", b"\x18\x00"):
        packet = RtpPacket(
            payload_type=pt,
            sequence_number=(video.forwarder.highest_seq - 3000) & 0xFFFF,
            timestamp=1,
            ssrc=media_ssrc,
            payload=payload,
        )
        await video._on_rtp(packet, 0)

    # 4. malformed payloads on the real SSRC, in sequence (they reach the viewers, whose
    #    depacketizers must cope; the real packets they displace are recovered by NACK/PLI)
    for offset, payload in enumerate((b"\x90", b"\x80\x80", b"\xff" * 3), start=1):
        packet = RtpPacket(
            payload_type=pt,
            sequence_number=(video.forwarder.highest_seq + offset) & 0xFFFF,
            timestamp=video.forwarder.last_ts,
            ssrc=media_ssrc,
            payload=payload,
        )
        await video._on_rtp(packet, 0)

    # 5. a viewer that sends RTP on its receive-only connection is ignored
    viewer_transport = viewer.pc.getTransceivers()[0].sender.transport
    for i in range(20):
        await viewer_transport._send_rtp(struct.pack("!BBHII", 0x80, 96, i, i, 1234) + b"x" * 50)

    before = len(viewer.frames)
    await viewer.wait_frames(before + 20)
    assert video.dropped > 0 and video.forwarder.invalid > 0
    assert "v" in room.participants and viewer_participant.downstreams["video"].active


async def test_events_are_serializable(harness: Harness) -> None:
    room = harness.room()
    host, _ = await harness.publish(room)
    host.set_muted("audio", True)
    await host.leave()
    dicts = [e.to_dict() for e in harness.events]
    types = [d["type"] for d in dicts]
    assert types == [
        "participant_joined",
        "track_published",
        "track_published",
        "mute_changed",
        "track_unpublished",
        "track_unpublished",
        "participant_left",
    ]
    assert all(d["room_id"] == room.id and d["participant_id"] == "host" for d in dicts)
    assert {d["kind"] for d in dicts if d["type"] == "track_published"} == {"audio", "video"}
    assert dicts[-1]["reason"] == "left"
    await asyncio.sleep(0)


async def test_trickled_candidates_are_accepted_or_refused_cleanly(harness: Harness) -> None:
    room = harness.room()
    host, _ = await harness.publish(room)
    await host.add_ice_candidate(
        "publisher", "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", sdp_mid="0"
    )
    await host.add_ice_candidate(
        "publisher", "candidate:2 1 udp 2130706431 3f1c-unknown.local 9 typ host"
    )
    await host.add_ice_candidate("publisher", None)
    with pytest.raises(InvalidOffer):
        await host.add_ice_candidate("publisher", "candidate:garbage")
    with pytest.raises(InvalidState):
        await host.add_ice_candidate("subscriber", "candidate:1 1 udp 1 127.0.0.1 9 typ host")
