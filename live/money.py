"""Money as an exact value: an integer amount in the currency's minor units and an ISO 4217
code. Never a float: a float (or a bool) is refused at the boundary, not rounded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypedDict

# ISO 4217 minor-unit exponents that are not 2 (every other code has 2 decimals).
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}
_CODE = re.compile(r"^[A-Z]{3}$")
# Far beyond any price, and within a 64-bit integer and Lua's exact doubles (2**53).
MAX_AMOUNT = 2**53 - 1


class MoneyWire(TypedDict):
    amount: int
    currency: str


def exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (JPY 0, GBP 2, KWD 3)."""
    return _EXPONENTS.get(currency, 2)


def _check_amount(amount: object) -> int:
    # bool is an int subclass: True is not one penny.
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(
            f"amount must be an integer of minor units (pence, cents), "
            f"got {type(amount).__name__} {amount!r}")
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"amount {amount} is out of range (at most {MAX_AMOUNT} in size)")
    return amount


def _check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not _CODE.match(currency):
        raise ValueError(f"currency must be an ISO 4217 code of three capital letters, "
                         f"got {currency!r}")
    return currency


@dataclass(frozen=True, order=False, slots=True)
class Money:
    """An exact amount of one currency.

    Attributes:
        amount: minor units (295 is £2.95 in GBP, ¥295 in JPY); may be negative.
        currency: ISO 4217 code, e.g. ``"GBP"``.

    Adding, subtracting or comparing two currencies raises ``ValueError``; arithmetic with a
    plain number raises ``TypeError`` (Money + 1 is meaningless: 1 what?).
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        _check_amount(self.amount)
        _check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def from_decimal(cls, text: str | Decimal, currency: str) -> Money:
        """A decimal amount in the main unit (``"2.95"``, as a CSV or a v0.1.0 store holds
        it) as Money, quantized once at the currency's exponent, half-up. Only for reading
        decimal text from outside; a float is refused like everywhere else."""
        if not isinstance(text, str | Decimal):
            raise TypeError(f"a decimal amount must be text or a Decimal, "
                            f"got {type(text).__name__} {text!r}")
        try:
            value = Decimal(text.strip() if isinstance(text, str) else text)
        except InvalidOperation as exc:
            raise ValueError(f"{text!r} is not a decimal amount") from exc
        if not value.is_finite():
            raise ValueError(f"{text!r} is not a finite amount")
        exp = exponent(_check_currency(currency))
        minor = (value * (10**exp)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return cls(int(minor), currency)

    def _same(self, other: object, op: str) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot {op} Money and {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"cannot {op} {self.currency} and {other.currency}: "
                             f"mixed currencies")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount + self._same(other, "add").amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount - self._same(other, "subtract").amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def times(self, qty: int) -> Money:
        """This amount ``qty`` times (a quantity of units, an integer)."""
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise TypeError(f"quantity must be an integer, got {type(qty).__name__}")
        return Money(self.amount * qty, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount < self._same(other, "compare").amount

    def __le__(self, other: Money) -> bool:
        return self.amount <= self._same(other, "compare").amount

    def __gt__(self, other: Money) -> bool:
        return self.amount > self._same(other, "compare").amount

    def __ge__(self, other: Money) -> bool:
        return self.amount >= self._same(other, "compare").amount

    def format(self) -> str:
        """Plain decimal text with the code, ``"2.95 GBP"``, ``"295 JPY"`` (pages format
        for the reader with ``Intl.NumberFormat``)."""
        exp = exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        whole, minor = divmod(abs(self.amount), 10**exp)
        digits = f"{whole}.{minor:0{exp}d}" if exp else str(whole)
        return f"{sign}{digits} {self.currency}"

    def __str__(self) -> str:
        return self.format()

    def to_wire(self) -> MoneyWire:
        return {"amount": self.amount, "currency": self.currency}

    @classmethod
    def from_wire(cls, value: Any) -> Money:
        """``{"amount": 295, "currency": "GBP"}`` as Money; a float amount, a missing or
        unknown field raises ``ValueError`` or ``TypeError`` saying what is wrong."""
        if not isinstance(value, dict):
            raise TypeError(f"money must be an object {{amount, currency}}, "
                            f"got {type(value).__name__}")
        extra = set(value) - {"amount", "currency"}
        if extra or "amount" not in value or "currency" not in value:
            raise ValueError("money must have exactly the fields amount and currency")
        return cls(_check_amount(value["amount"]), _check_currency(value["currency"]))
