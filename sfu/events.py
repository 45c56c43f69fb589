"""Events a room reports to its observer.

Every event is a frozen dataclass with a stable ``type`` string and ``to_dict()`` so the
signalling layer can put it on the bus as JSON without knowing the classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Kind = Literal["audio", "video"]


@dataclass(frozen=True)
class _Event:
    type: ClassVar[str] = ""
    room_id: str
    participant_id: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["type"] = self.type
        return data


@dataclass(frozen=True)
class ParticipantJoined(_Event):
    type: ClassVar[str] = "participant_joined"
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParticipantLeft(_Event):
    type: ClassVar[str] = "participant_left"
    reason: str = "left"  # "left" | "connection_failed" | "room_closed" | "removed"


@dataclass(frozen=True)
class TrackPublished(_Event):
    type: ClassVar[str] = "track_published"
    kind: Kind = "video"
    codec: str = ""  # "opus" | "VP8" | "H264"
    track_id: str = ""
    muted: bool = False


@dataclass(frozen=True)
class TrackUnpublished(_Event):
    type: ClassVar[str] = "track_unpublished"
    kind: Kind = "video"
    track_id: str = ""
    reason: str = "unpublished"  # "unpublished" | "left" | "connection_failed" | "room_closed"


@dataclass(frozen=True)
class MuteChanged(_Event):
    type: ClassVar[str] = "mute_changed"
    kind: Kind = "video"
    track_id: str = ""
    muted: bool = False


RoomEvent = ParticipantJoined | ParticipantLeft | TrackPublished | TrackUnpublished | MuteChanged

EventCallback = Callable[[RoomEvent], None]
