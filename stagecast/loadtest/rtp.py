"""Counting RTP at a peer connection's ICE sockets (thin viewers).

After a receiving peer connection is set up, :func:`hook_socket` wraps the datagram handler
of its ICE sockets: RTP datagrams are counted (SSRC, sequence number, marker bit and size
read from the clear RTP header) and dropped there, with no SRTP unprotect, jitter buffer,
depacketizing or decoding. STUN (ICE consent), DTLS and RTCP still reach aiortc. One
process can run hundreds of such viewers. ``bench/fanout.py`` uses the same code.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any


def set_encoder_bitrate(bitrate: int) -> None:
    """Start aiortc's VP8 and H.264 encoders at ``bitrate`` bit/s (process-wide).

    aiortc starts its encoders at a fixed bitrate and only moves on REMB; this also lowers
    the minimum so that the encoder keeps about ``bitrate``."""
    from aiortc.codecs import h264, vpx

    codec: Any
    for codec in (vpx, h264):
        codec.DEFAULT_BITRATE = bitrate
        codec.MIN_BITRATE = min(codec.MIN_BITRATE, bitrate)
        codec.MAX_BITRATE = max(codec.MAX_BITRATE, bitrate)


def set_vp8_bitrate(bitrate: int) -> None:
    """The VP8 encoder only (what ``bench/fanout.py`` sets)."""
    from aiortc.codecs import vpx

    vpx.DEFAULT_BITRATE = bitrate
    vpx.MIN_BITRATE = min(vpx.MIN_BITRATE, bitrate)
    vpx.MAX_BITRATE = max(vpx.MAX_BITRATE, bitrate)


class Counts:
    """RTP counters of one viewer, per kind (by payload type), from raw SRTP datagrams.

    ``video_bytes``/``audio_bytes`` are whole datagrams (RTP header, payload and SRTP tag).
    ``first_frame_at`` is when the first video packet with the marker bit (the end of the
    first frame) arrived."""

    __slots__ = (
        "audio_bytes",
        "audio_gaps",
        "audio_packets",
        "first_frame_at",
        "first_video_at",
        "last_at",
        "last_seq",
        "markers",
        "video_bytes",
        "video_gaps",
        "video_packets",
        "video_pts",
    )

    def __init__(self, video_pts: set[int]) -> None:
        self.video_pts = video_pts
        self.video_packets = 0
        self.audio_packets = 0
        self.video_gaps = 0
        self.audio_gaps = 0
        self.video_bytes = 0
        self.audio_bytes = 0
        self.markers = 0
        self.first_video_at: float | None = None
        self.first_frame_at: float | None = None
        self.last_at = 0.0
        self.last_seq: dict[int, int] = {}

    def add(self, data: bytes) -> None:
        b1 = data[1]
        pt = b1 & 0x7F
        seq = (data[2] << 8) | data[3]
        ssrc = int.from_bytes(data[8:12], "big")
        now = time.monotonic()
        self.last_at = now
        video = pt in self.video_pts
        if video:
            self.video_packets += 1
            self.video_bytes += len(data)
            if self.first_video_at is None:
                self.first_video_at = now
            if b1 & 0x80:
                self.markers += 1
                if self.first_frame_at is None:
                    self.first_frame_at = now
        else:
            self.audio_packets += 1
            self.audio_bytes += len(data)
        last = self.last_seq.get(ssrc)
        if last is not None:
            delta = (seq - last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:
                return  # duplicate or late
            if delta > 1:
                if video:
                    self.video_gaps += delta - 1
                else:
                    self.audio_gaps += delta - 1
        self.last_seq[ssrc] = seq


def video_payload_types(sdp: str) -> set[int]:
    """Payload types of the video m-section (media and RTX) in an SDP."""
    pts: set[int] = set()
    for line in sdp.splitlines():
        if line.startswith("m="):
            parts = line.split()
            if parts[0][2:] == "video":
                pts.update(int(p) for p in parts[3:] if p.isdigit())
    return pts


RECEIVE_BUFFER = 4 * 1024 * 1024


def enlarge_receive_buffer(protocol: Any, size: int = RECEIVE_BUFFER) -> None:
    """Ask for a larger UDP receive buffer (the kernel caps it at ``net.core.rmem_max``).

    A joining viewer gets the SFU's cached keyframe as a burst (up to a few hundred packets);
    with the default buffer (~208 KB) a worker busy with other viewers' DTLS handshakes
    would drop some of it itself and report loss that the server did not cause."""
    transport = getattr(protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def ice_protocols(pc: Any) -> list[Any]:
    """The ICE socket protocols of ``pc`` (an ``RTCPeerConnection``) once it has gathered."""
    protocols: list[Any] = []
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is None:
            continue
        for protocol in transport.transport._connection._protocols:
            if id(protocol) not in seen:
                seen.add(id(protocol))
                protocols.append(protocol)
    return protocols


def hook_socket(pc: Any, counts: Counts) -> int:
    """Count and drop RTP at the ICE sockets of ``pc`` (an ``RTCPeerConnection``); the rest
    goes on to aiortc. Returns how many sockets were hooked."""
    hooked = 0
    for protocol in ice_protocols(pc):
        enlarge_receive_buffer(protocol)
        original = protocol.datagram_received
        add = counts.add

        def received(data: Any, addr: Any, original: Any = original, add: Any = add) -> None:
            if len(data) >= 12 and (data[0] & 0xC0) == 0x80 and not 192 <= data[1] <= 223:
                add(data)
                return
            original(data, addr)

        protocol.datagram_received = received
        hooked += 1
    return hooked
