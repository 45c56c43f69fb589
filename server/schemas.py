"""Request and response bodies of the REST API (they make the OpenAPI schema)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from server.call_types import CallRole, CallSettings, Capability

CALL_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
USER_ID_PATTERN = r"^[a-zA-Z0-9@_.-]{1,128}$"
TYPE_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
CallId = Annotated[str, StringConstraints(pattern=CALL_ID_PATTERN)]
TypeName = Annotated[str, StringConstraints(pattern=TYPE_NAME_PATTERN)]


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32


def _rfc3339(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("timestamps are RFC 3339 strings")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps need a time zone (use Z for UTC)")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the timestamp is out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("timestamps must lie between 1970 and 9999")
    return value


def _text(value: str) -> str:
    """Text the databases can store: no NUL, no lone surrogates."""
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode") from None
    return value


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    """JSON the databases can store and the API can send back: finite numbers, valid Unicode,
    at most ``MAX_JSON_DEPTH`` levels and ``MAX_JSON_BYTES`` bytes."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:  # NaN or Infinity; lone surrogates (UnicodeEncodeError)
        raise ValueError("must be JSON with finite numbers and valid Unicode") from None
    if len(encoded) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes")
    return value


AwareDatetime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_aware)]
Text = Annotated[str, AfterValidator(_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
Custom = Annotated[dict[str, Any], Field(max_length=64), AfterValidator(_json_object)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Users


class UserIn(Body):
    name: Text = Field("", max_length=256)
    image: Text = Field("", max_length=2048)
    role: Literal["user", "admin"] = "user"
    custom: Custom = {}


class UserOut(BaseModel):
    id: str
    name: str
    image: str
    role: str
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class UserResponse(BaseModel):
    user: UserOut


# Call types


class CallTypeIn(Body):
    settings: CallSettings = CallSettings()
    grants: dict[CallRole, list[Capability]]


class CallTypeOut(BaseModel):
    name: str
    settings: CallSettings
    grants: dict[str, list[str]]
    created_at: datetime
    updated_at: datetime


class CallTypesResponse(BaseModel):
    call_types: list[CallTypeOut]


# Calls


class MemberIn(Body):
    user_id: UserId
    role: CallRole = "user"


class MemberOut(BaseModel):
    user_id: str
    role: str
    user: UserOut | None
    created_at: datetime
    updated_at: datetime


class CallCreate(Body):
    members: Annotated[list[MemberIn], Field(max_length=1000)] = []
    starts_at: AwareDatetime | None = None
    settings_override: JsonObject = {}
    custom: Custom = {}


class CallUpdate(Body):
    starts_at: AwareDatetime | None = None
    settings_override: JsonObject | None = None
    custom: Custom | None = None


class MembersChange(Body):
    upsert: Annotated[list[MemberIn], Field(max_length=1000)] = []
    remove: Annotated[list[UserId], Field(max_length=1000)] = []


class GoLiveIn(Body):
    start_hls: bool = False
    start_recording: bool = False


class JoinIn(Body):
    create: bool = False
    members: Annotated[list[MemberIn], Field(max_length=1000)] = []
    starts_at: AwareDatetime | None = None
    settings_override: JsonObject = {}


class ParticipantOut(BaseModel):
    participant_id: str
    user_id: str
    role: str
    joined_at: datetime | None


class SessionOut(BaseModel):
    id: str
    started_at: datetime | None
    participants: list[ParticipantOut]
    participant_count: int
    participant_count_by_role: dict[str, int]
    anonymous_count: int
    waiting_count: int = Field(description="Non-hosts present while the call is in backstage.")


class HlsEgressOut(BaseModel):
    status: Literal["stopped", "starting", "running"] = "stopped"
    playlist_url: str | None = None


class RecordingEgressOut(BaseModel):
    status: Literal["stopped", "starting", "running"] = "stopped"


class EgressOut(BaseModel):
    hls: HlsEgressOut = HlsEgressOut()
    recording: RecordingEgressOut = RecordingEgressOut()


class RtmpIngressOut(BaseModel):
    address: str


class WhipIngressOut(BaseModel):
    url: str


class IngressOut(BaseModel):
    rtmp: RtmpIngressOut
    whip: WhipIngressOut


class CallOut(BaseModel):
    cid: str
    type: str
    id: str
    created_by: UserOut
    created_at: datetime
    updated_at: datetime
    starts_at: datetime | None
    backstage: bool
    live_started_at: datetime | None
    ended_at: datetime | None
    settings: CallSettings
    session: SessionOut | None
    egress: EgressOut
    ingress: IngressOut
    custom: dict[str, Any]


class CallResponse(BaseModel):
    call: CallOut
    members: list[MemberOut]
    own_capabilities: list[str]


class CallCreatedResponse(CallResponse):
    created: bool


class CallsResponse(BaseModel):
    calls: list[CallResponse]
    next: str | None


class MembersResponse(BaseModel):
    members: list[MemberOut]
    next: str | None = None


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Credentials(BaseModel):
    sfu_url: str
    ws_url: str
    token: str
    ice_servers: list[IceServer]


class JoinResponse(CallResponse):
    credentials: Credentials
    created: bool = False


class ParticipantsResponse(BaseModel):
    session: SessionOut | None


class DevTokenIn(Body):
    user_id: UserId
    ttl_seconds: int = Field(3600, ge=60, le=86400)


class DevTokenResponse(BaseModel):
    token: str
    user_id: str
    api_key: str


class EgressStatusOut(BaseModel):
    status: Literal["stopped", "starting", "running"]


class EgressStatusResponse(BaseModel):
    recording: EgressStatusOut


class HlsResponse(BaseModel):
    playlist_url: str | None
    status: Literal["stopped", "starting", "running"]


class RecordingOut(BaseModel):
    id: str
    filename: str
    url: str
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    size_bytes: int | None


class RecordingsResponse(BaseModel):
    recordings: list[RecordingOut]
    next: str | None = None
