"""Stagecast SFU: the media forwarding core.

Knows nothing of HTTP, tokens, the database or the bus: the caller authorizes, relays SDP
and candidates, and forwards the room's events. See :mod:`sfu.room` for the model.
"""

from .errors import (
    InvalidOffer,
    InvalidState,
    NoCompatibleCodec,
    ParticipantExists,
    PublishForbidden,
    RoomClosed,
    SfuError,
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
from .forwarder import ForwardingConfig
from .ice import configure_host_candidates, reset_host_candidates, rtc_configuration
from .room import Participant, Publication, Room
from .sdp import VideoCodec

__all__ = [
    "EventCallback",
    "ForwardingConfig",
    "InvalidOffer",
    "InvalidState",
    "Kind",
    "MuteChanged",
    "NoCompatibleCodec",
    "Participant",
    "ParticipantExists",
    "ParticipantJoined",
    "ParticipantLeft",
    "Publication",
    "PublishForbidden",
    "Room",
    "RoomClosed",
    "RoomEvent",
    "SfuError",
    "SubscribeForbidden",
    "TrackPublished",
    "TrackUnpublished",
    "UnknownParticipant",
    "VideoCodec",
    "configure_host_candidates",
    "reset_host_candidates",
    "rtc_configuration",
]
