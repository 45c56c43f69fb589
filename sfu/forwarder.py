"""The forwarding hot path.

One :class:`TrackForwarder` per published track receives the publisher's RTP packets
(already SRTP-unprotected and parsed by aiortc, never depacketized or decoded) and fans
each one out in a single loop to its :class:`Downstream` s, one per viewer. Per viewer
only the 12-byte fixed header differs (payload type, sequence number, timestamp, SSRC);
the rest of the packet (CSRCs, header extensions in the viewer's negotiated ids, payload)
is serialized once per packet per extension profile and shared. Each copy is
SRTP-protected with the viewer's session and handed to the viewer's nominated ICE
socket, bypassing aiortc's ``RTCRtpSender`` (and its encoder) entirely.

Sequence numbers and timestamps are mapped with a constant offset per viewer and source
"epoch", so NACKed sequence numbers map back to the source exactly and a viewer sees one
continuous stream across mute, unmute and a change of publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import clock
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)
from pylibsrtp import Error as SrtpError

from .keyframes import payload_inspector

logger = logging.getLogger(__name__)

MASK16 = 0xFFFF
MASK32 = 0xFFFFFFFF
_HEADER = struct.Struct("!BBHII")
_SEQ = struct.Struct("!H")
_CSRC = struct.Struct("!L")
_EXT_HEADER = struct.Struct("!HH")

Profile = tuple[tuple[tuple[int, str], ...], str]
_PROFILE_IDS: dict[Profile, int] = {}


def _profile_id(profile: Profile) -> int:
    """A small int per (header extension ids, mid): viewers sharing one share the bytes
    after the fixed header, and an int is cheaper to look up than the tuple."""
    return _PROFILE_IDS.setdefault(profile, len(_PROFILE_IDS))


@dataclass(frozen=True)
class ForwardingConfig:
    """Tunables of the forwarding path (defaults are what the tests and design assume)."""

    keyframe_request_interval: float = 0.5
    """At most one PLI per publisher track per this many seconds; requests in between
    are coalesced into one sent when the interval ends."""
    keyframe_cache: bool = True
    """Replay the packets since the last keyframe to a joining viewer, when few enough."""
    max_keyframe_replay_packets: int = 300
    history_size: int = 1024
    """Packets kept per track to answer NACKs (a power of two)."""
    pending_keyframe_retry: float = 1.0
    """Re-request a keyframe this often while a viewer still waits for one."""
    max_nack_per_request: int = 64


def _abs_send_time() -> int:
    return (clock.current_ntp_time() >> 14) & 0x00FFFFFF


class RawSender:
    """Send ready-made RTP/RTCP on an aiortc ``RTCDtlsTransport``: SRTP-protect with its
    session and ``sendto`` on its nominated ICE pair, with no ``RTCRtpSender`` involved."""

    __slots__ = ("dtls", "nominated")

    def __init__(self, dtls: Any) -> None:
        self.dtls = dtls
        # aioice keeps (and only ever clears) this one dict of component -> pair
        self.nominated: dict[int, Any] = dtls.transport._connection._nominated

    @property
    def connected(self) -> bool:
        return self.dtls.state == "connected" and 1 in self.nominated

    def send_rtp(self, data: bytes) -> None:
        pair = self.nominated[1]
        pair.protocol.transport.sendto(self.dtls._tx_srtp.protect(data), pair.remote_addr)

    def send_rtcp(self, data: bytes) -> None:
        pair = self.nominated[1]
        pair.protocol.transport.sendto(self.dtls._tx_srtp.protect_rtcp(data), pair.remote_addr)


class Downstream:
    """One viewer's outgoing stream of one kind: a pre-allocated sendonly transceiver.

    It is bound to at most one :class:`TrackForwarder` at a time; while bound but not yet
    *active* it waits for a keyframe (video) or the next packet (audio)."""

    __slots__ = (
        "active",
        "count_at",
        "ext_map",
        "failed",
        "kind",
        "mid",
        "next_seq",
        "next_ts",
        "nominated",
        "octets_at",
        "octets_before",
        "on_failure",
        "owner",
        "paused_at",
        "payload_types",
        "profile",
        "protect",
        "pt",
        "raw",
        "rtx_pt",
        "rtx_seq",
        "rtx_ssrc",
        "rtx_types",
        "sent_before",
        "seq_off",
        "ssrc",
        "track",
        "ts_off",
    )

    def __init__(
        self,
        *,
        kind: str,
        owner: str,
        ssrc: int,
        rtx_ssrc: int,
        mid: str,
        codecs: list[RTCRtpCodecParameters],
        header_extensions: list[RTCRtpHeaderExtensionParameters],
        raw: RawSender,
        on_failure: Callable[[Downstream], None] | None = None,
    ) -> None:
        self.kind = kind
        self.owner = owner
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.mid = mid
        self.payload_types: dict[str, int] = {}
        self.rtx_types: dict[int, int] = {}
        for codec in codecs:
            name = codec.mimeType.split("/")[-1].upper()
            pt = codec.payloadType
            if pt is None:
                continue
            if name == "RTX":
                apt = codec.parameters.get("apt")
                if isinstance(apt, int):
                    self.rtx_types[apt] = pt
            else:
                self.payload_types.setdefault(name, pt)
        self.ext_map = HeaderExtensionsMap()
        self.ext_map.configure(RTCRtpParameters(headerExtensions=list(header_extensions)))
        self.profile = _profile_id((tuple(sorted((e.id, e.uri) for e in header_extensions)), mid))
        self.raw = raw
        self.nominated = raw.nominated
        self.protect: Callable[[bytes], bytes] = raw.dtls._tx_srtp.protect
        self.on_failure = on_failure
        self.track: TrackForwarder | None = None
        self.active = False
        self.failed = False
        self.pt = -1
        self.rtx_pt: int | None = None
        self.seq_off = 0
        self.ts_off = 0
        self.next_seq = random.randint(0, 0x7FFF)
        self.next_ts = random.randint(0, MASK32)
        self.rtx_seq = random.randint(0, 0x7FFF)
        self.paused_at: float | None = None
        self.sent_before = 0
        self.octets_before = 0
        self.count_at = 0
        self.octets_at = 0

    def accepts(self, codec_name: str) -> bool:
        return codec_name.upper() in self.payload_types

    def sender_report(self) -> RtcpSrPacket | None:
        """An RTCP SR describing what this viewer has been sent (None before any media)."""
        now = time.monotonic()
        track = self.track
        if self.active and track is not None:
            rtp = track.rtp_time_at(now)
            rtp_out = (rtp + self.ts_off) & MASK32
            packets = self.sent_before + track.packet_count - self.count_at
            octets = self.octets_before + track.octet_count - self.octets_at
        elif self.paused_at is not None:
            rate = track.clock_rate if track is not None else 90000
            rtp_out = (self.next_ts + int((now - self.paused_at) * rate)) & MASK32
            packets = self.sent_before
            octets = self.octets_before
        else:
            return None
        return RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=clock.current_ntp_time(),
                rtp_timestamp=rtp_out,
                packet_count=packets & MASK32,
                octet_count=octets & MASK32,
            ),
        )


def _tail(
    packet: RtpPacket, d: Downstream, abs_send_time: int, payload: bytes | None = None
) -> tuple[int, bytes]:
    """First header byte and everything after the fixed header, in ``d``'s extension ids."""
    ext = HeaderExtensions()
    ext.mid = d.mid
    ext.abs_send_time = abs_send_time
    ext.audio_level = packet.extensions.audio_level
    profile, value = d.ext_map.set(ext)
    if payload is None:
        payload = packet.payload
    padding = packet.padding_size
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if value else 0) | len(packet.csrc)
    parts = [_CSRC.pack(c) for c in packet.csrc]
    if value:
        parts.append(_EXT_HEADER.pack(profile, len(value) >> 2))
        parts.append(value)
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b0, b"".join(parts)


