"""End-to-end forwarding between real aiortc peers (no mocks on the media path)."""

from __future__ import annotations

import asyncio
import time

from peers import ClientPublisher, Harness


async def test_fanout_vp8_to_three_viewers(harness: Harness) -> None:
    room = harness.room()
    host, _ = await harness.publish(room)
    viewers = [await harness.view(room, f"viewer-{i}") for i in range(3)]
    for _, client in viewers:
        await client.wait_frames(10)
        await client.wait_audio(10)
        assert {(w, h) for _, w, h in client.frames} == {(320, 240)}
    assert room.video_codec == "VP8"
    video = room.active_publication("video")
    assert video is not None and video.codec_name == "VP8"
    assert len(video.forwarder.downstreams) == 3
    assert video.forwarder.forwarded > 0
    # nothing decoded on the SFU: the receiver's track never got a frame
    assert video.receiver.track._queue.qsize() == 0
    assert ("track_published", "host") in harness.event_types(room)
    assert host.describe()["publishing"] == ["audio", "video"]


async def test_fanout_h264_pinned_profile(harness: Harness) -> None:
    room = harness.room(video_codec="H264")
    participant = room.join("host", can_publish_audio=True, can_publish_video=True)

    client = ClientPublisher()
    harness.clients.append(client)
    offer = await client.offer()
    assert "VP8" in offer  # the client offers everything; the SFU picks
    answer = await participant.publish(offer)
    await client.accept(answer)
    video_section = answer[answer.index("m=video") :]
    assert "H264/90000" in video_section and "VP8" not in video_section
    assert "profile-level-id=42e01f" in video_section
    assert "packetization-mode=1" in video_section
    viewers = [await harness.view(room, f"viewer-{i}") for i in range(2)]
    for _, viewer in viewers:
        await viewer.wait_frames(10)
        assert {(w, h) for _, w, h in viewer.frames} == {(320, 240)}


async def test_second_room_is_undisturbed(harness: Harness) -> None:
    room_a = harness.room("livestream:a")
    room_b = harness.room("livestream:b")
    host_a, _ = await harness.publish(room_a, width=320, height=240)
    await harness.publish(room_b, width=160, height=128)
    _, viewer_a = await harness.view(room_a, "va")
    _, viewer_b = await harness.view(room_b, "vb")
    await viewer_a.wait_frames(5)
    await viewer_b.wait_frames(5)
    assert {(w, h) for _, w, h in viewer_a.frames} == {(320, 240)}
    assert {(w, h) for _, w, h in viewer_b.frames} == {(160, 128)}
    await host_a.leave()
    await room_a.close()
    before = len(viewer_b.frames)
    await viewer_b.wait_frames(before + 20)
    assert {(w, h) for _, w, h in viewer_b.frames} == {(160, 128)}
    assert ("participant_left", "host") in harness.event_types(room_a)
    assert ("participant_left", "host") not in harness.event_types(room_b)


async def test_late_joiner_gets_a_frame_quickly_via_pli(harness: Harness) -> None:
    from sfu import ForwardingConfig

    room = harness.room(config=ForwardingConfig(keyframe_cache=False))
    await harness.publish(room)
    _, first = await harness.view(room, "early")
    await first.wait_frames(5)
    video = room.active_publication("video")
    assert video is not None
    await asyncio.sleep(1.0)  # aiortc's VP8 encoder makes keyframes only when asked
    plis_before = video.forwarder.pli_count
    joined = time.monotonic()
    _, late = await harness.view(room, "late")
    await late.wait_frames(1, within=5)
    first_frame_after = late.frames[0][0] - joined
    assert video.forwarder.pli_count > plis_before
    assert first_frame_after < 2.0, first_frame_after
    assert first.frames[-1][0] > joined  # the early viewer kept receiving


async def test_late_joiner_served_from_keyframe_cache(harness: Harness) -> None:
    room = harness.room()
    await harness.publish(room)
    _, first = await harness.view(room, "early")
    await first.wait_frames(3)
    video = room.active_publication("video")
    assert video is not None
    _, late = await harness.view(room, "late")
    await late.wait_frames(3, within=5)
    assert video.forwarder.replayed > 0


async def test_viewer_connected_before_publisher_receives_without_renegotiation(
    harness: Harness,
) -> None:
    room = harness.room()
    viewer_participant, viewer = await harness.view(room, "early-viewer")
    for _ in range(100):
        if viewer_participant.downstreams:
            break
        await asyncio.sleep(0.05)
    assert set(viewer_participant.downstreams) == {"audio", "video"}
    await asyncio.sleep(0.3)
    assert viewer.frames == []
    signalling_state = viewer.pc.signalingState
    await harness.publish(room)
    await viewer.wait_frames(5)
    await viewer.wait_audio(5)
    assert viewer.pc.signalingState == signalling_state == "stable"


