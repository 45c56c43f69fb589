"""Real browsers through the whole stack: Debian's Chromium, driven by Playwright, on a small
test page (``pages/media.html``) served by the embedded server itself.

Chromium publishes and watches over the SFU signalling WebSocket, and with WHIP/WHEP over
HTTP; Python clients sit on the other end where noted. ``getStats()`` is the judge: the
watching side must decode frames (``framesDecoded`` rising, a non-zero frame size).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from stagecast.client import ApiClient, SyntheticVideoTrack, ToneAudioTrack
from tests.e2e.stack import CALL_TYPE, Embedded, run_embedded
from tests.support import CHROMIUM, CHROMIUM_ARGS, require_chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Embedded]:
    async with run_embedded(tmp_path_factory.mktemp("browser"), serve_pages=True) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            # Chromium sometimes takes 10-20 s to exit after media sessions: do not wait
            with contextlib.suppress(Exception):
                await asyncio.wait_for(instance.close(), 10)


class Tab:
    """One browser context with the test page open."""

    def __init__(self, context: BrowserContext, page: Page, server: Embedded) -> None:
        self.context = context
        self.page = page
        self.server = server
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(message.text))

    async def call(self, function: str, *args: Any) -> Any:
        return await self.page.evaluate(f"(args) => window.sc.{function}(...args)", list(args))

    async def stats(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("stats", name)
        return result

    async def wait_decoding(
        self, name: str, frames: int = 30, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Until ``name``'s inbound video has decoded ``frames`` frames (of a known size) and
        its audio has played samples; the stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats(name)
            video = stats["inbound"].get("video") or {}
            audio = stats["inbound"].get("audio") or {}
            if (
                (video.get("framesDecoded") or 0) >= frames
                and video.get("frameWidth")
                and (audio.get("totalSamplesReceived") or 0) > 0
            ):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} decoded too little: {stats}\nlog: {self.console[-20:]}"
                )
            await asyncio.sleep(0.2)

    async def wait_encoding(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats(name)
            video = stats["outbound"].get("video") or {}
            if (video.get("framesEncoded") or 0) > 10 and video.get("frameWidth"):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} encoded too little: {stats}")
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser, server: Embedded) -> AsyncIterator[Any]:
    opened: list[Tab] = []

    async def open_tab(granted: bool = True) -> Tab:
        # Without camera/microphone permission Chromium hides its addresses behind mDNS
        # names (*.local), as it does for any viewer on a real web page.
        permissions = ["camera", "microphone"] if granted else []
        context = await browser.new_context(permissions=permissions)
        page = await context.new_page()
        await page.goto(f"{server.url}/e2e-pages/media.html")
        await page.wait_for_function("window.sc && window.sc.ready")
        tab = Tab(context, page, server)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tab.context.close(), 10)


async def new_live_show(server: Embedded, host: str = "host") -> tuple[str, ApiClient]:
    call_id, api = await server.new_show(host, f"browser-{uuid.uuid4().hex[:8]}")
    await api.go_live(CALL_TYPE, call_id)
    return call_id, api


async def credentials(server: Embedded, user: str, call_id: str) -> tuple[str, str]:
    joined = await server.api(user).join(CALL_TYPE, call_id)
    creds = ApiClient.credentials(joined)
    return creds.ws_url, creds.token


def codec_of(stats: dict[str, Any], direction: str) -> dict[str, str]:
    codec: dict[str, str] = stats[direction]["video"]["codec"]
    return codec


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_chromium_publishes_chromium_watches(server: Embedded, tabs: Any, codec: str) -> None:
    """Chromium to Chromium over the signalling WebSocket; the viewer's page was never
    granted the camera, so its candidates are mDNS names the SFU cannot resolve."""
    call_id, _ = await new_live_show(server)
    host, fan = await tabs(), await tabs(granted=False)
    ws_url, token = await credentials(server, "host", call_id)
    published = await host.call("publishWs", "pub", ws_url, token, codec)
    assert f"{codec}/90000" in published["answer"]
    if codec == "H264":
        # Chromium offers several H.264 profiles (42001f first); the SFU picks 42e01f, pm 1
        assert published["offer"].count("H264/90000") > 2
        assert "profile-level-id=42e01f" in published["answer"]
        assert "profile-level-id=42001f" not in published["answer"]
    ws_url, token = await credentials(server, "fan", call_id)
    subscribed = await fan.call("subscribeWs", "sub", ws_url, token)
    assert ".local" in subscribed["answer"] or "a=candidate" not in subscribed["answer"]
    sent = await host.wait_encoding("pub")
    first = await fan.wait_decoding("sub", frames=10)
    later = await fan.wait_decoding("sub", frames=first["inbound"]["video"]["framesDecoded"] + 20)
    video = later["inbound"]["video"]
    assert codec_of(later, "inbound")["mimeType"] == f"video/{codec}"
    if codec == "H264":
        # the publisher's profile survives end to end
        assert "profile-level-id=42e01f" in codec_of(sent, "outbound")["sdpFmtpLine"]
        assert "profile-level-id=42e01f" in codec_of(later, "inbound")["sdpFmtpLine"]
        assert sent["outbound"]["video"]["encoderImplementation"] == "OpenH264"
    assert (video["frameWidth"], video["frameHeight"]) == (
        sent["outbound"]["video"]["frameWidth"],
        sent["outbound"]["video"]["frameHeight"],
    )
    assert later["inbound"]["audio"]["packetsReceived"] > 0
    assert video["keyFramesDecoded"] >= 1
    await server.wait_count(call_id, 2)
    await fan.call("leave", "sub")
    await server.wait_count(call_id, 1)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_chromium_host_python_viewer(server: Embedded, tabs: Any, codec: str) -> None:
    call_id, _ = await new_live_show(server)
    host = await tabs()
    ws_url, token = await credentials(server, "host", call_id)
    await host.call("publishWs", "pub", ws_url, token, codec, 640, 360)
    sent = await host.wait_encoding("pub")
    joined_at = time.monotonic()
    fan = await server.connect("py-fan", call_id)
    try:
        assert any(t["codec"] == codec for t in fan.joined["tracks"])
        viewer = await fan.subscribe()
        await viewer.wait_video_frames(15, timeout=15)
        await viewer.wait_audio_frames(15, timeout=15)
        size = (sent["outbound"]["video"]["frameWidth"], sent["outbound"]["video"]["frameHeight"])
        assert (viewer.width, viewer.height) == size
        assert viewer.first_frame_at is not None
        print(
            f"\nChromium {codec} -> Python: join-to-first-frame "
            f"{(viewer.first_frame_at - joined_at) * 1000:.0f} ms"
        )
    finally:
        await fan.close()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_python_host_chromium_viewer(server: Embedded, tabs: Any, codec: str) -> None:
    call_id, _ = await new_live_show(server)
    host = await server.connect("host", call_id)
    try:
        await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240, 30), video_codec=codec)
        fan = await tabs(granted=False)
        ws_url, token = await credentials(server, "fan", call_id)
        await fan.call("subscribeWs", "sub", ws_url, token)
        stats = await fan.wait_decoding("sub", frames=30)
        video = stats["inbound"]["video"]
        assert (video["frameWidth"], video["frameHeight"]) == (320, 240)
        assert codec_of(stats, "inbound")["mimeType"] == f"video/{codec}"
        assert stats["inbound"]["audio"]["packetsReceived"] > 0
    finally:
        await host.close()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_chromium_whip_to_chromium_whep(server: Embedded, tabs: Any, codec: str) -> None:
    """The page fetch()es its offers to the coordinator (same origin, Bearer token)."""
    call_id, api = await server.new_show("host", f"whip-{uuid.uuid4().hex[:8]}")
    host, fan = await tabs(), await tabs(granted=False)
    published = await host.call("whip", "whip", CALL_TYPE, call_id, server.token("host"), codec)
    assert published["status"] == 201
    assert published["contentType"].startswith("application/sdp")
    assert "/v1/calls/" in published["location"]
    assert f"{codec}/90000" in published["answer"]
    # in backstage without join-ahead a viewer is turned away
    with pytest.raises(Exception, match="call_in_backstage"):
        await fan.call("whep", "early", CALL_TYPE, call_id, server.token("fan"))
    await api.go_live(CALL_TYPE, call_id)
    watched = await fan.call("whep", "whep", CALL_TYPE, call_id, server.token("fan"))
    assert watched["status"] == 201 and "a=candidate:" in watched["answer"]
    sent = await host.wait_encoding("whip")
    stats = await fan.wait_decoding("whep", frames=30)
    video = stats["inbound"]["video"]
    assert codec_of(stats, "inbound")["mimeType"] == f"video/{codec}"
    assert (video["frameWidth"], video["frameHeight"]) == (
        sent["outbound"]["video"]["frameWidth"],
        sent["outbound"]["video"]["frameHeight"],
    )
    assert stats["inbound"]["audio"]["packetsReceived"] > 0
    await server.wait_count(call_id, 2)
    assert await fan.call("deleteResource", "whep", server.token("fan")) == 204
    await server.wait_count(call_id, 1)
    assert await host.call("deleteResource", "whip", server.token("host")) == 204
    await server.wait_count(call_id, 0)


class _Lossy:
    """Wraps a nominated ICE pair: every ``every``-th datagram sent through it is lost."""

    def __init__(self, pair: Any, every: int) -> None:
        self._pair = pair
        self._every = every
        self._count = 0
        self.dropped = 0
        self.remote_addr = pair.remote_addr
        self.protocol = self
        self.transport = self

    def sendto(self, data: bytes, addr: Any) -> None:
        self._count += 1
        if self._count % self._every == 0:
            self.dropped += 1
            return
        self._pair.protocol.transport.sendto(data, addr)


async def test_loss_is_repaired_and_late_joiners_get_a_keyframe(
    server: Embedded, tabs: Any
) -> None:
    """Packets lost on the way to a Chromium viewer come back as RTX (NACK answered from
    the SFU's history); packets lost from a Chromium publisher are NACKed upstream and
    its RTX unwrapped; a viewer joining long after the last keyframe gets one (PLI to
    the publisher's media SSRC)."""
    call_id, _ = await new_live_show(server)
    cid = f"{CALL_TYPE}:{call_id}"
    host, fan = await tabs(), await tabs(granted=False)
    ws_url, token = await credentials(server, "host", call_id)
    await host.call("publishWs", "pub", ws_url, token, "VP8")
    await host.wait_encoding("pub")

    # loss upstream: the SFU loses every 15th video packet the publisher sends
    room = server.node.rooms[cid].room
    publication = next(p for p in room.publications if p.kind == "video")
    receive = publication.receiver._handle_rtp_packet
    upstream = {"seen": 0, "dropped": 0}

    async def lossy_receive(packet: Any, arrival_time_ms: int) -> None:
        upstream["seen"] += 1
        if upstream["seen"] % 15 == 0 and packet.payload_type == publication.media_pt:
            upstream["dropped"] += 1
            return
        await receive(packet, arrival_time_ms)

    ws_url, token = await credentials(server, "fan", call_id)
    await fan.call("subscribeWs", "sub", ws_url, token)
    await fan.wait_decoding("sub", frames=10)
    fan_id = next(
        pid
        for pid, p in room.participants.items()
        if p.downstreams and pid != publication.participant.id
    )
    downstream = room.participants[fan_id].downstreams["video"]
    lossy = _Lossy(downstream.nominated[1], every=10)
    downstream.nominated = {1: lossy}
    await asyncio.sleep(3)
    downstream.nominated = lossy._pair and {1: lossy._pair}
    stats = await fan.wait_decoding("sub", frames=60)
    video = stats["inbound"]["video"]
    assert lossy.dropped > 5
    assert video["nackCount"] > 0, video
    assert publication.forwarder.retransmitted > 0
    print(
        f"\ndownstream: dropped {lossy.dropped}, viewer NACKs {video['nackCount']}, "
        f"retransmitted {publication.forwarder.retransmitted}, lost {video['packetsLost']}, "
        f"RTX received {video['retransmittedPacketsReceived']}, freezes {video['freezeCount']}"
    )

    publication.receiver._handle_rtp_packet = lossy_receive
    before = (await fan.stats("sub"))["inbound"]["video"]["framesDecoded"]
    await asyncio.sleep(3)
    publication.receiver._handle_rtp_packet = receive
    assert upstream["dropped"] >= 3, upstream
    deadline = time.monotonic() + 5
    while (sent := await host.stats("pub"))["outbound"]["video"]["nackCount"] == 0:
        assert time.monotonic() < deadline, f"no NACK reached the publisher: {sent}"
        await asyncio.sleep(0.2)
    stats = await fan.wait_decoding("sub", frames=before + 40)
    print(
        f"upstream: dropped {upstream['dropped']}, publisher NACKs received "
        f"{sent['outbound']['video']['nackCount']}, RTX sent "
        f"{sent['outbound']['video']['retransmittedPacketsSent']}, SFU forwarded "
        f"{publication.forwarder.packet_count}; viewer {stats['inbound']['video']}"
    )

    # a late joiner: the keyframe cache is long stale, so the SFU must ask Chromium
    late = await tabs(granted=False)
    ws_url, token = await credentials(server, "late", call_id)
    started = time.monotonic()
    await late.call("subscribeWs", "late", ws_url, token)
    await late.wait_decoding("late", frames=1, timeout=10)
    print(
        f"late Chromium viewer: subscribe-to-first-decoded-frame "
        f"{(time.monotonic() - started) * 1000:.0f} ms"
    )


async def test_chromium_viewers_waiting_before_anyone_publishes(
    server: Embedded, tabs: Any
) -> None:
    """Viewers (WebSocket and WHEP) connect to a live call with no publisher yet, so their
    connections offer every codec; an H.264 publisher then reaches them without a new
    request."""
    call_id, _ = await new_live_show(server)
    ws_fan, whep_fan, host = await tabs(granted=False), await tabs(granted=False), await tabs()
    ws_url, token = await credentials(server, "ws-fan", call_id)
    subscribed = await ws_fan.call("subscribeWs", "sub", ws_url, token)
    assert "VP8/90000" in subscribed["answer"] and "H264/90000" in subscribed["answer"]
    watched = await whep_fan.call("whep", "whep", CALL_TYPE, call_id, server.token("whep-fan"))
    assert "VP8/90000" in watched["answer"] and "H264/90000" in watched["answer"]
    await asyncio.sleep(0.5)
    ws_url, token = await credentials(server, "host", call_id)
    await host.call("publishWs", "pub", ws_url, token, "H264")
    for tab, name in ((ws_fan, "sub"), (whep_fan, "whep")):
        stats = await tab.wait_decoding(name, frames=20)
        assert codec_of(stats, "inbound")["mimeType"] == "video/H264"
        assert stats["inbound"]["video"]["frameWidth"] == 640
    await server.wait_count(call_id, 3)
