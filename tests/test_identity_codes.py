"""Pure identity logic: phone numbers, TOTP (RFC 6238 vectors), member codes, consent,
junk identifiers. No store, no event loop."""

from __future__ import annotations

import pytest

from identity.codes import (
    DEVICE_SECRET_BYTES,
    PREFIX,
    hash_otp,
    hotp,
    matching_step,
    member_code,
    new_device_index,
    new_device_secret,
    new_otp,
    normalize_phone,
    parse_member_code,
    step_expires_at,
    totp,
)
from identity.consent import apply_consent, parse_consent
from identity.errors import IdentityError
from identity.members import is_junk, tier_for

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize(("now", "expected"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_totp_matches_rfc6238_sha1_vectors(now: int, expected: str) -> None:
    """Our TOTP gives the RFC 6238 appendix B values (SHA-1, 8 digits)."""
    assert totp(RFC_SECRET, now, digits=8) == expected


def test_hotp_matches_rfc4226_vectors() -> None:
    """HOTP gives the RFC 4226 appendix D values for counters 0..3."""
    assert [hotp(RFC_SECRET, c) for c in range(4)] == ["755224", "287082", "359152", "969429"]


def test_drift_of_one_step_either_way_and_no_more() -> None:
    """A code of the previous or next 30 s step is accepted, two steps away is not."""
    now = 1_700_000_015.0
    for offset in (-30, 0, 30):
        code = totp(RFC_SECRET, now + offset)
        assert matching_step(RFC_SECRET, code, now) == int((now + offset) // 30)
    for offset in (-60, 60, 3600):
        assert matching_step(RFC_SECRET, totp(RFC_SECRET, now + offset), now) is None


def test_member_code_shape_and_secret_size() -> None:
    """The code is prefix + random index + 6-digit TOTP; secrets have >= 160 bits."""
    secret = new_device_secret()
    assert len(secret) * 8 >= 160 and DEVICE_SECRET_BYTES * 8 >= 160
    index = new_device_index()
    code = member_code(index, secret, 1_700_000_000.0)
    parsed = parse_member_code(code)
    assert code.startswith(PREFIX) and parsed.index == index
    assert parsed.otp == totp(secret, 1_700_000_000.0)
    assert step_expires_at(1_700_000_001.0) == 1_700_000_010.0
    assert len({new_device_index() for _ in range(200)}) == 200


@pytest.mark.parametrize("bad", ["", "NR123", "XX0123456789123456", 42, None, "NR0123456789abc"])
def test_malformed_member_codes_are_bad_requests(bad: object) -> None:
    """Anything not shaped like a member code is a 400, not a lookup."""
    with pytest.raises(IdentityError) as err:
        parse_member_code(bad)
    assert err.value.status == 400


def test_phone_normalisation() -> None:
    """National and international spellings give one E.164 number; junk is refused."""
    assert normalize_phone("020 7946 0000", "GB") == "+442079460000"
    assert normalize_phone("+44 20 7946 0000", "US") == "+442079460000"
    assert normalize_phone("(202) 456-1111", "US") == "+12024561111"
    assert normalize_phone("07700 900123", "GB", ("+447700900",)) == "+447700900123"
    for bad in ["07700 900123", "hello", "", "12", None, "+1" + "9" * 40]:
        with pytest.raises(IdentityError):
            normalize_phone(bad, "GB")


def test_otp_codes_and_hashes() -> None:
    """Codes are 6 digits; the stored hash depends on key, phone and code."""
    codes = {new_otp() for _ in range(50)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 40
    h = hash_otp(b"k" * 32, "+442079460000", "123456")
    assert h != hash_otp(b"j" * 32, "+442079460000", "123456")
    assert h != hash_otp(b"k" * 32, "+442079460001", "123456")
    assert "123456" not in h


def test_consent_records_when_given_and_withdrawn() -> None:
    """Giving and withdrawing record their times; repeating a choice keeps the old time."""
    c1 = apply_consent({}, {"marketing": True}, 100.0)
    assert c1["marketing"] == {"given": True, "at": 100.0, "given_at": 100.0}
    c2 = apply_consent(c1, {"marketing": False}, 200.0)
    assert c2["marketing"]["given"] is False and c2["marketing"]["withdrawn_at"] == 200.0
    assert c2["marketing"]["given_at"] == 100.0
    assert apply_consent(c2, {"marketing": False}, 300.0) == c2
    with pytest.raises(IdentityError):
        parse_consent({"selling_data": True})
    with pytest.raises(IdentityError):
        parse_consent({"marketing": "yes"})


def test_junk_values_and_tiers() -> None:
    """Placeholders are junk; real values are not; tiers follow spend."""
    for junk in ["0", "-1", "null", "NULL", "anonymous", "0000000", "", "  ", "undefined"]:
        assert is_junk(junk), junk
    for real in ["+447700900001", "4111-xxxx-1111", "DEMO00001", "a_1f2e"]:
        assert not is_junk(real), real
    assert [tier_for(s) for s in (0, 499.99, 500, 1999, 2000)] == [
        "member", "member", "silver", "silver", "gold"]
