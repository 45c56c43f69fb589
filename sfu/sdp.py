"""SDP munging for publisher offers.

aiortc ignores ``setCodecPreferences`` for a transceiver it creates while applying a
remote offer, and answers every codec it has in common with the offer. The forwarding
core needs exactly one audio codec (Opus) and one video codec per room (VP8, or H.264
constrained baseline 42e01f with packetization-mode 1, which Chromium's OpenH264 encodes
and every browser decodes), so the offer is filtered here, before aiortc sees it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidOffer, NoCompatibleCodec
from .events import Kind

VideoCodec = Literal["VP8", "H264"]
VIDEO_CODECS: tuple[VideoCodec, ...] = ("VP8", "H264")
H264_PROFILE_LEVEL_ID = "42e01f"

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)(?:/(\d+))?", re.IGNORECASE)
_FMTP = re.compile(r"^a=fmtp:(\d+) (.*)$", re.IGNORECASE)
_PT_LINE = re.compile(r"^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)[ \t]", re.IGNORECASE)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class _Section:
    lines: list[str]
    kind: str = ""
    direction: str = "sendrecv"
    payload_types: list[str] = field(default_factory=list)
    rtpmap: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    fmtp: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class FilteredOffer:
    """A publisher offer reduced to what the room forwards."""

    sdp: str
    publishing: frozenset[Kind]  # kinds the offer sends (sendonly/sendrecv sections)
    video_codec: VideoCodec | None  # chosen for the video section, if any


def _parse_fmtp(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in value.split(";"):
        if "=" in item:
            key, _, val = item.strip().partition("=")
            params[key.strip().lower()] = val.strip()
    return params


def _split(sdp: str) -> tuple[list[str], list[_Section]]:
    lines = [line for line in re.split(r"\r?\n", sdp.strip()) if line]
    session: list[str] = []
    sections: list[_Section] = []
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 3:
                raise InvalidOffer(f"malformed media line: {line!r}")
            sections.append(_Section(lines=[line], kind=parts[0], payload_types=parts[3:]))
        elif sections:
            section = sections[-1]
            section.lines.append(line)
            if line[2:] in _DIRECTIONS:
                section.direction = line[2:]
            elif m := _RTPMAP.match(line):
                section.rtpmap[m.group(1)] = (
                    m.group(2).lower(),
                    int(m.group(3)),
                    int(m.group(4) or 1),
                )
            elif m := _FMTP.match(line):
                section.fmtp[m.group(1)] = _parse_fmtp(m.group(2))
        else:
            session.append(line)
    if not session or not session[0].startswith("v="):
        raise InvalidOffer("not an SDP session description")
    return session, sections


def _rtx_for(section: _Section, pt: str) -> str | None:
    for rtx_pt, (name, _, _) in section.rtpmap.items():
        if name == "rtx" and section.fmtp.get(rtx_pt, {}).get("apt") == pt:
            return rtx_pt
    return None


def _is_pinned_h264(params: dict[str, str]) -> bool:
    return (
        params.get("packetization-mode", "0") == "1"
        and params.get("profile-level-id", "").lower() == H264_PROFILE_LEVEL_ID
    )


def _is_constrained_baseline(params: dict[str, str]) -> bool:
    plid = params.get("profile-level-id", "").lower()
    if params.get("packetization-mode", "0") != "1" or len(plid) != 6:
        return False
    try:
        constraints = int(plid[2:4], 16)
    except ValueError:
        return False
    return plid[:2] == "42" and bool(constraints & 0x40)


def find_video_payload_type(section_sdp: _Section, codec: VideoCodec) -> str | None:
    if codec == "VP8":
        for pt in section_sdp.payload_types:
            if section_sdp.rtpmap.get(pt, ("",))[0] == "vp8":
                return pt
        return None
    candidates = [
        pt for pt in section_sdp.payload_types if section_sdp.rtpmap.get(pt, ("",))[0] == "h264"
    ]
    for accept in (_is_pinned_h264, _is_constrained_baseline):
        for pt in candidates:
            if accept(section_sdp.fmtp.get(pt, {})):
                return pt
    return None


def _keep_payload_types(section: _Section, keep: list[str]) -> None:
    m_parts = section.lines[0].split()
    section.lines[0] = " ".join(m_parts[:3] + keep)
    kept = set(keep)
    out = [section.lines[0]]
    for line in section.lines[1:]:
        m = _PT_LINE.match(line)
        if m and m.group(1) not in kept:
            continue
        out.append(line)
    section.lines = out
    section.payload_types = keep


def filter_publisher_offer(
    sdp: str,
    *,
    video_codec: VideoCodec | None,
    preference: Sequence[VideoCodec] = VIDEO_CODECS,
) -> FilteredOffer:
    """Keep Opus for audio and one video codec (the room's, else the first preferred one
    the offer has), with its RTX. Raises :class:`InvalidOffer` for malformed SDP or more
    than one section of a kind, :class:`NoCompatibleCodec` when a section has nothing the
    room can forward."""
    session, sections = _split(sdp)
    publishing: set[Kind] = set()
    chosen: VideoCodec | None = None
    seen: set[str] = set()
    for section in sections:
        if section.kind not in ("audio", "video"):
            continue
        if section.kind in seen:
            raise InvalidOffer(f"more than one {section.kind} section in the offer")
        seen.add(section.kind)
        port = section.lines[0].split()[1]
        if port == "0":
            continue
        if section.direction in ("sendrecv", "sendonly"):
            publishing.add("audio" if section.kind == "audio" else "video")
        if section.kind == "audio":
            opus = next(
                (
                    pt
                    for pt in section.payload_types
                    if section.rtpmap.get(pt, ("", 0, 0))[:2] == ("opus", 48000)
                ),
                None,
            )
            if opus is None:
                raise NoCompatibleCodec("audio", "opus")
            _keep_payload_types(section, [opus])
        else:
            order: list[VideoCodec] = [video_codec] if video_codec else list(preference)
            pt = None
            for codec in order:
                pt = find_video_payload_type(section, codec)
                if pt is not None:
                    chosen = codec
                    break
            if pt is None:
                raise NoCompatibleCodec("video", " or ".join(order))
            keep = [pt]
            rtx = _rtx_for(section, pt)
            if rtx is not None:
                keep.append(rtx)
            _keep_payload_types(section, keep)
    lines = session + [line for section in sections for line in section.lines]
    return FilteredOffer(
        sdp="\r\n".join(lines) + "\r\n", publishing=frozenset(publishing), video_codec=chosen
    )


def viewer_offer_kinds(
    sdp: str,
    *,
    video_codec: VideoCodec | None,
    preference: Sequence[VideoCodec] = VIDEO_CODECS,
) -> frozenset[Kind]:
    """The kinds a client's receiving offer (WHEP) asks for: ``recvonly`` (or
    ``sendrecv``) audio and video sections. Raises :class:`InvalidOffer` for malformed SDP,
    more than one section of a kind or nothing to receive, :class:`NoCompatibleCodec`
    when a section has no codec the room can send (Opus; the room's video codec, or any
    of ``preference`` while the room has none)."""
    _, sections = _split(sdp)
    kinds: set[Kind] = set()
    for section in sections:
        if section.kind not in ("audio", "video"):
            raise InvalidOffer(f"cannot answer a {section.kind!r} section")
        kind: Kind = "audio" if section.kind == "audio" else "video"
        if kind in kinds:
            raise InvalidOffer(f"more than one {kind} section in the offer")
        if section.lines[0].split()[1] == "0":
            raise InvalidOffer(f"the {kind} section is rejected (port 0)")
        if section.direction not in ("recvonly", "sendrecv"):
            raise InvalidOffer(f"the {kind} section does not receive ({section.direction})")
        kinds.add(kind)
        if kind == "audio":
            if not any(
                section.rtpmap.get(pt, ("", 0, 0))[:2] == ("opus", 48000)
                for pt in section.payload_types
            ):
                raise NoCompatibleCodec("audio", "opus")
        else:
            order: list[VideoCodec] = [video_codec] if video_codec else list(preference)
            if not any(find_video_payload_type(section, codec) for codec in order):
                raise NoCompatibleCodec("video", " or ".join(order))
    if not kinds:
        raise InvalidOffer("the offer receives no audio or video")
    return frozenset(kinds)
