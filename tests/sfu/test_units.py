"""Pure helpers: SDP filtering and keyframe detection."""

from __future__ import annotations

import pytest

from sfu.errors import InvalidOffer, NoCompatibleCodec
from sfu.keyframes import (
    INVALID,
    h264_inspect,
    h264_keyframe_start,
    vp8_inspect,
    vp8_keyframe_start,
)
from sfu.sdp import filter_publisher_offer

CHROME_LIKE_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 45",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sendonly",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "a=rtpmap:104 H264/90000",
        "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f",
        "a=rtpmap:105 rtx/90000",
        "a=fmtp:105 apt=104",
        "a=rtpmap:106 H264/90000",
        "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtcp-fb:106 nack",
        "a=rtpmap:107 rtx/90000",
        "a=fmtp:107 apt=106",
        "a=rtpmap:108 H264/90000",
        "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
        "a=rtpmap:109 rtx/90000",
        "a=fmtp:109 apt=108",
        "a=rtpmap:127 H264/90000",
        "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
        "a=rtpmap:125 rtx/90000",
        "a=fmtp:125 apt=127",
        "a=rtpmap:45 AV1/90000",
        "",
    ]
)


def _section(sdp: str, kind: str) -> str:
    start = sdp.index(f"m={kind}")
    end = sdp.find("m=", start + 2)
    return sdp[start : end if end >= 0 else None]


def test_offer_is_reduced_to_opus_and_vp8_by_default() -> None:
    result = filter_publisher_offer(CHROME_LIKE_OFFER, video_codec=None)
    assert result.video_codec == "VP8"
    assert result.publishing == {"audio", "video"}
    audio = _section(result.sdp, "audio")
    assert audio.splitlines()[0].endswith("SAVPF 111")
    assert "G722" not in audio and "telephone-event" not in audio and "red/" not in audio
    video = _section(result.sdp, "video")
    assert video.splitlines()[0].endswith("SAVPF 96 97")
    assert "H264" not in video and "AV1" not in video
    assert "a=fmtp:97 apt=96" in video


def test_h264_is_pinned_to_constrained_baseline_packetization_mode_1() -> None:
    result = filter_publisher_offer(CHROME_LIKE_OFFER, video_codec="H264")
    video = _section(result.sdp, "video")
    assert video.splitlines()[0].endswith("SAVPF 106 107")
    assert "profile-level-id=42e01f" in video and "4d001f" not in video
    assert "a=rtcp-fb:106 nack" in video
    preferred = filter_publisher_offer(CHROME_LIKE_OFFER, video_codec=None, preference=["H264"])
    assert preferred.video_codec == "H264"


def test_offers_the_room_cannot_use_are_refused() -> None:
    no_vp8 = CHROME_LIKE_OFFER.replace("VP8/90000", "VP9/90000")
    with pytest.raises(NoCompatibleCodec):
        filter_publisher_offer(no_vp8, video_codec="VP8")
    no_opus = CHROME_LIKE_OFFER.replace("opus/48000/2", "ISAC/16000")
    with pytest.raises(NoCompatibleCodec):
        filter_publisher_offer(no_opus, video_codec=None)
    two_videos = CHROME_LIKE_OFFER + _section(CHROME_LIKE_OFFER, "video")
    with pytest.raises(InvalidOffer):
        filter_publisher_offer(two_videos, video_codec=None)
    with pytest.raises(InvalidOffer):
        filter_publisher_offer("hello", video_codec=None)


def test_recvonly_sections_are_not_publishing() -> None:
    offer = CHROME_LIKE_OFFER.replace("a=mid:0\r\na=sendonly", "a=mid:0\r\na=recvonly")
    assert filter_publisher_offer(offer, video_codec=None).publishing == {"video"}


def test_vp8_keyframe_detection() -> None:
    assert vp8_keyframe_start(b"\x10\x00\x9d\x01\x2a")
    assert not vp8_keyframe_start(b"\x10\x01")  # inter frame
    assert not vp8_keyframe_start(b"\x00\x00")  # not a partition start
    # X=1, I=1 with a 15-bit picture id, then a keyframe header
    assert vp8_keyframe_start(b"\x90\x80\x81\x23\x00")
    assert not vp8_keyframe_start(b"\x90\x80\x81\x23\x01")
    for garbage in (b"", b"\x90", b"\x90\x80", b"\x90\xf0\x80"):
        assert not vp8_keyframe_start(garbage)


def test_h264_keyframe_detection() -> None:
    assert h264_keyframe_start(b"\x65\x88")  # IDR slice
    assert h264_keyframe_start(b"\x67\x42")  # SPS
    assert not h264_keyframe_start(b"\x41\x9a")  # non-IDR slice
    assert h264_keyframe_start(b"\x18\x00\x02\x67\x42\x00\x02\x68\xce")  # STAP-A(SPS, PPS)
    assert h264_keyframe_start(b"\x7c\x85")  # FU-A start of IDR
    assert not h264_keyframe_start(b"\x7c\x05")  # FU-A continuation
    for garbage in (b"", b"\x18", b"\x18\x00", b"\x18\x00\x00", b"\x7c"):
        assert not h264_keyframe_start(garbage)


def test_malformed_payloads_are_invalid() -> None:
    for garbage in (b"", b"\x90", b"\x80\x80", b"\xff\xff\xff"):
        assert vp8_inspect(garbage) == INVALID
    for garbage in (b"", b"\x65", b"\x80\x00", b"\x18\x00\x05\x67", b"\x19\x00", b"\x7c"):
        assert h264_inspect(garbage) == INVALID
    assert vp8_inspect(b"\x10") != INVALID  # an empty partition start is legal
