"""Rooms, participants and publications: the forwarding core's public face.

A :class:`Room` is one call on this SFU node. The signalling layer (WebSocket, WHIP, WHEP)
authorizes a user, then calls :meth:`Room.join` with the capabilities it decided, and
relays SDP:

* publishing — the client offers, :meth:`Participant.publish` answers. The offer is
  reduced to Opus and the room's one video codec (VP8, or H.264 42e01f with
  packetization-mode 1) before aiortc sees it.
* subscribing — :meth:`Participant.subscribe` returns the SFU's offer, the client answers
  with :meth:`Participant.set_subscriber_answer`. The offer always has exactly one audio
  and one video ``sendonly`` section, pre-allocated: a viewer who connects before anyone
  publishes receives media as soon as someone does, and publishing, unpublishing, muting
  or a change of publisher never needs renegotiation (each viewer sees one continuous
  stream per kind; sequence numbers and timestamps are rewritten across the change).

Because each viewer has one slot per kind, a room forwards one audio and one video source
at a time: the earliest live publication of each kind (the host). Further publications
are accepted, reported and take over when the current one ends. A participant never
receives its own media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unwrap_rtx,
)
from aiortc.sdp import candidate_from_sdp

from . import hooks
from .errors import (
    InvalidOffer,
    InvalidState,
    ParticipantExists,
    PublishForbidden,
    RoomClosed,
    SubscribeForbidden,
    UnknownParticipant,
)
from .events import (
    EventCallback,
    Kind,
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)
from .forwarder import Downstream, ForwardingConfig, RawSender, TrackForwarder
from .ice import rtc_configuration
from .sdp import (
    H264_PROFILE_LEVEL_ID,
    VIDEO_CODECS,
    VideoCodec,
    filter_publisher_offer,
    viewer_offer_kinds,
)

logger = logging.getLogger(__name__)

KINDS: tuple[Kind, Kind] = ("audio", "video")
PeerRole = Literal["publisher", "subscriber"]
CLOSE_TIMEOUT = 5.0


def _kind(value: str) -> Kind:
    if value == "audio":
        return "audio"
    if value == "video":
        return "video"
    raise ValueError(f"not a media kind: {value!r}")


class Publication:
    """One published track: the publisher side of a :class:`TrackForwarder`."""

    def __init__(
        self,
        *,
        participant: Participant,
        kind: Kind,
        transceiver: Any,
        config: ForwardingConfig,
        signalled_ssrc: int | None = None,
    ) -> None:
        codecs: list[RTCRtpCodecParameters] = list(transceiver._codecs)
        media = next(c for c in codecs if c.mimeType.lower() != "video/rtx")
        self.participant = participant
        self.kind = kind
        self.codec_name = media.mimeType.split("/")[-1].upper()
        self.track_id = f"{participant.id}/{kind}/{uuid.uuid4().hex[:8]}"
        if media.payloadType is None:
            raise InvalidOffer(f"no payload type negotiated for {kind}")
        self.media_pt: int = media.payloadType
        self.rtx_pt: int | None = next(
            (
                c.payloadType
                for c in codecs
                if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == self.media_pt
            ),
            None,
        )
        self.clock_rate: int = media.clockRate
        self.receiver = transceiver.receiver
        self.rtcp_ssrc: int = transceiver.sender._ssrc
        self.raw = RawSender(self.receiver.transport)
        self.forwarder = TrackForwarder(
            kind=kind,
            codec_name=self.codec_name,
            clock_rate=self.clock_rate,
            send_pli=self._send_pli,
            config=config,
            label=self.track_id,
        )
        # With an SSRC in the offer, media on any other SSRC is dropped (aiortc's router
        # would otherwise adopt unknown SSRCs whose payload type matches).
        self.signalled_ssrc = signalled_ssrc
        self.nack = NackGenerator() if kind == "video" else None
        self.stats = hooks.receiver_statistics(self.receiver)
        self.dropped = 0
        self.errors = 0
        self._original_rtcp = hooks.original_rtcp_handler(self.receiver)
        hooks.install_receiver_hooks(self.receiver, self._on_rtp, self._on_rtcp)

    @property
    def muted(self) -> bool:
        return self.forwarder.muted

    @property
    def public_codec(self) -> str:
        return "opus" if self.kind == "audio" else self.codec_name

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """Replaces aiortc's receive path: statistics, RTX unwrap, NACKs, then forward."""
        if self.forwarder.closed:
            return  # unpublished while its connection still carries the other kind
        try:
            pt = packet.payload_type
            if pt == self.media_pt:
                if self.signalled_ssrc is not None and packet.ssrc != self.signalled_ssrc:
                    self.dropped += 1
                    return
            elif pt == self.rtx_pt and self.forwarder.media_ssrc is not None:
                if len(packet.payload) < 2:  # RTX padding (bandwidth probing)
                    return
                self._count(packet)
                packet = unwrap_rtx(packet, self.media_pt, self.forwarder.media_ssrc)
            else:
                self.dropped += 1
                return
            if pt == self.media_pt:
                self._count(packet)
            if self.nack is not None and self.nack.add(packet):
                await self.receiver._send_rtcp_nack(packet.ssrc, sorted(self.nack.missing))
            self.forwarder.on_packet(packet)
        except Exception:
            self.errors += 1
            if self.errors <= 10:
                logger.exception("%s: dropping an RTP packet that failed", self.track_id)

    def _count(self, packet: RtpPacket) -> None:
        stream = self.stats.get(packet.ssrc)
        if stream is None:
            stream = self.stats[packet.ssrc] = StreamStatistics(self.clock_rate)
        stream.add(packet)

    async def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket) and packet.ssrc == self.forwarder.media_ssrc:
            self.forwarder.on_sender_report(packet.sender_info.rtp_timestamp)
        await self._original_rtcp(packet)

    def _send_pli(self, media_ssrc: int) -> None:
        packet = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=media_ssrc)
        self.raw.send_rtcp(bytes(packet))

    def describe(self) -> dict[str, Any]:
        f = self.forwarder
        return {
            "track_id": self.track_id,
            "participant_id": self.participant.id,
            "kind": self.kind,
            "codec": self.public_codec,
            "muted": f.muted,
            "viewers": len(f.downstreams),
            "waiting_viewers": len(f.pending),
            "packets_received": f.packet_count,
            "packets_forwarded": f.forwarded,
            "packets_retransmitted": f.retransmitted,
            "packets_replayed": f.replayed,
            "keyframe_requests": f.pli_count,
            "dropped": self.dropped + f.invalid + f.stale + f.duplicates,
            "errors": self.errors,
        }


