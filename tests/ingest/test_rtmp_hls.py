"""HLS egress from an RTMP source: ffmpeg publishes H.264 baseline over RTMP (forwarded as is,
no transcoding in the ingest), HLS starts, ffprobe reads the playlist and decodes a segment of
the source's resolution, and new segments keep coming."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from tests.egress.conftest import decodes, ffprobe, need_ffprobe
from tests.ingest.rtmp_stack import CALL_TYPE, Stack

pytestmark = pytest.mark.timeout(60)

WIDTH, HEIGHT = 480, 270


def segments(playlist: str) -> list[str]:
    return re.findall(r"^(seg-\d+\.ts)$", playlist, re.M)


async def wait_for(check, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {found!r})")
        await asyncio.sleep(0.1)


async def test_hls_from_an_rtmp_publisher(stack: Stack) -> None:
    need_ffprobe()
    began = time.perf_counter()
    call_id = await stack.new_show()
    host = stack.api("host")
    process = await stack.ffmpeg(
        stack.key("host", call_id),
        size=f"{WIDTH}x{HEIGHT}",
        video=("-profile:v", "baseline", "-bf", "0"),
        seconds=50,
    )

    async def publishing() -> bool:
        return bool(stack.ingest.sessions) and "host" in str(
            await stack.api().participants(CALL_TYPE, call_id)
        )

    await wait_for(publishing, "the RTMP publisher in the call", 15)
    (session,) = stack.ingest.sessions
    assert not session.media.transcoding  # baseline without B-frames: forwarded as is

    started = await host.request("POST", f"/v1/calls/{CALL_TYPE}/{call_id}/hls/start")
    url = started["playlist_url"]
    assert url.startswith(stack.url + "/v1/hls/") and url.endswith("/master.m3u8")

    async def running() -> bool:
        body = await stack.api().get_call(CALL_TYPE, call_id)
        return bool(body["call"]["egress"]["hls"]["status"] == "running")

    await wait_for(running, "HLS running", 20)
    media_url = url.rsplit("/", 1)[0] + "/index.m3u8"
    async with httpx.AsyncClient(timeout=10) as http:  # no Authorization: players need none

        async def listed() -> list[str]:
            answer = await http.get(media_url)
            return segments(answer.text) if answer.status_code == 200 else []

        first = await wait_for(listed, "a segment in the media playlist", 15)
        master = await http.get(url)
        assert master.status_code == 200
        assert f"RESOLUTION={WIDTH}x{HEIGHT}" in master.text

        probe = await ffprobe(url)
        video = [s for s in probe["streams"] if s["codec_type"] == "video"]
        audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
        assert video and audio, probe["streams"]
        assert (video[0]["codec_name"], audio[0]["codec_name"]) == ("h264", "aac")
        assert (video[0]["width"], video[0]["height"]) == (WIDTH, HEIGHT)
        assert "Baseline" in video[0]["profile"], video[0]["profile"]  # remuxed, not re-encoded

        segment_url = media_url.rsplit("/", 1)[0] + "/" + first[-1]
        segment = await ffprobe(segment_url)
        (seg_video,) = [s for s in segment["streams"] if s["codec_type"] == "video"]
        assert (seg_video["width"], seg_video["height"]) == (WIDTH, HEIGHT)
        frames = await decodes(segment_url)
        assert frames >= 10, frames  # 1 s segments of 30 fps video

        async def newer() -> list[str]:
            later = await listed()
            return later if later and later[-1] > first[-1] else []

        later = await wait_for(newer, "a newer segment", 10)
        await asyncio.sleep(2.0)
        latest = await listed()
        assert latest[-1] > later[-1], (later, latest)  # and still more while live
        assert "#EXT-X-ENDLIST" not in (await http.get(media_url)).text
        assert process.returncode is None  # the publisher is still on air

    await host.request("POST", f"/v1/calls/{CALL_TYPE}/{call_id}/hls/stop")
    print(
        f"RTMP -> HLS: {WIDTH}x{HEIGHT} {video[0]['profile']}, segment {first[-1]} decoded "
        f"{frames} frames, newest {latest[-1]}, {time.perf_counter() - began:.1f} s"
    )
