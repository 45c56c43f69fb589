"""An SFU node end to end: real aiortc peers over the signalling WebSocket, a real bus."""

from __future__ import annotations

import asyncio

from nodeharness import host_token, running_node, viewer_token

from stagecast.bus import Bus
from stagecast.client import SfuConnection, SyntheticVideoTrack, ToneAudioTrack


async def test_host_publishes_three_viewers_decode(bus: Bus) -> None:
    async with running_node(bus) as rn:
        host = await SfuConnection.connect(rn.ws_url, host_token())
        viewers = [
            await SfuConnection.connect(rn.ws_url, viewer_token(user=f"v{i}")) for i in range(3)
        ]
        try:
            assert host.joined["can_publish"] == {"audio": True, "video": True}
            await host.publish(ToneAudioTrack(), SyntheticVideoTrack(320, 240, 30))
            subs = await asyncio.gather(*(v.subscribe() for v in viewers))
            for sub in subs:
                await sub.wait_video_frames(10, timeout=10)
                await sub.wait_audio_frames(10, timeout=10)
                assert (sub.width, sub.height) == (320, 240)
                assert sub.last_counter is not None and sub.last_counter > 0
        finally:
            await asyncio.gather(host.close(), *(v.close() for v in viewers))