class Participant:
    """A user in a room: may publish (client-offered connection) and/or subscribe
    (SFU-offered connection). The capability flags are decided by the caller."""

    def __init__(
        self,
        room: Room,
        participant_id: str,
        *,
        can_publish_audio: bool,
        can_publish_video: bool,
        can_receive: bool,
        info: Mapping[str, Any],
        receiving: bool = True,
    ) -> None:
        self.room = room
        self.id = participant_id
        self.can_publish_audio = can_publish_audio
        self.can_publish_video = can_publish_video
        self.can_receive = can_receive
        # Whether the room feeds media to this participant's receiving connection. Off,
        # the viewer stays connected (e.g. waiting in backstage) and gets nothing.
        self.receiving = receiving
        self.info = dict(info)
        self.publisher_pc: RTCPeerConnection | None = None
        self.subscriber_pc: RTCPeerConnection | None = None
        self.publications: dict[Kind, Publication] = {}
        self.downstreams: dict[Kind, Downstream] = {}
        self.left = False
        self._subscriber_transceivers: dict[Kind, Any] = {}

    # -- publishing -------------------------------------------------------------------

    def may_publish(self, kind: Kind) -> bool:
        return self.can_publish_audio if kind == "audio" else self.can_publish_video

    async def publish(self, offer_sdp: str) -> str:
        """Answer a client's publishing offer; returns the SDP answer.

        Raises :class:`PublishForbidden` (a kind it may not publish),
        :class:`NoCompatibleCodec`, :class:`InvalidOffer`, :class:`InvalidState` (already
        publishing, or left)."""
        self._check_live()
        if not (self.can_publish_audio or self.can_publish_video):
            raise PublishForbidden(self.id, "video")
        if self.publisher_pc is not None:
            raise InvalidState(f"participant {self.id!r} is already publishing")
        room = self.room
        filtered = filter_publisher_offer(
            offer_sdp, video_codec=room.video_codec, preference=room.video_codec_preference
        )
        for kind in KINDS:
            if kind in filtered.publishing and not self.may_publish(kind):
                raise PublishForbidden(self.id, kind)
        if not filtered.publishing:
            raise InvalidOffer("the offer sends no audio or video")
        chose_codec = room.video_codec is None and filtered.video_codec is not None
        if chose_codec:
            room.video_codec = filtered.video_codec
        pc = RTCPeerConnection(room.rtc_configuration)
        self.publisher_pc = pc
        publications: list[Publication] = []
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(filtered.sdp, "offer"))
            except Exception as exc:
                raise InvalidOffer(f"cannot apply the offer: {exc}") from exc
            ssrcs = _signalled_ssrcs(filtered.sdp)
            for transceiver in pc.getTransceivers():
                kind = _kind(transceiver.kind)
                if kind in filtered.publishing and transceiver._codecs:
                    publications.append(
                        Publication(
                            participant=self,
                            kind=kind,
                            transceiver=transceiver,
                            config=room.config,
                            signalled_ssrc=ssrcs.get(str(transceiver.mid)),
                        )
                    )
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            self._check_live()
        except BaseException:
            self.publisher_pc = None
            if chose_codec and not room.publications:
                room.video_codec = None
            for publication in publications:
                publication.forwarder.close()
            await _close_pc(pc)
            raise
        self._watch(pc, "publisher")
        for publication in publications:
            self.publications[publication.kind] = publication
            room._add_publication(publication)
        return str(pc.localDescription.sdp)

    async def unpublish(self, kind: Kind | None = None) -> None:
        """Stop publishing one kind (its packets are dropped from now on) or everything
        (the publishing connection is closed)."""
        kinds = [kind] if kind is not None else list(self.publications)
        for k in kinds:
            publication = self.publications.pop(k, None)
            if publication is not None:
                self.room._remove_publication(publication, "unpublished")
        if not self.publications and self.publisher_pc is not None:
            pc, self.publisher_pc = self.publisher_pc, None
            await _close_pc(pc)

    def set_muted(self, kind: Kind, muted: bool) -> None:
        """Mute or unmute a published track. Viewers stay connected; video resumes at the
        next keyframe (requested on unmute)."""
        publication = self.publications.get(kind)
        if publication is None:
            raise InvalidState(f"participant {self.id!r} does not publish {kind}")
        if publication.muted == muted:
            return
        publication.forwarder.set_muted(muted)
        self.room._emit(
            MuteChanged(
                room_id=self.room.id,
                participant_id=self.id,
                kind=kind,
                track_id=publication.track_id,
                muted=muted,
            )
        )

    # -- subscribing --------------------------------------------------------------------

    async def subscribe(self) -> str:
        """Create the SFU's offer for this participant's receiving connection: one audio
        and one video sendonly section, whatever is published now."""
        self._check_live()
        if not self.can_receive:
            raise SubscribeForbidden(self.id)
        if self.subscriber_pc is not None:
            raise InvalidState(f"participant {self.id!r} is already subscribed")
        pc = RTCPeerConnection(self.room.rtc_configuration)
        self.subscriber_pc = pc
        try:
            for kind in KINDS:
                self._add_subscriber_transceiver(pc, kind)
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
            self._check_live()
        except BaseException:
            self.subscriber_pc = None
            self._subscriber_transceivers.clear()
            await _close_pc(pc)
            raise
        hooks.ignore_incoming_rtp(self._subscriber_transceivers["audio"].sender.transport)
        self._watch(pc, "subscriber")
        return str(pc.localDescription.sdp)

    async def answer_subscription(self, offer_sdp: str) -> str:
        """Answer a client's offer to receive (WHEP: ``recvonly`` sections): the client
        gets the same pre-allocated slots as with :meth:`subscribe`, one per kind it
        offered. The answer carries every server candidate (gathering is complete).

        Raises :class:`SubscribeForbidden`, :class:`NoCompatibleCodec` (no Opus, or no
        video codec the room can forward), :class:`InvalidOffer`, :class:`InvalidState`."""
        self._check_live()
        if not self.can_receive:
            raise SubscribeForbidden(self.id)
        if self.subscriber_pc is not None:
            raise InvalidState(f"participant {self.id!r} is already subscribed")
        room = self.room
        kinds = viewer_offer_kinds(
            offer_sdp, video_codec=room.video_codec, preference=room.video_codec_preference
        )
        pc = RTCPeerConnection(room.rtc_configuration)
        self.subscriber_pc = pc
        try:
            for kind in KINDS:
                if kind in kinds:
                    self._add_subscriber_transceiver(pc, kind)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            except Exception as exc:
                raise InvalidOffer(f"cannot apply the offer: {exc}") from exc
            ours = set(map(id, self._subscriber_transceivers.values()))
            if any(id(t) not in ours for t in pc.getTransceivers()):
                raise InvalidOffer("the offer has a media section this SFU cannot answer")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            self._check_live()
        except BaseException:
            self.subscriber_pc = None
            self._subscriber_transceivers.clear()
            await _close_pc(pc)
            raise
        for transceiver in self._subscriber_transceivers.values():
            hooks.ignore_incoming_rtp(transceiver.sender.transport)
        self._watch(pc, "subscriber")
        return str(pc.localDescription.sdp)

    def _add_subscriber_transceiver(self, pc: RTCPeerConnection, kind: Kind) -> None:
        transceiver = pc.addTransceiver(kind, direction="sendonly")
        hooks.drop_receive_estimator(transceiver.receiver)
        transceiver.sender.replaceTrack(hooks.IdleTrack(kind))
        transceiver.setCodecPreferences(self.room._codec_capabilities(kind))
        self._subscriber_transceivers[kind] = transceiver
        hooks.install_sender_hooks(
            transceiver.sender,
            self._viewer_rtcp_handler(kind),
            self._sender_report_maker(kind),
        )

    async def set_subscriber_answer(self, answer_sdp: str) -> None:
        """Apply the client's answer to :meth:`subscribe`'s offer. Media starts once the
        connection is up."""
        self._check_live()
        pc = self.subscriber_pc
        if pc is None or pc.signalingState != "have-local-offer":
            raise InvalidState("no subscriber offer is waiting for an answer")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        except Exception as exc:
            raise InvalidOffer(f"cannot apply the answer: {exc}") from exc
        if pc.connectionState == "connected":
            self._subscriber_connected()

    def set_receiving(self, enabled: bool) -> None:
        """Start or stop feeding media to this participant, without renegotiation: a
        connected viewer starts at the next keyframe (or the cached one)."""
        if enabled == self.receiving:
            return
        self.receiving = enabled
        if not self.left:
            for kind in KINDS:
                self.room._rebind(kind)

    def request_keyframe(self) -> None:
        """Ask the publisher of the video this participant receives for a keyframe
        (coalesced with every other request); e.g. egress at each segment boundary."""
        d = self.downstreams.get("video")
        if d is not None and d.track is not None:
            d.track.request_keyframe()

    # -- both connections ---------------------------------------------------------------

    async def add_ice_candidate(
        self,
        role: PeerRole,
        candidate: str | None,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
    ) -> None:
        """Trickle a remote candidate (``"candidate:..."`` or its value; None or empty
        ends the candidates) into the publishing or subscribing connection."""
        pc = self.publisher_pc if role == "publisher" else self.subscriber_pc
        if pc is None:
            raise InvalidState(f"participant {self.id!r} has no {role} connection")
        if not candidate:
            await pc.addIceCandidate(None)
            return
        value = candidate.removeprefix("a=").removeprefix("candidate:")
        try:
            parsed = candidate_from_sdp(value)
        except Exception as exc:
            raise InvalidOffer(f"malformed ICE candidate: {candidate!r}") from exc
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        if sdp_mid is None and sdp_mline_index is None:
            parsed.sdpMLineIndex = 0  # everything is bundled on the first section
        if parsed.ip.endswith(".local"):
            return  # mDNS: unresolvable here; peer-reflexive candidates cover it
        await pc.addIceCandidate(parsed)

    async def leave(self, reason: str = "left") -> None:
        """Leave the room: stop forwarding at once, report, then close the connections."""
        if self.left:
            return
        self.left = True
        for d in self.downstreams.values():
            if d.track is not None:
                d.track.detach(d)
        unpublish_reason = "left" if reason == "left" else reason
        for publication in list(self.publications.values()):
            self.room._remove_publication(publication, unpublish_reason)
        self.publications.clear()
        self.room._remove_participant(self, reason)
        pcs = [pc for pc in (self.publisher_pc, self.subscriber_pc) if pc is not None]
        self.publisher_pc = self.subscriber_pc = None
        await asyncio.gather(*(_close_pc(pc) for pc in pcs))

    def describe(self) -> dict[str, Any]:
        return {
            "participant_id": self.id,
            "info": self.info,
            "can_publish_audio": self.can_publish_audio,
            "can_publish_video": self.can_publish_video,
            "can_receive": self.can_receive,
            "receiving_enabled": self.receiving,
            "publishing": sorted(self.publications),
            "receiving": sorted(k for k, d in self.downstreams.items() if d.active),
        }

    # -- internals ------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self.left:
            raise InvalidState(f"participant {self.id!r} has left the room")

    def _watch(self, pc: RTCPeerConnection, role: PeerRole) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if role == "subscriber" and state == "connected" and pc is self.subscriber_pc:
                self._subscriber_connected()
            elif (
                state in ("failed", "closed")
                and not self.left
                and (pc is self.publisher_pc or pc is self.subscriber_pc)
            ):
                logger.info("%s: %s connection %s", self.id, role, state)
                self.room._spawn(self.leave("connection_failed"))

    def _subscriber_connected(self) -> None:
        if self.downstreams or self.left:
            return
        for kind, transceiver in self._subscriber_transceivers.items():
            if transceiver.currentDirection not in ("sendonly", "sendrecv"):
                continue
            codecs, extensions = hooks.negotiated(transceiver)
            ssrc, rtx_ssrc = hooks.sender_ssrcs(transceiver.sender)
            self.downstreams[kind] = Downstream(
                kind=kind,
                owner=self.id,
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                mid=str(transceiver.mid),
                codecs=codecs,
                header_extensions=extensions,
                raw=RawSender(transceiver.sender.transport),
                on_failure=self._downstream_failed,
            )
        for kind in self.downstreams:
            self.room._rebind(kind)

    def _downstream_failed(self, d: Downstream) -> None:
        logger.info("%s: sending %s failed; removing the participant", self.id, d.kind)
        self.room._spawn(self.leave("connection_failed"))

    def _viewer_rtcp_handler(self, kind: Kind) -> hooks.RtcpHandler:
        async def on_rtcp(packet: AnyRtcpPacket) -> None:
            d = self.downstreams.get(kind)
            if d is None:
                return
            try:
                track = d.track
                if isinstance(packet, RtcpPsfbPacket):
                    if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR) and track is not None:
                        track.request_keyframe()
                elif isinstance(packet, RtcpRtpfbPacket):
                    if packet.fmt == RTCP_RTPFB_NACK and track is not None:
                        track.retransmit(d, packet.lost)
                else:
                    await original(packet)
            except Exception:
                logger.debug("%s: viewer RTCP handling failed", self.id, exc_info=True)

        sender = self._subscriber_transceivers[kind].sender
        original = hooks.original_rtcp_handler(sender)
        return on_rtcp

    def _sender_report_maker(self, kind: Kind) -> Any:
        def make() -> RtcpSrPacket | None:
            d = self.downstreams.get(kind)
            return d.sender_report() if d is not None else None

        return make


