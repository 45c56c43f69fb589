"""The web app in a real browser: a host runs a livestream, viewers watch it over WebRTC.

Screens are saved to ``test-artifacts/screens/`` (see README's "Web app" section).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from server.routers import web as web_router
from tests.web.conftest import Browser, WebServer, eventually, screenshot

pytestmark = pytest.mark.timeout(170)

PHONE = {"width": 375, "height": 667}

FRAMES_DECODED = """async () => {
  const pc = window.stagecast.viewerPc;
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
  });
  return frames;
}"""


async def view(page: Any) -> str:
    return str(await page.get_attribute("main#screen > section", "data-view") or "")


async def wait_view(page: Any, expected: str, timeout: float = 15.0) -> None:
    async def check() -> bool:
        return await view(page) == expected

    await eventually(check, f"view {expected!r} on {page.url}", timeout)


async def wait_text(page: Any, text: str, timeout: float = 15.0) -> None:
    await page.get_by_text(text, exact=False).first.wait_for(timeout=timeout * 1000)


async def frames(page: Any) -> int:
    return int(await page.evaluate(FRAMES_DECODED))


async def login(page: Any, user: str) -> None:
    await page.goto("/")
    await page.get_by_role("button", name=f"Log in as {user}").click()
    await page.get_by_role("heading", name=f"Hi {user}").wait_for()


async def frames_rising(page: Any) -> int:
    first = await eventually(lambda: frames(page), "a decoded frame", 15)

    async def more() -> bool:
        return await frames(page) > first

    await eventually(more, "framesDecoded rising", 10)
    return await frames(page)


async def test_host_and_viewers_run_a_livestream(web: WebServer, chromium: Browser) -> None:
    # The host logs in and creates a livestream: backstage with the camera preview.
    host = await chromium.page()
    await host.goto("/")
    await host.get_by_role("heading", name="Log in").wait_for()
    await screenshot(host, "01-login")
    await host.get_by_role("button", name="Log in as alice").click()
    await host.get_by_role("heading", name="Hi alice").wait_for()
    await screenshot(host, "02-home")
    await host.get_by_role("button", name="Create a livestream").click()
    await wait_view(host, "backstage")
    call_id = host.url.rsplit("/", 1)[1]
    await wait_text(host, "0 participants waiting")
    await wait_text(host, "Livestream starting at")
    assert await host.input_value("#host-call-id") == call_id
    assert (await host.input_value("#host-viewer-link")).endswith(f"#/watch/livestream/{call_id}")
    await eventually(
        lambda: host.evaluate("window.stagecast.host?.publisherPc?.connectionState"),
        "the host's camera published",
    )
    await host.wait_for_timeout(300)  # a preview frame on screen
    await screenshot(host, "03-backstage")
    await host.set_viewport_size(PHONE)
    await screenshot(host, "03-backstage-phone")
    await host.set_viewport_size({"width": 1280, "height": 800})

    # A viewer joins ahead, inside the join-ahead window: waiting in backstage.
    viewer = await chromium.page()
    await login(viewer, "bob")
    await viewer.get_by_role("button", name="View a livestream").click()
    await viewer.get_by_label("Call id or viewer link").fill(call_id)
    await screenshot(viewer, "04-view-dialog")
    await viewer.get_by_role("button", name="Join", exact=True).click()
    await wait_view(viewer, "waiting")
    await wait_text(viewer, "Waiting for the livestream to start")
    await wait_text(host, "1 participant waiting")
    await wait_text(viewer, "1 waiting")
    await screenshot(viewer, "05-player-waiting")
    assert await frames(viewer) == 0

    # Go live: the viewer's page decodes video on the connection it already had.
    await host.get_by_role("button", name="Go Live").click()
    await wait_view(host, "live")
    await wait_view(viewer, "live")
    decoded = await frames_rising(viewer)
    await wait_text(viewer, "Viewers: 1")
    await wait_text(host, "Viewers: 1")
    await screenshot(host, "06-live-host")
    await screenshot(viewer, "07-player-live")
    print(f"viewer decoded {decoded} frames after go-live")

    # A late viewer on a phone-sized screen: picture from the moment it connects.
    late = await chromium.page(viewport=PHONE)
    await login(late, "carol")
    await late.goto("about:blank")
    clicked = time.perf_counter()
    await late.goto(f"/#/watch/livestream/{call_id}")
    await eventually(lambda: frames(late), "the late viewer's first frame")
    wall = time.perf_counter() - clicked
    first_frame = await eventually(
        lambda: late.evaluate("window.stagecast.player?.firstFrameAt"), "first frame painted"
    )
    assert await view(late) == "live"
    print(
        f"late viewer: first frame painted {first_frame:.0f} ms after navigation "
        f"(test clock, incl. polling: {wall * 1000:.0f} ms)"
    )
    await wait_text(host, "Viewers: 2")
    await wait_text(viewer, "Viewers: 2")
    await wait_text(late, "Viewers: 2")
    await late.wait_for_timeout(300)
    await screenshot(late, "08-player-phone")

    # The connection drops: a notice, then an automatic rejoin through the coordinator.
    old_pc = await late.evaluate_handle("window.stagecast.viewerPc")
    await late.evaluate("window.stagecast.player.state.sfu.ws.close(4000, 'test drop')")
    await wait_text(late, "Connection lost")
    await screenshot(late, "09-player-reconnecting")
    await eventually(
        lambda: late.evaluate("(old) => window.stagecast.viewerPc !== old", old_pc),
        "a new receiving connection",
    )
    await frames_rising(late)
    await eventually(lambda: late.locator(".notice").is_hidden(), "the notice cleared")

    # The host's connection drops: it rejoins and publishes again; viewers keep their
    # receiving connection and get the new publication without renegotiating.
    old_publisher = await host.evaluate_handle("window.stagecast.host.publisherPc")
    viewer_pc = await viewer.evaluate_handle("window.stagecast.viewerPc")
    await host.evaluate("window.stagecast.host.state.sfu.ws.close(4000, 'test drop')")
    await wait_text(host, "Reconnecting")
    await eventually(
        lambda: host.evaluate(
            "(old) => { const pc = window.stagecast.host.publisherPc;"
            " return pc !== old && pc.connectionState === 'connected'; }",
            old_publisher,
        ),
        "the host publishing again",
    )
    await eventually(lambda: host.locator(".notice").is_hidden(), "the host's notice cleared")
    await frames_rising(viewer)
    assert await viewer.evaluate("(pc) => window.stagecast.viewerPc === pc", viewer_pc)

    # goaway (the node drains): the host and a viewer join again before dropping the old
    # connection; the picture goes on.
    goaway = "{type: 'goaway', reason: 'draining', message: 'test', deadline_seconds: 30}"
    late_pc = await late.evaluate_handle("window.stagecast.viewerPc")
    await host.evaluate(f"window.stagecast.host.state.sfu.onMessage({goaway})")
    await late.evaluate(f"window.stagecast.player.state.sfu.onMessage({goaway})")
    await eventually(
        lambda: late.evaluate("(old) => window.stagecast.viewerPc !== old", late_pc),
        "the late viewer on a new connection",
    )
    await frames_rising(late)
    await frames_rising(viewer)
    assert await late.locator(".notice").is_hidden()
    await wait_view(late, "live")

    # Camera off: viewers see the host away; back on, the picture returns.
    await host.get_by_role("button", name="Turn camera off").click()
    await wait_view(viewer, "away")
    await wait_text(viewer, "camera off")
    await screenshot(viewer, "10-player-host-away")
    await host.get_by_role("button", name="Turn camera on").click()
    await wait_view(viewer, "live")

    # Stop live: everyone is back in backstage; then end: everyone sees the end.
    await host.get_by_role("button", name="Stop Live").click()
    await wait_view(host, "backstage")
    await wait_view(viewer, "waiting")
    await wait_view(late, "waiting")
    await host.get_by_role("button", name="Go Live").click()
    await wait_view(viewer, "live")
    await host.get_by_role("button", name="End", exact=True).click()
    await host.get_by_role("button", name="End livestream").click()
    for page in (host, viewer, late):
        await wait_view(page, "ended")
        await wait_text(page, "Livestream has ended")
    await wait_text(host, "No recordings found")
    await screenshot(host, "11-ended-host")
    await screenshot(late, "12-ended-phone")
    assert chromium.errors == []


async def test_errors_are_shown_in_words(web: WebServer, chromium: Browser) -> None:
    # A livestream that starts in an hour, with no join-ahead: viewers may not join yet.
    later = "2099-01-01T10:00:00Z"
    answer = await web.http.post(
        "/v1/calls/livestream/later", json={"starts_at": later}, headers=web.auth("alice")
    )
    assert answer.status_code == 201, answer.text
    page = await chromium.page(viewport=PHONE)
    await login(page, "dave")
    await page.goto("/#/watch/livestream/later")
    await wait_view(page, "error")
    await wait_text(page, "This livestream has not started yet")
    await wait_text(page, "call_in_backstage")
    await screenshot(page, "13-error-backstage")

    await page.goto("/#/watch/livestream/nosuchcall")
    await wait_text(page, "There is no such livestream")

    # dave is no host of alice's livestream: the host screen says so.
    await page.goto("/#/host/livestream/later")
    await wait_text(page, "Watch this livestream instead")

    # hls.js, served from node_modules, loads in the browser.
    if web_router.HLS_JS.is_file():
        await page.add_script_tag(url="/vendor/hls.js")
        assert await page.evaluate("window.Hls.isSupported()")

    await page.goto("/#/hls/livestream/later")
    await wait_text(page, "HLS is not running for this call")
    await screenshot(page, "14-hls-not-running")

    # The dialog: keyboard only, a bad id is explained.
    await page.goto("/#/")
    await page.get_by_role("button", name="View a livestream").focus()
    await page.keyboard.press("Enter")
    await page.keyboard.type("not a call id!")
    await page.keyboard.press("Enter")
    await wait_text(page, "Enter a call id")
    await page.keyboard.press("Escape")

    # Logout from any screen.
    await page.goto("/#/watch/livestream/nosuchcall")
    await page.get_by_role("button", name="Log out dave").click()
    await page.get_by_role("heading", name="Log in").wait_for()
    assert chromium.errors == []


async def test_pages_and_assets_leave_the_api_alone(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = await web.http.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "/app/app.js" in index.text
    module = await web.http.get("/app/app.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    for path in ("/app/nothing.js", "/app/../pyproject.toml", "/app/%2e%2e/README.md", "/nope"):
        missing = await web.http.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == "not_found", path
    api = await web.http.get("/v1/calls/livestream/x")
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "unauthenticated"
    assert (await web.http.get("/healthz")).json() == {"status": "ok"}
    schema = (await web.http.get("/openapi.json")).json()
    assert not [
        p
        for p in schema["paths"]
        if not p.startswith("/v1") and p != "/healthz" and p not in ("/readyz", "/metrics")
    ]

    if web_router.HLS_JS.is_file():
        hls = await web.http.get("/vendor/hls.js")
        assert hls.status_code == 200
        assert hls.headers["content-type"].startswith("text/javascript")
    monkeypatch.setattr(web_router, "HLS_JS", web_router.ROOT / "no" / "hls.min.js")
    gone = await web.http.get("/vendor/hls.js")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
