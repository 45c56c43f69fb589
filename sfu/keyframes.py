"""Keyframe detection on RTP payloads, without depacketizing.

Each function answers "is this packet the first packet of a keyframe?" and never raises:
malformed payloads are simply "no".
"""

from __future__ import annotations

from collections.abc import Callable


def vp8_keyframe_start(payload: bytes) -> bool:
    """RFC 7741: S=1, PID=0, and the VP8 payload header's P bit is 0."""
    try:
        first = payload[0]
        if first & 0x1F != 0x10:  # S bit set, partition index 0
            return False
        pos = 1
        if first & 0x80:  # X: extension byte follows
            ext = payload[1]
            pos = 2
            if ext & 0x80:  # I: picture id, 7 or 15 bits
                pos += 2 if payload[pos] & 0x80 else 1
            if ext & 0x40:  # L: TL0PICIDX
                pos += 1
            if ext & 0x30:  # T or K: TID/Y/KEYIDX
                pos += 1
        return not payload[pos] & 0x01
    except IndexError:
        return False


def h264_keyframe_start(payload: bytes) -> bool:
    """RFC 6184: the packet carries an SPS or the start of an IDR slice."""
    try:
        nal_type = payload[0] & 0x1F
        if nal_type in (5, 7):
            return True
        if nal_type == 24:  # STAP-A: 16-bit size, NAL unit, ...
            pos = 1
            while pos + 2 < len(payload):
                size = (payload[pos] << 8) | payload[pos + 1]
                if size == 0:
                    return False
                if payload[pos + 2] & 0x1F in (5, 7):
                    return True
                pos += 2 + size
            return False
        if nal_type == 28:  # FU-A: start bit and original NAL type
            header = payload[1]
            return bool(header & 0x80) and header & 0x1F in (5, 7)
        return False
    except IndexError:
        return False


def keyframe_detector(codec_name: str) -> Callable[[bytes], bool] | None:
    name = codec_name.upper()
    if name == "VP8":
        return vp8_keyframe_start
    if name == "H264":
        return h264_keyframe_start
    return None
