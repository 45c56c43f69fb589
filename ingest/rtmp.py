"""A small RTMP server for publishers (OBS, ffmpeg): handshake, chunk stream, the
``connect`` / ``createStream`` / ``publish`` commands, then FLV audio and video messages.

Each connection is one asyncio task, so one listener serves many publishers at once. The
stream key is handed to ``authorize`` when ``publish`` arrives, before any media is taken:
it returns a :class:`MediaSink` or raises :class:`PublishRefused`, and the publisher is then
told ``NetStream.Publish.BadName`` and disconnected. Keys never reach the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import amf

logger = logging.getLogger(__name__)

HANDSHAKE_SIZE = 1536
OUT_CHUNK_SIZE = 4096
MAX_MESSAGE = 8 * 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
WINDOW = 5_000_000

MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_ACK = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK = 5
MSG_PEER_BW = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA_AMF3 = 15
MSG_COMMAND_AMF3 = 17
MSG_DATA = 18
MSG_COMMAND = 20


class PublishRefused(Exception):
    """``authorize`` refuses a publisher; ``reason`` is logged and must not hold the key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(Exception):
    pass


class MediaSink(Protocol):
    """Where one accepted publisher's media goes. ``on_*`` must not block."""

    def on_video(self, timestamp_ms: int, body: bytes) -> None: ...

    def on_audio(self, timestamp_ms: int, body: bytes) -> None: ...

    async def close(self) -> None: ...

    @property
    def ended(self) -> bool:
        """True once the far side is gone (the call ended): the publisher is disconnected."""
        ...


Authorize = Callable[[str, str, str], Awaitable[MediaSink]]
"""``authorize(app, stream_key, peer)``."""


