"""A synthetic video source with the wall-clock time burned into every frame.

:class:`TimestampVideoTrack` is :class:`~stagecast.client.SyntheticVideoTrack` whose stamp
(the row of black/white blocks at the top that survives VP8/H.264) carries the wall-clock
time in milliseconds, modulo 2**24 (about 4.7 hours), instead of the frame number. A decoding
viewer on the same machine clock reads it with :func:`frame_latency_ms`: glass-to-glass
latency from frame creation to decoded frame (encode, send, SFU, receive, decode).
"""

from __future__ import annotations

import time
from typing import Any

from stagecast.client import SyntheticVideoTrack, read_frame_counter
from stagecast.client.media import COUNTER_BITS

STAMP_MODULO = 1 << COUNTER_BITS


def wall_clock_stamp(now: float | None = None) -> int:
    """The stamp for ``now`` (``time.time()``): milliseconds modulo 2**24."""
    return int((time.time() if now is None else now) * 1000) % STAMP_MODULO


class TimestampVideoTrack(SyntheticVideoTrack):
    """Synthetic video stamped with the wall-clock millisecond at which each frame is made."""

    async def recv(self) -> Any:
        frame = await super().recv()
        # The parent stamped the frame number; draw the clock over it, same layout.
        self._stamp(frame, wall_clock_stamp())
        return frame

    def _stamp(self, frame: Any, value: int) -> None:
        from stagecast.client.media import BLACK, WHITE

        plane = frame.planes[0]
        stride = plane.line_size
        data = bytearray(bytes(plane))
        row = bytearray()
        for bit in range(COUNTER_BITS):
            on = (value >> (COUNTER_BITS - 1 - bit)) & 1
            row += bytes([WHITE if on else BLACK]) * self.block
        row = row[: self.width]
        for y in range(min(self.block, self.height)):
            data[y * stride : y * stride + len(row)] = row
        plane.update(bytes(data))


def frame_latency_ms(frame: Any, now: float | None = None) -> float | None:
    """Milliseconds from the stamp in ``frame`` to ``now`` (None if unreadable or absurd)."""
    stamp = read_frame_counter(frame)
    if stamp is None:
        return None
    delta = (wall_clock_stamp(now) - stamp) % STAMP_MODULO
    return float(delta) if delta < 60_000 else None
