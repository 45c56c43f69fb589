"""Measure the SFU's CPU cost per forwarded RTP packet (the fan-out hot loop).

Sets up a real room on loopback: one aiortc publisher and N aiortc viewers, each with its
own ICE/DTLS/SRTP session and UDP socket. Once media flows, the publisher is stopped and
synthetic VP8 packets (real sizes, continuing the publisher's sequence numbers) are fed
to the publication's receive hook in a synchronous loop: exactly the work the SFU does
per incoming packet (RTX/stats/NACK bookkeeping, validation, history) plus, per viewer,
the header rewrite, SRTP protect and ``sendto``. The viewers' event loop does not run
during a timed batch, so their receive cost is not counted; the kernel may drop what
overflows their socket buffers, which costs the sender nothing extra.

    .venv/bin/python bench/fanout_core.py --viewers 50 --packets 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "sfu"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from aiortc.rtp import RtpPacket
from peers import Harness

from sfu import ForwardingConfig
from sfu.ice import configure_host_candidates


async def run(viewers: int, packets: int, payload_size: int) -> dict[str, float]:
    configure_host_candidates(["127.0.0.1"])
    harness = Harness()
    room = harness.room("bench:fanout", config=ForwardingConfig(keyframe_cache=False))
    host, publisher = await harness.publish(room)
    clients = [await harness.view(room, f"v{i}") for i in range(viewers)]
    for _, client in clients:
        await client.wait_frames(2, within=30)
    video = room.active_publication("video")
    assert video is not None
    forwarder = video.forwarder
    for sender in publisher.pc.getSenders():  # from here on only synthetic packets flow
        if sender.track is not None:
            sender.track.stop()
    await asyncio.sleep(0.5)
    assert len(forwarder.downstreams) == viewers, len(forwarder.downstreams)

    ssrc = forwarder.media_ssrc
    assert ssrc is not None
    seq = forwarder.highest_seq
    ts = forwarder.last_ts
    body = b"\x10\x01" + os.urandom(payload_size - 2)  # VP8, valid, not a keyframe

    walls: list[float] = []

    async def batch(count: int) -> float:
        nonlocal seq, ts
        start = time.thread_time()
        wall_start = time.perf_counter()
        for i in range(count):
            seq = (seq + 1) & 0xFFFF
            if i % 6 == 0:
                ts = (ts + 3000) & 0xFFFFFFFF
            packet = RtpPacket(
                payload_type=video.media_pt,
                marker=int(i % 6 == 5),
                sequence_number=seq,
                timestamp=ts,
                ssrc=ssrc,
                payload=body,
            )
            await video._on_rtp(packet, 0)
        walls.append(time.perf_counter() - wall_start)
        return time.thread_time() - start

    await batch(200)  # warm up
    walls.clear()
    received_before = sum(_rx_packets(c) for _, c in clients)
    total = 0.0
    done = 0
    while done < packets:
        n = min(100, packets - done)
        total += await batch(n)
        done += n
        await asyncio.sleep(0.05)  # let the viewers drain between batches (not timed)

    wall = sum(walls)
    await asyncio.sleep(0.5)
    received = sum(_rx_packets(c) for _, c in clients) - received_before
    # the same packets with nobody bound: the per-incoming-packet part alone
    bound = list(forwarder.downstreams)
    for d in bound:
        forwarder.detach(d)
    alone = await batch(packets)
    result = {
        "viewers": viewers,
        "packets": packets,
        "payload_bytes": payload_size,
        "us_per_incoming_packet_no_viewers": alone / packets * 1e6,
        "us_per_incoming_packet": total / packets * 1e6,
        "us_per_forwarded_packet": total / (packets * viewers) * 1e6,
        "us_per_forwarded_packet_fanout_only": (total - alone) / (packets * viewers) * 1e6,
        "us_per_forwarded_packet_wall": wall / (packets * viewers) * 1e6,
        "viewer_datagrams_per_forwarded_packet": received / (packets * viewers),
        "srtp_errors": forwarder.srtp_errors,
    }
    await host.leave()
    await asyncio.wait_for(harness.close(), 60)
    return result


def _rx_packets(client: Any) -> int:
    transport = client.pc.getTransceivers()[0].receiver.transport
    return int(transport._get_stats().get(transport._stats_id).packetsReceived)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--payload", type=int, default=1100)
    args = parser.parse_args()
    result = asyncio.run(run(args.viewers, args.packets, args.payload))
    for key, value in result.items():
        print(f"{key:40s} {value:.2f}" if isinstance(value, float) else f"{key:40s} {value}")


if __name__ == "__main__":
    main()