@dataclass
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class _Connection:
    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.in_chunk_size = 128
        self.streams: dict[int, _ChunkStream] = {}
        self.app = ""
        self.sink: MediaSink | None = None
        self.publish_stream_id = 0
        self.received = 0
        self.acked = 0
        self.peer_window = 0
        self.closing = False

    # -- reading --------------------------------------------------------------------------

    async def read(self, n: int, timeout: float) -> bytes:
        data = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        self.received += n
        return data

    async def handshake(self) -> None:
        c0 = await self.read(1, HANDSHAKE_TIMEOUT)
        if c0[0] != 3:  # also turns away HTTP, TLS and other strays at once
            raise ProtocolError(f"not RTMP (first byte {c0[0]:#04x})")
        c0c1 = c0 + await self.read(HANDSHAKE_SIZE, HANDSHAKE_TIMEOUT)
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(
            HANDSHAKE_SIZE - 8
        )
        self.writer.write(b"\x03" + s1 + c0c1[1:])
        await self.writer.drain()
        await self.read(HANDSHAKE_SIZE, HANDSHAKE_TIMEOUT)

    async def read_message(self, timeout: float) -> tuple[_ChunkStream, bytes]:
        """Read chunks until one message is complete."""
        while True:
            first = (await self.read(1, timeout))[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + (await self.read(1, timeout))[0]
            elif csid == 1:
                b = await self.read(2, timeout)
                csid = 64 + b[0] + b[1] * 256
            cs = self.streams.get(csid)
            if cs is None:
                if fmt != 0:
                    raise ProtocolError("chunk stream starts without a full header")
                cs = self.streams[csid] = _ChunkStream()
            starting = not cs.buffer
            if fmt == 0:
                h = await self.read(11, timeout)
                ts = int.from_bytes(h[0:3], "big")
                cs.length = int.from_bytes(h[3:6], "big")
                cs.type_id = h[6]
                cs.stream_id = struct.unpack_from("<I", h, 7)[0]
                cs.extended = ts == 0xFFFFFF
                if cs.extended:
                    ts = struct.unpack(">I", await self.read(4, timeout))[0]
                cs.timestamp = ts
                cs.delta = 0
            elif fmt in (1, 2):
                h = await self.read(7 if fmt == 1 else 3, timeout)
                delta = int.from_bytes(h[0:3], "big")
                if fmt == 1:
                    cs.length = int.from_bytes(h[3:6], "big")
                    cs.type_id = h[6]
                cs.extended = delta == 0xFFFFFF
                if cs.extended:
                    delta = struct.unpack(">I", await self.read(4, timeout))[0]
                cs.delta = delta
                cs.timestamp = (cs.timestamp + delta) & 0xFFFFFFFF
            else:
                if cs.extended:
                    await self.read(4, timeout)
                if starting:
                    cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
            if cs.length > MAX_MESSAGE:
                raise ProtocolError(f"message of {cs.length} bytes")
            if fmt in (0, 1, 2) and not starting:
                cs.buffer.clear()  # a new header in the middle of a message: start over
            n = min(self.in_chunk_size, cs.length - len(cs.buffer))
            if n > 0:
                cs.buffer += await self.read(n, timeout)
            await self.maybe_ack()
            if len(cs.buffer) >= cs.length:
                body = bytes(cs.buffer)
                cs.buffer.clear()
                return cs, body

    async def maybe_ack(self) -> None:
        if self.peer_window and self.received - self.acked >= self.peer_window:
            self.acked = self.received
            await self.send(2, MSG_ACK, struct.pack(">I", self.received & 0xFFFFFFFF))

    # -- writing --------------------------------------------------------------------------

    async def send(
        self, csid: int, type_id: int, body: bytes, stream_id: int = 0, timestamp: int = 0
    ) -> None:
        header = (
            bytes([csid & 0x3F])
            + min(timestamp, 0xFFFFFF).to_bytes(3, "big")
            + len(body).to_bytes(3, "big")
            + bytes([type_id])
            + struct.pack("<I", stream_id)
        )
        out = bytearray(header)
        for pos in range(0, max(len(body), 1), OUT_CHUNK_SIZE):
            if pos:
                out.append(0xC0 | (csid & 0x3F))
            out += body[pos : pos + OUT_CHUNK_SIZE]
        self.writer.write(bytes(out))
        await self.writer.drain()

    async def command(self, *values: Any, stream_id: int = 0) -> None:
        await self.send(3 if stream_id == 0 else 5, MSG_COMMAND, amf.encode(*values), stream_id)

    async def on_status(self, level: str, code: str, description: str) -> None:
        await self.command(
            "onStatus",
            0,
            None,
            {"level": level, "code": code, "description": description},
            stream_id=self.publish_stream_id or 1,
        )

    # -- the session ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.handshake()
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        while True:
            if self.sink is None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise ProtocolError("no publish in time")
            else:
                timeout = IDLE_TIMEOUT
            cs, body = await self.read_message(timeout)
            await self.handle(cs, body)
            if self.closing:
                return
            if self.sink is not None and self.sink.ended:
                logger.info("rtmp: %s: the call's session is gone; disconnecting", self.peer)
                return

    async def handle(self, cs: _ChunkStream, body: bytes) -> None:
        t = cs.type_id
        if t == MSG_SET_CHUNK_SIZE:
            if len(body) < 4:
                raise ProtocolError("short set chunk size")
            size = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF
            if not 1 <= size <= MAX_MESSAGE:
                raise ProtocolError(f"chunk size {size}")
            self.in_chunk_size = size
        elif t == MSG_WINDOW_ACK:
            if len(body) >= 4:
                self.peer_window = struct.unpack(">I", body[:4])[0]
        elif t == MSG_ABORT and len(body) >= 4:
            stream = self.streams.get(struct.unpack(">I", body[:4])[0])
            if stream is not None:
                stream.buffer.clear()
        elif t in (MSG_VIDEO, MSG_AUDIO):
            if self.sink is not None and body:
                if t == MSG_VIDEO:
                    self.sink.on_video(cs.timestamp, body)
                else:
                    self.sink.on_audio(cs.timestamp, body)
        elif t in (MSG_COMMAND, MSG_COMMAND_AMF3):
            payload = body[1:] if t == MSG_COMMAND_AMF3 and body[:1] == b"\x00" else body
            await self.handle_command(amf.decode_all(payload), cs.stream_id)
        # Data messages (@setDataFrame onMetaData), acks, user control: nothing to do.

    async def handle_command(self, values: list[Any], stream_id: int) -> None:
        if not values or not isinstance(values[0], str):
            raise ProtocolError("command without a name")
        name = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0
        if name == "connect":
            params = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app = str(params.get("app", "")).strip("/")
            await self.send(2, MSG_WINDOW_ACK, struct.pack(">I", WINDOW))
            await self.send(2, MSG_PEER_BW, struct.pack(">IB", WINDOW, 2))
            await self.send(2, MSG_SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE))
            if self.app not in self.server.apps:
                await self.command(
                    "_error",
                    txid,
                    None,
                    {
                        "level": "error",
                        "code": "NetConnection.Connect.Rejected",
                        "description": "Unknown application.",
                    },
                )
                raise PublishRefused("unknown application")
            await self.command(
                "_result",
                txid,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            )
        elif name == "createStream":
            await self.command("_result", txid, None, 1.0)
        elif name == "publish":
            if self.sink is not None:
                raise ProtocolError("second publish on one connection")
            key = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
            key = key.split("?", 1)[0]
            self.publish_stream_id = stream_id or 1
            try:
                self.sink = await self.server.authorize(self.app, key, self.peer)
            except PublishRefused:
                await self.on_status("error", "NetStream.Publish.BadName", "Publish refused.")
                raise
            # User control "Stream Begin", then the go-ahead.
            await self.send(2, MSG_USER_CONTROL, struct.pack(">HI", 0, self.publish_stream_id))
            await self.on_status("status", "NetStream.Publish.Start", "Publishing.")
        elif name in ("FCUnpublish", "deleteStream", "closeStream") and self.sink is not None:
            self.closing = True
        # releaseStream, FCPublish, _checkbw, getStreamLength...: ignored, as servers do.

    async def linger(self) -> None:
        """After a refusal: send FIN after the answer and read what the client still sends
        (briefly), so that closing does not reset the connection and lose the answer."""
        with contextlib.suppress(Exception):
            self.writer.write_eof()
            async with asyncio.timeout(1):
                while await self.reader.read(65536):
                    pass

    async def close(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                await sink.close()
            except Exception:
                logger.exception("rtmp: closing the publisher's session failed")
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class RtmpServer:
    """``RtmpServer(authorize, host, port)``; ``await start()``, ``await stop()``."""

    def __init__(
        self,
        authorize: Authorize,
        host: str = "0.0.0.0",
        port: int = 1935,
        *,
        apps: tuple[str, ...] = ("live",),
    ) -> None:
        self.authorize = authorize
        self.host = host
        self.requested_port = port
        self.apps = apps
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.requested_port, reuse_address=True
        )
        logger.info("rtmp: listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = _Connection(self, reader, writer)
        try:
            await conn.run()
            logger.info("rtmp: %s stopped publishing", conn.peer)
        except PublishRefused as exc:
            logger.warning("rtmp: %s refused: %s", conn.peer, exc.reason)
            await conn.linger()
        except (asyncio.IncompleteReadError, ConnectionError):
            logger.info("rtmp: %s disconnected", conn.peer)
        except TimeoutError:
            logger.info("rtmp: %s timed out", conn.peer)
        except (ProtocolError, amf.AmfError) as exc:
            logger.warning("rtmp: %s protocol error: %s", conn.peer, exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("rtmp: %s failed", conn.peer)
        finally:
            await conn.close()
            self._connections.discard(task)
