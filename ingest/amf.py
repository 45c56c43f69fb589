"""AMF0, the encoding of RTMP command and data messages (only what publishers use)."""

from __future__ import annotations

import struct
from typing import Any


class AmfError(ValueError):
    pass


def decode_all(data: bytes) -> list[Any]:
    values: list[Any] = []
    pos = 0
    while pos < len(data):
        value, pos = _decode(data, pos, 0)
        values.append(value)
    return values


def _need(data: bytes, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise AmfError("truncated AMF0 value")


def _string(data: bytes, pos: int, long: bool = False) -> tuple[str, int]:
    width = 4 if long else 2
    _need(data, pos, width)
    (n,) = struct.unpack_from(">I" if long else ">H", data, pos)
    pos += width
    _need(data, pos, n)
    return data[pos : pos + n].decode("utf-8", "replace"), pos + n


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 16:
        raise AmfError("AMF0 nesting too deep")
    _need(data, pos, 1)
    marker = data[pos]
    pos += 1
    if marker == 0x00:
        _need(data, pos, 8)
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:
        _need(data, pos, 1)
        return data[pos] != 0, pos + 1
    if marker == 0x02:
        return _string(data, pos)
    if marker == 0x0C:
        return _string(data, pos, long=True)
    if marker in (0x05, 0x06):
        return None, pos
    if marker in (0x03, 0x08):
        if marker == 0x08:
            _need(data, pos, 4)
            pos += 4  # ECMA array: approximate count, then properties as an object
        obj: dict[str, Any] = {}
        while True:
            key, pos = _string(data, pos)
            _need(data, pos, 1)
            if key == "" and data[pos] == 0x09:
                return obj, pos + 1
            obj[key], pos = _decode(data, pos, depth + 1)
    if marker == 0x0A:
        _need(data, pos, 4)
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == 0x0B:
        _need(data, pos, 10)
        return struct.unpack_from(">d", data, pos)[0], pos + 10
    raise AmfError(f"unsupported AMF0 marker {marker:#x}")


def encode(*values: Any) -> bytes:
    return b"".join(_encode(v) for v in values)


def _encode_key(key: str) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw


def _encode(value: Any) -> bytes:
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + (b"\x01" if value else b"\x00")
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return b"\x0c" + struct.pack(">I", len(raw)) + raw
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(_encode_key(str(k)) + _encode(v) for k, v in value.items())
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")
