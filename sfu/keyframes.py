"""Payload inspection without depacketizing: is it well formed, does it start a keyframe?

Each ``*_inspect`` function returns ``INVALID`` (-1) for a payload the codec's
depacketizer cannot parse (it is dropped, not forwarded: some receivers, aiortc's among
them, stall or fail on such packets), ``KEYFRAME_START`` (1) for the first packet of a
keyframe, and ``VALID`` (0) otherwise. They never raise.
"""

from __future__ import annotations

from collections.abc import Callable

INVALID = -1
VALID = 0
KEYFRAME_START = 1

Inspector = Callable[[bytes], int]


def vp8_inspect(payload: bytes) -> int:
    """RFC 7741 payload descriptor; a keyframe starts with S=1, PID=0 and P=0."""
    n = len(payload)
    if n < 1:
        return INVALID
    first = payload[0]
    pos = 1
    if first & 0x80:  # X: extension byte follows
        if n < 2:
            return INVALID
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if n <= pos:
                return INVALID
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
        if n < pos:
            return INVALID
    if first & 0x1F == 0x10 and n > pos and not payload[pos] & 0x01:
        return KEYFRAME_START
    return VALID


def h264_inspect(payload: bytes) -> int:
    """RFC 6184 (packetization mode 1); a keyframe starts with an SPS or an IDR slice."""
    n = len(payload)
    if n < 2 or payload[0] & 0x80:  # too short, or forbidden_zero_bit set
        return INVALID
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return KEYFRAME_START if nal_type in (5, 7) else VALID
    if nal_type == 24:  # STAP-A: (16-bit size, NAL unit)+
        pos = 1
        key = False
        while pos < n:
            if pos + 2 > n:
                return INVALID
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > n:
                return INVALID
            if payload[pos] & 0x1F in (5, 7):
                key = True
            pos += size
        return KEYFRAME_START if key else VALID
    if nal_type == 28:  # FU-A: FU header carries start bit and original type
        header = payload[1]
        return KEYFRAME_START if header & 0x80 and header & 0x1F in (5, 7) else VALID
    return INVALID


def vp8_keyframe_start(payload: bytes) -> bool:
    return vp8_inspect(payload) == KEYFRAME_START


def h264_keyframe_start(payload: bytes) -> bool:
    return h264_inspect(payload) == KEYFRAME_START


def payload_inspector(codec_name: str) -> Inspector | None:
    name = codec_name.upper()
    if name == "VP8":
        return vp8_inspect
    if name == "H264":
        return h264_inspect
    return None