class TrackForwarder:
    """Fan-out of one published track to every bound viewer."""

    def __init__(
        self,
        *,
        kind: str,
        codec_name: str,
        clock_rate: int,
        send_pli: Callable[[int], None],
        config: ForwardingConfig | None = None,
        label: str = "",
    ) -> None:
        self.kind = kind
        self.codec_name = codec_name.upper()
        self.clock_rate = clock_rate
        self.config = config or ForwardingConfig()
        self.label = label
        self._send_pli_cb = send_pli
        self.detect = payload_inspector(self.codec_name) if kind == "video" else None
        size = self.config.history_size
        if size & (size - 1):
            raise ValueError("history_size must be a power of two")
        self.hmask = size - 1
        self.history: list[RtpPacket | None] = [None] * size
        self.downstreams: list[Downstream] = []
        self.pending: list[Downstream] = []
        self.media_ssrc: int | None = None
        self.highest_seq = -1
        self.last_ts = 0
        self.last_arrival = 0.0
        self.packet_count = 0
        self.octet_count = 0
        self.kf_seq: int | None = None
        self.kf_ts = 0
        self.muted = False
        self.closed = False
        self.sr_rtp: int | None = None
        self.sr_arrival = 0.0
        # keyframe requests
        self.last_pli_at = -1e9
        self.pli_count = 0
        self._pli_timer: asyncio.TimerHandle | None = None
        # counters
        self.forwarded = 0
        self.forwarded_octets = 0  # payload bytes sent to viewers (packets x viewers)
        self.retransmitted = 0
        self.nack_misses = 0
        self.replayed = 0
        self.stale = 0
        self.invalid = 0
        self.duplicates = 0
        self.srtp_errors = 0

    # -- the hot path -------------------------------------------------------------

    def on_packet(self, packet: RtpPacket) -> None:
        """Take one packet from the publisher and forward it to every active viewer."""
        seq = packet.sequence_number
        payload = packet.payload
        detect = self.detect
        if payload:
            verdict = detect(payload) if detect is not None else 0
            if verdict < 0:
                self.invalid += 1
                return
        elif not packet.padding_size:
            self.invalid += 1
            return
        else:
            verdict = 0  # padding only: forwarded to keep sequence numbers contiguous
        if packet.ssrc != self.media_ssrc:
            self._source_changed(packet.ssrc)
        now = time.monotonic()
        highest = self.highest_seq
        if highest < 0 or (seq - highest) & MASK16 < 0x8000:
            self.highest_seq = seq
            self.last_ts = packet.timestamp
            self.last_arrival = now
        elif (highest - seq) & MASK16 > self.hmask:
            # older than the history window: useless to viewers, and SRTP would refuse
            # to protect it (replay protection) anyway
            self.stale += 1
            return
        hslot = seq & self.hmask
        previous = self.history[hslot]
        if previous is not None and previous.sequence_number == seq:
            self.duplicates += 1  # viewers' SRTP replay protection would drop it anyway
            return
        self.history[hslot] = packet
        self.packet_count += 1
        self.octet_count += len(payload)
        if self.muted:
            return
        if detect is not None:
            if verdict:
                # H.264 marks several packets of one keyframe (SPS, PPS, IDR start): the
                # keyframe starts at the first of them
                if self.kf_seq is None or packet.timestamp != self.kf_ts:
                    self.kf_seq = seq
                    self.kf_ts = packet.timestamp
                    if self.pending:
                        self._activate_pending(packet, now)
            elif self.pending and now - self.last_pli_at > self.config.pending_keyframe_retry:
                self.request_keyframe()
        elif self.pending:
            self._activate_pending(packet, now)

        downs = self.downstreams
        if not downs:
            return
        ts = packet.timestamp
        mpt = packet.marker << 7
        pack = _HEADER.pack
        tails: dict[int, tuple[int, bytes]] = {}
        abs_send = -1
        failed: list[Downstream] | None = None
        for d in downs:
            tail = tails.get(d.profile)
            if tail is None:
                if abs_send < 0:
                    abs_send = _abs_send_time()
                tail = tails[d.profile] = _tail(packet, d, abs_send)
            try:
                pair = d.nominated[1]
                pair.protocol.transport.sendto(
                    d.protect(
                        pack(
                            tail[0],
                            mpt | d.pt,
                            (seq + d.seq_off) & MASK16,
                            (ts + d.ts_off) & MASK32,
                            d.ssrc,
                        )
                        + tail[1]
                    ),
                    pair.remote_addr,
                )
            except SrtpError:
                self.srtp_errors += 1  # this packet only; the viewer is fine
            except Exception:
                if failed is None:
                    failed = []
                failed.append(d)
        self.forwarded += len(downs)
        self.forwarded_octets += len(downs) * len(payload)
        if failed:
            for d in failed:
                self._fail(d)

    # -- binding viewers ----------------------------------------------------------

    def attach(self, d: Downstream) -> None:
        """Bind a viewer; it starts at the next keyframe (or at once from the cache)."""
        if d.track is not None:
            raise ValueError("downstream is already bound")
        d.track = self
        d.active = False
        d.pt = d.payload_types[self.codec_name]
        d.rtx_pt = d.rtx_types.get(d.pt)
        if self.muted:
            self.pending.append(d)
            return
        if self.detect is not None and self._replay_keyframe(d):
            return
        self.pending.append(d)
        if self.detect is not None:
            self.request_keyframe()

    def detach(self, d: Downstream) -> None:
        if d.track is not self:
            return
        if d.active:
            self._pause(d)
            with contextlib.suppress(ValueError):
                self.downstreams.remove(d)
        else:
            with contextlib.suppress(ValueError):
                self.pending.remove(d)
        d.track = None
        d.active = False

    def detach_all(self) -> list[Downstream]:
        bound = list(self.downstreams) + list(self.pending)
        for d in bound:
            self.detach(d)
        return bound

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if muted:
            for d in list(self.downstreams):
                self._pause(d)
                d.active = False
                self.pending.append(d)
            self.downstreams.clear()
        elif self.pending and self.detect is not None:
            self.request_keyframe()

    def close(self) -> None:
        self.closed = True
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        self.detach_all()
        self.history = [None] * len(self.history)

    # -- keyframes ------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: at most one PLI per interval, coalesced."""
        if self.detect is None or self.closed:
            return
        now = time.monotonic()
        due = self.last_pli_at + self.config.keyframe_request_interval
        if now >= due:
            self._fire_pli(now)
        elif self._pli_timer is None:
            loop = asyncio.get_running_loop()
            self._pli_timer = loop.call_later(due - now, self._pli_timer_fired)

    def _pli_timer_fired(self) -> None:
        self._pli_timer = None
        if not self.closed:
            self._fire_pli(time.monotonic())

    def _fire_pli(self, now: float) -> None:
        self.last_pli_at = now
        if self.media_ssrc is None:
            return  # nothing received yet; retried when packets arrive
        self.pli_count += 1
        try:
            self._send_pli_cb(self.media_ssrc)
        except Exception:
            logger.debug("%s: sending PLI failed", self.label, exc_info=True)

    # -- loss recovery ----------------------------------------------------------------

    def retransmit(self, d: Downstream, lost: list[int]) -> None:
        """Answer a viewer's NACK (sequence numbers in the viewer's space) from history."""
        if d.track is not self or not d.active:
            return
        abs_send = _abs_send_time()
        for out_seq in lost[: self.config.max_nack_per_request]:
            src = (out_seq - d.seq_off) & MASK16
            packet = self.history[src & self.hmask]
            if packet is None or packet.sequence_number != src:
                self.nack_misses += 1
                continue
            out_ts = (packet.timestamp + d.ts_off) & MASK32
            try:
                if d.rtx_pt is not None:
                    b0, tail = _tail(packet, d, abs_send, _SEQ.pack(out_seq) + packet.payload)
                    header = _HEADER.pack(
                        b0, (packet.marker << 7) | d.rtx_pt, d.rtx_seq, out_ts, d.rtx_ssrc
                    )
                    d.rtx_seq = (d.rtx_seq + 1) & MASK16
                else:
                    b0, tail = _tail(packet, d, abs_send)
                    header = _HEADER.pack(b0, (packet.marker << 7) | d.pt, out_seq, out_ts, d.ssrc)
                d.raw.send_rtp(header + tail)
            except SrtpError:
                self.srtp_errors += 1
                continue
            except Exception:
                self._fail(d)
                return
            self.retransmitted += 1

    # -- sender reports ---------------------------------------------------------------

    def on_sender_report(self, rtp_timestamp: int) -> None:
        """Remember the publisher's latest SR, to extrapolate RTP time for viewers' SRs."""
        self.sr_rtp = rtp_timestamp
        self.sr_arrival = time.monotonic()

    def rtp_time_at(self, now: float) -> int:
        if self.sr_rtp is not None:
            return int(self.sr_rtp + (now - self.sr_arrival) * self.clock_rate)
        return int(self.last_ts + (now - self.last_arrival) * self.clock_rate)

    # -- internals --------------------------------------------------------------------

    def _activate(self, d: Downstream, packet: RtpPacket, now: float) -> None:
        d.seq_off = (d.next_seq - packet.sequence_number) & MASK16
        next_ts = d.next_ts
        if d.paused_at is not None:
            next_ts += max(1, int((now - d.paused_at) * self.clock_rate))
        d.ts_off = (next_ts - packet.timestamp) & MASK32
        d.count_at = self.packet_count - 1
        d.octets_at = self.octet_count - len(packet.payload)
        d.active = True
        self.downstreams.append(d)

    def _activate_pending(self, packet: RtpPacket, now: float) -> None:
        for d in self.pending:
            self._activate(d, packet, now)
        self.pending.clear()

    def _pause(self, d: Downstream) -> None:
        """Remember where a viewer's stream stands so a later source continues it."""
        if self.highest_seq >= 0:
            d.next_seq = (self.highest_seq + d.seq_off + 1) & MASK16
            d.next_ts = (self.last_ts + d.ts_off) & MASK32
            d.paused_at = self.last_arrival
        d.sent_before += self.packet_count - d.count_at
        d.octets_before += self.octet_count - d.octets_at

    def _replay_keyframe(self, d: Downstream) -> bool:
        """Start ``d`` at the cached keyframe and send it everything since; False if the
        cache cannot serve (disabled, none yet, too old, or no longer in history)."""
        if not self.config.keyframe_cache or self.kf_seq is None or self.highest_seq < 0:
            return False
        start = self.kf_seq
        span = (self.highest_seq - start) & MASK16
        if span >= min(self.config.max_keyframe_replay_packets, len(self.history)):
            return False
        first = self.history[start & self.hmask]
        if first is None or first.sequence_number != start:
            return False
        now = time.monotonic()
        self._activate(d, first, now)
        d.count_at = self.packet_count  # replayed packets are counted below
        d.octets_at = self.octet_count
        abs_send = _abs_send_time()
        sent = 0
        try:
            for i in range(span + 1):
                src = (start + i) & MASK16
                packet = self.history[src & self.hmask]
                if packet is None or packet.sequence_number != src:
                    continue
                b0, tail = _tail(packet, d, abs_send)
                try:
                    d.raw.send_rtp(
                        _HEADER.pack(
                            b0,
                            (packet.marker << 7) | d.pt,
                            (src + d.seq_off) & MASK16,
                            (packet.timestamp + d.ts_off) & MASK32,
                            d.ssrc,
                        )
                        + tail
                    )
                except SrtpError:
                    self.srtp_errors += 1
                    continue
                sent += 1
                d.octets_before += len(packet.payload)
        except Exception:
            self._fail(d)
            return True
        d.sent_before += sent
        self.replayed += sent
        return True

    def _source_changed(self, ssrc: int) -> None:
        """The publisher's SSRC changed (first packet, or a restarted stream): a new
        sequence/timestamp space, so every viewer re-synchronizes at the next keyframe."""
        if self.media_ssrc is not None:
            logger.info("%s: source SSRC changed %08x -> %08x", self.label, self.media_ssrc, ssrc)
            for d in list(self.downstreams):
                self._pause(d)
                d.active = False
                self.pending.append(d)
            self.downstreams.clear()
            self.history = [None] * len(self.history)
            self.highest_seq = -1
            self.kf_seq = None
            self.sr_rtp = None
        self.media_ssrc = ssrc

    def _fail(self, d: Downstream) -> None:
        if d.failed:
            return
        d.failed = True
        self.detach(d)
        if d.on_failure is not None:
            try:
                d.on_failure(d)
            except Exception:
                logger.exception("%s: downstream failure callback raised", self.label)
