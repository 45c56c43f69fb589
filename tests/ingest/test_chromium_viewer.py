"""A Chromium viewer (WHEP) plays what ffmpeg publishes over RTMP: H.264 high profile without
B-frames forwarded as is, and libx264's default (B-frames) transcoded to baseline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Route, async_playwright

from tests.ingest.rtmp_stack import CALL_TYPE, Stack
from tests.support import CHROMIUM, CHROMIUM_ARGS, require_chromium

PAGE = """<!doctype html><html><body><video id="v" autoplay muted playsinline></video><script>
window.watch = async (path, token) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  pc.ontrack = (e) => { document.getElementById("v").srcObject = e.streams[0]
    || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(path, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  if (r.status !== 201) throw new Error("whep " + r.status + " " + await r.text());
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  window.pc = pc;
};
window.stats = async () => {
  const out = {video: null, audio: null};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = {framesDecoded: s.framesDecoded,
      width: s.frameWidth, height: s.frameHeight, packets: s.packetsReceived,
      samples: s.totalSamplesReceived, codec: s.codecId, keyFrames: s.keyFramesDecoded};
  });
  const v = document.getElementById("v");
  out.element = {width: v.videoWidth, height: v.videoHeight};
  return out;
};
</script></body></html>"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            # Chromium may take 10-20 s to exit after a media session: do not wait for it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(instance.close(), 5)


@pytest.mark.parametrize(
    ("video", "transcoding"),
    [(("-bf", "0"), False), ((), True)],
    ids=["high-no-bframes-passthrough", "default-bframes-transcoded"],
)
async def test_chromium_plays_rtmp_ingest(
    stack: Stack, browser: Browser, video: tuple[str, ...], transcoding: bool
) -> None:
    call_id = await stack.new_show()
    await stack.ffmpeg(stack.key("host", call_id), video=video)
    context = await browser.new_context(permissions=["camera", "microphone"])
    page = await context.new_page()

    async def serve(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=PAGE)

    await page.route(f"{stack.url}/ingest-viewer.html", serve)
    await page.goto(f"{stack.url}/ingest-viewer.html")
    token = stack.keyring.user_token("chromium-viewer")
    await page.evaluate(
        "([p, t]) => window.watch(p, t)", [f"/v1/calls/{CALL_TYPE}/{call_id}/whep", token]
    )
    stats: dict[str, Any] = {}
    for _ in range(200):
        stats = await page.evaluate("window.stats()")
        v = stats.get("video") or {}
        a = stats.get("audio") or {}
        if (v.get("framesDecoded") or 0) >= 60 and (a.get("samples") or 0) > 48000:
            break
        await asyncio.sleep(0.1)
    assert (stats["video"]["width"], stats["video"]["height"]) == (640, 360), stats
    assert stats["video"]["framesDecoded"] >= 60, stats
    assert stats["audio"]["samples"] > 48000, stats
    assert stats["element"] == {"width": 640, "height": 360}, stats
    (session,) = stack.ingest.sessions
    assert session.media.transcoding is transcoding
    if not transcoding:
        # A keyframe request bridged from the GOP cache (baseline re-encode, then the source's
        # high profile again at its next keyframe): Chromium keeps decoding through both
        # switches.
        frames, keyframes = stats["video"]["framesDecoded"], stats["video"]["keyFrames"]
        session.media.request_keyframe()
        assert session.media.bridging
        for _ in range(100):
            if not session.media.bridging:
                break
            await asyncio.sleep(0.1)
        assert not session.media.bridging
        await asyncio.sleep(1.5)
        after = (await page.evaluate("window.stats()"))["video"]
        assert after["keyFrames"] >= keyframes + 2, (stats, after)
        assert after["framesDecoded"] >= frames + 40, (stats, after)
        assert (after["width"], after["height"]) == (640, 360)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(context.close(), 5)
