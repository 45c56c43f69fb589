"""Writing what a hidden viewer receives to HLS or to a recording (PyAV).

Frames arrive decoded from aiortc with their arrival time; :class:`MediaWriter` timestamps them
on one wall clock (so audio and video stay in sync whatever the sources' clocks), encodes video
to H.264 (libx264, a keyframe every ``keyframe_seconds``) and audio to AAC, and muxes them.
When the call sends no audio, silence keeps the audio track continuous (players need it).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType

log = logging.getLogger("stagecast.egress")

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
# Audio that lags the wall clock by more than this is caught up with silence.
AUDIO_SLACK_SECONDS = 0.25
# Without audio from the call for this long, silence is written instead.
AUDIO_QUIET_SECONDS = 0.5


def hls_options(directory: Path, segment_seconds: float, list_size: int) -> dict[str, str]:
    return {
        "hls_time": f"{segment_seconds:g}",
        "hls_list_size": str(list_size),
        "hls_delete_threshold": "2",
        "hls_flags": "delete_segments+independent_segments+temp_file",
        "hls_segment_filename": str(directory / "seg-%05d.ts"),
        "hls_segment_type": "mpegts",
    }


# Fragments cut at every keyframe and flushed at once: a crash loses at most the fragment being
# written (one keyframe interval), and what is on disk stays readable.
FRAGMENTED_MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "flush_packets": "1",
}


class MediaWriter:
    """One output file (an HLS media playlist or a fragmented MP4), opened on the first
    video frame (its size is the output's size)."""

    def __init__(
        self,
        path: Path,
        format: str,
        options: dict[str, str],
        *,
        keyframe_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self.format = format
        self.options = options
        self.keyframe_seconds = keyframe_seconds
        self.container: Any = None
        self.video_stream: Any = None
        self.audio_stream: Any = None
        self.width = 0
        self.height = 0
        self.t0: float | None = None
        self.last_video_pts = -1
        self.last_keyframe_at = float("-inf")
        self.audio_samples = 0
        self.last_audio_arrival = float("-inf")
        self.video_frames = 0
        self.last_time = 0.0
        self._resampler: Any = None
        self._fifo: Any = None
        self._silence_layout = "stereo"

    @property
    def opened(self) -> bool:
        return self.container is not None

    @property
    def duration(self) -> float:
        return self.last_time

    def _open(self, width: int, height: int, at: float) -> None:
        self.width, self.height = width - width % 2, height - height % 2
        self.t0 = at
        container = av.open(str(self.path), "w", format=self.format, options=self.options)
        video = container.add_stream("libx264", rate=30)
        video.width = self.width
        video.height = self.height
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = VIDEO_TIME_BASE
        video.codec_context.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "high",
        }
        video.codec_context.gop_size = 600  # keyframes come from the clock, see video()
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.codec_context.bit_rate = 128_000
        self.container, self.video_stream, self.audio_stream = container, video, audio
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self._fifo = av.AudioFifo()

    def video(self, frame: Any, at: float) -> None:
        """Encode one decoded video frame that arrived at ``at`` (monotonic seconds)."""
        if self.container is None:
            self._open(frame.width, frame.height, at)
        assert self.t0 is not None
        elapsed = at - self.t0
        pts = max(self.last_video_pts + 1, round(elapsed / VIDEO_TIME_BASE))
        self.last_video_pts = pts
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        if at - self.last_keyframe_at >= self.keyframe_seconds:
            frame.pict_type = PictureType.I
            self.last_keyframe_at = at
        else:
            frame.pict_type = PictureType.NONE
        for packet in self.video_stream.encode(frame):
            self.container.mux(packet)
        self.video_frames += 1
        self.last_time = max(self.last_time, elapsed)
        if at - self.last_audio_arrival > AUDIO_QUIET_SECONDS:
            self._silence_until(elapsed - AUDIO_SLACK_SECONDS)

    def audio(self, frame: Any, at: float) -> None:
        """Encode one decoded audio frame (audio before the first video frame is dropped)."""
        self.last_audio_arrival = at
        if self.container is None or self.t0 is None:
            return
        expected = (at - self.t0) * AUDIO_RATE - frame.samples
        if expected - self.audio_samples > AUDIO_SLACK_SECONDS * AUDIO_RATE:
            self._silence_until(expected / AUDIO_RATE)
        elif self.audio_samples - expected > 2 * AUDIO_SLACK_SECONDS * AUDIO_RATE:
            return  # ahead of the clock (a burst after a stall): drop rather than drift
        frame.pts = None
        for converted in self._resampler.resample(frame):
            self._fifo.write(converted)
        self._drain_audio()

    def _silence_until(self, seconds: float) -> None:
        missing = int(seconds * AUDIO_RATE) - self.audio_samples - self._fifo.samples
        while missing > 0:
            n = min(missing, 4800)
            silence = av.AudioFrame(format="fltp", layout="stereo", samples=n)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = AUDIO_RATE
            self._fifo.write(silence)
            missing -= n
        self._drain_audio()

    def _drain_audio(self) -> None:
        size = self.audio_stream.codec_context.frame_size or 1024
        while self._fifo.samples >= size:
            chunk = self._fifo.read(size)
            chunk.pts = self.audio_samples
            chunk.time_base = AUDIO_TIME_BASE
            self.audio_samples += size
            for packet in self.audio_stream.encode(chunk):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self.container is None:
            return
        try:
            for stream in (self.video_stream, self.audio_stream):
                for packet in stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


def remux_parts(parts: list[Path], output: Path) -> float:
    """Join recording parts (fragmented MP4s, readable even if cut short) into one plain MP4
    with its index at the front; returns the media duration in seconds."""
    out = av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
    streams: dict[str, Any] = {}
    offset = 0.0
    try:
        for part in parts:
            try:
                source = av.open(str(part))
            except (av.FFmpegError, OSError):
                log.warning("recording part unreadable, skipped", extra={"part": str(part)})
                continue
            with source:
                end = offset
                for stream in source.streams:
                    if stream.type in ("video", "audio") and stream.type not in streams:
                        streams[stream.type] = out.add_stream_from_template(stream)
                for packet in source.demux():
                    if packet.dts is None or packet.stream.type not in streams:
                        continue
                    tb = packet.time_base
                    shift = round(offset / tb)
                    packet.dts += shift
                    if packet.pts is not None:
                        packet.pts += shift
                    last = (packet.pts or packet.dts) + (packet.duration or 0)
                    end = max(end, float(last * tb))
                    packet.stream = streams[packet.stream.type]
                    out.mux(packet)
                offset = end
    finally:
        out.close()
    return offset


def probe_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        if container.duration is None:
            return 0.0
        return float(container.duration / av.time_base)
