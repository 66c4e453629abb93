"""Everything that reads the websockets library's internals: where its parser stands."""

from __future__ import annotations

from typing import Any

from websockets.protocol import State
from websockets.streams import StreamReader

_AT_EOF = StreamReader.at_eof.__code__


def between_frames(conn: Any) -> bool:
    """Whether ``websockets``' parser of an open connection waits for a new frame of a new
    message with nothing buffered: its generator is suspended in ``at_eof``. In any doubt
    (another version's internals, say) the answer is no, and its parser reads as usual."""
    if conn.state is not State.OPEN or conn.reader.buffer or conn.current_size is not None:
        return False
    gen = conn.parser
    while (inner := getattr(gen, "gi_yieldfrom", None)) is not None:
        gen = inner
    return getattr(gen, "gi_code", None) is _AT_EOF
