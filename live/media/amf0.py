"""AMF0, the value encoding of RTMP commands (``connect``, ``publish``, ``onStatus``) and of
``onMetaData``: as much of it as a publisher sends and our answers need."""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED = 0, 1, 2, 3, 5, 6
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = 8, 9, 10, 11, 12


class AmfError(ValueError):
    """Bytes that are not the AMF0 we read."""


def _string(data: bytes, pos: int, long: bool = False) -> tuple[str, int]:
    width = 4 if long else 2
    if pos + width > len(data):
        raise AmfError("truncated string length")
    n = int.from_bytes(data[pos:pos + width], "big")
    pos += width
    if pos + n > len(data):
        raise AmfError("truncated string")
    return data[pos:pos + n].decode("utf-8", "replace"), pos + n


def _properties(data: bytes, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while True:
        key, pos = _string(data, pos)
        if not key and pos < len(data) and data[pos] == OBJECT_END:
            return out, pos + 1
        value, pos = decode_one(data, pos, depth + 1)
        out[key] = value


def decode_one(data: bytes, pos: int = 0, depth: int = 0) -> tuple[Any, int]:
    """One value at ``pos``; returns it and the position after it."""
    if depth > 32:
        raise AmfError("values nested too deep")
    if pos >= len(data):
        raise AmfError("no value")
    marker = data[pos]
    pos += 1
    if marker == NUMBER:
        if pos + 8 > len(data):
            raise AmfError("truncated number")
        return struct.unpack(">d", data[pos:pos + 8])[0], pos + 8
    if marker == BOOLEAN:
        if pos >= len(data):
            raise AmfError("truncated boolean")
        return data[pos] != 0, pos + 1
    if marker == STRING:
        return _string(data, pos)
    if marker == LONG_STRING:
        return _string(data, pos, long=True)
    if marker in (NULL, UNDEFINED):
        return None, pos
    if marker == OBJECT:
        return _properties(data, pos, depth)
    if marker == ECMA_ARRAY:
        return _properties(data, pos + 4, depth)
    if marker == STRICT_ARRAY:
        n = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        items = []
        for _ in range(n):
            item, pos = decode_one(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == DATE:
        if pos + 10 > len(data):
            raise AmfError("truncated date")
        return struct.unpack(">d", data[pos:pos + 8])[0], pos + 10
    raise AmfError(f"AMF0 marker {marker} is not read here")


def decode_all(data: bytes) -> list[Any]:
    """Every value in ``data``, in order."""
    values, pos = [], 0
    while pos < len(data):
        value, pos = decode_one(data, pos)
        values.append(value)
    return values


def encode(*values: Any) -> bytes:
    """Numbers, booleans, strings, ``None`` (null) and dicts (objects)."""
    out = bytearray()
    for value in values:
        if value is None:
            out.append(NULL)
        elif isinstance(value, bool):
            out += bytes((BOOLEAN, int(value)))
        elif isinstance(value, int | float):
            out.append(NUMBER)
            out += struct.pack(">d", float(value))
        elif isinstance(value, str):
            raw = value.encode()
            out.append(STRING)
            out += len(raw).to_bytes(2, "big") + raw
        elif isinstance(value, dict):
            out.append(OBJECT)
            for key, item in value.items():
                raw = str(key).encode()
                out += len(raw).to_bytes(2, "big") + raw + encode(item)
            out += b"\x00\x00" + bytes((OBJECT_END,))
        else:
            raise TypeError(f"cannot encode {type(value).__name__} as AMF0")
    return bytes(out)
