"""The one error type of the identity package; the app maps it to the wire."""

from __future__ import annotations


class IdentityError(Exception):
    """A refused identity request.

    Args:
        code: the wire code (``unauthorized``, ``forbidden``, ``bad_request`` ...).
        message: what went wrong, for a person.
        status: the HTTP status that goes with it.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def unauthorized(message: str = "a valid bearer token is required") -> IdentityError:
    return IdentityError("unauthorized", message, 401)


def forbidden(message: str = "your role may not do this") -> IdentityError:
    return IdentityError("forbidden", message, 403)


def bad_request(message: str) -> IdentityError:
    return IdentityError("bad_request", message, 400)


def not_found(what: str) -> IdentityError:
    return IdentityError("not_found", f"{what} not found", 404)


def too_many(message: str, code: str = "too_many_requests") -> IdentityError:
    return IdentityError(code, message, 429)


def invalid_code() -> IdentityError:
    """The one answer for a wrong, expired, used or unknown code: it never says which."""
    return IdentityError("invalid_code", "the code is wrong or has expired", 401)
