"""Consent per purpose, with when it was given and when it was withdrawn (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from identity.errors import bad_request
from identity.members import PURPOSES

ConsentMap = dict[str, dict[str, object]]


def parse_consent(body: object) -> dict[str, bool]:
    """``{"personalization": bool, "marketing": bool}`` (either may be absent)."""
    if not isinstance(body, dict):
        raise bad_request("consent must be an object of purpose -> true/false")
    changes: dict[str, bool] = {}
    for purpose, given in body.items():
        if purpose not in PURPOSES:
            raise bad_request(f"unknown purpose {purpose!r}; expected {', '.join(PURPOSES)}")
        if not isinstance(given, bool):
            raise bad_request(f"consent for {purpose} must be true or false")
        changes[purpose] = given
    return changes


def apply_consent(current: Mapping[str, Mapping[str, object]], changes: Mapping[str, bool],
                  now: float) -> ConsentMap:
    """The consent map after ``changes``: ``given`` flips and its time is recorded in
    ``given_at`` or ``withdrawn_at``; a purpose set to what it already was keeps its times."""
    result: ConsentMap = {p: dict(v) for p, v in current.items()}
    for purpose, given in changes.items():
        entry = result.setdefault(purpose, {})
        if purpose in current and bool(entry.get("given")) == given:
            continue
        entry["given"] = given
        entry["at"] = now
        entry["given_at" if given else "withdrawn_at"] = now
    return result
