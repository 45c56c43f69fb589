"""Call types: settings and role -> capability grants, with the built-in types."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Capability = Literal[
    "create-call",
    "read-call",
    "join-call",
    "join-backstage",
    "join-ended-call",
    "update-call",
    "update-call-settings",
    "update-call-members",
    "send-audio",
    "send-video",
    "screenshare",
    "go-live",
    "end-call",
    "start-record-call",
    "stop-record-call",
    "list-recordings",
    "start-broadcast-call",
    "stop-broadcast-call",
    "mute-users",
    "remove-call-member",
]
CAPABILITIES: tuple[str, ...] = get_args(Capability)
CallRole = Literal["host", "moderator", "user", "admin"]
CALL_ROLES: tuple[str, ...] = get_args(CallRole)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackstageSettings(_Strict):
    enabled: bool = True
    join_ahead_time_seconds: int = Field(0, ge=0, le=7 * 86400)


class RecordingSettings(_Strict):
    mode: Literal["disabled", "available", "auto"] = "available"


class HlsSettings(_Strict):
    enabled: bool = True
    auto_on: bool = False


class BroadcastingSettings(_Strict):
    hls: HlsSettings = HlsSettings()


class TargetResolution(_Strict):
    width: int = Field(1280, ge=16, le=7680)
    height: int = Field(720, ge=16, le=4320)
    bitrate: int = Field(1_500_000, ge=50_000, le=50_000_000)


class VideoSettings(_Strict):
    enabled: bool = True
    camera_default_on: bool = True
    target_resolution: TargetResolution = TargetResolution()


class AudioSettings(_Strict):
    mic_default_on: bool = True


class LimitsSettings(_Strict):
    max_participants: int | None = Field(None, ge=1, le=1_000_000)
    max_duration_seconds: int | None = Field(None, ge=1, le=7 * 86400)


class CallSettings(_Strict):
    backstage: BackstageSettings = BackstageSettings()
    recording: RecordingSettings = RecordingSettings()
    broadcasting: BroadcastingSettings = BroadcastingSettings()
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()
    limits: LimitsSettings = LimitsSettings()


Grants = dict[str, list[Capability]]

# Hosts may do everything to their call but create others.
_HOST: list[Capability] = [cap for cap in get_args(Capability) if cap != "create-call"]
_ADMIN: list[Capability] = ["create-call", *_HOST]
_VIEWER: list[Capability] = ["create-call", "read-call", "join-call"]

BUILT_IN_TYPES: dict[str, tuple[CallSettings, Grants]] = {
    # A show: hosts prepare in backstage and go live; everyone else watches.
    "livestream": (
        CallSettings(),
        {"host": _HOST, "moderator": _HOST, "user": _VIEWER, "admin": _ADMIN},
    ),
    # A meeting: no backstage, everyone may speak and be seen.
    "default": (
        CallSettings(
            backstage=BackstageSettings(enabled=False),
            broadcasting=BroadcastingSettings(hls=HlsSettings(enabled=False)),
        ),
        {
            "host": _HOST,
            "moderator": _HOST,
            "user": [*_VIEWER, "send-audio", "send-video", "screenshare"],
            "admin": _ADMIN,
        },
    ),
    # Audio only: hosts speak after going live, listeners listen.
    "audio_room": (
        CallSettings(
            video=VideoSettings(enabled=False, camera_default_on=False),
            broadcasting=BroadcastingSettings(hls=HlsSettings(enabled=False)),
        ),
        {
            "host": [cap for cap in _HOST if cap not in ("send-video", "screenshare")],
            "moderator": [cap for cap in _HOST if cap not in ("send-video", "screenshare")],
            "user": _VIEWER,
            "admin": _ADMIN,
        },
    ),
}


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base`` key by key, recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def effective_settings(type_settings: dict[str, Any], override: dict[str, Any]) -> CallSettings:
    """Validate a call's settings: its type's, with the call's override merged in."""
    return CallSettings.model_validate(merge_settings(type_settings, override))
