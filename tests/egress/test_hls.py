"""HLS egress: a host publishes (H.264 or VP8), HLS starts, ffprobe reads the playlist and
decodes segments of the source's resolution, segments keep coming while live, stop stops them."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.egress.conftest import (
    HEIGHT,
    WIDTH,
    Embedded,
    decodes,
    event_log,
    ffprobe,
    publish_host,
    wait_status,
)


def segments(playlist: str) -> list[str]:
    return re.findall(r"^(seg-\d+\.ts)$", playlist, re.M)


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_hls_plays_while_live_and_stops(stack: Embedded, codec: str) -> None:
    call_id, host = await stack.new_show()
    async with event_log(stack.bus) as events:
        conn = await publish_host(stack, call_id, codec)
        try:
            await host.go_live("livestream", call_id)
            started = await host.request("POST", f"/v1/calls/livestream/{call_id}/hls/start")
            assert started["status"] in ("starting", "running")
            url = started["playlist_url"]
            assert url.startswith(stack.url + "/v1/hls/") and url.endswith("/master.m3u8")
            egress = await wait_status(stack, call_id, "hls", "running")
            assert egress["hls"]["playlist_url"] == url
            await events.wait("call.hls_started")

            async with httpx.AsyncClient(timeout=10) as http:  # no Authorization anywhere
                master = await http.get(url)
                assert master.status_code == 200
                assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
                assert "no-cache" in master.headers["cache-control"]
                assert f"RESOLUTION={WIDTH}x{HEIGHT}" in master.text
                media_url = url.rsplit("/", 1)[0] + "/index.m3u8"
                await asyncio.sleep(2.5)
                first = segments((await http.get(media_url)).text)
                assert first, "no segment listed"
                segment = await http.get(media_url.rsplit("/", 1)[0] + "/" + first[-1])
                assert segment.headers["content-type"] == "video/mp2t"
                assert "immutable" in segment.headers["cache-control"]

                probe = await ffprobe(url)
                video = [s for s in probe["streams"] if s["codec_type"] == "video"]
                audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
                assert video and audio
                assert (video[0]["codec_name"], audio[0]["codec_name"]) == ("h264", "aac")
                assert (video[0]["width"], video[0]["height"]) == (WIDTH, HEIGHT)
                # H.264 is remuxed as the publisher encoded it (aiortc: Constrained Baseline);
                # VP8 is transcoded by the worker (libx264, High).
                remuxed = "Baseline" in video[0]["profile"]
                assert remuxed == (codec == "H264"), video[0]["profile"]
                seg_url = media_url.rsplit("/", 1)[0] + "/" + first[-1]
                assert await decodes(seg_url) >= 10  # 1 s segments of 30 fps video

                await asyncio.sleep(2.5)  # new segments keep coming while live
                later = segments((await http.get(media_url)).text)
                assert later[-1] > first[-1]

                await host.request("POST", f"/v1/calls/livestream/{call_id}/hls/stop")
                await events.wait("call.hls_stopped")
                body = await stack.api().get_call("livestream", call_id)
                assert body["call"]["egress"]["hls"]["status"] == "stopped"
                final = (await http.get(media_url)).text
                assert "#EXT-X-ENDLIST" in final
                await asyncio.sleep(2.0)  # and no more after stop
                assert (await http.get(media_url)).text == final
                # the unguessable path is the only secret: another token gives 404
                assert (
                    await http.get(stack.url + "/v1/hls/" + "x" * 32 + "/index.m3u8")
                ).status_code == 404
        finally:
            await conn.close()
