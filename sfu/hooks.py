"""Glue to aiortc internals (aiortc 1.16), kept in one place.

The forwarding core reuses aiortc for ICE, DTLS, SRTP keys, SDP and RTCP timing, and
replaces three of its behaviours per object, by instance attribute (no global patching):

* a publisher's ``RTCRtpReceiver._handle_rtp_packet``: packets go to the forwarder
  instead of the jitter buffer and decoder (the receiver's RTCP statistics, from which
  aiortc builds receiver reports, are still fed);
* a viewer's ``RTCRtpSender._handle_rtcp_packet``: PLI/FIR/NACK from the viewer reach the
  forwarder (aiortc's sender would only flag its unused encoder);
* a viewer's ``RTCRtpSender._send_rtcp``: aiortc's periodic sender report is rewritten
  with the forwarded stream's real RTP time and counters (the sender itself never sends);
* a viewer's ``RTCDtlsTransport._handle_rtp_data``: RTP from a viewer is dropped unparsed.

Every name used here is private to aiortc: upgrading aiortc means re-reading this file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import AnyRtcpPacket, RtcpSrPacket, RtpPacket

RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]
RtcpHandler = Callable[[AnyRtcpPacket], Awaitable[None]]


class IdleTrack(MediaStreamTrack):
    """A track that never yields a frame: it keeps a viewer's ``RTCRtpSender`` (needed for
    SDP, SSRC, RTCP routing and reports) alive and asleep, at no CPU cost. A sender with
    no track at all would poll every 20 ms."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def receiver_statistics(receiver: Any) -> dict[int, StreamStatistics]:
    """The per-SSRC statistics aiortc's receiver turns into RTCP receiver reports."""
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams
    return streams


def install_receiver_hooks(receiver: Any, on_rtp: RtpHandler, on_rtcp: RtcpHandler) -> None:
    """Route a publisher receiver's RTP to ``on_rtp`` (no decoding) and its RTCP to
    ``on_rtcp`` (which should call the returned original for aiortc's bookkeeping)."""
    receiver._handle_rtp_packet = on_rtp
    receiver._handle_rtcp_packet = on_rtcp


def original_rtcp_handler(obj: Any) -> RtcpHandler:
    handler: RtcpHandler = type(obj)._handle_rtcp_packet.__get__(obj)
    return handler


def install_sender_hooks(
    sender: Any,
    on_rtcp: RtcpHandler,
    make_sender_report: Callable[[], RtcpSrPacket | None],
) -> None:
    """Intercept a viewer sender's incoming RTCP, and rewrite its outgoing SR."""
    original_send: Callable[[list[AnyRtcpPacket]], Awaitable[None]] = sender._send_rtcp

    async def send_rtcp(packets: list[AnyRtcpPacket]) -> None:
        out: list[AnyRtcpPacket] = []
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                report = make_sender_report()
                if report is None:
                    continue
                out.append(report)
                # keep aiortc's round-trip-time estimate (from RR's LSR/DLSR) working
                sender._RTCRtpSender__lsr = (report.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                sender._RTCRtpSender__lsr_time = time.time()
            else:
                out.append(packet)
        if out:
            await original_send(out)

    sender._handle_rtcp_packet = on_rtcp
    sender._send_rtcp = send_rtcp


async def _drop_rtp(data: bytes, arrival_time_ms: int) -> None:
    return None


def ignore_incoming_rtp(dtls_transport: Any) -> None:
    """Drop RTP arriving on a viewer's transport without parsing it (RTCP still flows)."""
    dtls_transport._handle_rtp_data = _drop_rtp


def drop_receive_estimator(receiver: Any) -> None:
    """Free the remote bitrate estimator of a receiver whose estimate nobody uses: a viewer's
    sendonly transceiver at the SFU (it never gets RTP), or a subscriber of Stagecast's SFU,
    which ignores REMB. aiortc builds one per video receiver (1,000 rate-bucket objects) and
    feeds it every packet."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None


def sender_ssrcs(sender: Any) -> tuple[int, int]:
    return int(sender._ssrc), int(sender._rtx_ssrc)


def negotiated(transceiver: Any) -> tuple[list[Any], list[Any]]:
    """Codecs and header extensions negotiated for a transceiver."""
    return list(transceiver._codecs), list(transceiver._headerExtensions)
