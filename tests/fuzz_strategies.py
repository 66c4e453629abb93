"""Hypothesis strategies for bad input: JSON-like values with huge numbers, long strings
and nesting, garbage frames, and client ops that are wrong in exactly one way."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from hypothesis import strategies as st

from live.protocol.messages import REACTION_KINDS

KNOWN_OPS = ("chat", "react", "cart.add", "cart.remove", "checkout", "pin", "unpin",
             "flash.start", "flash.stop", "chat.remove", "mute", "end")
HOST_OPS = frozenset({"pin", "unpin", "flash.start", "flash.stop", "chat.remove", "mute",
                      "end"})
MEMBER_OPS = frozenset({"cart.add", "cart.remove", "checkout"})

HUGE = st.one_of(
    st.integers(min_value=2**53, max_value=2**64 - 1),
    st.integers(min_value=-(2**63), max_value=-(2**53)),
    st.sampled_from([1e308, -1e308, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1]),
)
LONG = st.one_of(st.text(min_size=200, max_size=3000),
                 st.integers(281, 20_000).map(lambda n: "é" * n))
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40), HUGE, LONG,
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
NOT_STR = VALUE.filter(lambda v: not isinstance(v, str))
NOT_INT = VALUE.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


BAD_SKU = st.one_of(NOT_STR, st.just(""), st.just(" "), st.just("mug\n"), st.just("../etc"),
                    st.text(min_size=65, max_size=200), st.just("no-such-sku"))
BAD_QTY = st.one_of(NOT_INT, st.integers(-(2**63), 0), st.integers(100_001, 2**64 - 1), HUGE)
BAD_TEXT = st.one_of(NOT_STR, st.just(""), st.just("   "), st.just("\x00\x01\x02"),
                     st.integers(281, 5000).map(lambda n: "x" * n))
BAD_ID = st.one_of(NOT_STR, st.just(""), st.just("  "), st.text(min_size=129, max_size=300))
BAD_KEY = st.one_of(NOT_STR, st.just(""), st.just("has space"), st.just("k\n"),
                    st.text(min_size=65, max_size=100))
BAD_KIND = VALUE.filter(lambda v: not (isinstance(v, str) and v in REACTION_KINDS))
# Anything but Money above zero in GBP: bare numbers (floats above all), Money with a float,
# zero or negative amount, another currency.
BAD_PRICE = st.one_of(NOT_INT, st.integers(), st.floats(), st.just(4.99),
                      st.fixed_dictionaries({"amount": st.floats(), "currency": st.just("GBP")}),
                      st.fixed_dictionaries({"amount": st.integers(max_value=0),
                                             "currency": st.just("GBP")}),
                      st.fixed_dictionaries({"amount": st.integers(1, 100),
                                             "currency": st.sampled_from(["EUR", "gbp", ""])}))
BAD_SECONDS = st.one_of(NOT_INT, st.integers(-(2**63), 9), st.integers(1201, 2**64 - 1))
VALID_FLASH = {"sku": "kite", "price": {"amount": 500, "currency": "GBP"}, "qty": 2, "seconds": 30}


@st.composite
def bad_payload(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """A payload for ``op`` that is wrong in one field (or an extra junk field on top)."""
    extra = draw(st.dictionaries(st.sampled_from(["x", "zz", "__proto__", "constructor"]),
                                 VALUE, max_size=2))
    if op == "chat":
        return {**extra, "text": draw(BAD_TEXT)}
    if op == "react":
        return {**extra, "kind": draw(BAD_KIND)}
    if op == "cart.add":
        if draw(st.booleans()):
            return {**extra, "sku": draw(BAD_SKU), "qty": 1}
        return {**extra, "sku": "mug", "qty": draw(BAD_QTY)}
    if op in ("cart.remove", "pin"):
        return {**extra, "sku": draw(BAD_SKU)}
    if op == "unpin":
        return {**extra, "sku": draw(BAD_SKU)}
    if op == "checkout":
        return {**extra, "idempotency_key": draw(BAD_KEY)}
    if op == "flash.start":
        field = draw(st.sampled_from(["sku", "price", "qty", "seconds", "limit"]))
        bad = {"sku": BAD_SKU, "price": BAD_PRICE, "qty": BAD_QTY, "seconds": BAD_SECONDS,
               "limit": BAD_QTY}[field]
        return {**extra, **VALID_FLASH, field: draw(bad)}
    if op == "flash.stop":
        return extra  # no sale is running: refused, nothing changes
    if op == "chat.remove":
        return {**extra, "id": draw(st.one_of(BAD_ID, st.just("c000000000000")))}
    if op == "mute":
        return {**extra, "member_id": draw(BAD_ID)}
    raise ValueError(f"no bad payload for {op}")


def encode(obj: Any, msgpack_format: bool) -> str | bytes:
    if msgpack_format:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
        return packed
    return orjson.dumps(obj).decode()


GARBAGE_TEXT = st.one_of(
    st.text(max_size=200), st.just("{"), st.just('{"op": "chat", "text": "hi"'),
    st.just("[" * 3000 + "]" * 3000), st.just('{"op": "chat", "n": ' + "9" * 400 + "}"),
    st.just('{"op": "react", "kind": NaN}'), st.just("\ufeff{}"), st.just("null"),
)
GARBAGE_BYTES = st.one_of(
    st.binary(max_size=200), st.just(b"\xc1"), st.just(b"\x91" * 3000 + b"\xc0"),
    st.just(b"\xdf\xff\xff\xff\xff"), st.just(b"\xff\xfe{}"),
    st.just(b'\x81\x01\xa4chat'),  # a map with an integer key
    st.just(b'\x82\xa2op\xa4chat\xa4text\xd4\x01\x00'),  # an ext type where text goes
)


@st.composite
def bad_frame(draw: st.DrawFn, role: str, msgpack_format: bool) -> str | bytes:
    """One frame a ``role`` client must be refused for, encoded for its connection
    (or deliberately not: text on a msgpack one, binary on a JSON one)."""
    kind = draw(st.sampled_from(["garbage", "not_object", "bad_op", "bad_payload",
                                 "wrong_role", "bad_ref", "hello_again"]))
    if kind == "garbage":
        return draw(GARBAGE_BYTES if draw(st.booleans()) else GARBAGE_TEXT)
    obj: Any
    if kind == "not_object":
        obj = draw(VALUE.filter(lambda v: not isinstance(v, dict))
                   | st.integers(100, 250).map(nested))  # deeper: raw garbage above
    elif kind == "bad_op":
        op = draw(st.one_of(NOT_STR, st.just(""), st.text(max_size=30), st.sampled_from(
            ["Chat", "chat ", "pin\x00", "flash", "flash.start.now", "__init__", "ack"])))
        obj = {"op": op, **draw(st.dictionaries(st.text(max_size=6), VALUE, max_size=3))}
        if isinstance(op, str) and op in KNOWN_OPS:
            obj = {"op": op + "?"}
    elif kind == "bad_payload":
        ops = [o for o in KNOWN_OPS if o != "end" and (o in HOST_OPS) == (role == "host")
               and not (role == "host" and o in MEMBER_OPS)]
        op = draw(st.sampled_from(ops))
        obj = {"op": op, **draw(bad_payload(op))}
    elif kind == "wrong_role":
        if role == "host":
            obj = draw(st.sampled_from([{"op": "cart.add", "sku": "mug", "qty": 1},
                                        {"op": "cart.remove", "sku": "mug"},
                                        {"op": "checkout", "idempotency_key": "k1"}]))
        else:
            obj = draw(st.sampled_from([{"op": "pin", "sku": "mug"}, {"op": "end"},
                                        {"op": "mute", "member_id": "m_x"},
                                        {"op": "flash.start", **VALID_FLASH},
                                        {"op": "unpin"}, {"op": "chat.remove", "id": "c1"}]))
    elif kind == "bad_ref":
        small = st.integers(-1000, 1000)
        ref = draw(st.one_of(st.booleans(), st.floats(allow_nan=False), st.lists(small),
                             st.dictionaries(st.text(max_size=3), small, max_size=2),
                             st.text(min_size=65, max_size=100)))
        obj = {"op": "react", "kind": "heart", "ref": ref}
    else:
        obj = {"op": "hello", "token": draw(st.text(max_size=50))}
    if isinstance(obj, dict) and "ref" not in obj and draw(st.booleans()):
        obj["ref"] = draw(st.one_of(st.text(max_size=64), st.integers(-(2**63), 2**64 - 1)))
    if draw(st.integers(0, 9)) == 0:  # the wrong frame type for the connection
        return encode(obj, not msgpack_format)
    return encode(obj, msgpack_format)
