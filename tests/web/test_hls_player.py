"""HLS in a real browser: a Python host publishes into a live livestream, HLS starts (the
embedded server's egress worker), and the web app's HLS page plays it in Chromium with hls.js.

The screenshot is saved to ``test-artifacts/screens/hls-player.png``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from stagecast.client import ApiClient, SfuConnection, SyntheticVideoTrack, ToneAudioTrack
from tests.web.conftest import Browser, WebServer, eventually, screenshot

pytestmark = pytest.mark.timeout(60)

WIDTH, HEIGHT = 640, 360

# Records what every hls.js instance on the page reports, without touching the app: the
# vendored UMD build assigns ``window.Hls``; the page gets a subclass that listens for errors.
HLS_SPY = """(() => {
  window.__hls = { instances: 0, errors: [] };
  let wrapped;
  Object.defineProperty(window, 'Hls', {
    configurable: true,
    get() { return wrapped; },
    set(Hls) {
      if (!Hls) { wrapped = Hls; return; }
      wrapped = class extends Hls {
        constructor(config) {
          super(config);
          window.__hls.instances += 1;
          this.on(Hls.Events.ERROR, (_event, data) => window.__hls.errors.push(
            { fatal: !!data.fatal, type: data.type, details: data.details }));
        }
      };
    },
  });
})();"""

PLAYBACK = """() => {
  const v = document.querySelector('section.player video');
  if (!v) return null;
  return { time: v.currentTime, width: v.videoWidth, height: v.videoHeight,
           paused: v.paused, readyState: v.readyState, error: v.error && v.error.code,
           native: !!v.src && !v.src.startsWith('blob:'), hls: window.__hls };
}"""


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_hls_page_plays_in_chromium(web: WebServer, chromium: Browser, codec: str) -> None:
    began = time.perf_counter()
    call_id = f"show-{uuid.uuid4().hex[:10]}"
    host = ApiClient(web.url, web.keyring.user_token("host"), timeout=30)
    conn: SfuConnection | None = None
    try:
        await host.get_or_create_call("livestream", call_id)
        credentials = ApiClient.credentials(await host.join("livestream", call_id))
        conn = await SfuConnection.connect(credentials.ws_url, credentials.token)
        await conn.publish(
            audio=ToneAudioTrack(), video=SyntheticVideoTrack(WIDTH, HEIGHT), video_codec=codec
        )
        await host.go_live("livestream", call_id)
        started = await host.request("POST", f"/v1/calls/livestream/{call_id}/hls/start")
        playlist_url = started["playlist_url"]

        async def running() -> bool:
            body = await host.get_call("livestream", call_id)
            return bool(body["call"]["egress"]["hls"]["status"] == "running")

        await eventually(running, "HLS running", 20)

        async def segment_listed() -> bool:
            media = playlist_url.rsplit("/", 1)[0] + "/index.m3u8"
            answer = await web.http.get(media)
            return answer.status_code == 200 and ".ts" in answer.text

        await eventually(segment_listed, "a segment in the playlist", 15)

        page = await chromium.page()
        await page.add_init_script(HLS_SPY)
        await page.goto("/")
        await page.get_by_role("button", name="Log in as bob").click()
        await page.get_by_role("heading", name="Hi bob").wait_for()
        await page.goto(f"/#/hls/livestream/{call_id}")

        async def view() -> str | None:
            found = await page.get_attribute("main#screen > section", "data-view")
            return found if found not in (None, "loading") else None

        assert await eventually(view, "the HLS page", 10) == "playing"

        async def playing() -> Any:
            state = await page.evaluate(PLAYBACK)
            return state if state and state["width"] > 0 and state["time"] > 0 else None

        first = await eventually(playing, "the <video> playing", 25, 0.2)

        async def advanced() -> Any:
            state = await page.evaluate(PLAYBACK)
            return state if state["time"] > first["time"] + 1.0 else None

        later = await eventually(advanced, "video.currentTime advancing", 15, 0.2)
        assert (later["width"], later["height"]) == (WIDTH, HEIGHT)
        assert later["error"] is None and not later["paused"]
        spy = later["hls"]
        assert later["native"] or spy["instances"] == 1, later
        assert not [e for e in spy["errors"] if e["fatal"]], spy["errors"]
        assert await page.locator("section.player .error").is_hidden()
        assert not chromium.errors, chromium.errors
        await page.wait_for_timeout(200)
        await screenshot(page, "hls-player" if codec == "H264" else f"hls-player-{codec.lower()}")
        print(
            f"HLS in Chromium ({codec}): currentTime {first['time']:.2f} -> {later['time']:.2f} s, "
            f"{later['width']}x{later['height']}, "
            f"non-fatal hls.js errors: {len(spy['errors'])}, "
            f"{time.perf_counter() - began:.1f} s"
        )
    finally:
        if conn is not None:
            await conn.close()
        await host.aclose()
