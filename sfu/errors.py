"""Exceptions raised by the forwarding core.

The signalling layer maps them to its own wire errors; each carries a stable ``code`` that
matches the API's error codes where one exists (``forbidden``, ``no_compatible_codec``,
``invalid_request``, ``conflict``, ``not_found``).
"""

from __future__ import annotations


class SfuError(Exception):
    """Base class of every error the forwarding core raises on purpose."""

    code = "sfu_error"


class PublishForbidden(SfuError):
    """The participant may not publish the media kind it offered."""

    code = "forbidden"

    def __init__(self, participant_id: str, kind: str) -> None:
        self.participant_id = participant_id
        self.kind = kind
        self.missing_capability = "send-audio" if kind == "audio" else "send-video"
        super().__init__(
            f"participant {participant_id!r} may not publish {kind} "
            f"(missing capability {self.missing_capability})"
        )


class SubscribeForbidden(SfuError):
    """The participant may not receive media."""

    code = "forbidden"

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        super().__init__(f"participant {participant_id!r} may not receive media")


class NoCompatibleCodec(SfuError):
    """The offer has no codec the room can forward for one of its media kinds."""

    code = "no_compatible_codec"

    def __init__(self, kind: str, wanted: str) -> None:
        self.kind = kind
        self.wanted = wanted
        super().__init__(f"the offer has no {kind} codec this room can use (wanted {wanted})")


class InvalidOffer(SfuError):
    """The SDP is malformed or asks for something the forwarding core does not do."""

    code = "invalid_request"


class InvalidState(SfuError):
    """The call does not fit the participant's or room's current state."""

    code = "conflict"


class ParticipantExists(SfuError):
    code = "conflict"


class UnknownParticipant(SfuError):
    code = "not_found"


class RoomClosed(SfuError):
    code = "conflict"
