"""One participant session on an SFU node, whatever carries its signalling.

A session is an authorized :class:`~stagecast.tokens.SfuGrant` bound to one
:class:`~sfu.room.Participant`. The signalling WebSocket, WHIP and WHEP all open sessions
through :meth:`sfu.node.SfuNode.open_session`, so they share authorization, backstage
gating, reporting and teardown. A WebSocket session can also be *notified* (room events,
call state, ``goaway``) and *disconnected* by the node; WHIP/WHEP sessions have no
channel back to the client and end when their connection does or on ``DELETE``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from stagecast.tokens import SfuGrant

from .room import Participant

Transport = Literal["ws", "whip", "whep"]

# WebSocket close codes (4000-4999 are the application's). Documented in docs/signalling.md.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_NOT_FOUND = 4004
CLOSE_CALL_ENDED = 4009
CLOSE_REPLACED = 4010
CLOSE_CONNECTION_FAILED = 4011
CLOSE_CAPACITY = 4503

CLOSE_CODES: dict[str, int] = {
    "left": CLOSE_NORMAL,
    "unauthenticated": CLOSE_UNAUTHENTICATED,
    "token_expired": CLOSE_UNAUTHENTICATED,
    "forbidden": CLOSE_FORBIDDEN,
    "not_found": CLOSE_NOT_FOUND,
    "call_ended": CLOSE_CALL_ENDED,
    "replaced": CLOSE_REPLACED,
    "connection_failed": CLOSE_CONNECTION_FAILED,
    "capacity_exhausted": CLOSE_CAPACITY,
    "node_stopped": CLOSE_GOING_AWAY,
    "drained": CLOSE_GOING_AWAY,
    "protocol_error": CLOSE_POLICY,
}


class SessionError(Exception):
    """A session that cannot be opened or a request that cannot be served.

    ``code`` is the API error code (``unauthenticated``, ``token_expired``, ``forbidden``,
    ``call_ended``, ``capacity_exhausted``, ``invalid_request``, ``no_compatible_codec``,
    ``not_found``, ``conflict``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return error


@dataclass
class CallState:
    """What the coordinator said about a call: live (media flows to everyone) and ended."""

    live: bool = False
    ended: bool = False

    def to_dict(self) -> dict[str, bool]:
        return {"live": self.live, "ended": self.ended}


Notify = Callable[[dict[str, Any]], None]
Disconnect = Callable[[str], None]


@dataclass(eq=False)
class Session:
    grant: SfuGrant
    participant: Participant
    transport: Transport
    notify: Notify | None = None  # WebSocket sessions: queue a message to the client
    disconnect: Disconnect | None = None  # WebSocket sessions: say goodbye and close
    created_at: float = field(default_factory=time.monotonic)
    ended: bool = False

    @property
    def id(self) -> str:
        return self.participant.id

    @property
    def cid(self) -> str:
        return self.grant.cid

    def may_receive(self, state: CallState) -> bool:
        """Backstage gating: fed media only while live, unless the grant allows backstage."""
        return state.live or self.grant.backstage_allowed

    def send(self, message: dict[str, Any]) -> None:
        if self.notify is not None and not self.ended:
            self.notify(message)

    @property
    def on_stage(self) -> bool:
        """May publish. A livestream's viewers hear about those on stage only; those on stage
        hear about everyone (telling every viewer of every other would cost O(N²))."""
        return self.grant.can_send_audio or self.grant.can_send_video

    def sees(self, other: Session) -> bool:
        return other is not self and not other.grant.hidden and (self.on_stage or other.on_stage)

    def public_info(self) -> dict[str, Any]:
        """How other clients see this participant."""
        return {
            "participant_id": self.id,
            "user_id": self.grant.user_id,
            "name": self.grant.name,
            "role": self.grant.role,
        }

    async def close(self, reason: str) -> None:
        """Leave the room (reported as ``participant_left`` with ``reason``)."""
        await self.participant.leave(reason)
