"""An SFU node: rooms for the calls it carries, driven by tokens and the bus.

:class:`SfuNode` is the glue between the forwarding core (:mod:`sfu.room`) and the rest of
Stagecast:

* **authorization**: every session starts from an SFU token (``keyring.sfu_grant``); the
  token's ``cid`` picks the room, its capabilities decide what may be published, its
  ``backstage`` flag whether media flows before go-live;
* **registry**: a heartbeat (:class:`stagecast.nodes.NodeInfo`) every
  ``settings.node_heartbeat_seconds``, deleted on stop;
* **reports**: room events are queued on ``protocol.SFU_EVENTS``;
* **control**: ``live_started`` / ``live_stopped`` / ``ended`` from ``protocol.CONTROL``;
* **WHIP/WHEP** offers relayed by the coordinator on ``protocol.node_channel(node_id)``.

:func:`create_sfu_app` serves the signalling WebSocket (``/ws``, see
:mod:`sfu.signalling`), ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
from aiortc import RTCConfiguration
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from stagecast import nodes, protocol
from stagecast.bus import Bus, Message, Subscription
from stagecast.settings import Settings
from stagecast.tokens import KeyRing, SfuGrant, TokenError

from .errors import PublishForbidden, SfuError
from .events import (
    MuteChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)
from .forwarder import ForwardingConfig
from .ice import rtc_configuration
from .room import Publication, Room
from .sdp import filter_publisher_offer, viewer_offer_kinds
from .session import CallState, Session, SessionError, Transport

logger = logging.getLogger(__name__)

JOIN_ENDED_CALL = "join-ended-call"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ws_url_for(public_url: str) -> str:
    """``public_url`` with ``http`` replaced by ``ws`` (``https`` by ``wss``), plus ``/ws``."""
    base = public_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/ws"


class RoomEntry:
    """A room on this node and what the node knows about its call."""

    def __init__(self, cid: str, room: Room) -> None:
        self.cid = cid
        self.room = room
        self.state = CallState()
        self.state_from_control = False  # a control message arrived while opening
        self.ready = asyncio.Event()
        self.sessions: dict[str, Session] = {}
        self.pending_opens = 0
        self.closed = False


class _NodeCollector(Collector):
    def __init__(self, node: SfuNode) -> None:
        self.node = node

    def collect(self) -> Any:
        node = self.node
        labels = ["node"]
        value = [node.node_id]
        rooms = GaugeMetricFamily(
            "stagecast_sfu_rooms", "Rooms open on this SFU node", labels=labels
        )
        rooms.add_metric(value, len(node.rooms))
        parts = GaugeMetricFamily(
            "stagecast_sfu_participants", "Participants on this SFU node", labels=labels
        )
        parts.add_metric(value, node.load)
        pubs = GaugeMetricFamily(
            "stagecast_sfu_publications", "Published tracks on this SFU node", labels=labels
        )
        pubs.add_metric(value, len(node._publications))
        draining = GaugeMetricFamily(
            "stagecast_sfu_draining", "1 while this SFU node drains", labels=labels
        )
        draining.add_metric(value, 1 if node.draining else 0)
        totals = node.forwarding_totals()
        received = CounterMetricFamily(
            "stagecast_sfu_received_packets", "RTP packets received from publishers", labels=labels
        )
        received.add_metric(value, totals["received_packets"])
        packets = CounterMetricFamily(
            "stagecast_sfu_forwarded_packets", "RTP packets forwarded to viewers", labels=labels
        )
        packets.add_metric(value, totals["forwarded_packets"])
        octets = CounterMetricFamily(
            "stagecast_sfu_forwarded_bytes", "RTP payload bytes forwarded to viewers", labels=labels
        )
        octets.add_metric(value, totals["forwarded_bytes"])
        return [rooms, parts, pubs, draining, received, packets, octets]


class SfuNode:
    """One SFU process's rooms, sessions and bus duties. ``public_url`` is the HTTP base
    under which :func:`create_sfu_app` is reachable (``/ws`` lives under it)."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        keyring: KeyRing,
        public_url: str,
        *,
        rtc_config: RTCConfiguration | None = None,
        forwarding: ForwardingConfig | None = None,
        drain_grace_seconds: float = 30.0,
        connect_timeout_seconds: float = 30.0,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.keyring = keyring
        self.public_url = public_url.rstrip("/")
        self.ws_url = ws_url_for(self.public_url)
        self.rtc_config = rtc_config or rtc_configuration()
        self.forwarding = forwarding or ForwardingConfig()
        self.drain_grace_seconds = drain_grace_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.rooms: dict[str, RoomEntry] = {}
        self.draining = False
        self.started = False
        self.stopped = False
        self._publications: dict[str, Publication] = {}
        self._retired = {"received_packets": 0, "forwarded_packets": 0, "forwarded_bytes": 0}
        self._reports: asyncio.Queue[Message] = asyncio.Queue()
        self._someone_left = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._stack = AsyncExitStack()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(self))

    # -- properties ---------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    @property
    def load(self) -> int:
        return sum(len(entry.sessions) for entry in self.rooms.values())

    def info(self) -> nodes.NodeInfo:
        return nodes.NodeInfo(
            id=self.node_id,
            url=self.public_url,
            ws_url=self.ws_url,
            capacity=self.settings.sfu_capacity,
            load=self.load,
            region=self.settings.region,
            draining=self.draining,
            calls=sorted(cid for cid, entry in self.rooms.items() if not entry.closed),
        )

    def sessions(self) -> list[Session]:
        return [s for entry in self.rooms.values() for s in entry.sessions.values()]

    def find_session(self, participant_id: str, cid: str | None = None) -> Session | None:
        for entry in self.rooms.values():
            if cid is not None and entry.cid != cid:
                continue
            session = entry.sessions.get(participant_id)
            if session is not None:
                return session
        return None

    def forwarding_totals(self) -> dict[str, int]:
        totals = dict(self._retired)
        for publication in self._publications.values():
            f = publication.forwarder
            totals["received_packets"] += f.packet_count
            totals["forwarded_packets"] += f.forwarded
            totals["forwarded_bytes"] += f.forwarded_octets
        return totals

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to control and to this node's request channel, register, and keep
        heartbeating. Returns once the subscriptions are active."""
        if self.started:
            return
        self.started = True
        control = await self._stack.enter_async_context(self.bus.subscribe(protocol.CONTROL))
        requests = await self._stack.enter_async_context(
            self.bus.subscribe(protocol.node_channel(self.node_id))
        )
        await self._heartbeat_once()
        self._loops = [
            asyncio.create_task(self._listen(control, self._on_control), name="sfu-control"),
            asyncio.create_task(self._listen(requests, self._on_request), name="sfu-requests"),
            asyncio.create_task(self._heartbeat_loop(), name="sfu-heartbeat"),
            asyncio.create_task(self._report_loop(), name="sfu-reports"),
            asyncio.create_task(self._watchdog_loop(), name="sfu-watchdog"),
        ]
        logger.info("SFU node %s started at %s", self.node_id, self.ws_url)

    async def stop(self, drain: bool = False, grace_seconds: float | None = None) -> None:
        """Stop the node. With ``drain``: take no new participants, tell WebSocket clients
        ``goaway``, and wait until everyone has left or the grace period is over. Then
        disconnect whoever is left, report it, and deregister."""
        if self.stopped:
            return
        self.stopped = True
        if drain:
            await self.drain(grace_seconds)
        self.draining = True
        for entry in list(self.rooms.values()):
            await self._close_entry(entry, "node_stopped")
        if self.started:
            # let the reports of those departures reach the bus
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reports_flushed(), 5)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._stack.aclose()
        if self.started:
            with contextlib.suppress(Exception):
                await nodes.deregister(self.bus, self.node_id)
        logger.info("SFU node %s stopped", self.node_id)

    async def drain(self, grace_seconds: float | None = None) -> None:
        """Mark the node draining, send ``goaway`` to its clients and wait (at most the
        grace period) until all of them have left."""
        grace = self.drain_grace_seconds if grace_seconds is None else grace_seconds
        self.draining = True
        if self.started:
            with contextlib.suppress(Exception):
                await self._heartbeat_once()
        for session in self.sessions():
            session.send(
                {
                    "type": "goaway",
                    "reason": "draining",
                    "message": "This SFU node is shutting down: rejoin through the coordinator.",
                    "deadline_seconds": grace,
                }
            )
        deadline = time.monotonic() + grace
        while self.load:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._someone_left.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._someone_left.wait(), remaining)

    # -- sessions -------------------------------------------------------------------------

    def authenticate(self, token: str) -> SfuGrant:
        """The grant of an SFU token; raises :class:`SessionError` with the API code."""
        if not isinstance(token, str) or not token:
            raise SessionError("unauthenticated", "An SFU token is required.")
        try:
            return self.keyring.sfu_grant(token)
        except TokenError as exc:
            raise SessionError(exc.code, exc.message) from None

    async def open_session(
        self,
        grant: SfuGrant,
        transport: Transport,
        *,
        notify: Callable[[dict[str, Any]], None] | None = None,
        disconnect: Callable[[str], None] | None = None,
    ) -> Session:
        """Join ``grant``'s participant to the room of its call. A participant id already
        present (the same token reconnecting) replaces the older session."""
        if self.draining or self.stopped:
            raise SessionError(
                "capacity_exhausted",
                "This SFU node is draining: join again through the coordinator.",
                {"reason": "draining"},
            )
        if self.load >= self.settings.sfu_capacity:
            raise SessionError(
                "capacity_exhausted", "This SFU node is full.", {"reason": "node_full"}
            )
        for _ in range(3):
            entry = await self._entry_for(grant.cid)
            entry.pending_opens += 1
            try:
                if entry.state.ended and JOIN_ENDED_CALL not in grant.capabilities:
                    raise SessionError("call_ended", f"The call {grant.cid} has ended.")
                old = entry.sessions.get(grant.participant_id)
                if old is not None:
                    await self._end_session(old, "replaced")
                if entry.closed:
                    continue  # the room closed meanwhile (call ended, node stopping): retry
                if grant.participant_id in entry.room.participants:
                    raise SessionError("conflict", "This participant is already connected.")
                session = Session(
                    grant=grant,
                    participant=entry.room.join(
                        grant.participant_id,
                        can_publish_audio=grant.can_send_audio,
                        can_publish_video=grant.can_send_video,
                        can_receive=True,
                        info={
                            "user_id": grant.user_id,
                            "name": grant.name,
                            "role": grant.role,
                            "session_id": grant.session_id,
                            "hidden": grant.hidden,
                            "transport": transport,
                        },
                        receiving=grant.backstage_allowed or entry.state.live,
                    ),
                    transport=transport,
                    notify=notify,
                    disconnect=disconnect,
                )
                # joined was emitted from inside join(): register, then report it
                entry.sessions[session.id] = session
                self._report(entry, session, {"type": "participant_joined"})
                self._broadcast(entry, session, {"type": "participant_joined"})
                return session
            finally:
                entry.pending_opens -= 1
                self._maybe_drop(entry)
        raise SessionError("conflict", "The call's room is closing; try again.")

    def joined_message(self, session: Session) -> dict[str, Any]:
        entry = self.rooms[session.cid]
        grant = session.grant
        return {
            "type": "joined",
            "cid": grant.cid,
            "session_id": grant.session_id,
            "participant_id": session.id,
            "user_id": grant.user_id,
            "name": grant.name,
            "role": grant.role,
            "capabilities": sorted(grant.capabilities),
            "can_publish": {"audio": grant.can_send_audio, "video": grant.can_send_video},
            "call": entry.state.to_dict(),
            "receiving": session.participant.receiving,
            "node_id": self.node_id,
            "participants": [s.public_info() for s in entry.sessions.values() if session.sees(s)],
            "tracks": [self._track_info(p) for p in entry.room.publications],
        }

    async def _end_session(self, session: Session, reason: str) -> None:
        if session.disconnect is not None and not session.ended:
            session.disconnect(reason)
        session.ended = True
        await session.close(reason)

    # -- rooms ----------------------------------------------------------------------------

    async def _entry_for(self, cid: str) -> RoomEntry:
        entry = self.rooms.get(cid)
        if entry is None:
            room = Room(cid, config=self.forwarding, rtc_config=self.rtc_config)
            entry = RoomEntry(cid, room)
            room.on_event = functools.partial(self._on_room_event, entry)
            self.rooms[cid] = entry
            entry.pending_opens += 1
            try:
                stored = await self.bus.get_key(protocol.call_state_key(cid))
            except Exception:
                logger.exception("cannot read the state of call %s; assuming backstage", cid)
                stored = None
            finally:
                entry.pending_opens -= 1
            if stored is not None and not entry.state_from_control:
                entry.state = CallState(
                    live=bool(stored.get("live", False)), ended=bool(stored.get("ended", False))
                )
            entry.ready.set()
        else:
            await entry.ready.wait()
        return entry

    def _maybe_drop(self, entry: RoomEntry) -> None:
        """Forget a room nobody is in (nor about to join)."""
        if entry.closed or entry.sessions or entry.pending_opens or entry.room.participants:
            return
        entry.closed = True
        if self.rooms.get(entry.cid) is entry:
            del self.rooms[entry.cid]
        self._spawn(entry.room.close())

    async def _close_entry(self, entry: RoomEntry, reason: str) -> None:
        """Disconnect everyone in a room and close it."""
        entry.closed = True
        if self.rooms.get(entry.cid) is entry:
            del self.rooms[entry.cid]
        sessions = list(entry.sessions.values())
        await asyncio.gather(
            *(self._end_session(s, reason) for s in sessions), return_exceptions=True
        )
        await entry.room.close()

    def _on_room_event(self, entry: RoomEntry, event: RoomEvent) -> None:
        if isinstance(event, ParticipantJoined):
            return  # reported by open_session once the session exists
        session = entry.sessions.get(event.participant_id)
        if session is None or session.participant.id != event.participant_id:
            return
        message: dict[str, Any]
        if isinstance(event, ParticipantLeft):
            if entry.sessions.get(session.id) is session:
                del entry.sessions[session.id]
            message = {"type": "participant_left", "reason": event.reason}
            self._report(entry, session, message)
            self._broadcast(entry, session, message)
            if session.disconnect is not None and not session.ended:
                session.disconnect(event.reason)
            session.ended = True
            self._someone_left.set()
            self._maybe_drop(entry)
            return
        if isinstance(event, TrackPublished):
            publication = next(
                (p for p in entry.room.publications if p.track_id == event.track_id), None
            )
            if publication is not None:
                self._publications[event.track_id] = publication
            message = {
                "type": "track_published",
                "kind": event.kind,
                "codec": event.codec,
                "track_id": event.track_id,
                "muted": event.muted,
            }
        elif isinstance(event, TrackUnpublished):
            publication = self._publications.pop(event.track_id, None)
            if publication is not None:
                f = publication.forwarder
                self._retired["received_packets"] += f.packet_count
                self._retired["forwarded_packets"] += f.forwarded
                self._retired["forwarded_bytes"] += f.forwarded_octets
            message = {
                "type": "track_unpublished",
                "kind": event.kind,
                "track_id": event.track_id,
                "reason": event.reason,
            }
        else:
            assert isinstance(event, MuteChanged)
            message = {
                "type": "mute_changed",
                "kind": event.kind,
                "track_id": event.track_id,
                "muted": event.muted,
            }
        self._report(entry, session, message)
        self._broadcast(entry, session, message)

    def _report(self, entry: RoomEntry, session: Session, message: dict[str, Any]) -> None:
        grant = session.grant
        self._reports.put_nowait(
            {
                **message,
                "cid": entry.cid,
                "session_id": grant.session_id,
                "participant_id": session.id,
                "user_id": grant.user_id,
                "name": grant.name,
                "role": grant.role,
                "hidden": grant.hidden,
                "transport": session.transport,
                "node_id": self.node_id,
                "at": utc_now(),
            }
        )

    def _broadcast(self, entry: RoomEntry, subject: Session, message: dict[str, Any]) -> None:
        """Tell the room's WebSocket clients (hidden participants are never shown)."""
        if subject.grant.hidden:
            return
        out = {**message, "participant_id": subject.id}
        if message["type"] in ("participant_joined", "participant_left"):
            out["participant"] = subject.public_info()
        about_presence = message["type"] in ("participant_joined", "participant_left")
        for session in list(entry.sessions.values()):
            if about_presence and not session.sees(subject):
                continue
            session.send(out)

    @staticmethod
    def _track_info(publication: Publication) -> dict[str, Any]:
        return {
            "track_id": publication.track_id,
            "participant_id": publication.participant.id,
            "kind": publication.kind,
            "codec": publication.public_codec,
            "muted": publication.muted,
        }

    # -- control --------------------------------------------------------------------------

    async def _on_control(self, message: Message) -> None:
        kind = message.get("type")
        cid = message.get("cid")
        if not isinstance(cid, str):
            return
        entry = self.rooms.get(cid)
        if entry is None or entry.closed:
            return
        if not entry.ready.is_set():
            entry.state_from_control = True
        if kind == "live_started":
            self._set_state(entry, CallState(live=True, ended=False))
        elif kind == "live_stopped":
            self._set_state(entry, CallState(live=False, ended=entry.state.ended))
        elif kind == "ended":
            entry.state = CallState(live=False, ended=True)
            for session in list(entry.sessions.values()):
                session.send({"type": "call_state", **entry.state.to_dict(), "receiving": False})
            await self._close_entry(entry, "call_ended")

    def _set_state(self, entry: RoomEntry, state: CallState) -> None:
        entry.state = state
        for session in list(entry.sessions.values()):
            session.participant.set_receiving(session.may_receive(state))
            session.send(
                {
                    "type": "call_state",
                    **state.to_dict(),
                    "receiving": session.participant.receiving,
                }
            )

    # -- WHIP / WHEP relayed by the coordinator --------------------------------------------

    async def _on_request(self, message: Message) -> None:
        if not isinstance(message.get("reply_to"), str):
            return
        self._spawn(self._serve_request(message))

    async def _serve_request(self, message: Message) -> None:
        try:
            answer = await self.handle_request(message)
        except Exception:
            logger.exception("SFU request %r failed", message.get("type"))
            answer = {"error": {"code": "internal_error", "message": "The SFU node failed."}}
        with contextlib.suppress(Exception):
            await self.bus.reply(message, answer)

    async def handle_request(self, message: Message) -> Message:
        """Serve one request from the coordinator (WHIP, WHEP, delete, trickle)."""
        kind = message.get("type")
        try:
            if kind in ("whip", "whep"):
                return await self._whip_whep(kind, message)
            if kind == "delete":
                session = self._request_session(message)
                await session.close("left")
                return {"ok": True, "participant_id": session.id}
            if kind == "trickle":
                session = self._request_session(message)
                sdpfrag = message.get("sdpfrag")
                if not isinstance(sdpfrag, str):
                    raise SessionError("invalid_request", "'sdpfrag' must be a string.")
                await self._trickle(session, sdpfrag)
                return {"ok": True, "participant_id": session.id}
            raise SessionError("invalid_request", f"Unknown request type {kind!r}.")
        except SessionError as exc:
            return {"error": exc.to_dict()}
        except SfuError as exc:
            return {"error": sfu_error_dict(exc)}

    async def _whip_whep(self, kind: str, message: Message) -> Message:
        sdp = message.get("sdp")
        grant = self.authenticate(message.get("token"))  # type: ignore[arg-type]
        if not isinstance(sdp, str) or not sdp.strip():
            raise SessionError("invalid_request", "'sdp' must be an SDP offer.")
        # refuse before joining, so a bad offer leaves no trace in the call
        if kind == "whip":
            check_publish_offer(grant, sdp)
        else:
            viewer_offer_kinds(sdp, video_codec=None)
        session = await self.open_session(grant, "whip" if kind == "whip" else "whep")
        try:
            if kind == "whip":
                answer = await session.participant.publish(sdp)
            else:
                answer = await session.participant.answer_subscription(sdp)
        except BaseException:
            await session.close("left")
            raise
        return {
            "sdp": answer,
            "participant_id": session.id,
            "cid": session.cid,
            "session_id": session.grant.session_id,
            "node_id": self.node_id,
        }

    def _request_session(self, message: Message) -> Session:
        pid = message.get("participant_id")
        cid = message.get("cid")
        if not isinstance(pid, str) or (cid is not None and not isinstance(cid, str)):
            raise SessionError("invalid_request", "'participant_id' must be a string.")
        session = self.find_session(pid, cid)
        if session is None:
            raise SessionError("not_found", f"No participant {pid!r} on this node.")
        return session

    async def _trickle(self, session: Session, sdpfrag: str) -> None:
        """Apply an ``application/trickle-ice-sdpfrag`` body (RFC 8840)."""
        role = "publisher" if session.transport == "whip" else "subscriber"
        mid: str | None = None
        index = -1
        for raw in sdpfrag.splitlines():
            line = raw.strip()
            if line.startswith("m="):
                index += 1
                mid = None
            elif line.startswith("a=mid:"):
                mid = line[len("a=mid:") :]
            elif line.startswith("a=candidate:"):
                await session.participant.add_ice_candidate(
                    role,  # type: ignore[arg-type]
                    line[2:],
                    sdp_mid=mid,
                    sdp_mline_index=max(index, 0) if mid is None else None,
                )
            elif line == "a=end-of-candidates":
                await session.participant.add_ice_candidate(role, None)  # type: ignore[arg-type]

    # -- background loops -------------------------------------------------------------------

    async def _listen(
        self, subscription: Subscription, handler: Callable[[Message], Awaitable[None]]
    ) -> None:
        while True:
            try:
                _, message = await subscription.get()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("bus subscription failed; retrying")
                await asyncio.sleep(1)
                continue
            try:
                await handler(message)
            except Exception:
                logger.exception("handling bus message %r failed", message.get("type"))

    async def _heartbeat_once(self) -> None:
        await nodes.heartbeat(self.bus, self.info(), self.settings.node_ttl_seconds)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_seconds)
            try:
                await self._heartbeat_once()
            except Exception:
                logger.exception("SFU node heartbeat failed")

    async def _report_loop(self) -> None:
        while True:
            report = await self._reports.get()
            for attempt in range(5):
                try:
                    await self.bus.enqueue(protocol.SFU_EVENTS, report)
                    break
                except Exception:
                    logger.warning("reporting %s failed (attempt %d)", report["type"], attempt + 1)
                    await asyncio.sleep(0.2 * 2**attempt)
            self._reports.task_done()

    async def _reports_flushed(self) -> None:
        await self._reports.join()

    async def _watchdog_loop(self) -> None:
        """End sessions whose media connection never came up."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in self.sessions():
                if now - session.created_at < self.connect_timeout_seconds or session.ended:
                    continue
                p = session.participant
                pcs = [pc for pc in (p.publisher_pc, p.subscriber_pc) if pc is not None]
                if session.transport != "ws" and not pcs:
                    stale = True
                else:
                    stale = any(pc.connectionState in ("new", "connecting") for pc in pcs)
                if stale and not p.left:
                    logger.info("%s: media connection never came up", session.id)
                    self._spawn(self._end_session(session, "connection_failed"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def check_publish_offer(grant: SfuGrant, sdp: str) -> None:
    """Refuse a publishing offer the grant does not cover, naming the missing capability
    (:class:`SessionError` ``forbidden``), or one that sends nothing."""
    filtered = filter_publisher_offer(sdp, video_codec=None)
    if not filtered.publishing:
        raise SessionError("invalid_request", "The offer sends no audio or video.")
    for media in sorted(filtered.publishing):
        allowed = grant.can_send_audio if media == "audio" else grant.can_send_video
        if not allowed:
            raise sfu_session_error(PublishForbidden(grant.participant_id, media))


def sfu_error_dict(exc: SfuError) -> dict[str, Any]:
    return sfu_session_error(exc).to_dict()


def sfu_session_error(exc: SfuError) -> SessionError:
    details: dict[str, Any] = {}
    if isinstance(exc, PublishForbidden):
        details = {"missing_capability": exc.missing_capability, "kind": exc.kind}
    return SessionError(exc.code, str(exc), details)


def create_sfu_app(node: SfuNode, *, lifespan: bool = True) -> Starlette:
    """The node's ASGI app: ``GET /ws`` (signalling), ``/healthz``, ``/readyz``, ``/metrics``.

    Run on its own (``stagecast sfu``), its lifespan starts the node and stops it with a
    drain. Mounted inside another app (``stagecast serve`` mounts it at ``/sfu``), Starlette
    does not run a mounted app's lifespan: the host app must ``await node.start()`` and
    ``await node.stop(drain=...)`` itself (``lifespan=False`` makes that explicit).
    """
    from .signalling import signalling_endpoint

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "node_id": node.node_id, "draining": node.draining})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(node.bus.ping(), 2)
        except Exception:
            return JSONResponse({"status": "unavailable", "bus": "unreachable"}, status_code=503)
        status = 503 if node.draining or not node.started else 200
        return JSONResponse(
            {"status": "ok" if status == 200 else "unavailable", "draining": node.draining},
            status_code=status,
        )

    async def metrics(request: Request) -> Response:
        body = generate_latest(REGISTRY) + generate_latest(node.registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def ws(websocket: Any) -> None:
        await signalling_endpoint(node, websocket)

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop(drain=True)

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=run if lifespan else None,
    )


class DrainingServer(uvicorn.Server):
    """A uvicorn server that, on the first SIGINT/SIGTERM, drains the node (``goaway`` to
    clients, wait until they leave or the grace period ends) *before* uvicorn closes the
    WebSockets; a second signal exits at once. Plain ``uvicorn.run`` would close every
    WebSocket first, so clients would never see ``goaway``."""

    def __init__(self, config: uvicorn.Config, node: SfuNode) -> None:
        super().__init__(config)
        self.node = node
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._drain is not None or self._loop is None or self.node.draining:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.node.drain()
        finally:
            self.should_exit = True


def run_sfu(node: SfuNode, host: str, port: int, **uvicorn_options: Any) -> None:
    """Serve :func:`create_sfu_app` standalone with uvicorn, draining on SIGTERM."""
    config = uvicorn.Config(create_sfu_app(node), host=host, port=port, **uvicorn_options)
    DrainingServer(config, node).run()
