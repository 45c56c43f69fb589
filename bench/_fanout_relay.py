"""The naive aiortc SFU, as a baseline for ``bench/fanout.py``: aiortc's ``MediaRelay``.

The publisher's tracks are decoded once (aiortc's receiver decodes them into frames) and
``MediaRelay`` hands every frame to each viewer's ``RTCRtpSender``, which encodes it again
(VP8, Opus) per viewer. HTTP signalling, non-trickle (aiortc gathers before answering):

    POST /publish {"sdp": offer}  -> {"sdp": answer}    one publisher (audio + video)
    POST /view    {"sdp": offer}  -> {"sdp": answer}    a recvonly viewer

    python bench/_fanout_relay.py --port 8123 [--video-bitrate 1000000]

ICE host candidates: 127.0.0.1 only; no STUN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.contrib.media import MediaRelay  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from sfu.ice import configure_host_candidates, rtc_configuration  # noqa: E402


def create_app() -> Starlette:
    relay = MediaRelay()
    tracks: dict[str, MediaStreamTrack] = {}
    ready = asyncio.Event()
    pcs: set[RTCPeerConnection] = set()

    async def publish(request: Request) -> JSONResponse:
        body = await request.json()
        pc = RTCPeerConnection(rtc_configuration())
        pcs.add(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            tracks[track.kind] = track
            if "audio" in tracks and "video" in tracks:
                ready.set()

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return JSONResponse({"sdp": pc.localDescription.sdp})

    async def view(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.wait_for(ready.wait(), 20)
        pc = RTCPeerConnection(rtc_configuration())
        pcs.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                pcs.discard(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        for kind in ("audio", "video"):
            pc.addTrack(relay.subscribe(tracks[kind]))
        await pc.setLocalDescription(await pc.createAnswer())
        return JSONResponse({"sdp": pc.localDescription.sdp})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "viewers": len(pcs) - 1})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in list(pcs)), return_exceptions=True)

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/view", view, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video-bitrate", type=int, default=1_000_000)
    args = parser.parse_args()
    from aiortc.codecs import vpx

    vpx.DEFAULT_BITRATE = args.video_bitrate
    vpx.MAX_BITRATE = max(vpx.MAX_BITRATE, args.video_bitrate)
    configure_host_candidates(["127.0.0.1"])
    app: Any = create_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
