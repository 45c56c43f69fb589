"""Media sources for the Python client: synthetic video and audio, and files.

:class:`SyntheticVideoTrack` draws a moving gradient and stamps every frame with its
number as a row of black/white blocks at the top (:func:`read_frame_counter` reads it
back from a decoded frame, which survives lossy encoding at any reasonable bitrate), so a
viewer can tell which frame it got and how many it missed.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from av import AudioFrame, VideoFrame

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48000
AUDIO_PTIME = 0.020
COUNTER_BITS = 24
BLACK, WHITE = 16, 235


class SyntheticVideoTrack(MediaStreamTrack):
    """Generated video at ``fps``: a moving gradient with the frame counter stamped at the
    top (``COUNTER_BITS`` blocks of ``block`` pixels, most significant bit first)."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30.0) -> None:
        super().__init__()
        if width < 64 or height < 32 or width % 2 or height % 2:
            raise ValueError("width >= 64 and height >= 32, both even")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.width = width
        self.height = height
        self.fps = fps
        self.count = 0
        self.block = max(8, (width // COUNTER_BITS) // 2 * 2)
        self._start: float | None = None
        self._row = bytes(((x * 255) // max(1, width - 1)) for x in range(width)) * 2
        self._sent_at: dict[int, float] = {}

    def sent_at(self, counter: int) -> float | None:
        """When frame ``counter`` was produced (``time.time()``), for latency measurement."""
        return self._sent_at.get(counter)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.count / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        n = self.count
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        w, h = self.width, self.height
        shift = (n * 4) % w
        row = self._row[shift : shift + w]
        y_plane, u_plane, v_plane = frame.planes
        luma = bytearray(row * h)
        stamp = bytearray()
        for bit in range(COUNTER_BITS):
            on = (n >> (COUNTER_BITS - 1 - bit)) & 1
            stamp += bytes([WHITE if on else BLACK]) * self.block
        stamp = stamp[:w] + bytes([BLACK]) * (w - min(w, len(stamp)))
        for y in range(min(self.block, h)):
            luma[y * w : (y + 1) * w] = stamp
        _fill(y_plane, bytes(luma), w, h)
        _fill(u_plane, bytes([128]) * ((w // 2) * (h // 2)), w // 2, h // 2)
        _fill(v_plane, bytes([(n * 2) & 0xFF]) * ((w // 2) * (h // 2)), w // 2, h // 2)
        frame.pts = int(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._sent_at[n] = time.time()
        self._sent_at.pop(n - 300, None)
        self.count += 1
        return frame


def _fill(plane: Any, data: bytes, width: int, height: int) -> None:
    """Copy tightly packed rows into a plane whose line size may be padded."""
    stride = plane.line_size
    if stride == width:
        plane.update(data)
        return
    padded = bytearray(stride * height)
    for y in range(height):
        padded[y * stride : y * stride + width] = data[y * width : (y + 1) * width]
    plane.update(bytes(padded))


def read_frame_counter(frame: VideoFrame) -> int | None:
    """The counter :class:`SyntheticVideoTrack` stamped on ``frame`` (None if unreadable)."""
    width = frame.width
    block = max(8, (width // COUNTER_BITS) // 2 * 2)
    if block * COUNTER_BITS > width or frame.height < block:
        return None
    plane = frame.planes[0]
    stride = plane.line_size
    data = bytes(plane)
    y = block // 2
    value = 0
    for bit in range(COUNTER_BITS):
        x = bit * block + block // 2
        sample = data[y * stride + x]
        value = (value << 1) | (1 if sample > (BLACK + WHITE) // 2 else 0)
    return value


class ToneAudioTrack(MediaStreamTrack):
    """48 kHz mono audio in 20 ms frames: a sine tone, or silence (``frequency=0``)."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, volume: float = 0.2) -> None:
        super().__init__()
        self.frequency = frequency
        self.samples_per_frame = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)
        self.count = 0
        self._start: float | None = None
        amplitude = int(32767 * max(0.0, min(1.0, volume)))
        # one second of signal: a whole number of cycles for any integer frequency
        one_second = array.array(
            "h",
            (
                int(amplitude * math.sin(2 * math.pi * frequency * i / AUDIO_SAMPLE_RATE))
                if frequency
                else 0
                for i in range(AUDIO_SAMPLE_RATE)
            ),
        )
        self._signal = one_second.tobytes()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.count * AUDIO_PTIME
        if due > now:
            await asyncio.sleep(due - now)
        n = self.samples_per_frame
        offset = (self.count * n) % AUDIO_SAMPLE_RATE
        chunk = self._signal[offset * 2 : (offset + n) * 2]
        frame = AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(chunk)
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = self.count * n
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        self.count += 1
        return frame


def file_source(
    path: str, *, loop: bool = True, **options: Any
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None, MediaPlayer]:
    """Audio and video tracks read from a media file (aiortc's ``MediaPlayer``).

    Returns ``(audio, video, player)``; keep the player referenced while publishing."""
    player = MediaPlayer(path, loop=loop, **options)
    return player.audio, player.video, player
