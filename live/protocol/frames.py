"""WebSocket frames of the live protocol, without I/O: formats, encoding, framing, decoding."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import Any

import msgpack
import orjson

from live.errors import LiveError

SUBPROTOCOL_JSON = "newretail.json"


SUBPROTOCOL_MSGPACK = "newretail.msgpack"


class Format(enum.Enum):
    """How frames are encoded on one connection."""

    JSON = "json"
    MSGPACK = "msgpack"


def choose_format(offered: Iterable[str]) -> tuple[Format, str | None]:
    """The format for a connection from the subprotocols it offered, and the one to accept."""
    offered = list(offered)
    if SUBPROTOCOL_MSGPACK in offered:
        return Format.MSGPACK, SUBPROTOCOL_MSGPACK
    if SUBPROTOCOL_JSON in offered:
        return Format.JSON, SUBPROTOCOL_JSON
    return Format.JSON, None


def encode(message: Any, fmt: Format) -> bytes:
    if fmt is Format.JSON:
        return orjson.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


OPCODE_TEXT = 0x1


OPCODE_BINARY = 0x2


def frame(payload: bytes, fmt: Format) -> bytes:
    """A complete unmasked server frame (FIN set) carrying ``payload``: text for JSON,
    binary for msgpack. Built once per event and written to every connection as is."""
    first = 0x80 | (OPCODE_TEXT if fmt is Format.JSON else OPCODE_BINARY)
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def frame_payloads(data: bytes) -> list[bytes]:
    """The payloads of the complete frames built by ``frame`` and joined in ``data``."""
    payloads = []
    at = 0
    while at < len(data):
        n = data[at + 1] & 0x7F
        head = 2 if n < 126 else (4 if n == 126 else 10)
        if head > 2:
            n = int.from_bytes(data[at + 2:at + head], "big")
        at += head
        payloads.append(data[at:at + n])
        at += n
    return payloads


def decode_frame(data: str | bytes, fmt: Format) -> dict[str, Any]:
    """A client frame as an object, or ``bad_frame``."""
    try:
        if fmt is Format.MSGPACK and isinstance(data, bytes):
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = orjson.loads(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise LiveError("bad_frame", "the frame is not valid " + fmt.value) from None
    if not isinstance(obj, dict):
        raise LiveError("bad_frame", "a frame must be an object with an op")
    return obj
