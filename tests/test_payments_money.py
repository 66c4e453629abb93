"""Money: exact integer minor units with a currency; floats refused; no mixed currencies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.money import MAX_AMOUNT, Money

CODES = st.sampled_from(["GBP", "EUR", "USD", "JPY", "KWD"])
AMOUNTS = st.integers(min_value=-(2**40), max_value=2**40)


@given(st.floats(allow_nan=True, allow_infinity=True), CODES)
def test_never_accepts_a_float(value: float, code: str) -> None:
    """A float amount is refused, whole or not, directly or from the wire."""
    with pytest.raises(TypeError):
        Money(value, code)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money.from_wire({"amount": value, "currency": code})


@given(st.booleans(), CODES)
def test_never_accepts_a_bool(value: bool, code: str) -> None:
    """``True`` is not one penny."""
    with pytest.raises(TypeError):
        Money(value, code)


@given(AMOUNTS, AMOUNTS, AMOUNTS, CODES)
def test_arithmetic_is_exact(a: int, b: int, c: int, code: str) -> None:
    """Sums and differences are the integers' own: associative, with an inverse."""
    x, y, z = Money(a, code), Money(b, code), Money(c, code)
    assert (x + y) + z == x + (y + z) == Money(a + b + c, code)
    assert x + y - y == x
    assert (x < y) == (a < b) and (x >= y) == (a >= b)
    assert x.times(3) == x + x + x


@given(AMOUNTS, CODES)
def test_wire_round_trip(a: int, code: str) -> None:
    """``to_wire`` and ``from_wire`` are each other's inverse."""
    m = Money(a, code)
    assert m.to_wire() == {"amount": a, "currency": code}
    assert Money.from_wire(m.to_wire()) == m


@given(AMOUNTS, AMOUNTS)
def test_mixed_currencies_refused(a: int, b: int) -> None:
    """Adding, subtracting or comparing two currencies raises, naming both."""
    gbp, eur = Money(a, "GBP"), Money(b, "EUR")
    for op in (lambda: gbp + eur, lambda: gbp - eur, lambda: gbp < eur):
        with pytest.raises(ValueError, match="GBP and EUR"):
            op()


def test_plain_numbers_and_bad_codes_refused() -> None:
    """Money + 1, lower-case or unknown-shaped codes, extra fields, huge amounts: refused."""
    with pytest.raises(TypeError):
        Money(1, "GBP") + 1  # type: ignore[operator]
    for code in ("gbp", "GB", "GBPX", 826):
        with pytest.raises(ValueError):
            Money(1, code)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money.from_wire({"amount": 1, "currency": "GBP", "rate": 2})
    with pytest.raises(ValueError):
        Money(MAX_AMOUNT + 1, "GBP")


def test_formatting_follows_the_currency_exponent() -> None:
    """GBP has two decimals, JPY none, KWD three."""
    assert Money(295, "GBP").format() == "2.95 GBP"
    assert Money(-5, "GBP").format() == "-0.05 GBP"
    assert Money(295, "JPY").format() == "295 JPY"
    assert Money(1234, "KWD").format() == "1.234 KWD"