async def test_viewer_leaving_or_failing_does_not_disturb_others(harness: Harness) -> None:
    room = harness.room()
    await harness.publish(room)
    viewers = [await harness.view(room, f"v{i}") for i in range(3)]
    for _, client in viewers:
        await client.wait_frames(5)
    (p0, _c0), (_p1, c1), (_p2, c2) = viewers
    await p0.leave()  # a clean leave
    await c2.pc.close()  # an abrupt client-side close
    for _ in range(100):
        if "v2" not in room.participants:
            break
        await asyncio.sleep(0.05)
    assert "v0" not in room.participants and "v2" not in room.participants
    assert ("participant_left", "v2") in harness.event_types(room)
    before = len(c1.frames)
    await c1.wait_frames(before + 20)
    video = room.active_publication("video")
    assert video is not None and len(video.forwarder.downstreams) == 1


async def test_mute_unmute_and_unpublish(harness: Harness) -> None:
    room = harness.room()
    host, _ = await harness.publish(room)
    _, viewer = await harness.view(room, "v")
    await viewer.wait_frames(5)
    host.set_muted("video", True)
    await asyncio.sleep(0.5)
    stalled = len(viewer.frames)
    await asyncio.sleep(0.7)
    assert len(viewer.frames) <= stalled + 1
    host.set_muted("video", False)
    await viewer.wait_frames(stalled + 10)
    await host.unpublish()
    assert room.active_publication("video") is None
    types = [t for t, _ in harness.event_types(room)]
    assert types.count("mute_changed") == 2
    assert types.count("track_unpublished") == 2
    assert room.publications == []


async def test_viewer_nack_is_answered_from_history(harness: Harness) -> None:
    room = harness.room()
    await harness.publish(room)
    viewer_participant, viewer = await harness.view(room, "v")
    await viewer.wait_frames(5)
    d = viewer_participant.downstreams["video"]
    video = room.active_publication("video")
    assert video is not None and d.track is video.forwarder
    # the viewer (a real aiortc receiver) reports a recent packet lost
    receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
    recent = (video.forwarder.highest_seq - 5 + d.seq_off) & 0xFFFF
    await receiver._send_rtcp_nack(d.ssrc, [recent])
    for _ in range(40):
        if video.forwarder.retransmitted:
            break
        await asyncio.sleep(0.05)
    assert video.forwarder.retransmitted >= 1


async def test_rtcp_reports_flow_both_ways(harness: Harness) -> None:
    room = harness.room()
    _, publisher = await harness.publish(room)
    viewer_participant, viewer = await harness.view(room, "v")
    await viewer.wait_frames(5)
    d = viewer_participant.downstreams["video"]

    async def stats_of(pc: object, kind_of_stat: str) -> list[object]:
        report = await pc.getStats()  # type: ignore[attr-defined]
        return [s for s in report.values() if s.type == kind_of_stat]

    # the SFU's sender reports (rewritten per viewer) reach the viewer...
    deadline = time.monotonic() + 5
    while True:
        reports = [s for s in await stats_of(viewer.pc, "remote-outbound-rtp") if s.ssrc == d.ssrc]
        if reports or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert reports and reports[0].packetsSent > 0  # type: ignore[attr-defined]
    # ...and the SFU's receiver reports reach the publisher
    deadline = time.monotonic() + 5
    while True:
        received = await stats_of(publisher.pc, "remote-inbound-rtp")
        if received or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert received and all(s.packetsReceived > 0 for s in received)  # type: ignore[attr-defined]
    # the SR's RTP time is the forwarded stream's (publisher SR extrapolated, then offset)
    sr = d.sender_report()
    assert sr is not None and d.track is not None
    last_out = (d.track.last_ts + d.ts_off) & 0xFFFFFFFF
    drift = (sr.sender_info.rtp_timestamp - last_out) & 0xFFFFFFFF
    assert min(drift, 0x100000000 - drift) < 90000 // 2


async def test_next_publisher_takes_over_without_renegotiation(harness: Harness) -> None:
    room = harness.room()
    first, _ = await harness.publish(room, "host-a", width=320, height=240)
    second, _ = await harness.publish(room, "host-b", width=160, height=128)
    _, viewer = await harness.view(room, "v")
    await viewer.wait_frames(5)
    assert {(w, h) for _, w, h in viewer.frames} == {(320, 240)}  # the earliest publisher
    await first.leave()
    active = room.active_publication("video")
    assert active is not None and active.participant is second
    before = len(viewer.frames)
    await viewer.wait_frames(before + 10)
    assert (160, 128) in {(w, h) for _, w, h in viewer.frames[before:]}
    assert viewer.pc.signalingState == "stable"
