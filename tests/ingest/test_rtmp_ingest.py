"""RTMP ingest end to end: Debian's ffmpeg publishes over RTMP, Python viewers decode."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import httpx
import pytest

from stagecast.tokens import ApiKey, KeyRing
from tests.ingest.rtmp_stack import API_KEY, API_SECRET, CALL_TYPE, Stack, free_port, stop_process


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


async def test_two_publishers_to_two_calls_stay_separate(stack: Stack) -> None:
    first, second = await stack.new_show("host1"), await stack.new_show("host2")
    viewer1 = await stack.viewer("alice", first)
    viewer2 = await stack.viewer("bob", second)
    await stack.ffmpeg(stack.key("host1", first), size="640x360")
    await stack.ffmpeg(stack.key("host2", second), size="320x240", video=("-bf", "0"))
    assert viewer1.viewer is not None and viewer2.viewer is not None
    await viewer1.viewer.wait_video_frames(30, timeout=20)
    await viewer2.viewer.wait_video_frames(30, timeout=20)
    await viewer1.viewer.wait_audio_frames(10, timeout=10)
    await viewer2.viewer.wait_audio_frames(10, timeout=10)
    assert (viewer1.viewer.width, viewer1.viewer.height) == (640, 360)
    assert (viewer2.viewer.width, viewer2.viewer.height) == (320, 240)
    assert len(stack.ingest.sessions) == 2
    modes = {("host2" in s.label): s.media.transcoding for s in stack.ingest.sessions}
    assert modes == {False: True, True: False}  # high with B-frames transcodes; -bf 0 does not
    hosts1 = str(await stack.api().participants(CALL_TYPE, first))
    hosts2 = str(await stack.api().participants(CALL_TYPE, second))
    assert "host1" in hosts1 and "host2" not in hosts1
    assert "host2" in hosts2 and "host1" not in hosts2
    await viewer1.close()
    await viewer2.close()


async def refused(stack: Stack, key: str) -> None:
    """ffmpeg gives up (non-zero exit) and no session was opened."""
    process = await stack.ffmpeg(key, seconds=5)
    code = await asyncio.wait_for(process.wait(), 20)
    assert code != 0
    assert not stack.ingest.sessions


async def test_bad_keys_ended_calls_and_garbage_are_refused(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call_id = await stack.new_show()
    keys = {
        "garbage": "not-a-token",
        "wrong_secret": KeyRing([ApiKey(API_KEY, "x" * 40)]).user_token(
            "host", call_cids=[f"{CALL_TYPE}:{call_id}"]
        ),
        "expired": stack.key("host", call_id, ttl_seconds=-60),
        "no_call": stack.keyring.user_token("host"),
        "not_a_sender": stack.key("viewer", call_id),
    }
    for key in keys.values():
        await refused(stack, key)

    # Garbage bytes on the RTMP port: the connection is dropped, the server keeps serving.
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x03" + bytes(range(256)) * 20):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.rtmp_port)
        writer.write(junk)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 20) is not None
        writer.close()

    # An ended call refuses its host's key.
    ended = await stack.new_show()
    await stack.api("host").end_call(CALL_TYPE, ended)
    await refused(stack, stack.key("host", ended))

    # Still serving: a good key publishes.
    viewer = await stack.viewer("alice", call_id)
    await stack.ffmpeg(stack.key("host", call_id))
    assert viewer.viewer is not None
    await viewer.viewer.wait_video_frames(10, timeout=20)
    await viewer.close()

    logged = caplog.text
    for key in [*keys.values(), stack.key("host", ended)]:
        if len(key) > 20:
            assert key not in logged
            assert key.split(".")[-1] not in logged  # not even the signature
    assert "refused" in logged
    assert "token_expired" in logged


async def test_ending_the_call_disconnects_the_publisher(stack: Stack) -> None:
    call_id = await stack.new_show()
    process = await stack.ffmpeg(stack.key("host", call_id))
    await wait_until(lambda: bool(stack.ingest.sessions), "a session")
    (session,) = stack.ingest.sessions
    await wait_until(lambda: session.media.video_frames > 10, "frames")
    await stack.api("host").end_call(CALL_TYPE, call_id)
    await wait_until(lambda: not stack.ingest.sessions, "the session to close", 15)
    code = await asyncio.wait_for(process.wait(), 15)
    assert code is not None


async def test_stagecast_ingest_command_runs_a_separate_ingest(stack: Stack) -> None:
    """``stagecast ingest`` in its own process publishes through the coordinator's API."""
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "STAGECAST_API_KEY": API_KEY,
        "STAGECAST_API_SECRET": API_SECRET,
        "STAGECAST_PUBLIC_URL": stack.url,
        "STAGECAST_SFU_ANNOUNCED_ADDRESS": "127.0.0.1",
        "STAGECAST_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stagecast.cli", "ingest",
        "--rtmp-host", "127.0.0.1", "--rtmp-port", str(port), "--port", str(http_port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stack.processes.append(process)
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        break
    call_id = await stack.new_show()
    viewer = await stack.viewer("alice", call_id)
    stack.rtmp_port = port
    await stack.ffmpeg(stack.key("host", call_id), video=("-bf", "0"))
    assert viewer.viewer is not None
    await viewer.viewer.wait_video_frames(20, timeout=20)
    assert (viewer.viewer.width, viewer.viewer.height) == (640, 360)
    assert "host" in str(await stack.api().participants(CALL_TYPE, call_id))
    assert not stack.ingest.sessions  # the embedded ingest took no part
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = (await http.get("/metrics")).text
        assert "stagecast_ingest_publishers 1.0" in metrics
        assert "stagecast_ingest_accepted 1.0" in metrics
    await viewer.close()
    await stop_process(process)
    assert process.stderr is not None
    logged = (await process.stderr.read()).decode(errors="replace")
    assert "publishing" in logged
    assert stack.key("host", call_id).split(".")[-1] not in logged


async def test_keyframe_request_in_passthrough_is_bridged_from_the_gop_cache(stack: Stack) -> None:
    """RTMP cannot ask the encoder for a keyframe: a PLI makes the ingest decode its cached
    keyframe group and re-encode (keyframe first) until the encoder's next keyframe."""
    call_id = await stack.new_show()
    viewer = await stack.viewer("alice", call_id)
    await stack.ffmpeg(stack.key("host", call_id), video=("-bf", "0", "-g", "90"))
    assert viewer.viewer is not None
    await viewer.viewer.wait_video_frames(20, timeout=20)
    (session,) = stack.ingest.sessions
    assert not session.media.transcoding
    await asyncio.sleep(1.0)  # into the 3 s keyframe group
    await viewer.request_keyframe()
    await wait_until(lambda: session.media.keyframes_bridged >= 1, "a bridged keyframe", 10)
    await wait_until(lambda: not session.media.bridging, "passthrough again", 10)
    before = viewer.viewer.video_frames
    await wait_until(lambda: viewer.viewer.video_frames > before + 30, "frames after", 10)
    assert (viewer.viewer.width, viewer.viewer.height) == (640, 360)
    assert not session.media.transcoding
    await viewer.close()
