"""What one room still owes its live connections: the session events not yet written to
every one of them, and the bytes that bring a connection up to date in one write (sans-I/O).

The hub's writer for a room brings each connection up to the newest event in one write.
Events that arrive before it runs (a burst read from the datastore in one go, a catch-up after
an outage) or, when it pauses between chunks of connections, while it runs (a pin right
after an unpin) go out together: one ``send`` carries several frames, so a burst costs the
server and every viewer a system call per connection, not one per event.
"""

from __future__ import annotations

from collections.abc import Callable

from live.protocol.frames import Format


class Outbox:
    """Session events of one room, in seq order with no gap, from the oldest that some live
    connection may still lack.

    Args:
        to_msgpack: the msgpack frame for an event's JSON payload (made once per event,
            and only when a msgpack connection needs it).
    """

    __slots__ = ("_seqs", "_payloads", "_frames", "_packed", "_to_msgpack", "_joined")

    def __init__(self, to_msgpack: Callable[[bytes], bytes]) -> None:
        self._seqs: list[int] = []
        self._payloads: list[bytes] = []
        self._frames: list[bytes] = []
        self._packed: dict[int, bytes] = {}
        self._to_msgpack = to_msgpack
        # (after seq, format) -> the joined frames up to ``top`` when made.
        self._joined: dict[tuple[int, Format], tuple[int, bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def top(self) -> int:
        """The seq of the newest event held (-1 when empty)."""
        return self._seqs[-1] if self._seqs else -1

    def add(self, seq: int, payload: bytes, json_frame: bytes) -> None:
        """Hold event ``seq``, the one after the newest held."""
        if self._seqs and seq != self._seqs[-1] + 1:
            raise ValueError(f"event {seq} does not follow {self._seqs[-1]}")
        self._seqs.append(seq)
        self._payloads.append(payload)
        self._frames.append(json_frame)

    def after(self, sent: int, fmt: Format) -> tuple[bytes, int]:
        """The frames of every event held after ``sent``, joined, and how many they are.
        The same bytes are returned to every connection at the same point until a newer
        event arrives."""
        top = self.top
        if sent >= top:
            return b"", 0
        cached = self._joined.get((sent, fmt))
        if cached is not None and cached[0] == top:
            return cached[1], cached[2]
        first = self._seqs[0]
        if sent < first - 1:
            raise ValueError(f"events after {sent} are no longer held (oldest {first})")
        start = sent - first + 1
        if fmt is Format.JSON:
            frames = self._frames[start:]
        else:
            frames = [self._msgpack_frame(i) for i in range(start, len(self._seqs))]
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self._joined[(sent, fmt)] = (top, data, len(frames))
        return data, len(frames)

    def _msgpack_frame(self, i: int) -> bytes:
        seq = self._seqs[i]
        packed = self._packed.get(seq)
        if packed is None:
            packed = self._packed[seq] = self._to_msgpack(self._payloads[i])
        return packed

    def trim(self, upto: int) -> None:
        """Forget events up to ``upto``: every live connection has them."""
        if not self._seqs or upto < self._seqs[0]:
            return
        if upto >= self._seqs[-1]:
            self.clear()
            return
        cut = upto - self._seqs[0] + 1
        for seq in self._seqs[:cut]:
            self._packed.pop(seq, None)
        del self._seqs[:cut], self._payloads[:cut], self._frames[:cut]
        self._joined = {k: v for k, v in self._joined.items() if k[0] >= upto}

    def clear(self) -> None:
        self._seqs.clear()
        self._payloads.clear()
        self._frames.clear()
        self._packed.clear()
        self._joined.clear()
