"""The publishing side of RTMP as a sans-I/O server: bytes in, events out, no awaits.

A publisher (OBS, a phone app, ffmpeg) connects, shakes hands, sends ``connect``,
``createStream`` and ``publish <key>``, then audio and video messages. This reads the
chunk stream far enough to answer those commands and to turn every audio, video and
metadata message into an FLV tag: FLV is what ffmpeg reads on its standard input to write
HLS. Whether a key may publish is decided outside (the datastore): ``PublishRequested`` is
answered with ``accept`` or ``refuse``.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass, field

from live.media import amf0

HANDSHAKE_SIZE = 1536
SERVER_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 1 << 24
MAX_MESSAGE = 8 << 20          # no audio or video frame we accept is larger
MAX_CHUNK_STREAMS = 64
STREAM_ID = 1                  # the one message stream a publisher gets

# Message types
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK, PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 8, 9, 15, 17, 18, 20

FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


class RtmpError(ValueError):
    """The peer broke the protocol; the connection is closed."""


class State(enum.Enum):
    HANDSHAKE = "handshake"      # waiting for C0 + C1
    ACKNOWLEDGE = "acknowledge"  # waiting for C2
    COMMANDS = "commands"        # connect, createStream, publish
    DECIDING = "deciding"        # publish asked; the caller decides
    PUBLISHING = "publishing"
    CLOSED = "closed"


@dataclass(frozen=True)
class PublishRequested:
    """The publisher asks to publish under ``key`` to application ``app``."""

    app: str
    key: str


@dataclass(frozen=True)
class MediaTag:
    """One FLV tag (header, body, previous-tag-size) for ffmpeg; ``payload`` bytes of it
    are audio or video, for the bitrate."""

    flv: bytes
    payload: int


@dataclass(frozen=True)
class Unpublished:
    """The publisher said it stops (``FCUnpublish`` / ``deleteStream``)."""


Event = PublishRequested | MediaTag | Unpublished


@dataclass
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    body: bytearray = field(default_factory=bytearray)


def flv_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    """An FLV tag followed by its previous-tag-size."""
    ts = timestamp & 0xFFFFFFFF
    head = (bytes((type_id,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes((ts >> 24,)) + b"\x00\x00\x00")
    return head + body + (11 + len(body)).to_bytes(4, "big")


def chunk(csid: int, type_id: int, body: bytes, stream_id: int = 0,
          chunk_size: int = SERVER_CHUNK_SIZE, timestamp: int = 0) -> bytes:
    """One message as chunks: a type-0 header, then type-3 continuations."""
    out = bytearray(bytes((csid & 0x3F,)) + min(timestamp, 0xFFFFFF).to_bytes(3, "big")
                    + len(body).to_bytes(3, "big") + bytes((type_id,))
                    + stream_id.to_bytes(4, "little"))
    for start in range(0, max(len(body), 1), chunk_size):
        if start:
            out.append(0xC0 | (csid & 0x3F))
        out += body[start:start + chunk_size]
    return bytes(out)


def command(name: str, txid: float, *args: object, stream_id: int = 0) -> bytes:
    """An AMF0 command message on chunk stream 3 (connection) or 5 (stream)."""
    return chunk(5 if stream_id else 3, COMMAND_AMF0, amf0.encode(name, txid, *args),
                 stream_id=stream_id)


def status(level: str, code: str, description: str) -> bytes:
    return command("onStatus", 0, None,
                   {"level": level, "code": code, "description": description},
                   stream_id=STREAM_ID)


class RtmpServer:
    """One publisher's connection. ``receive(data)`` returns what happened;
    ``outgoing()`` returns the bytes to send back."""

    def __init__(self) -> None:
        self.state = State.HANDSHAKE
        self.app = ""
        self.key = ""
        self._in = bytearray()
        self._out = bytearray()
        self._chunk_size = 128
        self._streams: dict[int, _ChunkStream] = {}
        self._header_sent = False

    def outgoing(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._in += data
        events: list[Event] = []
        while True:
            if self.state is State.HANDSHAKE:
                if len(self._in) < 1 + HANDSHAKE_SIZE:
                    return events
                if self._in[0] != 3:
                    raise RtmpError(f"expected RTMP version 3, got {self._in[0]}")
                c1 = bytes(self._in[1:1 + HANDSHAKE_SIZE])
                del self._in[:1 + HANDSHAKE_SIZE]
                # S1: time, four zero bytes (a "simple" handshake), random; S2 echoes C1.
                self._out += b"\x03" + b"\x00" * 8 + os.urandom(HANDSHAKE_SIZE - 8) + c1
                self.state = State.ACKNOWLEDGE
            elif self.state is State.ACKNOWLEDGE:
                if len(self._in) < HANDSHAKE_SIZE:
                    return events
                del self._in[:HANDSHAKE_SIZE]
                self.state = State.COMMANDS
            else:
                message = self._next_message()
                if message is None:
                    return events
                events.extend(self._on_message(*message))
                if self.state is State.CLOSED:
                    return events

    # Chunks ---------------------------------------------------------------------------

    def _next_message(self) -> tuple[int, int, bytes] | None:
        """Reads chunks until one message is whole: (type, timestamp, body), or None when
        more bytes are needed (nothing is consumed from a partial chunk)."""
        while True:
            buf = self._in
            if not buf:
                return None
            pos = 1
            fmt, csid = buf[0] >> 6, buf[0] & 0x3F
            if csid == 0:
                if len(buf) < 2:
                    return None
                csid, pos = 64 + buf[1], 2
            elif csid == 1:
                if len(buf) < 3:
                    return None
                csid, pos = 64 + buf[1] + buf[2] * 256, 3
            size = (11, 7, 3, 0)[fmt]
            if len(buf) < pos + size:
                return None
            cs = self._streams.get(csid)
            if cs is None:
                # ffmpeg opens a chunk stream with a type-1 header when its message
                # stream is 0; only a type-3 chunk has nothing to start from.
                if fmt == 3:
                    raise RtmpError(f"chunk stream {csid} starts without a header")
                if len(self._streams) >= MAX_CHUNK_STREAMS:
                    raise RtmpError("too many chunk streams")
                cs = _ChunkStream()
            head = buf[pos:pos + size]
            pos += size
            ts_field = int.from_bytes(head[0:3], "big") if fmt < 3 else (
                0xFFFFFF if cs.extended else cs.delta)
            extended = ts_field == 0xFFFFFF if fmt < 3 else cs.extended
            if extended:
                if len(buf) < pos + 4:
                    return None
                ts_field = int.from_bytes(buf[pos:pos + 4], "big")
                pos += 4
            starting = not cs.body
            length = int.from_bytes(head[3:6], "big") if fmt < 2 else cs.length
            if fmt < 2 and length > MAX_MESSAGE:
                raise RtmpError(f"a message of {length} bytes is too large")
            remaining = length - len(cs.body)
            if not starting and fmt != 3:
                raise RtmpError(f"chunk stream {csid}: new header inside a message")
            take = min(self._chunk_size, remaining)
            if len(buf) < pos + take:
                return None
            # The whole chunk is here: commit its header.
            if fmt == 0:
                cs.timestamp, cs.delta = ts_field, ts_field
                cs.stream_id = int.from_bytes(head[7:11], "little")
            elif starting:
                if fmt < 3:
                    cs.delta = ts_field
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
            if fmt < 2:
                cs.length, cs.type_id = length, head[6]
            cs.extended = extended
            self._streams[csid] = cs
            cs.body += buf[pos:pos + take]
            del buf[:pos + take]
            if len(cs.body) >= cs.length:
                body = bytes(cs.body)
                cs.body.clear()
                return cs.type_id, cs.timestamp, body

    # Messages -------------------------------------------------------------------------

    def _on_message(self, type_id: int, timestamp: int, body: bytes) -> list[Event]:
        if type_id == SET_CHUNK_SIZE:
            if len(body) < 4:
                raise RtmpError("short set-chunk-size")
            size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= MAX_CHUNK_SIZE:
                raise RtmpError(f"chunk size {size} out of range")
            self._chunk_size = size
            return []
        if type_id in (COMMAND_AMF0, COMMAND_AMF3):
            return self._on_command(body[1:] if type_id == COMMAND_AMF3 else body)
        if type_id in (AUDIO, VIDEO, DATA_AMF0, DATA_AMF3):
            if self.state is not State.PUBLISHING:
                return []
            return self._on_media(type_id, timestamp, body)
        return []   # acks, window sizes, user control: nothing to do for a publisher

    def _on_media(self, type_id: int, timestamp: int, body: bytes) -> list[Event]:
        payload = len(body)
        if type_id in (DATA_AMF0, DATA_AMF3):
            if type_id == DATA_AMF3:
                body = body[1:]
            try:
                values = amf0.decode_all(body)
            except amf0.AmfError:
                return []
            if values and values[0] == "@setDataFrame":
                body = body[len(amf0.encode("@setDataFrame")):]
                values = values[1:]
            if not values or values[0] != "onMetaData":
                return []
            type_id, payload = DATA_AMF0, 0
        prefix = b""
        if not self._header_sent:
            prefix, self._header_sent = FLV_HEADER, True
        return [MediaTag(prefix + flv_tag(type_id, timestamp, body), payload)]

    def _on_command(self, body: bytes) -> list[Event]:
        try:
            values = amf0.decode_all(body)
        except amf0.AmfError as exc:
            raise RtmpError(f"unreadable command: {exc}") from exc
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpError("a command without a name")
        name, txid, args = values[0], values[1], values[2:]
        txid = txid if isinstance(txid, float) else 0.0
        if name == "connect":
            props = args[0] if args and isinstance(args[0], dict) else {}
            self.app = str(props.get("app", "")).strip("/")
            self._out += chunk(2, WINDOW_ACK, (2_500_000).to_bytes(4, "big"))
            self._out += chunk(2, PEER_BANDWIDTH, (2_500_000).to_bytes(4, "big") + b"\x02")
            self._out += chunk(2, SET_CHUNK_SIZE, SERVER_CHUNK_SIZE.to_bytes(4, "big"))
            self._out += command("_result", txid,
                                 {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                                 {"level": "status", "code": "NetConnection.Connect.Success",
                                  "description": "Connection succeeded.",
                                  "objectEncoding": 0})
            return []
        if name == "createStream":
            self._out += command("_result", txid, None, STREAM_ID)
            return []
        if name in ("releaseStream", "FCPublish"):
            self._out += command("_result", txid, None)
            return []
        if name == "publish":
            if self.state is not State.COMMANDS:
                raise RtmpError(f"publish while {self.state.value}")
            raw = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            self.key = raw.split("?", 1)[0]
            self.state = State.DECIDING
            return [PublishRequested(self.app, self.key)]
        if name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.state is State.PUBLISHING:
                self.state = State.CLOSED
                return [Unpublished()]
        return []

    # Decisions ------------------------------------------------------------------------

    def accept(self) -> None:
        """Let the publisher go on: media messages follow."""
        if self.state is not State.DECIDING:
            raise RtmpError(f"accept while {self.state.value}, expected deciding")
        self._out += chunk(2, USER_CONTROL, struct.pack(">HI", 0, STREAM_ID))  # stream begin
        self._out += status("status", "NetStream.Publish.Start", f"{self.key} is now published.")
        self.state = State.PUBLISHING

    def refuse(self, code: str, description: str) -> None:
        """Answer the publish with an error; the caller closes the connection after
        sending ``outgoing()``."""
        self._out += status("error", code, description)
        self.state = State.CLOSED
