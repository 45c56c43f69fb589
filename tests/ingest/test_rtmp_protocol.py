"""The RTMP server against a hand-written client: chunking, extended timestamps, refusals."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

from ingest import amf
from ingest.media import annex_b, avcc_nals, parse_avc_config
from ingest.rtmp import PublishRefused, RtmpServer


class Sink:
    def __init__(self) -> None:
        self.video: list[tuple[int, bytes]] = []
        self.audio: list[tuple[int, bytes]] = []
        self.closed = False
        self.ended = False

    def on_video(self, timestamp_ms: int, body: bytes) -> None:
        self.video.append((timestamp_ms, body))

    def on_audio(self, timestamp_ms: int, body: bytes) -> None:
        self.audio.append((timestamp_ms, body))

    async def close(self) -> None:
        self.closed = True


def chunks(csid: int, type_id: int, body: bytes, ts: int, size: int, stream: int = 0) -> bytes:
    """fmt 0 then fmt 3 continuations; extended timestamp when ``ts`` needs it."""
    ext = ts >= 0xFFFFFF
    head = bytes([csid]) + min(ts, 0xFFFFFF).to_bytes(3, "big") + len(body).to_bytes(3, "big")
    head += bytes([type_id]) + struct.pack("<I", stream)
    out = bytearray(head + (struct.pack(">I", ts) if ext else b""))
    for pos in range(0, len(body), size):
        if pos:
            out += bytes([0xC0 | csid]) + (struct.pack(">I", ts) if ext else b"")
        out += body[pos : pos + size]
    return bytes(out)


async def publish(
    port: int, key: str, media: bytes = b"", chunk_size: int = 64
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x03" + os.urandom(1536))
    s0s1s2 = await reader.readexactly(1 + 1536 * 2)
    assert s0s1s2[0] == 3
    writer.write(s0s1s2[1:1537])  # C2 echoes S1
    writer.write(chunks(2, 1, struct.pack(">I", chunk_size), 0, 128))
    for body, stream in (
        (amf.encode("connect", 1, {"app": "live", "tcUrl": "rtmp://x/live"}), 0),
        (amf.encode("releaseStream", 2, None, key), 0),
        (amf.encode("createStream", 3, None), 0),
        (amf.encode("publish", 4, None, key, "live"), 1),
    ):
        writer.write(chunks(3, 20, body, 0, chunk_size, stream))
    writer.write(media)
    await writer.drain()
    received = b""
    while b"NetStream.Publish" not in received:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            break
        received += data
    return received, reader, writer


@pytest.fixture
async def server() -> Any:
    sinks: list[Sink] = []
    keys: list[str] = []

    async def authorize(app: str, key: str, peer: str) -> Sink:
        keys.append(key)
        if key != "good":
            raise PublishRefused("bad key")
        sink = Sink()
        sinks.append(sink)
        return sink

    rtmp = RtmpServer(authorize, "127.0.0.1", 0)
    await rtmp.start()
    rtmp.sinks = sinks  # type: ignore[attr-defined]
    rtmp.keys = keys  # type: ignore[attr-defined]
    yield rtmp
    await rtmp.stop()


async def test_publish_chunks_and_extended_timestamps(server: Any) -> None:
    video = bytes([0x17, 1, 0, 0, 0]) + bytes(range(256)) * 3  # 773 bytes: many 64-byte chunks
    media = chunks(6, 9, video, 1000, 64, 1) + chunks(6, 9, video, 0x1000000 + 5, 64, 1)
    media += chunks(4, 8, bytes([0xAF, 1]) + b"aac", 1010, 64, 1)
    received, reader, writer = await publish(server.port, "good?x=1", media)
    assert b"NetConnection.Connect.Success" in received
    assert b"NetStream.Publish.Start" in received
    assert server.keys == ["good"]  # the query part is not part of the key
    for _ in range(100):
        if server.sinks and len(server.sinks[0].video) == 2:
            break
        await asyncio.sleep(0.02)
    (sink,) = server.sinks
    assert sink.video == [(1000, video), (0x1000000 + 5, video)]
    assert sink.audio == [(1010, bytes([0xAF, 1]) + b"aac")]
    writer.write(chunks(3, 20, amf.encode("deleteStream", 5, None, 1), 0, 64))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert sink.closed
    writer.close()
    await writer.wait_closed()


async def test_refused_key_gets_bad_name_and_no_media(server: Any) -> None:
    media = chunks(6, 9, bytes([0x17, 1, 0, 0, 0, 1]), 0, 64, 1)
    received, reader, writer = await publish(server.port, "bad", media)
    assert b"NetStream.Publish.BadName" in received
    assert b"NetStream.Publish.Start" not in received
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert not server.sinks
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    "junk",
    [
        b"\x16\x03\x01\x00\xa5",  # TLS client hello
        b"\x03" + b"\x00" * 1536 + b"\x00" * 1536 + b"\x7f" * 64,  # chunk without a header
        b"\x03" + b"\x00" * 3072 + b"\x03\x00\x00\x00\xff\xff\xff\x14" + bytes(4),  # 16 MiB
    ],
)
async def test_garbage_is_dropped(server: Any, junk: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(junk)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    assert b"NetStream" not in data
    await asyncio.sleep(0.05)
    assert server.connection_count == 0
    writer.close()
    await writer.wait_closed()


def test_amf_round_trip() -> None:
    values = ["connect", 1.0, {"app": "live", "n": 2.5, "ok": True, "none": None}, None]
    assert amf.decode_all(amf.encode(*values)) == values


def test_avc_config_and_annex_b() -> None:
    sps, pps = b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80"
    record = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1]) + struct.pack(">H", len(sps)) + sps
    record += bytes([1]) + struct.pack(">H", len(pps)) + pps
    assert parse_avc_config(record) == (100, 4, [sps, pps])
    idr = b"\x65\x88\x84"
    data = struct.pack(">I", len(idr)) + idr
    assert avcc_nals(data, 4) == [idr]
    assert annex_b([sps, idr]) == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + idr
