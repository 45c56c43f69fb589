"""RTMP ingest end to end: Debian's ffmpeg publishes over RTMP, Python viewers decode."""

from __future__ import annotations

import asyncio

from tests.ingest.rtmp_stack import CALL_TYPE, Stack, stop_process


async def wait_until(predicate, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_ffmpeg_default_libx264_publishes_and_viewer_decodes(stack: Stack) -> None:
    call_id = await stack.new_show()
    viewer = await stack.viewer("alice", call_id)
    process = await stack.ffmpeg(stack.key("host", call_id))
    assert viewer.viewer is not None
    await viewer.viewer.wait_video_frames(30, timeout=20)
    await viewer.viewer.wait_audio_frames(20, timeout=10)
    assert (viewer.viewer.width, viewer.viewer.height) == (640, 360)
    participants = await stack.api().participants(CALL_TYPE, call_id)
    assert "host" in str(participants)
    (session,) = stack.ingest.sessions
    assert session.media.transcoding  # libx264's default high profile has B-frames

    # The publisher goes away: its tracks are unpublished and viewers see the host leave.
    await stop_process(process)
    left = await viewer.wait_for("participant_left", timeout=10)
    assert left["participant"]["user_id"] == "host" or "host" in str(left)
    await wait_until(lambda: not stack.ingest.sessions, "the ingest session to close")

    # Publishing again works; the viewer, still connected, receives the new tracks.
    before = viewer.viewer.video_frames
    process = await stack.ffmpeg(stack.key("host", call_id))
    second = await stack.viewer("bob", call_id)
    assert second.viewer is not None
    await second.viewer.wait_video_frames(20, timeout=20)
    assert (second.viewer.width, second.viewer.height) == (640, 360)
    await wait_until(lambda: viewer.viewer.video_frames > before + 10, "frames again", 20)
    await viewer.close()
    await second.close()


async def test_baseline_is_forwarded_without_reencoding(stack: Stack) -> None:
    call_id = await stack.new_show()
    viewer = await stack.viewer("alice", call_id)
    await stack.ffmpeg(stack.key("host", call_id), video=("-profile:v", "baseline"))
    assert viewer.viewer is not None
    await viewer.viewer.wait_video_frames(30, timeout=20)
    assert (viewer.viewer.width, viewer.viewer.height) == (640, 360)
    (session,) = stack.ingest.sessions
    assert not session.media.transcoding
    await viewer.close()
