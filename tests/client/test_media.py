"""Synthetic sources: the stamped frame counter survives VP8; audio is paced 20 ms frames."""

from __future__ import annotations

import time

from aiortc.codecs import get_decoder, get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from stagecast.client import SyntheticVideoTrack, ToneAudioTrack, read_frame_counter

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


async def test_frame_counter_survives_encoding() -> None:
    track = SyntheticVideoTrack(320, 240, fps=60)
    encoder = get_encoder(VP8)
    decoder = get_decoder(VP8)
    from aiortc.codecs.vpx import vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    read = []
    for _ in range(8):
        frame = await track.recv()
        assert read_frame_counter(frame) == track.count - 1
        payloads, timestamp = encoder.encode(frame, force_keyframe=track.count == 1)
        data = b"".join(vp8_depayload(p) for p in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            assert (decoded.width, decoded.height) == (320, 240)
            read.append(read_frame_counter(decoded))
    assert read == list(range(8))
    track.stop()


async def test_tone_is_paced_in_20ms_frames() -> None:
    track = ToneAudioTrack(440)
    started = time.monotonic()
    frames = [await track.recv() for _ in range(10)]
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 0.5
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert any(any(bytes(f.planes[0])) for f in frames)
    silence = ToneAudioTrack(0)
    assert not any(bytes((await silence.recv()).planes[0]))