class Room:
    """One call on this node: participants, their publications, and the fan-out."""

    def __init__(
        self,
        room_id: str,
        *,
        video_codec: VideoCodec | None = None,
        video_codec_preference: Sequence[VideoCodec] = VIDEO_CODECS,
        on_event: EventCallback | None = None,
        config: ForwardingConfig | None = None,
        rtc_config: RTCConfiguration | None = None,
    ) -> None:
        if video_codec is not None and video_codec not in VIDEO_CODECS:
            raise ValueError(f"unsupported video codec {video_codec!r}")
        self.id = room_id
        self.video_codec: VideoCodec | None = video_codec
        self.video_codec_preference: tuple[VideoCodec, ...] = tuple(video_codec_preference)
        self.on_event = on_event
        self.config = config or ForwardingConfig()
        self.rtc_configuration = rtc_config or rtc_configuration()
        self.participants: dict[str, Participant] = {}
        self.publications: list[Publication] = []
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def join(
        self,
        participant_id: str,
        *,
        can_publish_audio: bool = False,
        can_publish_video: bool = False,
        can_receive: bool = True,
        info: Mapping[str, Any] | None = None,
        receiving: bool = True,
    ) -> Participant:
        """Add a participant with the capabilities the caller authorized. With
        ``receiving=False`` it may connect to receive but is fed nothing until
        :meth:`Participant.set_receiving`."""
        if self.closed:
            raise RoomClosed(f"room {self.id!r} is closed")
        if participant_id in self.participants:
            raise ParticipantExists(f"participant {participant_id!r} is already in the room")
        participant = Participant(
            self,
            participant_id,
            can_publish_audio=can_publish_audio,
            can_publish_video=can_publish_video,
            can_receive=can_receive,
            info=info or {},
            receiving=receiving,
        )
        self.participants[participant_id] = participant
        self._emit(
            ParticipantJoined(room_id=self.id, participant_id=participant_id, info=participant.info)
        )
        return participant

    def get(self, participant_id: str) -> Participant:
        try:
            return self.participants[participant_id]
        except KeyError:
            raise UnknownParticipant(f"no participant {participant_id!r}") from None

    async def leave(self, participant_id: str, reason: str = "left") -> None:
        await self.get(participant_id).leave(reason)

    async def close(self) -> None:
        """Disconnect everyone and refuse new participants."""
        self.closed = True
        await asyncio.gather(*(p.leave("room_closed") for p in list(self.participants.values())))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def active_publication(self, kind: Kind) -> Publication | None:
        """The publication viewers receive for this kind (the earliest live one)."""
        return next((p for p in self.publications if p.kind == kind), None)

    def stats(self) -> dict[str, Any]:
        return {
            "room_id": self.id,
            "video_codec": self.video_codec,
            "participants": [p.describe() for p in self.participants.values()],
            "publications": [p.describe() for p in self.publications],
            "viewers": sum(1 for p in self.participants.values() if p.downstreams),
        }

    # -- internals ------------------------------------------------------------------------

    def _emit(self, event: RoomEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("room %s: event callback raised for %s", self.id, event.type)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _codec_capabilities(self, kind: Kind) -> list[RTCRtpCodecCapability]:
        caps = RTCRtpSender.getCapabilities(kind).codecs
        if kind == "audio":
            return [c for c in caps if c.mimeType.lower() == "audio/opus"]
        wanted = [self.video_codec] if self.video_codec else list(self.video_codec_preference)
        chosen: list[RTCRtpCodecCapability] = []
        for codec in wanted:
            for c in caps:
                mime = c.mimeType.lower()
                is_vp8 = codec == "VP8" and mime == "video/vp8"
                is_h264 = (
                    codec == "H264"
                    and mime == "video/h264"
                    and c.parameters.get("profile-level-id") == H264_PROFILE_LEVEL_ID
                )
                if is_vp8 or is_h264:
                    chosen.append(c)
        chosen += [c for c in caps if c.mimeType.lower() == "video/rtx"]
        return chosen

    def _add_publication(self, publication: Publication) -> None:
        self.publications.append(publication)
        self._emit(
            TrackPublished(
                room_id=self.id,
                participant_id=publication.participant.id,
                kind=publication.kind,
                codec=publication.public_codec,
                track_id=publication.track_id,
                muted=publication.muted,
            )
        )
        self._rebind(publication.kind)

    def _remove_publication(self, publication: Publication, reason: str) -> None:
        if publication not in self.publications:
            return
        self.publications.remove(publication)
        publication.forwarder.close()
        self._emit(
            TrackUnpublished(
                room_id=self.id,
                participant_id=publication.participant.id,
                kind=publication.kind,
                track_id=publication.track_id,
                reason=reason,
            )
        )
        self._rebind(publication.kind)

    def _remove_participant(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is participant:
            del self.participants[participant.id]
            self._emit(
                ParticipantLeft(room_id=self.id, participant_id=participant.id, reason=reason)
            )

    def _rebind(self, kind: Kind) -> None:
        """Bind every viewer's slot of this kind to the active publication."""
        publication = self.active_publication(kind)
        for participant in self.participants.values():
            d = participant.downstreams.get(kind)
            if d is None or d.failed or participant.left:
                continue
            target: TrackForwarder | None = None
            if (
                publication is not None
                and publication.participant is not participant
                and participant.receiving
            ):
                if d.accepts(publication.forwarder.codec_name):
                    target = publication.forwarder
                else:
                    logger.warning(
                        "%s: viewer %s did not accept %s",
                        self.id,
                        participant.id,
                        publication.forwarder.codec_name,
                    )
            if d.track is target:
                continue
            if d.track is not None:
                d.track.detach(d)
            if target is not None:
                target.attach(d)


def _signalled_ssrcs(sdp_text: str) -> dict[str, int]:
    """The media SSRC each section of an offer announces (first of a=ssrc), by mid."""
    found: dict[str, int] = {}
    for media in sdp.SessionDescription.parse(sdp_text).media:
        if media.kind in KINDS and media.ssrc and media.rtp.muxId is not None:
            fid = next((g for g in media.ssrc_group if g.semantic == "FID"), None)
            ssrc = fid.items[0] if fid is not None and fid.items else media.ssrc[0].ssrc
            found[str(media.rtp.muxId)] = int(ssrc)
    return found


async def _close_pc(pc: RTCPeerConnection) -> None:
    # Shielded: aiortc may already be closing this connection itself (the remote end
    # closed DTLS) and every close() awaits one shared future; cancelling a waiter would
    # cancel that future under aiortc's feet.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(pc.close()), CLOSE_TIMEOUT)
