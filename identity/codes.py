"""Pure code logic, no I/O: phone numbers, one-time sign-in codes, member codes (TOTP).

A member code is ``PREFIX + device index + TOTP``: the index is random (it says which
device secret to check) and the TOTP comes from that device's secret, so nothing in the
code is derived from the phone number or the member id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

import phonenumbers

from identity.errors import bad_request
from identity.types import DeviceIndex

OTP_DIGITS = 6
TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_DRIFT = 1
PREFIX = "NR"
INDEX_CHARS = 10
DEVICE_SECRET_BYTES = 20  # 160 bits, the RFC 4226 recommendation for HMAC-SHA1
_INDEX_ALPHABET = "0123456789abcdef"
_MEMBER_CODE = re.compile(rf"{PREFIX}([0-9a-f]{{{INDEX_CHARS}}})(\d{{{TOTP_DIGITS}}})")
_OTP = re.compile(rf"\d{{{OTP_DIGITS}}}")


def normalize_phone(raw: object, region: str, fictional: tuple[str, ...] = ()) -> str:
    """``raw`` as E.164, read in ``region`` when it has no country code.

    Numbers ``phonenumbers`` calls valid are accepted; so are possible numbers in the
    ``fictional`` prefixes (Ofcom's drama range in the demo), which it calls invalid.
    """
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 32:
        raise bad_request("phone must be a phone number as text")
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise bad_request("phone is not a phone number") from None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if phonenumbers.is_valid_number(number):
        return e164
    if phonenumbers.is_possible_number(number) and e164.startswith(fictional):
        return e164
    raise bad_request("phone is not a valid phone number")


def new_otp() -> str:
    """A uniformly random 6-digit sign-in code."""
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def hash_otp(key: bytes, phone: str, code: str) -> str:
    """The keyed hash a sign-in code is stored under (bound to its phone)."""
    return hmac.new(key, f"otp:{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def check_otp_shape(code: object) -> str:
    if not isinstance(code, str) or not _OTP.fullmatch(code):
        raise bad_request(f"code must be {OTP_DIGITS} digits")
    return code


def new_device_secret() -> bytes:
    return secrets.token_bytes(DEVICE_SECRET_BYTES)


def new_device_index() -> DeviceIndex:
    return DeviceIndex("".join(secrets.choice(_INDEX_ALPHABET) for _ in range(INDEX_CHARS)))


def totp_step(now: float, step: int = TOTP_STEP) -> int:
    return int(now // step)


def hotp(secret: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 HOTP with HMAC-SHA1 and dynamic truncation."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def totp(secret: bytes, now: float, digits: int = TOTP_DIGITS) -> str:
    """RFC 6238 TOTP: HOTP over the 30-second step count since the epoch."""
    return hotp(secret, totp_step(now), digits)


def member_code(index: DeviceIndex, secret: bytes, now: float) -> str:
    return f"{PREFIX}{index}{totp(secret, now)}"


def step_expires_at(now: float) -> float:
    return float((totp_step(now) + 1) * TOTP_STEP)


@dataclass(frozen=True)
class ParsedCode:
    index: DeviceIndex
    otp: str


def parse_member_code(code: object) -> ParsedCode:
    """Split a member code; anything not shaped like one is a ``bad_request``."""
    if not isinstance(code, str):
        raise bad_request("code must be a member code as text")
    match = _MEMBER_CODE.fullmatch(code.strip())
    if match is None:
        raise bad_request("this is not a member code")
    return ParsedCode(DeviceIndex(match.group(1)), match.group(2))


def matching_step(secret: bytes, otp: str, now: float, drift: int = TOTP_DRIFT) -> int | None:
    """The step within ``drift`` of now whose TOTP is ``otp`` (constant-time compare)."""
    current = totp_step(now)
    found: int | None = None
    for step in range(current - drift, current + drift + 1):
        if hmac.compare_digest(hotp(secret, step), otp):
            found = step
    return found
